"""The speed benchmark of docs/results.md: single images idle and beside busy processes, batches, AVIF and JPEG XL.

    PYTHONPATH=. python docs/speed.py ../shared/data/kodak [--baseline CHECKOUT] [--repeat 3] [--batch 24] [--large PNG [--encode-only]]

- Single image (the folder's first, quality 4, each codec at its defaults): a fresh process per
  codec and condition warms up on a 64x64 crop, then times ``--repeat`` encodes and decodes; the
  median is shown, in seconds of wall time and of CPU time (all the process's threads: the work
  done, which other programs' load changes little). "busy": one ``while True: pass`` process per
  usable core runs meanwhile ("+N busy"); the machine's other load is whatever it was (the load
  average before and after the run is printed). Then ``xcodec encode`` and ``xcodec decode`` of
  that one file as whole commands, start-up (imports, model load) included.
- ``--baseline CHECKOUT``: the same xcodec measurements with another checkout's code (e.g. a
  worktree of the commit before the thread policy), in the same run.
- Batch: ``xcodec encode`` and ``xcodec decode`` of the folder's first ``--batch`` images with
  ``-j 1`` (default threads: a single process uses both cores for a decode's post-filter stripes),
  ``-j 1 --threads 1`` (one core: the fair base of a speed-up) and ``-j 2``, wall time of the whole
  command (model loads included). Then where that time goes: the mean of the files' own times (each
  file's line) and the serial rest (the wall time less the files' times shared among the jobs:
  start-up, model loads, the workers' uneven ends, exit), and the Amdahl bound of ``-j 2`` over
  ``-j 1``: ``-j 1``'s time over its serial rest plus ``-j 2``'s file times split evenly in two.
- ``--large PNG``: ``xcodec encode`` and ``xcodec decode`` of one large photo (e.g. 24 Mpixel) with
  no flags (and the baseline's), wall and CPU time of the command and its peak memory (maximum
  resident set); AVIF and JPEG XL on the same photo as in the single-image rows (one call each, in
  memory: no PNG written). ``--encode-only``: xcodec's encodes of the photo alone (no decodes, no
  AVIF or JPEG XL), short enough for a quiet window when only the encoder changed.

Prints a Markdown table and the conditions (cores, load average before the run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import inspect, io, json, sys, time
import numpy as np
from PIL import Image
codec, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
rgb = np.asarray(Image.open(path).convert("RGB"))
if codec == "xcodec":
    from xcodec import api
    encode = lambda pixels: api.encode(Image.fromarray(pixels), quality=4)
    decode = lambda data: api.decode(data)
else:
    from xcodec.bench.codecs import AVIF, JPEGXL
    from xcodec.cores import usable_cores
    impl, setting = {"avif": (AVIF, 60), "jxl": (JPEGXL, 80)}[codec]
    impl = impl(threads=usable_cores())
    encode = lambda pixels: impl.encode(pixels, setting)
    decode = impl.decode
decode(encode(np.ascontiguousarray(rgb[:64, :64])))  # warm-up: imports, model, lazy initialisation
times = {"encode": [], "decode": [], "encode_cpu": [], "decode_cpu": []}
for _ in range(repeat):
    start, cpu = time.perf_counter(), time.process_time(); data = encode(rgb)
    times["encode"].append(time.perf_counter() - start); times["encode_cpu"].append(time.process_time() - cpu)
    start, cpu = time.perf_counter(), time.process_time(); decode(data)
    times["decode"].append(time.perf_counter() - start); times["decode_cpu"].append(time.process_time() - cpu)
print(json.dumps({**times, "bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1])}))
"""


def usable_cores() -> int:
    sys.path.insert(0, str(REPO))
    from xcodec.cores import usable_cores as cores

    return cores()


