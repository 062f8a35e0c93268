"""Run codecs over a set of images, with a result cache per codec.

The results of an output folder are ``OUT/cache/CODEC.jsonl``, one JSON line per (image, setting,
codec key): IMAGEHASH is the sha256 of the image file's bytes and the codec key a hash of the
codec's name, its ``version()`` (library versions, fixed options, model weights hash), the metric
definitions and the LPIPS weights. A run computes only what has no line yet, so an interrupted run
resumes where it stopped, a run with one more codec computes only that codec, and caches of runs on
other machines (``--shard``) merge by taking the lines that are new (``merge_caches``). The main
process appends the results of each (codec, image) as it ends; a line cut short by a crash is
skipped when read.

Per image and setting: bits of the real file (``8 * len(bytes) / pixels``), PSNR, MS-SSIM, LPIPS
and DISTS of the decoded image against the original, wall-clock encode and decode time, and memory
(``mem_method``): the worker's peak resident set size during encode and during decode (Linux
``VmHWM``, reset before each call through ``/proc/self/clear_refs``), and the same minus the
resident size just before the call ("extra"). Where the peak cannot be reset, ``ru_maxrss`` (the
process's lifetime peak) is recorded instead.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cores import limit_threads
from ..files import sha256
from .codecs import BenchCodec
from ..metrics import METRICS_VERSION, all_metrics

ROW_FIELDS = (
    "codec", "setting", "image", "image_sha256", "width", "height", "bytes", "bpp", "psnr", "ms_ssim",
    "ms_ssim_db", "lpips", "dists", "encode_s", "decode_s", "encode_peak_mib", "decode_peak_mib", "encode_extra_mib",
    "decode_extra_mib", "mem_method", "estimated_bpp", "codec_version",
)
Key = tuple[str, str, str]  # image sha256, setting slug, codec key


@dataclass
class BenchImage:
    """One benchmark image: its name in tables, its file and the sha256 of the file's bytes."""

    name: str
    path: Path
    sha256: str


@dataclass
class Decoder:
    """A codec of a task, its cache key and the settings it has no result for."""

    codec: BenchCodec
    key: str
    settings: list


@dataclass
class Task:
    """One image through codecs that share an encoder (``BenchCodec.encoder``, e.g. xcodec with and
    without its post-filter): each setting is encoded once and decoded by every codec that misses it."""

    decoders: list[Decoder]
    image: BenchImage
    device: str = "cpu"
    lpips: bool = True
    dists: bool = True

    @property
    def settings(self) -> list:
        """The settings to encode, in the codecs' order."""
        return list(dict.fromkeys(s for decoder in self.decoders for s in decoder.settings))

    @property
    def results(self) -> int:
        return sum(len(decoder.settings) for decoder in self.decoders)


@dataclass
class Outcome:
    codec: str
    image: str
    rows: list[dict] = field(default_factory=list)
    error: str | None = None


def select_images(paths: list[Path], root: Path, limit: int | None = None, shard: tuple[int, int] | None = None) -> list[BenchImage]:
    """The first ``limit`` images (sorted by path); of those, every n-th from i for shard (i, n)."""
    paths = sorted(paths)[:limit] if limit else sorted(paths)
    if shard:
        i, n = shard
        paths = paths[i::n]
    images = []
    for p in paths:
        name = p.name if root.is_file() else str(p.relative_to(root))
        images.append(BenchImage(name, p, sha256(p)))
    return images


def setting_slug(setting) -> str:
    return f"{setting:g}" if isinstance(setting, float) else str(setting)


def codec_key(codec: BenchCodec, lpips: bool = True, dists: bool = True) -> str:
    """With DISTS the key also hashes its weights; without, it is the key from before DISTS, so older caches serve ``--no-dists``."""
    parts = [codec.name, codec.version(), METRICS_VERSION]
    if lpips:
        from .lpips import WEIGHTS_SHA256

        parts.append(WEIGHTS_SHA256)
    else:
        parts.append("no-lpips")
    if dists:
        from .dists import WEIGHTS_ID as DISTS_ID

        parts.append("dists " + DISTS_ID)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


