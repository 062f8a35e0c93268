"""Rate-distortion curves: averaged from this run's rows, or loaded from published results.

Published results (``--anchors DIR``) are read from JSON files in CompressAI's results format,
``{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...]}}``
(``ms-ssim-db-rgb`` is also read), and from two simpler shapes found in papers' repositories:
``{"bpp": [...], "psnr": [...]}``, and the same nested under keys (``{"kodak": {"L": {...}}}``),
which gives one curve per path (``tcm_kodak_clic_rd/kodak/L``). A curve's id is the file's stem
(plus the path when nested); its label is the file's ``name`` when it has one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import to_db


@dataclass
class Curve:
    id: str
    label: str
    bpp: list[float]
    psnr: list[float] | None = None
    ms_ssim_db: list[float] | None = None
    lpips: list[float] | None = None
    source: str = "run"  # "run", or the file it was loaded from
    settings: list | None = None
    extra: dict = field(default_factory=dict)
    dists: list[float] | None = None

    @property
    def published(self) -> bool:
        return self.source != "run"

    def metric(self, key: str) -> list[float] | None:
        values = getattr(self, key)
        if values is None or all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            return None
        return [math.nan if v is None else float(v) for v in values]


def _as_list(values) -> list[float] | None:
    if values is None:
        return None
    return [math.nan if v is None else float(v) for v in values]


def _from_mapping(cid: str, label: str, data: dict, source: str) -> Curve | None:
    results = data.get("results", data)
    if not isinstance(results, dict) or "bpp" not in results:
        return None
    psnr = results.get("psnr-rgb", results.get("psnr"))
    msssim_db = results.get("ms-ssim-db-rgb", results.get("ms-ssim-db"))
    if msssim_db is None and results.get("ms-ssim-rgb", results.get("ms-ssim")) is not None:
        msssim_db = [to_db(float(v)) for v in results.get("ms-ssim-rgb", results.get("ms-ssim"))]
    if psnr is None and msssim_db is None:
        return None
    bpp = _as_list(results["bpp"])
    for values in (psnr, msssim_db):
        if values is not None and len(values) != len(bpp):
            return None
    return Curve(cid, label, bpp, _as_list(psnr), _as_list(msssim_db), None, source)


def load_file(path: Path) -> list[Curve]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    curve = _from_mapping(path.stem, str(data.get("name") or path.stem), data, str(path))
    if curve is not None:
        return [curve]
    curves = []

    def walk(node, trail):
        if not isinstance(node, dict):
            return
        found = _from_mapping("/".join([path.stem, *trail]), "/".join([path.stem, *trail]), node, str(path)) if trail else None
        if found is not None:
            curves.append(found)
            return
        for key, value in node.items():
            walk(value, [*trail, str(key)])

    walk(data, [])
    return curves


def load_anchors(paths: list[Path], select: list[str] | None = None) -> tuple[list[Curve], list[str]]:
    """Curves from JSON files or folders (recursive). ``select``: keep curves whose id or label
    contains one of these (case-insensitive). Returns the curves and messages about skipped files."""
    curves, skipped = [], []
    for root in paths:
        if not root.exists():
            skipped.append(f"{root}: does not exist")
            continue
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        for file in files:
            loaded = load_file(file)
            if not loaded:
                skipped.append(f"{file}: not a rate-distortion results file")
            curves.extend(loaded)
    if select:
        wanted = [s.lower() for s in select]
        curves = [c for c in curves if any(w in c.id.lower() or w in c.label.lower() for w in wanted)]
    seen, unique = set(), []
    for c in curves:  # the same stem in two folders: keep both, tell them apart
        cid = c.id
        n = 2
        while cid in seen:
            cid, n = f"{c.id}~{n}", n + 1
        c.id = cid
        seen.add(cid)
        unique.append(c)
    return unique, skipped


def find(curves: list[Curve], name: str) -> Curve | None:
    """A curve by id, else by label, case-insensitively."""
    for attr in ("id", "label"):
        for c in curves:
            if getattr(c, attr).lower() == name.lower():
                return c
    return None


def from_summary(summary: list[dict], descriptions: dict[str, str] | None = None) -> list[Curve]:
    """One curve per codec of this run, points ordered by bpp."""
    curves = []
    for codec in dict.fromkeys(s["codec"] for s in summary):
        points = sorted((s for s in summary if s["codec"] == codec), key=lambda s: s["bpp"])
        curves.append(Curve(
            codec, (descriptions or {}).get(codec, codec), [p["bpp"] for p in points], [p["psnr"] for p in points],
            [p["ms_ssim_db"] for p in points], [p["lpips"] for p in points], "run", [p["setting"] for p in points],
            dists=[p["dists"] for p in points],
        ))
    return curves


def nan_to_none(values):
    return [None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v for v in values]