@contextmanager
def busy(count: int):
    """``count`` processes that keep a core busy each, for the block."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(1)
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def single(codec: str, image: Path, repeat: int, checkout: Path) -> dict:
    # run in the checkout: ``python -c`` puts the working directory before PYTHONPATH
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    result = subprocess.run([sys.executable, "-c", CHILD, codec, str(image), str(repeat)], env=env, cwd=checkout,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def cli(*args: str, checkout: Path = REPO, lines: list[str] | None = None) -> tuple[float, float, float]:
    """Wall time (s), CPU time (s: all the command's threads and a decode's tile workers, which it
    forks and waits for; not its batch workers, which are the forkserver's children) and peak memory
    (MiB, the largest resident set of the command and its workers, not their sum) of ``xcodec ARGS``,
    until the command's process ends. ``lines``: a list that gets its stderr lines (it then runs
    without ``--quiet``)."""
    quiet, stderr = ([], subprocess.PIPE) if lines is not None else (["--quiet"], None)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "xcodec.cli", *args, *quiet], env={**os.environ, "PYTHONPATH": str(checkout)},
                               cwd=checkout, stderr=stderr, text=True)
    with ThreadPoolExecutor(1) as reader:
        text = reader.submit(process.stderr.read) if stderr else None
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
    if status:
        raise SystemExit(f"xcodec {' '.join(args)} failed")
    if text:
        lines += text.result().splitlines()
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def batch(command: str, inputs: list[str], out: Path, jobs: int, threads: int | None = None) -> tuple[float, float]:
    """Wall time of the batch command and the mean of its files' own times (each file's line: reading,
    coding and writing it, without the model's load)."""
    lines: list[str] = []
    wall = cli(command, *inputs, "-d", str(out), "-j", str(jobs), *(["--threads", str(threads)] if threads else []), lines=lines)[0]
    files = [float(line.rsplit(", ", 1)[1].removesuffix(" s")) for line in lines if " -> " in line]
    return wall, statistics.mean(files)