class Cache:
    """The results in ``folder``: ``CODEC.jsonl`` per codec, read when first asked for."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._rows: dict[str, dict[Key, dict]] = {}

    def rows(self, codec: str) -> dict[Key, dict]:
        if codec not in self._rows:
            self._rows[codec] = self._read(self.folder / f"{codec}.jsonl")
        return self._rows[codec]

    @staticmethod
    def _read(path: Path) -> dict[Key, dict]:
        rows = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # the end of a line that a crash cut short
                    continue
                rows[row_key(row)] = row
        return rows

    def get(self, codec: str, image_sha: str, setting, key: str) -> dict | None:
        return self.rows(codec).get((image_sha, setting_slug(setting), key))

    def add(self, rows: list[dict]) -> int:
        """Append the rows not yet cached, one write per codec; returns how many were new."""
        new: dict[str, list[dict]] = {}
        for row in rows:
            known = self.rows(row["codec"])
            if row_key(row) not in known:
                known[row_key(row)] = row
                new.setdefault(row["codec"], []).append(row)
        self.folder.mkdir(parents=True, exist_ok=True)
        for codec, fresh in new.items():
            text = "".join(json.dumps(row, allow_nan=True) + "\n" for row in fresh)
            with open(self.folder / f"{codec}.jsonl", "a+b") as f:
                if f.seek(0, os.SEEK_END):
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        text = "\n" + text  # after a line that a crash cut short, start a new one
                f.write(text.encode())
        return sum(len(fresh) for fresh in new.values())

    def all_rows(self) -> list[dict]:
        return [row for path in sorted(self.folder.glob("*.jsonl")) for row in self.rows(path.stem).values()]


def row_key(row: dict) -> Key:
    return row["image_sha256"], setting_slug(row["setting"]), row["key"]


# ---- memory ------------------------------------------------------------------------------------

def _status_kib(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory of this process during a block (MiB), and the extra over the start."""

    def __init__(self):
        self.method = "vmhwm-reset"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.method = "ru_maxrss"

    def __enter__(self):
        if self.method == "vmhwm-reset":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.start = _status_kib("VmRSS") or 0.0
        else:
            self.start = _maxrss_kib()
        return self

    def __exit__(self, *exc):
        end = _status_kib("VmHWM") if self.method == "vmhwm-reset" else _maxrss_kib()
        self.peak = (end or 0.0) / 1024
        self.extra = max(0.0, ((end or 0.0) - self.start) / 1024)
        return False


def _maxrss_kib() -> float:
    import resource
    import sys

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 1024 if sys.platform == "darwin" else float(value)  # bytes on macOS, KiB on Linux


# ---- the work ----------------------------------------------------------------------------------

def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


_warm: set[str] = set()


def _warm_up(codecs: list[BenchCodec], rgb: np.ndarray) -> None:
    """One untimed encode of a small crop and its decode by each codec (they share the encoder), so
    the first timed image pays no start-up costs."""
    cold = [codec for codec in codecs if codec.name not in _warm]
    if not cold:
        return
    crop = np.ascontiguousarray(rgb[:64, :64])
    data = cold[0].encode(crop, cold[0].settings[len(cold[0].settings) // 2])
    for codec in cold:
        codec.decode(data)
        _warm.add(codec.name)


def run_task(task: Task) -> Outcome:
    """Encode one image at each setting once, decode and measure it with each codec that misses the
    setting (a row each, also when one fails; the encoder's time and memory in each)."""
    image = task.image
    outcome = Outcome(", ".join(decoder.codec.name for decoder in task.decoders), image.name)
    try:
        rgb = _load_rgb(image.path)
        pixels = rgb.shape[0] * rgb.shape[1]
        _warm_up([decoder.codec for decoder in task.decoders], rgb)
        memory = PeakMemory()
        versions = [decoder.codec.version() for decoder in task.decoders]
        for setting in task.settings:
            decoders = [(d, version) for d, version in zip(task.decoders, versions) if setting in d.settings]
            encoder = decoders[0][0].codec
            with memory:
                t0 = time.perf_counter()
                data = encoder.encode(rgb, setting)
                encode_s = time.perf_counter() - t0
            enc_peak, enc_extra = memory.peak, memory.extra
            for decoder, version in decoders:
                codec = decoder.codec
                with memory:
                    t0 = time.perf_counter()
                    decoded = codec.decode(data)
                    decode_s = time.perf_counter() - t0
                if decoded.shape != rgb.shape:
                    raise ValueError(f"{codec.name} decoded {decoded.shape} from a {rgb.shape} image")
                row = {
                    "codec": codec.name, "setting": setting, "image": image.name, "image_sha256": image.sha256,
                    "width": rgb.shape[1], "height": rgb.shape[0], "bytes": len(data), "bpp": 8 * len(data) / pixels,
                    **all_metrics(rgb, decoded, task.device, task.lpips, task.dists),
                    "encode_s": encode_s, "decode_s": decode_s, "encode_peak_mib": enc_peak,
                    "decode_peak_mib": memory.peak, "encode_extra_mib": enc_extra, "decode_extra_mib": memory.extra,
                    "mem_method": memory.method, "estimated_bpp": math.nan, "codec_version": version,
                }
                row.update(codec.extra(rgb, setting, data), key=decoder.key)
                outcome.rows.append(row)
    except Exception as exc:  # one failing codec/image must not stop the others
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome


def plan(codecs: list[BenchCodec], images: list[BenchImage], cache: Cache, device: str, lpips: bool,
         dists: bool = True) -> tuple[list[Task], int, int]:
    """A task per image and encoder (codecs with the same ``encoder()`` together) with missing
    settings; also (cached, total) result counts."""
    tasks, cached, total = [], 0, 0
    families: dict[str, list[BenchCodec]] = {}
    for codec in codecs:
        families.setdefault(codec.encoder(), []).append(codec)
    for family in families.values():
        keys = [codec_key(codec, lpips, dists) for codec in family]
        for image in images:
            decoders = []
            for codec, key in zip(family, keys):
                missing = [s for s in codec.settings if cache.get(codec.name, image.sha256, s, key) is None]
                total += len(codec.settings)
                cached += len(codec.settings) - len(missing)
                if missing:
                    decoders.append(Decoder(codec, key, missing))
            if decoders:
                tasks.append(Task(decoders, image, device, lpips, dists))
    return tasks, cached, total


def execute(tasks: list[Task], jobs: int, threads: int, cache: Cache, on_outcome=None) -> list[Outcome]:
    """Run tasks in this process (jobs=1) or in ``jobs`` worker processes; cache and report each as it ends."""
    outcomes = []

    def done(outcome: Outcome, task: Task):
        cache.add(outcome.rows)
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome, task)

    if jobs <= 1:
        import sys

        saved_env = os.environ.get("OMP_NUM_THREADS")
        saved_torch = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
        limit_threads(threads)
        try:
            for task in tasks:
                done(run_task(task), task)
        finally:  # this process is the caller's: leave its thread settings as they were
            if saved_env is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved_env
            if saved_torch is not None:
                sys.modules["torch"].set_num_threads(saved_torch)
        return outcomes
    ctx = multiprocessing.get_context("spawn")  # no fork after torch has started threads
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=limit_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(run_task, t): t for t in tasks}
        try:
            for future in cf.as_completed(futures):
                done(future.result(), futures[future])
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise
    return outcomes


