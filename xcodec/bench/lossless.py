"""``xcodec bench FOLDER --lossless``: lossless (and near-lossless) bits per pixel and times.

xcodec ``--lossless`` and ``--max-error N`` against PNG (optimised), WebP lossless (method 6),
JPEG XL lossless (libjxl through ``pillow-jxl-plugin``, at its default effort 7 and at effort 9)
and JPEG 2000 reversible (OpenJPEG, 5/3 with the RCT), every codec on one thread. Every file is
decoded and compared with the original: lossless rows must be bit-exact, near-lossless ones within
their bound, else the run fails. bpp is total bits over total pixels of the set (file sizes,
headers included); times are the mean CPU seconds per image of one encode and one decode (the
process's, one thread; wall times are in the cache). Rows are
cached in ``OUT/lossless.jsonl`` (keyed by codec, its version and the image's SHA-256), so an
interrupted run resumes; the table goes to ``OUT/lossless.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import list_images
from .codecs import JPEG2000, JPEGXL, BenchCodec, PillowCodec, WebP


class PNG(PillowCodec):
    name, description, format, feature = "png", "PNG (zlib level 9, optimize)", "PNG", "zlib"

    def default_options(self):
        return {"optimize": True}

    def save_options(self, setting):
        return dict(self.options)


class WebPLossless(WebP):
    name, description = "webp-lossless", "WebP lossless (libwebp, method 6, quality 80)"

    def default_options(self):  # quality 100 (cwebp -z 9) takes minutes per Kodak image
        return {"lossless": True, "method": 6, "quality": 80}

    def save_options(self, setting):
        return dict(self.options)


class JPEGXLLossless(JPEGXL):
    name, description = "jxl-lossless", "JPEG XL lossless (libjxl, effort 7: its default)"

    def default_options(self):
        return {"lossless": True, "effort": 7, "use_container": False}

    def save_options(self, setting):
        return {**self.options, "num_threads": 1}


class JPEGXLLossless9(JPEGXLLossless):
    name, description = "jxl-lossless-e9", "JPEG XL lossless (libjxl, effort 9)"

    def default_options(self):
        return {"lossless": True, "effort": 9, "use_container": False}


class JPEG2000Reversible(JPEG2000):
    name, description = "jp2-reversible", "JPEG 2000 reversible (OpenJPEG, 5/3, RCT)"

    def default_options(self):
        return {"irreversible": False, "mct": 1, "no_jp2": True}

    def save_options(self, setting):
        return dict(self.options)


class XcodecExact(BenchCodec):
    """xcodec's lossless coder; ``max_error`` 0 is ``--lossless``, 1..4 ``--max-error``."""

    def __init__(self, max_error: int = 0):
        self.max_error = max_error
        self.name = "xcodec-lossless" if max_error == 0 else f"xcodec-max-error-{max_error}"
        self.description = "xcodec --lossless" if max_error == 0 else f"xcodec --max-error {max_error}"

    def version(self) -> str:
        from .. import __version__
        from ..lossless import tables

        source = Path(tables.__file__).parent
        code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(source.glob("*.py")))).hexdigest()[:16]
        return f"xcodec {__version__}; table sha256 {tables.load()[1].sha256}; code {code}"

    def encode(self, rgb: np.ndarray, setting=None) -> bytes:
        from .. import api

        return api.encode(Image.fromarray(rgb), lossless=self.max_error == 0, max_error=self.max_error or None)

    def decode(self, data: bytes) -> np.ndarray:
        from .. import api

        return np.asarray(api.decode(data).convert("RGB"))


def lossless_codecs(names: list[str] | None = None) -> list[BenchCodec]:
    everything = [XcodecExact(0), XcodecExact(1), XcodecExact(2), XcodecExact(4), PNG(), WebPLossless(),
                  JPEGXLLossless(), JPEGXLLossless9(), JPEG2000Reversible()]
    return [codec for codec in everything if names is None or codec.name in names]


