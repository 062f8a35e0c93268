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
  neighbours (the idea of JPEG XL's weighted predictor), then corrected by the running mean error
  of its class (CALIC's bias cancellation). Predictions are in 1/8 of a sample.
- The Laplacian's scale is the running mean absolute error of a context (plane, the earlier
  plane's error at the pixel, and the recent final errors at the same neighbours plus the
  predictors' spread binned on a log scale), starting from a learned table
  (``weights/lossless.safetensors``) as a prior. Encoder and decoder update these statistics after
  every step of the walk, identically.
- Near-lossless coding with a bound ``N`` quantises ``x - P`` (``P`` the rounded prediction) in
  steps of ``2N + 1`` (JPEG-LS style); every later prediction uses the reconstructed samples.

Two generations of this model exist, each a ``Design`` named by the file's model name: ``lossless``
(the first; still decoded) and ``lossless-2``, which takes B against G rather than (R + G) / 2,
fits a least-squares predictor per pixel parity (row and column, even or odd: photos whose colour
was stored at half resolution, as Kodak's Photo CD scans, have parity-dependent chroma) and local
gradient class, puts the parity in the scale contexts, looks at more neighbours, splits the bias
classes further (512 sign patterns), weighs the fitted predictor 16 times in the blend, and codes
its symbols as tokens with adaptive histograms (``tokens``) rather than with Laplacians.

Order: anti-diagonal wavefronts ``2y + x = t`` (each depends only on earlier ones), every plane
``LAG`` wavefronts behind the one before it, so that its cross-plane features may use the earlier
planes' samples below and right of the pixel. One step decodes every sample of a wavefront of every
plane at once. All context arithmetic is on integers (int64), so both sides compute the same
probabilities; ``walk`` is the only code that visits the samples, for both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

LAG = 4
# Neighbours (dy, dx) of the two earlier planes around the pixel (they may lie ahead of it).
CROSS = ((0, 0), (-1, 0), (0, -1), (-1, -1), (-1, 1), (1, 0), (0, 1), (1, 1), (1, -1))
# Samples are stored skewed: pixel (y, x) of a plane at row 2y + x + LEAD, column y + TOP, so that
# a wavefront is one contiguous run and every neighbour a constant offset (a step's gathers read a
# few cache lines, not one per sample). Positions that no pixel maps to hold the padding.
LEAD, TAIL = 7, 3  # rows before the first wavefront and after the last that neighbours reach (NNWW, SE)
TOP, BOTTOM = 3, 1
FRAC = 8  # predictions in 1/8 of a sample
COEF_BITS = 12  # least-squares coefficients in 1/4096
COEF_LIMIT = 1 << 15  # they are sent as 16-bit two's-complement values
PREDICTORS = 10
ERROR_CAP = (1 << 15) - 1  # predictor errors are stored saturated (1/8 sample units)
# Scale contexts: bin k >= 1 holds activities (8-bit units, 1/8 sample) of at least THRESHOLDS[k - 1].
BINS = 36
THRESHOLDS = np.array([int(np.ceil(4 * 2 ** (k / 3))) for k in range(BINS - 1)], dtype=np.int64)
# Online statistics per context (plane, bin): the learned scale counts as the design's ``prior`` samples; counts
# halve at LIMIT, so that recent samples weigh more. Bias classes split each context by the signs of
# NW, NE, W and N against the blend (16 patterns), and with the design's ``rich_bias`` (512 patterns,
# three activity bins a class) those of NN, WW and the fitted predictor too, and the sign of the
# earlier plane's final error at the pixel.
LIMIT = 1024
CROSS_THRESHOLDS = np.array([16, 64], dtype=np.int64)  # of the earlier plane's final error at the pixel, in 1/8
CROSS_LEVELS = len(CROSS_THRESHOLDS) + 1
PARITIES = 4  # (y & 1, x & 1)


@dataclass(frozen=True)
class Design:
    """What tells the model's generations apart."""

    # The plane's own causal neighbours (dy, dx), features of the least-squares predictor; the
    # fixed predictors use the first seven (N, W, NW, NE, NN, WW, NNE).
    own: tuple[tuple[int, int], ...]
    # Neighbours (dy, dx, weight) whose errors weigh the predictors and make the activity.
    recent: tuple[tuple[int, int, int], ...]
    # Per plane of an RGB tile (a, b, shift): ref = (a x[-1] + b x[-2]) >> shift, x[-1] and x[-2]
    # the earlier planes' samples.
    rules: tuple[tuple[int, int, int], ...]
    # Least-squares coefficient sets per plane: one per gradient class (|N - NW| + |W - NW| + |NE - N|
    # against these thresholds, 8-bit units), times PARITIES with ``parity``.
    gradients: tuple[int, ...] = ()
    parity: bool = False  # parity also splits the scale contexts
    # The coefficients in the stream: each a 16-bit symbol (False), or per feature a bit length and
    # every plane's and set's coefficient in that many bits and a sign (``codec``).
    packed: bool = False
    prior: int = 16  # how many samples the learned scale of a context counts as
    tokens: bool = False  # the symbols' distributions: Laplacians (False) or histograms (``tokens``)
    rich_bias: bool = False
    ls_weight: int = 4  # how many times the fitted predictor counts in the blend
    features: int = field(init=False)
    classes: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "features", len(self.own) + 2 * len(CROSS))  # and a constant term
        object.__setattr__(self, "classes", (len(self.gradients) + 1) * (PARITIES if self.parity else 1))

    def plane_rules(self, planes: int) -> tuple[tuple[int, int, int], ...]:
        return self.rules if planes == 3 else ((0, 0, 0),)


OWN_1 = ((-1, 0), (0, -1), (-1, -1), (-1, 1), (-2, 0), (0, -2), (-2, 1), (-1, -2), (-2, -1))
DESIGNS = {
    "lossless": Design(OWN_1, ((-1, 0, 2), (0, -1, 2), (-1, -1, 1), (-1, 1, 1), (-2, 0, 1), (0, -2, 1)),
                       ((0, 0, 0), (1, 0, 0), (1, 1, 1))),
    "lossless-2": Design(OWN_1 + ((-2, -2), (-2, 2), (0, -3), (-3, 0)),
                         ((-1, 0, 2), (0, -1, 2), (-1, -1, 1), (-1, 1, 1), (-2, 0, 2), (0, -2, 2), (-2, -2, 1), (-2, 2, 1)),
                         ((0, 0, 0), (1, 0, 0), (0, 1, 0)), gradients=(16,), parity=True, packed=True, prior=4, tokens=True,
                         rich_bias=True, ls_weight=16),
}


@dataclass(frozen=True)
class Grid:
    """Flat indices of a tile's planes, stacked after two all-zero planes (the missing earlier
    planes of the first ones), padded and skewed, and the walk's order."""

    height: int
    width: int
    planes: int
    design: Design

    @property
    def row(self) -> int:
        return self.height + TOP + BOTTOM

    @property
    def plane(self) -> int:
        return (2 * self.height + self.width - 2 + LEAD + TAIL) * self.row

    @property
    def size(self) -> int:
        return (self.planes + 2) * self.plane

    def offsets(self, neighbours, plane: int = 0) -> np.ndarray:
        return np.array([plane * self.plane + (2 * dy + dx) * self.row + dy for dy, dx, *_ in neighbours], dtype=np.int64)

    @functools.cached_property
    def feature_offsets(self) -> np.ndarray:
        return np.concatenate([self.offsets(self.design.own), self.offsets(CROSS, -1), self.offsets(CROSS, -2)])

    def parity(self, idx: np.ndarray) -> np.ndarray:
        """2 (y & 1) + (x & 1) of the pixels at flat indices ``idx``."""
        row, column = np.divmod(idx % self.plane, self.row)
        return 2 * ((column - TOP) & 1) + ((row - LEAD) & 1)

    def ls_class(self, f: np.ndarray, parity: np.ndarray, depth: int) -> np.ndarray:
        """Which least-squares coefficient set predicts the samples of features ``f`` and ``parity``."""
        design = self.design
        n, w, nw, ne = (f[:, k].astype(np.int64) for k in range(4))
        gradient = (np.abs(n - nw) + np.abs(w - nw) + np.abs(ne - n)) >> (depth - 8)
        cls = np.searchsorted(np.array(design.gradients, dtype=np.int64), gradient, side="right")
        return cls * PARITIES + parity if design.parity else cls

    def index(self, p: int) -> np.ndarray:
        """(H, W) flat indices of plane ``p``'s samples."""
        ys, xs = np.mgrid[: self.height, : self.width]
        return (p + 2) * self.plane + (2 * ys + xs + LEAD) * self.row + ys + TOP

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
    return d[idx[:, None] + grid.feature_offsets]


def segments(plane: np.ndarray, planes: int) -> list[slice]:
    """Where each plane's samples lie in a batch sorted by plane (every step of the walk is)."""
    cuts = [0, *np.searchsorted(plane, np.arange(1, planes)), plane.size]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def reference(x: np.ndarray, idx: np.ndarray, parts: list[slice], grid: Grid) -> np.ndarray:
    """The samples ``d`` is taken against, at ``idx`` (in plane segments ``parts``)."""
    ref = np.zeros(idx.size, dtype=np.int64)
    for (a, b, shift), part in zip(grid.design.plane_rules(grid.planes), parts):
        if a or b:
            ref[part] = (a * x[idx[part] - grid.plane] + b * x[idx[part] - 2 * grid.plane]) >> shift
    return ref


@dataclass
class Context:
    """What the coder needs for a batch of samples, and what the walk stores after it."""

    predictions: np.ndarray  # (PREDICTORS, n) in 1/8
    blend: np.ndarray  # (n,) in 1/8, of d, bias-corrected
    ref: np.ndarray  # (n,)
    bins: np.ndarray  # (n,) activity bins
    contexts: np.ndarray  # (n,) plane * BINS + bin
    classes: np.ndarray  # (n,) bias classes: (coarser) contexts times sign patterns
    scale: np.ndarray  # (n,) float64 Laplacian scale in samples


def blank(grid: Grid, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed sample and ``d`` arrays of a grid; the first plane's padding in ``d`` is mid-grey."""
    x = np.zeros(grid.size, dtype=np.int32)
    d = np.zeros(grid.size, dtype=np.int32)
    d[2 * grid.plane : 3 * grid.plane] = 1 << (depth - 1)
    return x, d


class State:
    """The walk's arrays: reconstructed samples, their ``d``, and each predictor's recent errors."""

    def __init__(self, grid: Grid, depth: int, coefs: np.ndarray, scales: np.ndarray):
        self.grid, self.depth = grid, depth
        self.parities = PARITIES if grid.design.parity else 1
        contexts = grid.planes * CROSS_LEVELS * self.parities * BINS
        self.spread = np.round(np.tile(scales, contexts // BINS) * (FRAC << (depth - 8)) * grid.design.prior).astype(np.int64)
        self.count = np.full(contexts, grid.design.prior, dtype=np.int64)
        self.patterns = 512 if grid.design.rich_bias else 16
        self.bias = np.zeros(contexts * self.patterns, dtype=np.int64)
        self.bias_count = np.ones(contexts * self.patterns, dtype=np.int64)
        self.x, self.d = blank(grid, depth)
        # Position-major, so that one gather reads a neighbour's errors of every predictor together;
        # saturated at ERROR_CAP (8-bit samples never reach it) to fit int16: the arrays of a tile of
        # 1024 x 1024 take about 400 MB.
        self.errors = np.zeros((grid.size - 2 * grid.plane, PREDICTORS), dtype=np.int16)  # real planes only
        self.residuals = np.zeros(grid.size, dtype=np.int32)
        self.signed = np.zeros(grid.size, dtype=np.int32)
        coefs = coefs.reshape(-1, grid.design.features + 1)  # (planes x classes, features + 1)
        self.coefs = coefs[:, :-1].astype(np.float64)  # integers in 1/2**COEF_BITS
        self.constants = coefs[:, -1].astype(np.int64)
        self.recent = grid.offsets(grid.design.recent)
        self.weights = np.array([w for *_, w in grid.design.recent], dtype=np.int32)
        self.weights_64 = self.weights.astype(np.int64)

    def context(self, idx: np.ndarray, plane: np.ndarray) -> Context:
        g = self.grid
        f = features(self.d, idx, g)
        n, w, nw, ne, nn, ww, nne = (f[:, k] for k in range(7))
        parts = segments(plane, g.planes)
        parity = g.parity(idx) if g.design.parity else None
        sets = plane * g.design.classes + g.ls_class(f, parity, self.depth)
        # Integer products below 2**32, at most 36 of them: exact in float64 in any order of summation.
        dot = (f * self.coefs[sets]).sum(1)
        fitted = (dot.astype(np.int64) + self.constants[sets] + (1 << (COEF_BITS - 4))) >> (COEF_BITS - 3)
        fitted = np.clip(fitted, -FRAC << (self.depth + 1), FRAC << (self.depth + 1))  # bounds the blend's products
        p = np.stack([8 * w, 8 * n, 8 * (w + n - nw), 8 * (w + ne - n), 4 * (w + ne), 8 * (n + ne - nne),
                      4 * (n + w), 8 * (2 * w - ww), 8 * (2 * n - nn), fitted])
        own = idx - 2 * g.plane
        recent = np.zeros(p.shape, dtype=np.int64)
        for offset, weight in zip(self.recent, self.weights):  # faster than one gather and einsum
            recent += weight * self.errors[own + offset].T.astype(np.int32)  # int16 times a scalar stays int16
        weight = (1 << 36) // ((recent >> (self.depth - 8)) + 8) ** 2 + 1  # never 0: 16-bit errors are large
        weight[-1] *= g.design.ls_weight
        blend = (weight * p).sum(0) // weight.sum(0)
        activity = self.residuals[idx[:, None] + self.recent] @ self.weights_64 + p.max(0) - p.min(0)
        bins = np.searchsorted(THRESHOLDS, activity >> (self.depth - 8), side="right")
        cross = self.residuals[idx - g.plane] >> (self.depth - 8)  # the earlier plane's error here (0 for the first)
        contexts = plane * CROSS_LEVELS + np.searchsorted(CROSS_THRESHOLDS, cross, side="right")
        if self.parities > 1:
            contexts = contexts * self.parities + parity
        contexts = contexts * BINS + bins
        pattern = 8 * (FRAC * nw > blend) + 4 * (FRAC * ne > blend) + 2 * (FRAC * w > blend) + (FRAC * n > blend)
        if g.design.rich_bias:
            earlier = self.signed[idx - g.plane]
            pattern += (16 * (FRAC * nn > blend) + 32 * (FRAC * ww > blend) + 64 * (p[-1] > blend)
                        + 128 * (earlier > 0) + 256 * (earlier < 0))
            classes = (contexts - bins + bins // 3) * self.patterns + pattern
        else:
            classes = contexts * self.patterns + pattern
        blend += (2 * self.bias[classes] + self.bias_count[classes]) // (2 * self.bias_count[classes])
        count = self.count[contexts]
        scale = np.maximum(self.spread[contexts], count // 2) / (FRAC * count)  # at least 1/16 of a sample
        return Context(p, blend, reference(self.x, idx, parts, g), bins, contexts, classes, scale)

    def store(self, idx: np.ndarray, ctx: Context, x: np.ndarray) -> None:
        d = x - ctx.ref
        self.x[idx], self.d[idx] = x, d
        self.errors[idx - 2 * self.grid.plane] = np.minimum(np.abs(ctx.predictions - FRAC * d), ERROR_CAP).T
        residual = FRAC * d - ctx.blend
        self.residuals[idx] = np.abs(residual)
        self.signed[idx] = residual
        accumulate(self.spread, self.count, ctx.contexts, np.abs(residual))
        accumulate(self.bias, self.bias_count, ctx.classes, residual)


def accumulate(total: np.ndarray, count: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """Add integer ``values`` to ``total`` and one to ``count`` at ``index``; halve both where the
    count reaches LIMIT (only entries touched now can)."""
    touched, inverse = np.unique(index, return_inverse=True)
    total[touched] += np.bincount(inverse, values).astype(np.int64)  # sums of integers: exact
    count[touched] += np.bincount(inverse)
    full = touched[count[touched] >= LIMIT]
    total[full] >>= 1
    count[full] >>= 1


@dataclass
class Batch:
    """One step's samples as the coder sees them: symbol q = quantised (x - prediction), and its
    Laplacian (centre ``mean``, ``scale``, both in steps of 2 max_error + 1)."""

    idx: np.ndarray  # flat indices
    plane: np.ndarray
    prediction: np.ndarray  # integer prediction of x
    mean: np.ndarray
    scale: np.ndarray
    bins: np.ndarray  # activity bins (for fitting the table)


# code(batch) -> reconstructed samples: the encoder quantises its samples and records symbols, the
# decoder reads symbols.
Coder = Callable[[Batch], np.ndarray]


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

    ``scales`` is the learned table of Laplacian scales per activity bin (8-bit units), the prior
    of the online statistics.
    """
    state = State(grid, quantiser.depth, coefs, scales)
    idx_all, plane_all, bounds = grid.steps()
    for start, stop in zip(bounds[:-1], bounds[1:]):
        idx, plane = idx_all[start:stop], plane_all[start:stop]
        ctx = state.context(idx, plane)
        full = np.clip(FRAC * ctx.ref + ctx.blend, 0, FRAC * quantiser.peak)
        prediction = (full + FRAC // 2) // FRAC
        mean = (full - FRAC * prediction) / (FRAC * quantiser.step)
        x = code(Batch(idx, plane, prediction, mean, ctx.scale / quantiser.step, ctx.bins))
        state.store(idx, ctx, x)
    return np.stack([state.x[grid.index(p)] for p in range(grid.planes)])
