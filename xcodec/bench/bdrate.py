"""Bjontegaard delta rate with piecewise cubic (PCHIP) interpolation.

BD-rate: log10(rate) is interpolated as a function of quality (PSNR, or MS-SSIM in dB) for the
anchor and the tested curve with a shape-preserving piecewise cubic Hermite interpolant (scipy's
``PchipInterpolator``, the ``pchip`` method of the ``bjontegaard`` package), both are integrated
over the quality interval where the curves overlap, and the mean difference d of log10 rates gives
``(10**d - 1) * 100``: the average percentage of bits the tested codec needs more (positive) or
fewer (negative) than the anchor for the same quality.

``overlap`` is the overlapping quality interval divided by the union of both intervals (the
``bjontegaard`` package's definition). Below :data:`POOR_OVERLAP` the number describes only part of
the curves and is flagged; with no overlap it is NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

POOR_OVERLAP = 0.75


@dataclass(frozen=True)
class BD:
    value: float  # percent (BD-rate) or dB (BD-PSNR); NaN when it cannot be computed
    overlap: float  # 0..1
    note: str = ""

    @property
    def poor(self) -> bool:
        return self.overlap < POOR_OVERLAP

    def format(self, unit: str = "%") -> str:
        if math.isnan(self.value):
            return "n/a"
        text = f"{self.value:+.2f}{unit}" if unit == "%" else f"{self.value:+.3f}{unit}"
        return text + ("*" if self.poor else "")


def monotone(rate, quality) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by rate, keeping only those that raise the quality (a usable RD curve)."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((q, r))
    kept_r, kept_q = [], []
    for ri, qi in zip(r[order], q[order]):
        if not kept_q or qi > kept_q[-1]:
            if kept_r and ri == kept_r[-1]:
                kept_q[-1] = qi
                continue
            kept_r.append(ri)
            kept_q.append(qi)
    return np.array(kept_r), np.array(kept_q)


def _pchip(x: np.ndarray, y: np.ndarray):
    from scipy.interpolate import PchipInterpolator

    return PchipInterpolator(x, y)


def _delta(base_a, value_a, base_t, value_t) -> BD:
    """Mean of (value_t - value_a) over the overlapping interval of the base variables."""
    if len(base_a) < 2 or len(base_t) < 2:
        return BD(math.nan, 0.0, "fewer than 2 points")
    lo, hi = max(base_a.min(), base_t.min()), min(base_a.max(), base_t.max())
    union = max(base_a.max(), base_t.max()) - min(base_a.min(), base_t.min())
    overlap = max(hi - lo, 0.0) / union if union > 0 else 0.0
    if hi <= lo:
        return BD(math.nan, 0.0, "curves do not overlap")
    fa, ft = _pchip(base_a, value_a), _pchip(base_t, value_t)
    mean = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    note = f"poor overlap ({overlap:.0%})" if overlap < POOR_OVERLAP else ""
    return BD(float(mean), float(overlap), note)


def bd_rate(rate_anchor, quality_anchor, rate_test, quality_test) -> BD:
    """Percent rate difference of ``test`` against ``anchor`` at equal quality (negative: test is better)."""
    ra, qa = monotone(rate_anchor, quality_anchor)
    rt, qt = monotone(rate_test, quality_test)
    d = _delta(qa, np.log10(ra) if len(ra) else ra, qt, np.log10(rt) if len(rt) else rt)
    value = (10**d.value - 1) * 100 if not math.isnan(d.value) else math.nan
    return BD(value, d.overlap, d.note)


def bd_quality(rate_anchor, quality_anchor, rate_test, quality_test) -> BD:
    """Quality difference (e.g. BD-PSNR in dB) of ``test`` against ``anchor`` at equal rate (positive: test is better)."""
    ra, qa = monotone(rate_anchor, quality_anchor)
    rt, qt = monotone(rate_test, quality_test)
    return _delta(np.log10(ra) if len(ra) else ra, qa, np.log10(rt) if len(rt) else rt, qt)
