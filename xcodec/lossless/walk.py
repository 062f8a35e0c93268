"""The sample-exact context model and its walk, shared by the encoder and the decoder.

A tile's planes (G, R, B; or one gray plane) are coded sample by sample in the pixel domain, every
sample ``x`` as an integer symbol ``q`` with a Laplacian whose centre and scale come from samples
already decoded:

- Each plane is predicted in a *difference* domain ``d = x - ref``: ``ref`` is 0 for the first
  plane, G for R and ``(R + G) >> 1`` for B (the same samples the decoder already has), so the
  colour decorrelation costs no transform and the error bound of near-lossless coding holds on the
  samples themselves.
- Ten predictors of ``d`` (W, N, the gradient W + N - NW, ...; the last one a linear predictor whose
  integer coefficients the encoder fits to the tile by least squares and sends, on the plane's
  causal neighbours and on the two earlier planes' ``d`` around the same pixel) are blended with
  integer weights ``2**36 // (E + 8)**2``, ``E`` each predictor's recent error at six causal
  neighbours (the idea of JPEG XL's weighted predictor). Predictions are in 1/8 of a sample.
- The Laplacian's scale is a learned table (``weights/lossless.safetensors``) indexed by a context:
  the recent final errors at the same neighbours plus the predictors' spread, binned on a log scale.
- Near-lossless coding with a bound ``N`` quantises ``x - P`` (``P`` the rounded prediction) in
  steps of ``2N + 1`` (JPEG-LS style); every later prediction uses the reconstructed samples.

Order: anti-diagonal wavefronts ``2y + x = t`` (each depends only on earlier ones), every plane
``LAG`` wavefronts behind the one before it, so that its cross-plane features may use the earlier
planes' samples below and right of the pixel. One step decodes every sample of a wavefront of every
plane at once. All context arithmetic is on integers (int64), so both sides compute the same
probabilities; ``walk`` is the only code that visits the samples, for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LAG = 4
# Causal neighbours (dy, dx) of the plane itself, and of the two earlier planes (those may lie ahead).
OWN = ((-1, 0), (0, -1), (-1, -1), (-1, 1), (-2, 0), (0, -2), (-2, 1), (-1, -2), (-2, -1))
CROSS = ((0, 0), (-1, 0), (0, -1), (-1, -1), (-1, 1), (1, 0), (0, 1), (1, 1), (1, -1))
FEATURES = len(OWN) + 2 * len(CROSS)  # of the least-squares predictor, which also has a constant term
# Neighbours whose errors weigh the predictors and set the scale context, and their weights.
RECENT = ((-1, 0, 2), (0, -1, 2), (-1, -1, 1), (-1, 1, 1), (-2, 0, 1), (0, -2, 1))
TOP, LEFT, RIGHT, BOTTOM = 2, 2, 2, 1  # padding around every plane
FRAC = 8  # predictions in 1/8 of a sample
COEF_BITS = 12  # least-squares coefficients in 1/4096
COEF_LIMIT = 1 << 15  # they are sent as 16-bit two's-complement values
PREDICTORS = 10
LS_WEIGHT = 2  # the fitted predictor counts twice in the blend
# Scale contexts: bin k >= 1 holds activities (8-bit units, 1/8 sample) of at least THRESHOLDS[k - 1].
BINS = 36
THRESHOLDS = np.array([int(np.ceil(4 * 2 ** (k / 3))) for k in range(BINS - 1)], dtype=np.int64)
# Per plane (a, b, shift): ref = (a x[-1] + b x[-2]) >> shift, x[-1] and x[-2] the earlier planes' samples.
RULES = {1: np.array([(0, 0, 0)]), 3: np.array([(0, 0, 0), (1, 0, 0), (1, 1, 1)])}


@dataclass(frozen=True)
class Grid:
    """Flat indices of a tile's planes, stacked after two all-zero planes (the missing earlier
    planes of the first ones) and padded, and the walk's order."""

    height: int
    width: int
    planes: int

    @property
    def row(self) -> int:
        return self.width + LEFT + RIGHT

    @property
    def plane(self) -> int:
        return (self.height + TOP + BOTTOM) * self.row

    @property
    def size(self) -> int:
        return (self.planes + 2) * self.plane

    def offsets(self, neighbours, plane: int = 0) -> np.ndarray:
        return np.array([plane * self.plane + dy * self.row + dx for dy, dx, *_ in neighbours], dtype=np.int64)

    def index(self, p: int) -> np.ndarray:
        """(H, W) flat indices of plane ``p``'s samples."""
        ys, xs = np.mgrid[: self.height, : self.width]
        return (p + 2) * self.plane + (ys + TOP) * self.row + xs + LEFT

    def steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices and planes of all samples in walk order, and where each step starts."""
        ys, xs = np.mgrid[: self.height, : self.width]
        front = (2 * ys + xs).reshape(-1)
        step = np.concatenate([front + p * LAG for p in range(self.planes)])
        idx = np.concatenate([self.index(p).reshape(-1) for p in range(self.planes)])
        plane = np.repeat(np.arange(self.planes), self.height * self.width)
        order = np.argsort(step, kind="stable")
        bounds = np.searchsorted(step[order], np.arange(step.max() + 2))
        return idx[order], plane[order], bounds


def features(d: np.ndarray, idx: np.ndarray, grid: Grid) -> np.ndarray:
    """(n, FEATURES) integer features of the least-squares predictor at flat indices ``idx``."""
    offsets = np.concatenate([grid.offsets(OWN), grid.offsets(CROSS, -1), grid.offsets(CROSS, -2)])
    return d[idx[:, None] + offsets]


def reference(x: np.ndarray, idx: np.ndarray, plane: np.ndarray, grid: Grid) -> np.ndarray:
    rule = RULES[grid.planes][plane]
    return (rule[:, 0] * x[idx - grid.plane] + rule[:, 1] * x[idx - 2 * grid.plane]) >> rule[:, 2]


@dataclass
class Context:
    """What the coder needs for a batch of samples, and what the walk stores after it."""

    predictions: np.ndarray  # (PREDICTORS, n) in 1/8
    blend: np.ndarray  # (n,) in 1/8, of d
    ref: np.ndarray  # (n,)
    bins: np.ndarray  # (n,) scale contexts


def blank(grid: Grid, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed sample and ``d`` arrays of a grid; the first plane's padding in ``d`` is mid-grey."""
    x = np.zeros(grid.size, dtype=np.int64)
    d = np.zeros(grid.size, dtype=np.int64)
    d[2 * grid.plane : 3 * grid.plane] = 1 << (depth - 1)
    return x, d