def collect(codecs: list[BenchCodec], images: list[BenchImage], cache: Cache, lpips: bool, dists: bool = True) -> list[dict]:
    """Rows for every (codec, setting, image) of this run that is in the cache."""
    rows = []
    for codec in codecs:
        key = codec_key(codec, lpips, dists)
        for image in images:
            for setting in codec.settings:
                row = cache.get(codec.name, image.sha256, setting, key)
                if row is not None:  # the same pixels may have another name in this run
                    rows.append({**row, "image": image.name, "setting": setting})
    return rows


def merge_caches(sources: list[Path], cache: Cache) -> int:
    """Add the results cached in other output folders (or cache folders); returns how many were new."""
    added = 0
    for source in sources:
        folder = source / "cache" if (source / "cache").is_dir() else source
        if not any(folder.glob("*.jsonl")):
            raise FileNotFoundError(f"{source} has no cached results to merge")
        added += cache.add(Cache(folder).all_rows())
    return added


def summarize(rows: list[dict]) -> list[dict]:
    """Average per (codec, setting), CompressAI style: metrics per image, then the mean.

    MS-SSIM in dB is computed from the mean MS-SSIM (as CompressAI's plots do); memory is the
    largest peak and the mean extra over all images.
    """
    from ..metrics import to_db

    groups: dict[tuple[str, object], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["codec"], row["setting"]), []).append(row)

    def mean(group, key):
        values = [float(r[key]) for r in group if r.get(key) is not None and not math.isnan(float(r[key]))]
        return float(np.mean(values)) if values else math.nan

    out = []
    for (codec, setting), group in groups.items():
        msssim = mean(group, "ms_ssim")
        out.append({
            "codec": codec, "setting": setting, "images": len(group), "bpp": mean(group, "bpp"),
            "psnr": mean(group, "psnr"), "ms_ssim": msssim, "ms_ssim_db": to_db(msssim), "lpips": mean(group, "lpips"),
            "dists": mean(group, "dists"),
            "encode_s": mean(group, "encode_s"), "decode_s": mean(group, "decode_s"),
            "encode_peak_mib": max(float(r["encode_peak_mib"]) for r in group),
            "decode_peak_mib": max(float(r["decode_peak_mib"]) for r in group),
            "encode_extra_mib": mean(group, "encode_extra_mib"), "decode_extra_mib": mean(group, "decode_extra_mib"),
            "estimated_bpp": mean(group, "estimated_bpp"),
        })
    order = {c: i for i, c in enumerate(dict.fromkeys(r["codec"] for r in rows))}
    return sorted(out, key=lambda s: (order[s["codec"]], s["bpp"], float(s["setting"])))


def rows_to_csv(rows: list[dict], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in ROW_FIELDS})