def measure(codec: BenchCodec, rgb: np.ndarray) -> dict:
    """Bytes, the largest error, and the CPU seconds (this process, one thread) and wall seconds of
    one encode and one decode: on a busy machine the CPU time is the fair one."""
    wall, cpu = time.perf_counter(), time.process_time()
    data = codec.encode(rgb, None)
    encode_wall, encode_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    decoded = codec.decode(data)
    decode_wall, decode_cpu = time.perf_counter() - wall, time.process_time() - cpu
    bound = getattr(codec, "max_error", 0)
    error = int(np.abs(decoded.astype(np.int64) - rgb).max())
    if decoded.shape != rgb.shape or error > bound:
        raise RuntimeError(f"{codec.name}: decoded image differs from the original by {error} (bound {bound})")
    return {"bytes": len(data), "encode_s": encode_cpu, "decode_s": decode_cpu, "encode_wall_s": encode_wall,
            "decode_wall_s": decode_wall, "max_error": error}


def run(folder: Path, out: Path, names: list[str] | None = None, limit: int | None = None,
        shard: tuple[int, int] | None = None, log=print) -> list[dict]:
    """Benchmark the codecs on the images of ``folder`` (the first ``limit``, or shard i of n:
    images i, i + n, ...); return one summary row per codec."""
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "lossless.jsonl"
    cache = [json.loads(line) for line in cache_path.read_text().splitlines()] if cache_path.exists() else []
    done = {(row["codec"], row["version"], row["image_sha"]): row for row in cache if "encode_wall_s" in row}
    images = list_images(folder)[:limit]
    if shard:
        images = images[shard[0] :: shard[1]]
    summary = []
    for codec in lossless_codecs(names):
        reason = codec.unavailable()
        if reason:
            log(f"{codec.name}: skipped, {reason}")
            continue
        version, rows = codec.version(), []
        for path in images:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            row = done.get((codec.name, version, sha))
            if row is None:
                rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                row = {"codec": codec.name, "version": version, "image": path.name, "image_sha": sha,
                       "pixels": rgb.shape[0] * rgb.shape[1], **measure(codec, rgb)}
                with cache_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                log(f"{codec.name} {path.name}: {8 * row['bytes'] / row['pixels']:.4f} bpp, "
                    f"{row['encode_s']:.2f} s + {row['decode_s']:.2f} s")
            rows.append(row)
        pixels = sum(r["pixels"] for r in rows)
        summary.append({"codec": codec.name, "description": codec.description, "images": len(rows),
                        "bpp": 8 * sum(r["bytes"] for r in rows) / pixels,
                        "encode_s": sum(r["encode_s"] for r in rows) / len(rows),
                        "decode_s": sum(r["decode_s"] for r in rows) / len(rows),
                        "max_error": max(r["max_error"] for r in rows)})
    name = folder.name + (f" (images {shard[0]}, {shard[0]} + {shard[1]}, ...)" if shard else "")
    (out / ("lossless.md" if shard is None else f"lossless-shard-{shard[0]}-{shard[1]}.md")).write_text(table(summary, name))
    return summary


def table(summary: list[dict], name: str) -> str:
    """The markdown table of a run, with each codec's size relative to JPEG XL lossless at its default effort."""
    reference = next((row["bpp"] for row in summary if row["codec"] == "jxl-lossless"), None)
    lines = [f"| {name} | bpp | vs JPEG XL (effort 7) | max error | encode CPU s | decode CPU s |", "|---|---|---|---|---|---|"]
    for row in summary:
        relative = f"{100 * (row['bpp'] / reference - 1):+.1f}%" if reference else "-"
        lines.append(f"| {row['description']} | {row['bpp']:.3f} | {relative} | {row['max_error']} | "
                     f"{row['encode_s']:.2f} | {row['decode_s']:.2f} |")
    return "\n".join(lines) + "\n"