def serial(wall: float, per_file: float, files: int, jobs: int) -> float:
    """A batch's serial rest: its wall time less its files' times shared evenly among its jobs
    (start-up, model loads, the workers' uneven ends, exit)."""
    return wall - per_file * files / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--baseline", type=Path, help="another checkout, measured beside this one")
    parser.add_argument("--repeat", type=int, default=3, help="calls per single-image measurement (0: none)")
    parser.add_argument("--batch", type=int, default=24, help="images in the batches (0: no batches)")
    parser.add_argument("--large", type=Path, help="a large photo (PNG) coded once with no flags")
    parser.add_argument("--encode-only", action="store_true", help="the large photo's xcodec encodes alone")
    args = parser.parse_args()
    images = sorted(args.folder.resolve().glob("*.png"))
    args.large, args.baseline = (path and path.resolve() for path in (args.large, args.baseline))
    cores = usable_cores()
    print(f"{cores} usable cores, load average {os.getloadavg()[0]:.1f} before the run, image {images[0].name}, "
          f"{args.repeat} calls each (median)\n")
    runs = [("xcodec", REPO, "xcodec")] + ([("xcodec", args.baseline, "xcodec (baseline)")] if args.baseline else [])
    runs += [("avif", REPO, "AVIF 4:4:4 q60 speed 6"), ("jxl", REPO, "JPEG XL q80 effort 7")]
    if args.repeat:
        print("| codec | condition | encode s | decode s | encode CPU s | decode CPU s | bpp |\n|---|---|---:|---:|---:|---:|---:|")
    for condition, spinners in (("no added load", 0), (f"+{cores} busy", cores)) if args.repeat else ():
        for codec, checkout, label in runs:
            with busy(spinners):
                result = single(codec, images[0], args.repeat, checkout)
            times = " | ".join(f"{statistics.median(result[key]):.2f}" for key in ("encode", "decode", "encode_cpu", "decode_cpu"))
            print(f"| {label} | {condition} | {times} | {result['bpp']:.3f} |", flush=True)
    if args.repeat:
        print("\n| one file, whole command (start-up and model load included) | encode s | decode s | encode CPU s | decode CPU s |\n"
              "|---|---:|---:|---:|---:|")
    for codec, checkout, label in runs if args.repeat else ():
        if codec == "xcodec":
            with tempfile.TemporaryDirectory() as tmp:
                coded = f"{tmp}/{images[0].stem}.xsc"
                encode = cli("encode", str(images[0]), "-o", coded, checkout=checkout)
                decode = cli("decode", coded, "-o", f"{tmp}/{images[0].stem}.png", checkout=checkout)
            print(f"| {label} | {encode[0]:.2f} | {decode[0]:.2f} | {encode[1]:.2f} | {decode[1]:.2f} |", flush=True)
    inputs = [str(p) for p in images[: args.batch]]
    settings = {"-j 1": (1, None), "one core": (1, 1), "-j 2": (2, None)}
    if inputs:
        print(f"\n| batch of {len(inputs)} | -j 1 s | -j 1 --threads 1 s | -j 2 s | speed-up over -j 1 | over one core |\n"
              "|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        coded = {name: Path(tmp) / f"coded{i}" for i, name in enumerate(settings)}
        files, parts = None, {}
        for command in ("encode", "decode") if inputs else ():
            times = {}
            for i, (name, (jobs, threads)) in enumerate(settings.items()):
                sources = inputs if command == "encode" else files
                wall, per_file = batch(command, sources, coded[name] if command == "encode" else Path(tmp) / f"decoded{i}", jobs, threads)
                times[name], parts[command, name] = wall, (per_file, serial(wall, per_file, len(inputs), jobs))
            files = sorted(str(p) for p in coded["-j 1"].iterdir())
            print(f"| {command} | {times['-j 1']:.1f} | {times['one core']:.1f} | {times['-j 2']:.1f} | "
                  f"{times['-j 1'] / times['-j 2']:.2f}x | {times['one core'] / times['-j 2']:.2f}x |", flush=True)
        if inputs:  # Amdahl: -j 1's serial rest kept, -j 2's file times split evenly between its two workers
            print(f"\n| batch of {len(inputs)}: per file s / serial rest s | -j 1 | -j 1 --threads 1 | -j 2 (each worker) | "
                  "-j 2 over -j 1 at most |\n|---|---:|---:|---:|---:|")
        for command in ("encode", "decode") if inputs else ():
            (one, rest), (two, _) = parts[command, "-j 1"], parts[command, "-j 2"]
            bound = (rest + len(inputs) * one) / (rest + len(inputs) * two / 2)
            cells = " | ".join(f"{parts[command, name][0]:.2f} / {parts[command, name][1]:.1f}" for name in settings)
            print(f"| {command} | {cells} | {bound:.2f}x |", flush=True)
        if args.large:
            with Image.open(args.large) as image:
                size = f"{image.width}x{image.height}"
            print(f"\n| {args.large.name} ({size}), quality 4, no flags | s | CPU s | peak MiB |\n|---|---:|---:|---:|")
            for i, (_, checkout, label) in enumerate(runs[:-2]):  # xcodec, and the baseline's
                coded_file, decoded = Path(tmp) / f"large{i}.xsc", Path(tmp) / f"large{i}.png"
                encode = cli("encode", str(args.large), "-o", str(coded_file), checkout=checkout)
                bpp = 8 * coded_file.stat().st_size / (image.width * image.height)
                print(f"| {label}: encode ({bpp:.3f} bpp) | {encode[0]:.1f} | {encode[1]:.1f} | {encode[2]:.0f} |", flush=True)
                if not args.encode_only:
                    decode = cli("decode", str(coded_file), "-o", str(decoded), checkout=checkout)
                    print(f"| {label}: decode (to PNG) | {decode[0]:.1f} | {decode[1]:.1f} | {decode[2]:.0f} |", flush=True)
            for codec, checkout, label in runs[-2:] if not args.encode_only else ():  # AVIF and JPEG XL
                result = single(codec, args.large, 1, checkout)
                for step in ("encode", "decode"):
                    name = f"{label}: {step}" + (f" ({result['bpp']:.3f} bpp)" if step == "encode" else " (in memory)")
                    print(f"| {name} | {result[step][0]:.1f} | {result[step + '_cpu'][0]:.1f} | |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} after the run")


if __name__ == "__main__":
    main()
