"""Peak memory and time of ``xcodec encode`` and ``xcodec decode`` against image size.

    python -m xcodec.tools.scale --source ../shared/data/kodak/kodim23.png --out /tmp/scale

For each size, the source photo is resized (bicubic) to that size and written as PNG, then the
command line encodes and decodes it in fresh processes, exactly as a user would run it. The peak
resident set size of each process comes from ``wait4`` (its own ``ru_maxrss``, so it includes the
Python interpreter, PyTorch and reading/writing the PNG). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

SIZES = ((1024, 768), (2048, 1536), (4096, 3072), (8192, 6144))


def measure(args: list[str]) -> tuple[float, float]:
    """Run ``python -m xcodec.cli ARGS``; return its wall time (s) and peak RSS (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "xcodec.cli", *args], stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"xcodec {' '.join(args)} failed: {stderr.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="A photo to resize to each size.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for the PNG, .xsc and decoded files.")
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES), help="WxH,WxH,...")
    parser.add_argument("--tiles", default="1024", help="Tile sizes to measure, comma-separated (0: one tile).")
    parser.add_argument("--quality", default="4")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| size | Mpixel | tile | encode s | encode peak MiB | decode s | decode peak MiB | bpp |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        png = args.out / f"{size}.png"
        if not png.exists():
            with Image.open(args.source) as photo:
                photo.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(png, compress_level=1)
        limit = str(width * height)
        for tile in args.tiles.split(","):
            xsc, decoded = args.out / f"{size}-t{tile}.xsc", args.out / f"{size}-t{tile}.png"
            enc_s, enc_mib = measure(["encode", str(png), "-o", str(xsc), "-q", args.quality, "--tile", tile,
                                      "--max-pixels", limit, "--device", "cpu", "--force"])
            dec_s, dec_mib = measure(["decode", str(xsc), "-o", str(decoded), "--max-pixels", limit,
                                      "--device", "cpu", "--force"])
            bpp = 8 * xsc.stat().st_size / (width * height)
            print(f"| {size} | {width * height / 1e6:.1f} | {tile} | {enc_s:.1f} | {enc_mib:,.0f} | {dec_s:.1f} "
                  f"| {dec_mib:,.0f} | {bpp:.4f} |", flush=True)


if __name__ == "__main__":
    main()