class State:
    """The walk's arrays: reconstructed samples, their ``d``, and each predictor's recent errors."""

    def __init__(self, grid: Grid, depth: int, coefs: np.ndarray):
        self.grid, self.depth = grid, depth
        self.x, self.d = blank(grid, depth)
        # Position-major, so that one gather reads a neighbour's errors of every predictor together;
        # int32 holds them (below 2**21 for 16-bit samples).
        self.errors = np.zeros((grid.size, PREDICTORS), dtype=np.int32)
        self.residuals = np.zeros(grid.size, dtype=np.int64)
        self.coefs = coefs  # (planes, FEATURES + 1) integers in 1/2**COEF_BITS
        self.recent = grid.offsets(RECENT)
        self.weights = np.array([w for *_, w in RECENT], dtype=np.int32)

    def context(self, idx: np.ndarray, plane: np.ndarray) -> Context:
        g = self.grid
        f = features(self.d, idx, g)
        n, w, nw, ne, nn, ww, nne = (f[:, k] for k in range(7))
        coefs = self.coefs[plane]
        fitted = ((f * coefs[:, :-1]).sum(1) + coefs[:, -1] + (1 << (COEF_BITS - 4))) >> (COEF_BITS - 3)
        fitted = np.clip(fitted, -FRAC << (self.depth + 1), FRAC << (self.depth + 1))  # bounds the blend's products
        p = np.stack([8 * w, 8 * n, 8 * (w + n - nw), 8 * (w + ne - n), 4 * (w + ne), 8 * (n + ne - nne),
                      4 * (n + w), 8 * (2 * w - ww), 8 * (2 * n - nn), fitted])
        recent = np.einsum("njk,j->kn", self.errors[idx[:, None] + self.recent], self.weights).astype(np.int64)
        weight = (1 << 36) // ((recent >> (self.depth - 8)) + 8) ** 2 + 1  # never 0: 16-bit errors are large
        weight[-1] *= LS_WEIGHT
        blend = (weight * p).sum(0) // weight.sum(0)
        activity = self.residuals[idx[:, None] + self.recent] @ self.weights.astype(np.int64) + p.max(0) - p.min(0)
        bins = np.searchsorted(THRESHOLDS, activity >> (self.depth - 8), side="right")
        return Context(p, blend, reference(self.x, idx, plane, g), bins)

    def store(self, idx: np.ndarray, ctx: Context, x: np.ndarray) -> None:
        d = x - ctx.ref
        self.x[idx], self.d[idx] = x, d
        self.errors[idx] = np.abs(ctx.predictions - FRAC * d).T
        self.residuals[idx] = np.abs(FRAC * d - ctx.blend)


# code(idx, prediction, mean, scale) -> reconstructed samples: the encoder quantises its samples
# and records symbols, the decoder reads symbols.
Coder = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Quantiser:
    """Samples of ``depth`` bits, coded within +-``max_error`` (0: lossless)."""

    depth: int
    max_error: int

    @property
    def step(self) -> int:
        return 2 * self.max_error + 1

    @property
    def peak(self) -> int:
        return (1 << self.depth) - 1

    @property
    def limit(self) -> int:
        """The largest symbol magnitude."""
        return (self.peak + self.max_error) // self.step

    def symbols(self, x: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        e = x - prediction
        return np.sign(e) * ((np.abs(e) + self.max_error) // self.step)

    def reconstruct(self, q: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        return np.clip(prediction + q * self.step, 0, self.peak)


def walk(grid: Grid, quantiser: Quantiser, coefs: np.ndarray, scales: np.ndarray, code: Coder) -> np.ndarray:
    """Visit every sample in coding order; return the reconstructed (planes, H, W) samples.

    ``scales`` is the learned table of Laplacian scales per context bin (8-bit units).
    """
    state = State(grid, quantiser.depth, coefs)
    idx_all, plane_all, bounds = grid.steps()
    unit = float(1 << (quantiser.depth - 8)) / quantiser.step
    for start, stop in zip(bounds[:-1], bounds[1:]):
        idx, plane = idx_all[start:stop], plane_all[start:stop]
        ctx = state.context(idx, plane)
        full = np.clip(FRAC * ctx.ref + ctx.blend, 0, FRAC * quantiser.peak)
        prediction = (full + FRAC // 2) // FRAC
        mean = (full - FRAC * prediction) / (FRAC * quantiser.step)
        x = code(idx, prediction, mean, scales[ctx.bins] * unit)
        state.store(idx, ctx, x)
    return np.stack([state.x[grid.index(p)] for p in range(grid.planes)])
