"""Outputs of a benchmark: terminal tables, CompressAI-format JSON, RD plots, a Markdown report."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

from rich.table import Table
from rich.text import Text

from .bdrate import BD, POOR_OVERLAP, bd_quality, bd_rate
from .curves import Curve, nan_to_none

METRICS = {  # curve attribute -> (axis label, short name, higher is better)
    "psnr": ("PSNR RGB (dB)", "PSNR", True),
    "ms_ssim_db": ("MS-SSIM RGB (dB)", "MS-SSIM dB", True),
    "lpips": ("LPIPS Alex (lower is better)", "LPIPS", False),
    "dists": ("DISTS (lower is better)", "DISTS", False),
}
BD_METRICS = ("psnr", "ms_ssim_db", "lpips", "dists")
PERCEPTUAL = ("lpips", "dists")  # distances: BD-rate on the negated values, no BD-quality


def _f(value, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def summary_table(summary: list[dict], title: str, labels: dict[str, str] | None = None) -> Table:
    t = Table(title=Text(title))  # the dataset is a folder's name: text, never markup
    for col in ("codec", "setting", "images", "bpp", "PSNR dB", "MS-SSIM dB", "LPIPS", "DISTS", "enc s", "dec s", "enc MiB", "dec MiB"):
        t.add_column(col, justify="left" if col == "codec" else "right")
    previous = None
    for s in summary:
        label = (labels or {}).get(s["codec"])
        name = f"{s['codec']} ({label})" if label else s["codec"]
        t.add_row(
            name if s["codec"] != previous else "", f"{s['setting']:g}",
            str(s["images"]), _f(s["bpp"], ".4f"), _f(s["psnr"], ".2f"), _f(s["ms_ssim_db"], ".2f"), _f(s["lpips"], ".4f"), _f(s["dists"], ".4f"),
            _f(s["encode_s"], ".3f"), _f(s["decode_s"], ".3f"), _f(s["encode_extra_mib"], ".0f"), _f(s["decode_extra_mib"], ".0f"),
        )
        previous = s["codec"]
    return t


def bd_table(curves: list[Curve], anchors: list[Curve]) -> list[dict]:
    """BD-rate of every curve against each anchor for PSNR, MS-SSIM dB, LPIPS and DISTS; BD-quality for the first two.

    LPIPS and DISTS (distances, lower is better) are negated first, so that their BD-rate reads like the others'.
    """
    out = []
    for anchor in anchors:
        for curve in curves:
            if curve is anchor:
                continue
            entry = {"curve": curve.id, "anchor": anchor.id, "published": curve.published}
            for key in BD_METRICS:
                qa, qt = anchor.metric(key), curve.metric(key)
                if qa is None or qt is None:
                    entry[key] = None
                    continue
                sign = -1 if key in PERCEPTUAL else 1
                rate = bd_rate(anchor.bpp, [sign * q for q in qa], curve.bpp, [sign * q for q in qt])
                entry[key] = {"bd_rate_percent": rate.value, "overlap": rate.overlap, "note": rate.note}
                if key not in PERCEPTUAL:
                    entry[key]["bd_quality_db"] = bd_quality(anchor.bpp, qa, curve.bpp, qt).value
            out.append(entry)
    return out


def _bd_cell(value: dict | None) -> str:
    if not value:
        return "-"
    return BD(value["bd_rate_percent"], value["overlap"]).format()


def _display(entry: dict) -> str:
    published = entry["published"] and "published" not in entry["curve"]
    return entry["curve"] + (" (published)" if published else "")


def bd_rich_table(entries: list[dict], anchor: str) -> Table:
    t = Table(title=f"BD-rate against {anchor} (PCHIP; negative = fewer bits; * overlap < {POOR_OVERLAP:.0%})")
    t.add_column("curve")
    for key in BD_METRICS:
        t.add_column(f"BD-rate {METRICS[key][1].removesuffix(' dB')}", justify="right")
        t.add_column("overlap", justify="right")
    for e in entries:
        if e["anchor"] != anchor:
            continue
        cells = [c for key in BD_METRICS for c in (_bd_cell(e.get(key)), _f(e.get(key) and e[key]["overlap"] * 100, ".0f"))]
        t.add_row(_display(e), *cells)
    return t


def write_results_json(summary: list[dict], out: Path, dataset: str, descriptions: dict[str, str],
                       versions: dict[str, str], images: int) -> list[Path]:
    """One CompressAI-format ``results/CODEC.json`` per codec of the run (NaN written as null)."""
    folder = out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for codec in dict.fromkeys(s["codec"] for s in summary):
        points = [s for s in summary if s["codec"] == codec]
        data = {
            "name": codec,
            "description": f"{descriptions.get(codec, codec)} on {dataset}; bpp from real files",
            "meta": {"dataset": dataset, "images": images, "version": versions.get(codec, ""),
                     "metrics": "per image, then averaged; ms-ssim-db-rgb from the mean MS-SSIM"},
            "results": {
                "quality": [p["setting"] for p in points],
                "bpp": nan_to_none([p["bpp"] for p in points]),
                "psnr-rgb": nan_to_none([p["psnr"] for p in points]),
                "ms-ssim-rgb": nan_to_none([p["ms_ssim"] for p in points]),
                "ms-ssim-db-rgb": nan_to_none([p["ms_ssim_db"] for p in points]),
                "lpips-alex": nan_to_none([p["lpips"] for p in points]),
                "dists": nan_to_none([p["dists"] for p in points]),
                "encoding_time": nan_to_none([p["encode_s"] for p in points]),
                "decoding_time": nan_to_none([p["decode_s"] for p in points]),
                "images": [p["images"] for p in points],
            },
        }
        path = folder / f"{codec}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        paths.append(path)
    return paths


def plot(curves: list[Curve], out: Path, title: str) -> list[Path]:
    """``rd-psnr.png``, ``rd-ms-ssim.png``, ``rd-lpips.png``, ``rd-dists.png``: this run's curves solid, published ones dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = [c for c in curves if not c.published]
    max_bpp = max((max(c.bpp) for c in run if c.bpp), default=2.0)
    xmax = min(max(max_bpp * 1.05, 0.5), 3.0)
    paths = []
    for key, filename in (("psnr", "rd-psnr.png"), ("ms_ssim_db", "rd-ms-ssim.png"), ("lpips", "rd-lpips.png"),
                          ("dists", "rd-dists.png")):
        label, short, _ = METRICS[key]
        with_metric = [c for c in curves if c.metric(key) is not None]
        if not with_metric:
            continue
        fig, ax = plt.subplots(figsize=(9, 6.5))
        visible = []
        ours = [c for c in with_metric if not c.published]
        mine = plt.get_cmap("tab10" if len(ours) <= 10 else "tab20")
        theirs = plt.get_cmap("Dark2")
        colors = {c.id: mine(i % mine.N) for i, c in enumerate(ours)}
        colors.update({c.id: theirs(i % theirs.N) for i, c in enumerate(c for c in with_metric if c.published)})
        for c in with_metric:
            points = [(b, q) for b, q in zip(c.bpp, c.metric(key)) if math.isfinite(b) and math.isfinite(q)]
            if not points:
                continue
            xs, ys = zip(*sorted(points))
            style = dict(linestyle="--", marker="x", linewidth=1, markersize=4, alpha=0.8) if c.published else \
                dict(linestyle="-", marker="o", linewidth=1.6, markersize=4)
            ax.plot(xs, ys, label=f"{c.label} (published)" if c.published else c.id, color=colors[c.id], **style)
            visible.extend(y for x, y in points if x <= xmax)
        ax.set_xlim(0, xmax)
        if visible:
            lo, hi = min(visible), max(visible)
            pad = 0.03 * (hi - lo or 1)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("bits per pixel (real files)")
        ax.set_ylabel(label)
        ax.set_title(f"{title}: {short}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(with_metric) > 12 else 1)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def markdown(out: Path, *, dataset: str, command: str, images: list[str], summary: list[dict], curves: list[Curve],
             bd: list[dict], anchors: list[str], versions: dict[str, str], descriptions: dict[str, str],
             skipped: list[str], errors: list[str], plots: list[Path], environment: dict, notes: list[str]) -> Path:
    lines = [f"# Rate-distortion benchmark: {dataset}", ""]
    lines += [f"Command: `{command}`", "", f"{len(images)} images. " + ", ".join(f"{k}: {v}" for k, v in environment.items()), ""]
    for note in notes:
        lines += [f"> {note}", ""]
    if skipped:
        lines += ["Skipped:", ""] + [f"- {s}" for s in skipped] + [""]
    if errors:
        lines += ["Failed (these points are missing):", ""] + [f"- {e}" for e in errors] + [""]
    lines += ["## Codecs", "", "| curve | what | version and options |", "|---|---|---|"]
    lines += [f"| {c} | {descriptions.get(c, '')} | {versions.get(c, '')} |" for c in dict.fromkeys(s["codec"] for s in summary)]
    lines += [""]
    for anchor in anchors:
        lines += [f"## BD-rate against {anchor}", "",
                  f"PCHIP, over the overlapping quality range; negative = fewer bits than {anchor} for the same quality. "
                  f"`*`: the curves overlap on less than {POOR_OVERLAP:.0%} of their joint range, so the number "
                  "describes only part of them. BD-PSNR is the mean quality difference at equal rate. "
                  "LPIPS and DISTS: BD-rate at equal distance.", "",
                  "| curve | BD-rate PSNR | BD-PSNR dB | overlap | BD-rate MS-SSIM | BD MS-SSIM dB | overlap "
                  "| BD-rate LPIPS | overlap | BD-rate DISTS | overlap |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for e in bd:
            if e["anchor"] != anchor:
                continue
            p, m = e.get("psnr"), e.get("ms_ssim_db")
            name = _display(e)
            lines.append(f"| {name} | {_bd_cell(p)} | {_f(p and p['bd_quality_db'], '+.3f')} | {_f(p and p['overlap'] * 100, '.0f')}% "
                         f"| {_bd_cell(m)} | {_f(m and m['bd_quality_db'], '+.3f')} | {_f(m and m['overlap'] * 100, '.0f')}% "
                         + "".join(f"| {_bd_cell(e.get(k))} | {_f(e.get(k) and e[k]['overlap'], '.0%')} " for k in PERCEPTUAL) + "|")
        lines += [""]
    lines += ["## Points", "", "Averages over the images (per image, then the mean). Times are wall-clock seconds per image; "
              "MiB is the extra peak resident memory of an encode or decode over the worker's size before it (mean).", "",
              "| curve | setting | images | bpp | PSNR dB | MS-SSIM | MS-SSIM dB | LPIPS | DISTS | enc s | dec s | enc MiB | dec MiB | est. bpp |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(
            f"| {s['codec']} | {s['setting']:g} | {s['images']} | {_f(s['bpp'], '.4f')} | {_f(s['psnr'], '.2f')} "
            f"| {_f(s['ms_ssim'], '.4f')} "
            f"| {_f(s['ms_ssim_db'], '.2f')} | {_f(s['lpips'], '.4f')} | {_f(s['dists'], '.4f')} | {_f(s['encode_s'], '.3f')} | {_f(s['decode_s'], '.3f')} "
            f"| {_f(s['encode_extra_mib'], '.0f')} | {_f(s['decode_extra_mib'], '.0f')} | {_f(s['estimated_bpp'], '.4f')} |")
    lines += [""]
    published = [c for c in curves if c.published]
    if published:
        lines += ["## Published curves overlaid", ""] + [f"- `{c.id}`: {c.label} ({c.source})" for c in published] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["Files: `rows.csv` (one row per image and setting), `results/*.json` (CompressAI format), `summary.json`, "
              "`cache/` (a JSON-lines file per codec, a line per setting and image). Definitions: docs/benchmarks.md.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def environment() -> dict:
    import os

    import torch

    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
