"""``xcodec bench``: the whole benchmark, from a folder of images to tables, files, plots and a report.

See docs/benchmarks.md for how to run it and what every number means.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from . import curves as curves_mod
from . import report
from ..files import list_images
from .codecs import ALL_CODECS, build_codecs, default_threads
from ..metrics import MS_SSIM_MIN_SIDE
from .run import Cache, collect, execute, merge_caches, plan, rows_to_csv, select_images, summarize


@dataclass
class BenchConfig:
    folder: Path
    out: Path = Path("bench-results")
    codecs: list[str] = field(default_factory=lambda: list(ALL_CODECS))
    models: list[str] | None = None
    settings: dict[str, tuple] = field(default_factory=dict)
    anchors: list[Path] = field(default_factory=list)
    anchor_select: list[str] | None = None
    anchor_curves: list[str] | None = None
    jobs: int = 1
    threads: int | None = None  # per job; default: CPUs / jobs
    shard: tuple[int, int] | None = None
    merge: list[Path] = field(default_factory=list)
    compute: bool = True
    limit: int | None = None
    device: str = "auto"
    lpips: bool = True
    dists: bool = True
    plots: bool = True
    postfilter: bool = True  # False: xcodec files decoded without the post-filter
    realisms: tuple[float, ...] = (0.0,)  # xcodec files encoded for and decoded at each of these realisms
    efforts: tuple[int | None, ...] = (None,)  # the xcodec encoders' efforts (None: each model's default)
    command: str = "xcodec bench"


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"bad --shard {text!r} (expected i/n, e.g. 0/4)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"bad --shard {text!r}: need 0 <= i < n")
    return i, n


def _metric_device(device: str) -> str:
    from ..api import resolve_device

    return str(resolve_device(device))


def benchmark(cfg: BenchConfig, err: Console, out: Console) -> int:
    """Run the benchmark; returns the exit code (1 when some codec/image failed, 0 otherwise)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    notes = []
    root = cfg.folder
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    paths = list_images(root)
    if not paths:
        raise FileNotFoundError(f"no images in {root}")
    images = select_images(paths, root, cfg.limit, cfg.shard)
    if cfg.shard:
        notes.append(f"Shard {cfg.shard[0]}/{cfg.shard[1]}: {len(images)} of the images only; merge the shards for the full set.")
    if not images:
        raise FileNotFoundError(f"shard {cfg.shard} of {root} has no images")
    dataset = cfg.folder.name or str(cfg.folder)

    threads = cfg.threads or default_threads(cfg.jobs)
    codecs, skipped = build_codecs(cfg.codecs, cfg.models, cfg.settings, cfg.device, threads, cfg.postfilter,
                                   cfg.realisms, cfg.efforts)
    for message in skipped:
        err.print(message, style="yellow", markup=False)
    if not codecs:
        raise ValueError("none of the requested codecs can run here")
    cache = Cache(cfg.out / "cache")
    if cfg.merge:
        added = merge_caches(cfg.merge, cache)
        err.print(f"merged {added} new results from {', '.join(map(str, cfg.merge))}", markup=False)

    device = _metric_device(cfg.device)
    tasks, cached, total = plan(codecs, images, cache, device, cfg.lpips, cfg.dists)
    todo = sum(t.results for t in tasks)
    err.print(f"{len(images)} images x {len(codecs)} codecs: {total} results, {cached} cached, {todo} to compute"
              + (f" with {cfg.jobs} processes x {threads} threads" if todo and cfg.compute else ""))
    errors = []
    if tasks and cfg.compute:
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())  # descriptions name images: text, never markup
        with Progress(*columns, console=err, transient=False) as progress:
            bar = progress.add_task("bench", total=todo)

            def on_outcome(outcome, task):
                progress.update(bar, advance=task.results, description=f"{outcome.codec} {outcome.image}")
                if outcome.error:
                    errors.append(f"{outcome.codec} on {outcome.image}: {outcome.error}")
                    progress.console.print(Text.assemble(("failed: ", "red"), errors[-1]))

            execute(tasks, cfg.jobs, threads, cache, on_outcome=on_outcome)
    elif tasks:
        notes.append(f"--no-compute: {todo} of {total} results were not in the cache and are missing.")

    rows = collect(codecs, images, cache, cfg.lpips, cfg.dists)
    if not rows:
        raise ValueError("no results (nothing cached, and nothing computed)")
    small = {r["image"] for r in rows if min(int(r["width"]), int(r["height"])) < MS_SSIM_MIN_SIDE}
    if small:
        notes.append(f"{len(small)} images are smaller than {MS_SSIM_MIN_SIDE} px on a side: MS-SSIM (5 scales) "
                     "is undefined for them and left out.")
    summary = summarize(rows)
    rows_to_csv(rows, cfg.out / "rows.csv")
    descriptions = {c.name: c.description for c in codecs}
    versions = {c.name: c.version() for c in codecs}
    report.write_results_json(summary, cfg.out, dataset, descriptions, versions, len(images))

    run_curves = curves_mod.from_summary(summary, descriptions)
    published, anchor_skips = curves_mod.load_anchors(cfg.anchors, cfg.anchor_select) if cfg.anchors else ([], [])
    for message in anchor_skips:
        err.print(f"anchors: {message}", style="dim", markup=False)
    if published:
        notes.append(f"{len(published)} published curves loaded from {', '.join(map(str, cfg.anchors))}: they were measured on "
                     "their own dataset (Kodak for ../shared/anchors); compare with them only on the same images, all of them.")
    taken = {c.id.lower() for c in run_curves}
    for c in published:  # a published "jpeg" must not shadow this run's jpeg
        if c.id.lower() in taken:
            c.id = f"{c.id}-published"
    all_curves = run_curves + published
    anchors = []
    for name in cfg.anchor_curves or [_default_anchor(all_curves)]:
        curve = curves_mod.find(all_curves, name)
        if curve is None:
            err.print(f"anchor curve {name!r} not found (curves: {', '.join(c.id for c in all_curves)})", style="yellow", markup=False)
        else:
            anchors.append(curve)
    bd = report.bd_table(all_curves, anchors)

    plots = report.plot(all_curves, cfg.out, dataset) if cfg.plots else []
    counts = {s["images"] for s in summary}
    if len(counts) > 1:
        notes.append(f"Not every point averages the same images ({sorted(counts)}); some results are missing.")
    labels = {c.name: c.setting_label for c in codecs}
    (cfg.out / "summary.json").write_text(json.dumps(_clean({
        "dataset": dataset, "images": [i.name for i in images], "command": cfg.command, "codecs": versions,
        "skipped": skipped, "errors": errors, "points": summary, "bd": bd, "anchors": [a.id for a in anchors],
    }), indent=1) + "\n")
    md = report.markdown(cfg.out, dataset=dataset, command=cfg.command, images=[i.name for i in images], summary=summary,
                         curves=all_curves, bd=bd, anchors=[a.id for a in anchors], versions=versions,
                         descriptions=descriptions, skipped=skipped, errors=errors, plots=plots,
                         environment={**report.environment(), "jobs": cfg.jobs, "threads per job": threads, "device": device},
                         notes=notes)

    out.print(report.summary_table(summary, f"{dataset}: {len(images)} images", labels))
    for anchor in anchors:
        out.print(report.bd_rich_table(bd, anchor.id))
    for note in notes:
        err.print(note, style="dim", markup=False)
    err.print(f"wrote {md}, {cfg.out / 'rows.csv'}, {cfg.out / 'results'}/*.json" + (f", {len(plots)} plots" if plots else ""),
              markup=False)
    return 1 if errors else 0


def _default_anchor(curves: list[curves_mod.Curve]) -> str:
    for name in ("vtm", "jpeg"):
        if curves_mod.find(curves, name):
            return name
    return curves[0].id


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj
