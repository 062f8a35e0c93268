"""A learned 2D lifting wavelet that starts as JPEG 2000's CDF 9/7 (the ``wavelet`` model's transform).

Each level splits the rows (along the width), then the columns, into a low and a high half by the
four lifting steps of CDF 9/7 (predict, update, predict, update) with whole-sample symmetric
extension at the borders, then normalises the halves (low / K, high * K / 2: unit gain at DC and at
Nyquist, so every band keeps the pixel range). Every lifting step adds a small residual network
(iWave-style) whose last layer starts at zero, so at initialisation the transform *is* CDF 9/7.

Lifting is invertible whatever the networks compute: a step adds to one half a function of the
other half only, and the inverse subtracts the same function, replaying the steps backwards. Any
size works (odd sides: the low half gets the extra sample); a side of 1 stops the decomposition.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

# CDF 9/7 lifting constants (JPEG 2000, irreversible path) and the band normalisation.
STEPS = (-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971)
K = 1.230174104914001

# Band orientations in coding order: HL (horizontal high: vertical edges), LH, HH.
ORIENTATIONS = ("hl", "lh", "hh")


def _next(s: Tensor, n: int) -> Tensor:
    """s[i + 1] for i < n, mirrored at the right border (x[N] = x[N - 2])."""
    return torch.cat([s[..., 1:], s[..., -1:]], -1)[..., :n]


def _previous(d: Tensor, n: int) -> Tensor:
    """d[i - 1] for i < n, mirrored at the left border (x[-1] = x[1])."""
    return torch.cat([d[..., :1], d], -1)[..., :n]


def _same(d: Tensor, n: int) -> Tensor:
    """d[i] for i < n, mirrored at the right border when the low half is one longer."""
    return torch.cat([d, d[..., -1:]], -1)[..., :n]


class Residual(nn.Module):
    """The learned part of a lifting step: a small CNN of the two neighbours the step combines.

    Colour channels are folded into the batch (the same network for every channel). The last
    convolution starts at zero, so the step starts as the fixed CDF 9/7 step. The samples are in
    pixel units (hundreds), so the network sees them divided by ``SCALE`` and its output is scaled
    by ``SCALE / 10``: a small correction of the fixed step (iWave scales its residual by 0.1).
    Unscaled, 180 Adam steps at learning rate 1e-4 had grown the first layers' weights to 0.25 and
    the last layers' to 0.015, on inputs of hundreds of pixel units.
    """

    SCALE = 64.0

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2, hidden, 3, padding=1, padding_mode="replicate"), nn.ReLU(),
            nn.Conv2d(hidden, 1, 3, padding=1, padding_mode="replicate"),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        n, c, h, w = a.shape
        pair = torch.stack([a, b], 2).reshape(n * c, 2, h, w)
        return self.net(pair / self.SCALE).reshape(n, c, h, w) * (self.SCALE / 10)


class Lifting1D(nn.Module):
    """The four CDF 9/7 lifting steps along the last dimension, each with its residual network
    (none with ``hidden = 0``: the fixed CDF 9/7 transform)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.residuals = nn.ModuleList(Residual(hidden) for _ in STEPS) if hidden else None

    def _step(self, k: int, s: Tensor, d: Tensor) -> Tensor:
        """What step ``k`` adds: to the high half (even k) or to the low half (odd k)."""
        if k % 2 == 0:
            a, b = s[..., : d.shape[-1]], _next(s, d.shape[-1])
        else:
            a, b = _previous(d, s.shape[-1]), _same(d, s.shape[-1])
        fixed = STEPS[k] * (a + b)
        return fixed if self.residuals is None else fixed + self.residuals[k](a, b)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, d = x[..., 0::2], x[..., 1::2]
        for k in range(len(STEPS)):
            if k % 2 == 0:
                d = d + self._step(k, s, d)
            else:
                s = s + self._step(k, s, d)
        return s / K, d * (K / 2)

    def inverse(self, s: Tensor, d: Tensor) -> Tensor:
        s, d = s * K, d / (K / 2)
        for k in reversed(range(len(STEPS))):
            if k % 2 == 0:
                d = d - self._step(k, s, d)
            else:
                s = s - self._step(k, s, d)
        x = s.new_empty(*s.shape[:-1], s.shape[-1] + d.shape[-1])
        x[..., 0::2], x[..., 1::2] = s, d
        return x


def level_count(height: int, width: int, levels: int) -> int:
    """How many levels an image of this size gets: each needs both sides of at least 2."""
    count = 0
    while count < levels and height >= 2 and width >= 2:
        height, width, count = -(-height // 2), -(-width // 2), count + 1
    return count


class Wavelet2D(nn.Module):
    """L-level separable 2D lifting wavelet, rows then columns at each level.

    ``forward`` returns the coarsest low band and, per level from the finest (index 0), the
    (HL, LH, HH) bands. Tensors are (N, C, h, w); no padding is needed for any size.
    """

    def __init__(self, levels: int = 5, hidden: int = 8):
        super().__init__()
        self.levels = levels
        self.rows, self.cols = Lifting1D(hidden), Lifting1D(hidden)

    def _split_cols(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low, high = self.cols(x.transpose(-1, -2))
        return low.transpose(-1, -2), high.transpose(-1, -2)

    def forward(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        bands = []
        for _ in range(level_count(x.shape[-2], x.shape[-1], self.levels)):
            low, high = self.rows(x)
            x, lh = self._split_cols(low)
            hl, hh = self._split_cols(high)
            bands.append((hl, lh, hh))
        return x, bands

    def inverse(self, ll: Tensor, bands: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        x = ll
        for hl, lh, hh in reversed(bands):
            low = self.cols.inverse(x.transpose(-1, -2), lh.transpose(-1, -2)).transpose(-1, -2)
            high = self.cols.inverse(hl.transpose(-1, -2), hh.transpose(-1, -2)).transpose(-1, -2)
            x = self.rows.inverse(low, high)
        return x


@functools.cache
def synthesis_norms(levels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """L2 norms of the fixed CDF 9/7 synthesis basis functions in 1D: (low, high) per level 1..L.

    A 2D band's norm is the product of its horizontal and vertical 1D norms (the transform is
    separable). Measured on a long signal with an impulse in the middle of the band.
    """
    lifting = Lifting1D(hidden=0)
    length = 64 << levels
    low_norms, high_norms = [], []
    with torch.no_grad():
        for level in range(1, levels + 1):
            for high in (False, True):
                size = length >> level
                s, d = torch.zeros(1, 1, 1, size), torch.zeros(1, 1, 1, size)
                (d if high else s)[..., size // 2] = 1.0
                x = lifting.inverse(s, d)
                for _ in range(level - 1):
                    x = lifting.inverse(x, torch.zeros_like(x))
                (high_norms if high else low_norms).append(math.sqrt(float(x.double().square().sum())))
    return tuple(low_norms), tuple(high_norms)
