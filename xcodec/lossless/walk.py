"""The sample-exact context model and its walk, shared by the encoder and the decoder.

A tile's planes (G, R, B; or one gray plane) are coded sample by sample in the pixel domain, every
sample ``x`` as an integer symbol ``q`` with a Laplacian whose centre and scale come from samples
already decoded:

- Each plane is predicted in a *difference* domain ``d = x - ref``: ``ref`` is 0 for the first
  plane, G for R and ``(R + G) >> 1`` for B (the same samples the decoder already has), so the
  colour decorrelation costs no transform and the error bound of near-lossless coding holds on the
  samples themselves.
- Ten predictors of ``d`` (four in ``lossless-3``: W, N, W + NE - N, ...; the last one a linear
  predictor whose integer coefficients the encoder fits to the tile by least squares and sends, on
  the plane's causal neighbours and on the two earlier planes' ``d`` around the same pixel) are blended with
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

Three generations of this model exist, each a ``Design`` named by the file's model name: ``lossless``
(the first; still decoded) and ``lossless-2``, which takes B against G rather than (R + G) / 2,
fits a least-squares predictor per pixel parity (row and column, even or odd: photos whose colour
was stored at half resolution, as Kodak's Photo CD scans, have parity-dependent chroma) and local
gradient class, puts the parity in the scale contexts, looks at more neighbours, splits the bias
classes further (512 sign patterns), weighs the fitted predictor 16 times in the blend, and codes
its symbols as tokens with adaptive histograms (``tokens``) rather than with Laplacians. The third,
``lossless-3`` (what encoders write), is ``lossless-2`` made cheaper to decode: three fixed
predictors rather than nine (W, N, W + NE - N), the earlier planes' five nearest samples rather
than nine as features of the fitted one, six recent neighbours rather than eight (not those at
(-2, -2) and (-2, 2)), tokens of two bits an octave above 8 rather than four above 16 (35
symbols rather than 63 for 8-bit samples: the coder's distributions are built per symbol), and
the tile's top and bottom halves coded side by side (``Design.strips``): about 30% fewer steps,
whose fixed per-step work (numpy's, per call) is about a third of the decoding.

Order: anti-diagonal wavefronts ``2y + x = t`` (each depends only on earlier ones), every plane
``LAG`` wavefronts behind the one before it, so that its cross-plane features may use the earlier
planes' samples below and right of the pixel. One step decodes every sample of a wavefront of every
plane (and of every strip, ``y`` counted from the strip's first row) at once. All context arithmetic is on integers (int64), so both sides compute the same
probabilities; ``walk`` is the only code that visits the samples, for both. What follows from the
samples alone (the predictions, their blend, spread and sign pattern: ``Prediction``) a lossless
encoder, which knows every sample, computes for the whole tile ahead in the image's own layout
(``State.foresee``), with the functions the decoder applies to each step; only what depends on the
walk's own past (the final errors, the online statistics, the coder) goes step by step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .tokens import Alphabet

LAG = 4
# Neighbours (dy, dx) of the two earlier planes around the pixel (they may lie ahead of it).
CROSS = ((0, 0), (-1, 0), (0, -1), (-1, -1), (-1, 1), (1, 0), (0, 1), (1, 1), (1, -1))
CROSS_5 = CROSS[:3] + CROSS[5:7]  # the pixel and its four nearest
# Samples are stored skewed, in an array of (row, column, slot) positions: pixel (y, x) of plane p
# at row 2y + x + LAG p + LEAD, column y + TOP, slot p + 2 (slots 0 and 1 are the all-zero planes
# before the first, the missing earlier planes of the first ones). So one step of the walk is one
# row, its samples of every plane side by side, and every neighbour, in the plane or in an earlier
# one, lies at a constant shift: a step reads its cells in one gather and the predictors' errors as
# slices. Positions that no pixel maps to hold the padding. Each position holds FIELDS cells (in
# FIELDS arrays): the reconstructed sample, its d, and its final error, unsigned and signed. The
# walk keeps only the last rows (``WINDOW``, ``State.slide``): its reads reach LEAD rows back.
FIELDS = 4
X, D, RESIDUAL, SIGNED = range(FIELDS)
LEAD = 2 * LAG + 3  # rows before the first step that the neighbours reach (the plane two before, NW)
TOP, BOTTOM = 3, 1
FRAC_BITS = 3
FRAC = 1 << FRAC_BITS  # predictions in 1/8 of a sample
COEF_BITS = 12  # least-squares coefficients in 1/4096
COEF_LIMIT = 1 << 15  # they are sent as 16-bit two's-complement values
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
# Which of N, W, NW, NE, NN, WW (0..5) make the gradient (pairs: |N - NW| + |W - NW| + |NE - N|) and,
# compared with the blend, the bias class (bits 8, 4, 2, 1, 16, 32; the last two with ``rich_bias``).
GRADIENT = [0, 2, 1, 2, 3, 0]
PATTERN = [2, 3, 1, 0, 4, 5]
PATTERN_BITS = np.array([8, 4, 2, 1, 16, 32], dtype=np.int64)
SIGN_BITS = np.array([256, 0, 128], dtype=np.int64)  # of the earlier plane's final error (negative, 0, positive), ``rich_bias``
# The fixed predictors (all but the last, the fitted one) on the features N, W, NW, NE, NN, WW, NNE, times FRAC.
FIXED = np.array([[0, 8, 0, 0, 0, 0, 0], [8, 0, 0, 0, 0, 0, 0], [8, 8, -8, 0, 0, 0, 0], [-8, 8, 0, 8, 0, 0, 0],
                  [0, 4, 0, 4, 0, 0, 0], [8, 0, 0, 8, 0, 0, -8], [4, 4, 0, 0, 0, 0, 0], [0, 16, 0, 0, 0, -8, 0],
                  [16, 0, 0, 0, -8, 0, 0]], dtype=np.float64)


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
    alphabet: Alphabet = Alphabet()  # the histograms' tokens
    rich_bias: bool = False
    ls_weight: int = 4  # how many times the fitted predictor counts in the blend
    fixed: tuple[int, ...] = tuple(range(len(FIXED)))  # which of the FIXED predictors (rows) it blends
    # Neighbours (dy, dx) of the plane one back and of the plane two back, features of the fitted predictor.
    cross: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] = (CROSS, CROSS)
    # The tile's rows, split into this many strips (of an even number of rows, at least MIN_STRIP),
    # are coded side by side: one step of the walk holds the wavefront of every strip, and fewer steps
    # cost less (a step's work is mostly per step); they share the statistics and coefficients.
    strips: int = 1
    features: int = field(init=False)
    classes: int = field(init=False)
    predictors: int = field(init=False)  # the fixed ones and the fitted one

    def __post_init__(self):
        object.__setattr__(self, "features", len(self.own) + sum(map(len, self.cross)))  # and a constant term
        object.__setattr__(self, "predictors", len(self.fixed) + 1)
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
    "lossless-3": Design(OWN_1 + ((-2, -2), (-2, 2), (0, -3), (-3, 0)),
                         ((-1, 0, 2), (0, -1, 2), (-1, -1, 1), (-1, 1, 1), (-2, 0, 2), (0, -2, 2)),
                         ((0, 0, 0), (1, 0, 0), (0, 1, 0)), gradients=(16,), parity=True, packed=True, prior=4, tokens=True,
                         rich_bias=True, ls_weight=16, fixed=(0, 1, 3), cross=(CROSS_5, CROSS_5), alphabet=Alphabet(8, 2), strips=2),
}


@dataclass(frozen=True)
class Step:
    """One step of the walk: its samples in coding order (by plane, then y), ``at`` their positions
    in the raveled (row, column, slot) grid (all in grid row ``row``, columns ``start`` to
    ``stop``), ``order`` in the raveled (columns, planes) block of that row, ``plane`` and
    ``parity`` (x = front - 2y, and LAG is even) theirs, and ``lane`` both (plane PARITIES +
    parity); plane p's samples are ``segments[p]``."""

    row: int
    start: int
    stop: int
    order: np.ndarray
    at: np.ndarray
    plane: np.ndarray
    parity: np.ndarray
    lane: np.ndarray
    segments: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Grid:
    """The layout of a tile's planes in the walk's (row, column, slot) arrays, and the walk's order."""

    height: int
    width: int
    planes: int
    design: Design

    @functools.cached_property
    def strip_starts(self) -> np.ndarray:
        """The first row of every strip (even: pixels keep their parity), then the tile's height."""
        count = max(1, min(self.design.strips, self.height // MIN_STRIP))
        return np.array([2 * ((k * self.height) // (2 * count)) for k in range(count)] + [self.height])

    @functools.cached_property
    def strip_of(self) -> np.ndarray:
        """The strip of every row."""
        return np.repeat(np.arange(self.strip_starts.size - 1), np.diff(self.strip_starts))

    @functools.cached_property
    def image_rows(self) -> np.ndarray:
        """Where every row lies in the image layout (``padded``): its strip after PAD rows of padding
        and PAD more after each strip before it."""
        return np.arange(self.height) + PAD + 2 * PAD * self.strip_of

    @property
    def fronts(self) -> int:
        return 2 * int(np.diff(self.strip_starts).max()) + self.width - 2  # wavefronts 2y + x of a strip's plane

    @property
    def shape(self) -> tuple[int, int, int]:
        columns = self.height + (TOP + BOTTOM) * (self.strip_starts.size - 1)  # strips GAP columns apart
        return self.fronts + (self.planes - 1) * LAG + LEAD, columns + TOP + BOTTOM, self.planes + 2

    def shifts(self, neighbours, plane: int = 0) -> list[tuple[int, int, int]]:
        """(row, column, slot) shifts of neighbours (dy, dx) in the plane ``-plane`` planes back (0: its own)."""
        return [(2 * dy + dx + plane * LAG, dy, plane) for dy, dx, *_ in neighbours]

    @functools.cached_property
    def feature_sources(self) -> list[tuple[int, int, int, int]]:
        """The least-squares predictor's features, (dy, dx, plane back, field) from each sample:
        the plane's own neighbours' d, then the two earlier planes'."""
        return [(dy, dx, 0, D) for dy, dx in self.design.own] + [(dy, dx, -k, D) for k in (1, 2) for dy, dx in self.design.cross[k - 1]]

    def ls_class(self, gradient: np.ndarray, parity: np.ndarray, depth: int) -> np.ndarray:
        """Which least-squares coefficient set predicts samples of ``gradient`` (|N - NW| + |W - NW|
        + |NE - N| in ``d``) and ``parity`` (2 (y & 1) + (x & 1))."""
        design = self.design
        v = gradient >> (depth - 8)
        cls = np.zeros_like(v)
        for edge in design.gradients:  # one or two: compares cost less than a search
            cls += v >= edge
        return cls * PARITIES + parity if design.parity else cls

    def fronts_of(self, plane: int) -> tuple[np.ndarray, np.ndarray]:
        """First and last y of plane ``plane``'s wavefront of every strip at every step, (steps,
        strips) (first > last: none)."""
        f = np.arange(self.shape[0] - LEAD)[:, None] - plane * LAG
        top, sizes = self.strip_starts[:-1], np.diff(self.strip_starts)
        first = np.maximum(0, (f - self.width + 2) // 2)
        last = np.where(f < 0, -1, np.minimum(sizes - 1, f // 2))
        return first + top, last + top

    @functools.cached_property
    def layout(self) -> tuple[list[Step], np.ndarray]:
        """The walk's steps that hold samples (built for all steps at once, then split), and where
        each sample, in coding order (by step, plane, strip, then y), lies in the tile's raveled
        (planes, H, W) samples."""
        first, last = (np.stack(ends, 1) for ends in zip(*(self.fronts_of(p) for p in range(self.planes))))
        fronts = np.flatnonzero((first <= last).any((1, 2)))
        first, last = first[fronts], last[fronts]  # (steps, planes, strips)
        count = np.maximum(last - first + 1, 0)
        gap = (TOP + BOTTOM) * np.arange(count.shape[2])  # each strip's columns start after the one before
        start = np.where(count > 0, first + gap, self.shape[1]).min((1, 2))
        stop = np.where(count > 0, last + 1 + gap, 0).max((1, 2))
        flat = count.reshape(-1)
        ys = np.arange(flat.sum()) - np.repeat(np.cumsum(flat) - flat - first.reshape(-1), flat)
        step, lane = np.divmod(np.repeat(np.arange(flat.size), flat), self.planes * count.shape[2])
        plane, strip = np.divmod(lane, count.shape[2])
        columns = ys + gap[strip]
        at = ((fronts[step] + LEAD) * self.shape[1] + columns + TOP) * self.shape[2] + 2 + plane
        order = (columns - start[step]) * self.planes + plane
        ends = np.cumsum(count.sum(2), 1)
        bounds = np.concatenate([np.zeros((ends.shape[0], 1), dtype=np.int64), ends], 1).tolist()
        xs = fronts[step] - plane * LAG - 2 * (ys - self.strip_starts[strip])
        parities = parity(ys, xs)
        split = [np.split(a, np.cumsum(ends[:, -1])[:-1]) for a in (order, at, plane, parities, plane * PARITIES + parities)]
        steps = [Step(int(t) + LEAD, int(a) + TOP, int(b) + TOP, *arrays, tuple(zip(ends[:-1], ends[1:])))
                 for t, a, b, ends, *arrays in zip(fronts, start, stop, bounds, *split)]
        return steps, (plane * self.height + ys) * self.width + xs

    @property
    def walk_steps(self) -> list[Step]:
        return self.layout[0]

    @property
    def order(self) -> np.ndarray:
        """Where each sample of the walk, in coding order, lies in the tile's raveled (planes, H, W) samples."""
        return self.layout[1]

    def rule_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The planes' reference rules (a, b, shift) as arrays over planes."""
        return tuple(np.array(column, dtype=np.int64) for column in zip(*self.design.plane_rules(self.planes)))


def gradient(features: np.ndarray) -> np.ndarray:
    """|N - NW| + |W - NW| + |NE - N| of features (N, W, NW, NE, ...) along the first axis."""
    pairs = features[GRADIENT]
    return np.abs(pairs[0::2] - pairs[1::2]).sum(0)


def clamp(a: np.ndarray, low, high) -> np.ndarray:
    """``np.clip``, without its overhead."""
    return np.minimum(np.maximum(a, low), high)


def parity(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """2 (y & 1) + (x & 1): which least-squares sets and scale contexts pixels (y, x) take."""
    return 2 * (ys & 1) + (xs & 1)


def reference(earlier: np.ndarray, before: np.ndarray, a, b, shift) -> np.ndarray:
    """The samples ``d`` is taken against, from the earlier planes' samples at the same pixels
    (``earlier`` one plane back, ``before`` two) and the planes' rules (scalars or arrays)."""
    return (a * earlier + b * before) >> shift


def padded(samples: np.ndarray, grid: Grid, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """A tile's (planes, H, W) samples and their d in the image's own layout, what a lossless
    encoder knows ahead: (planes + 2, H + 2 PAD strips, W + 2 PAD) arrays, the planes after two
    zero ones, every strip's rows (``Grid.image_rows``) padded as in the cells (``blank``)."""
    planes, height, width = samples.shape
    x = np.zeros((planes + 2, height + 2 * PAD * (grid.strip_starts.size - 1), width + 2 * PAD), dtype=np.int32)
    inner = (grid.image_rows, slice(PAD, PAD + width))
    x[(slice(2, None), *inner)] = samples
    d = np.zeros_like(x)
    d[2] = 1 << (depth - 1)
    rules = (rule[:, None, None] for rule in grid.rule_arrays())
    d[(slice(2, None), *inner)] = samples - reference(x[(slice(1, -1), *inner)], x[(slice(0, -2), *inner)], *rules)
    return x, d


def band_reads(image: tuple[np.ndarray, np.ndarray], sources, top: int, rows: int) -> np.ndarray:
    """(sources, planes x rows x W) reads (dy, dx, plane back, field D or X) of the samples of the
    image layout's rows ``top`` to ``top + rows`` (of one strip) of a ``padded`` tile, plane by plane."""
    x, d = image
    planes, width = x.shape[0] - 2, x.shape[2] - 2 * PAD
    fields = {D: d, X: x}
    reads = np.stack([fields[field][2 + k : 2 + k + planes, top + dy : top + dy + rows,
                                    PAD + dx : PAD + dx + width] for dy, dx, k, field in sources])
    return reads.reshape(len(sources), -1)


@dataclass
class Prediction:
    """What the samples alone tell of a step's samples (a lossless encoder knows them all, and
    computes this for many steps at a time), in coding order."""

    predictions: np.ndarray | None  # (predictors, samples) in 1/8; None where no errors are kept
    blend: np.ndarray  # in 1/8, of d, before the bias correction
    spread: np.ndarray  # the largest prediction less the smallest
    pattern: np.ndarray  # the bias class's sign bits that the samples decide
    ref: np.ndarray


@dataclass
class Context:
    """What the coder needs for a step's samples, and what the walk stores after them, in coding order."""

    predictions: np.ndarray | None  # as ``Prediction``'s
    blend: np.ndarray  # in 1/8, of d, bias-corrected
    ref: np.ndarray
    bins: np.ndarray  # activity bins
    contexts: np.ndarray  # plane * BINS + bin
    classes: np.ndarray  # bias classes: (coarser) contexts times sign patterns
    scale: np.ndarray  # float64 Laplacian scale in samples


def blank(cells: np.ndarray, depth: int) -> np.ndarray:
    """Zero (FIELDS, rows, columns, slots) cells; the first plane's padding in ``d`` is mid-grey."""
    cells[...] = 0
    cells[D, :, :, 2] = 1 << (depth - 1)
    return cells


def bin_table(thresholds: np.ndarray) -> np.ndarray:
    """The bin (``thresholds.searchsorted(v, side="right")``) of every v up to the last threshold:
    a lookup of v capped there costs less than a search."""
    return thresholds.searchsorted(np.arange(thresholds[-1] + 1), side="right")


def weight_table(size: int, depth: int) -> np.ndarray:
    """The blend's weight 2**36 // (E + 8)**2 + 1 of every recent error E (E >> (depth - 8) in
    8-bit units) below ``size``."""
    e = np.arange(size, dtype=np.int64) >> (depth - 8)
    return (1 << 36) // (e + 8) ** 2 + 1  # never 0: 16-bit errors are large


WINDOW = 64  # grid rows the walk's arrays hold beyond the LEAD rows its reads reach back
BAND = 1 << 15  # samples of the rows a lossless encoder predicts at a time
PAD = 3  # the image layout's padding: no neighbour lies further away
MIN_STRIP = 8  # rows


class State:
    """The walk's arrays: every position's cells (reconstructed sample, ``d``, and the final
    error, unsigned and signed) and each predictor's error there; and the online statistics. A
    step's arrays hold its samples in coding order: it reads their neighbours' cells in one gather."""

    def __init__(self, grid: Grid, depth: int, coefs: np.ndarray, scales: np.ndarray, errors: bool = True):
        """``errors``: keep the predictors' errors, for ``step_prediction`` (not for ``foresee``)."""
        self.grid, self.depth = grid, depth
        design = grid.design
        self.parities = PARITIES if design.parity else 1
        contexts = grid.planes * CROSS_LEVELS * self.parities * BINS
        self.spread = np.round(np.tile(scales, contexts // BINS) * (FRAC << (depth - 8)) * design.prior).astype(np.int64)
        self.count = np.full(contexts, design.prior, dtype=np.int64)
        self.patterns = 512 if design.rich_bias else 16
        pattern_bits = PATTERN_BITS if design.rich_bias else np.where(PATTERN_BITS < 16, PATTERN_BITS, 0)
        self.sign_bits = np.zeros(len(PATTERN), dtype=np.uint8)  # of the features N, W, NW, NE, NN, WW
        self.sign_bits[PATTERN] = pattern_bits
        self.bias = np.zeros(contexts * self.patterns, dtype=np.int64)
        self.bias_count = np.ones(contexts * self.patterns, dtype=np.int64)
        rows, columns, slots = grid.shape
        # The cells and errors of the last ``rows`` grid rows, from grid row ``first`` on (``enter``).
        self.rows, self.first = min(rows, WINDOW + LEAD), 0
        self.cells = blank(np.empty((FIELDS, self.rows, columns, slots), dtype=np.int32), depth)
        # Saturated at ERROR_CAP (8-bit samples never reach it) to fit int16.
        self.errors = np.zeros((design.predictors, self.rows if errors else 0, columns, grid.planes), dtype=np.int16)  # real planes
        self.row_cells = columns * slots  # of a field
        # Per plane, the fixed predictors' and every least-squares set's coefficients on the
        # features and a constant 1, in 1/8 of a sample: the fitted prediction is the floor of its
        # row's product, the set's integer coefficients / 2**(COEF_BITS - 3) and constant
        # (c + 2**(COEF_BITS - 4)) / 2**(COEF_BITS - 3), exact in float64.
        coefs = coefs.reshape(grid.planes, design.classes, design.features + 1).astype(np.float64)
        coefs[..., -1] += 1 << (COEF_BITS - 4)
        fixed = np.zeros((grid.planes, len(design.fixed), design.features + 1))
        fixed[..., : FIXED.shape[1]] = FIXED[list(design.fixed)]
        self.matrix = np.concatenate([fixed, coefs / (1 << (COEF_BITS - 3))], 1)
        recent = sorted(design.recent, key=lambda n: n[2])  # neighbours of equal weight together
        weights = [w for *_, w in recent]
        self.groups = [(w, weights.index(w), len(weights) - weights[::-1].index(w)) for w in sorted(set(weights))]
        self.recent = [(dy, dx) for dy, dx, _ in recent]
        self.weight_of = weight_table(sum(weights) * ERROR_CAP + 1, depth)
        # The bins of activities and of the earlier plane's final errors a, by lookup: those of
        # a >> (depth - 8) (a >= t << s: a >> s >= t); the cross levels times their contexts' stride.
        self.bin_of, self.cross_of = bin_table(THRESHOLDS), bin_table(CROSS_THRESHOLDS) * (self.parities * BINS)
        self.rules = np.stack(grid.rule_arrays()).astype(np.int32)  # (a, b, shift) by plane, of int32 samples
        self.bias_bins = np.arange(BINS) // 3  # the activity bins of a bias class, with ``rich_bias``
        # Each (plane, parity)'s scale context of the lowest activity and cross level.
        self.context_base = ((np.arange(grid.planes)[:, None] * CROSS_LEVELS * self.parities
                              + np.arange(PARITIES) * design.parity) * BINS).reshape(-1)
        # What a step reads of the cells, (dy, dx, plane back, field) from each sample: the
        # features' d, the earlier planes' samples at the pixel, then what the walk's own past
        # decides (from ``sequential`` on): the recent neighbours' final errors and the earlier
        # plane's final error (unsigned, signed); as offsets from the sample's own cell.
        self.sources = (grid.feature_sources + [(0, 0, -1, X), (0, 0, -2, X)]
                        + [(dy, dx, 0, RESIDUAL) for dy, dx in self.recent] + [(0, 0, -1, RESIDUAL), (0, 0, -1, SIGNED)])
        self.sequential = design.features + 2
        self.offsets = np.array([((field * self.rows + r) * columns + c) * slots + s
                                 for (dy, dx, k, field) in self.sources for r, c, s in grid.shifts([(dy, dx)], k)])[:, None]
        self.recent_weights = np.array(weights, dtype=np.int32)  # of int32 errors: no casts
        self.at = np.zeros(0, dtype=np.int64)

    def predictors(self, reads: np.ndarray, parity: np.ndarray, segments) -> np.ndarray:
        """(predictors, n) predictions of d in 1/8 from (reads, n) reads at pixels of ``parity``,
        those of plane p at ``segments[p]`` (start, stop)."""
        g, n, features = self.grid, reads.shape[1], self.grid.design.features
        f = np.empty((features + 1, n))
        f[:-1], f[-1] = reads[:features], 1
        # Integer products below 2**32 (in 1/2**9 for the fitted one), at most 36 of them: exact in
        # float64 in any order of summation.
        out = np.empty((self.matrix.shape[1], n))
        for plane, (start, stop) in enumerate(segments):
            if start < stop:
                np.matmul(self.matrix[plane], f[:, start:stop], out=out[:, start:stop])
        fixed = len(g.design.fixed)
        p = np.empty((fixed + 1, n), dtype=np.int32)  # below 2**22 in 1/8 of 16-bit samples
        p[:-1] = out[:fixed]
        sets = g.ls_class(gradient(reads), parity, self.depth) + fixed
        fitted = np.floor(out.take(sets * n + np.arange(n)))
        p[-1] = clamp(fitted, -FRAC << (self.depth + 1), FRAC << (self.depth + 1))  # bounds the blend's products
        return p

    def prediction(self, p: np.ndarray, recent: np.ndarray, reads: np.ndarray, plane: np.ndarray) -> Prediction:
        """The blend of predictions ``p`` by their ``recent_errors`` and what else follows, at samples of ``plane``."""
        g = self.grid
        weight = self.weight_of.take(recent)
        weight[-1] *= g.design.ls_weight
        blend = np.einsum("ki,ki->i", weight, p) // weight.sum(0)
        spread = p.max(0) - p.min(0)
        # FRAC c > blend for integers c: c > blend // FRAC. The features come first in the reads.
        signs = reads[: self.sign_bits.size] > (blend >> FRAC_BITS).astype(np.int32)
        pattern = np.einsum("k,ki->i", self.sign_bits, signs.view(np.uint8))  # below 64
        if g.design.rich_bias:
            pattern = pattern + 64 * (p[-1] > blend)
        earlier, before = reads[g.design.features : self.sequential]
        return Prediction(p, blend, spread, pattern, reference(earlier, before, *self.rules[:, plane]))

    def recent_errors(self, block: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """Each predictor's errors at the recent neighbours, weighted; ``block(dy, dx)``: the
        errors (int16) at the neighbours (dy, dx) of the samples."""
        total = None
        for weight, start, stop in self.groups:  # neighbours of equal weight summed first
            blocks = [block(dy, dx) for dy, dx in self.recent[start:stop]]
            part = blocks[0].astype(np.int32)
            for b in blocks[1:]:
                part += b
            if weight != 1:
                part *= weight
            total = part if total is None else np.add(total, part, out=total)
        return total

    def step_prediction(self, step: Step) -> tuple[Prediction, np.ndarray]:
        """A step's prediction, from the samples decoded before it, and its reads of the walk's past."""
        reads = self.cells.reshape(-1).take(self.offsets + self.at, mode="clip")  # never clipped
        p = self.predictors(reads, step.parity, step.segments)
        row = step.row - self.first  # the errors' (predictors, columns, planes) blocks of the step's row
        recent = self.recent_errors(lambda dy, dx: self.errors[:, row + 2 * dy + dx, step.start + dy : step.stop + dy])
        recent = recent.reshape(self.grid.design.predictors, -1).take(step.order, axis=1)
        return self.prediction(p, recent, reads, step.plane), reads[self.sequential :]

    def foresee(self, image: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
        """The predictions of every sample of a tile known ahead (a lossless encoder's; ``padded``),
        computed in the image's own layout a band of rows at a time: blend, spread, pattern and
        ref, in coding order (``Grid.order``)."""
        g, planes = self.grid, self.grid.planes
        height, width = g.height, g.width
        kept = np.zeros((g.design.predictors, planes, *image[0].shape[1:]), dtype=np.int16)
        band = max(1, BAND // (width * planes))
        out = [np.empty((planes, height, width), dtype=np.int32) for _ in range(4)]
        for top in (t for a, b in zip(g.strip_starts[:-1], g.strip_starts[1:]) for t in range(a, b, band)):
            rows = min(band, g.strip_starts[g.strip_of[top] + 1] - top)  # within its strip
            n, at = rows * width, int(g.image_rows[top])

            def window(dy: int, dx: int) -> tuple[slice, slice, slice, slice]:
                return (slice(None), slice(None), slice(at + dy, at + dy + rows), slice(PAD + dx, PAD + dx + width))

            reads = band_reads(image, self.sources[: self.sequential], at, rows)
            ys, xs = np.divmod(np.arange(n), width)
            p = self.predictors(reads, np.tile(parity(ys + top, xs), planes), [(k * n, k * n + n) for k in range(planes)])
            d = band_reads(image, [(0, 0, 0, D)], at, rows)[0]
            kept[window(0, 0)] = errors(p, d).reshape(-1, planes, rows, width)
            recent = self.recent_errors(lambda dy, dx: kept[window(dy, dx)]).reshape(g.design.predictors, -1)
            ahead = self.prediction(p, recent, reads, np.repeat(np.arange(planes), n))
            for a, value in zip(out, (ahead.blend, ahead.spread, ahead.pattern, ahead.ref)):
                a[:, top : top + rows] = value.reshape(planes, rows, width)
        return [a.reshape(-1).take(g.order) for a in out]

    def enter(self, step: Step) -> None:
        """Make room for a step's row: when the arrays are full, keep the last LEAD rows (all that
        the reads reach back) at their start and clear the others; and find its samples' cells."""
        if step.row - self.first >= self.rows:
            self.cells[:, :LEAD] = self.cells[:, -LEAD:]
            blank(self.cells[:, LEAD:], self.depth)
            self.errors[:, :LEAD] = self.errors[:, -LEAD:]
            self.errors[:, LEAD:] = 0
            self.first += self.rows - LEAD
        self.at = step.at - self.first * self.row_cells

    def past(self) -> np.ndarray:
        """The step's reads of the walk's past (its final errors)."""
        return self.cells.reshape(-1).take(self.offsets[self.sequential :] + self.at, mode="clip")

    def context(self, step: Step, pred: Prediction, past: np.ndarray) -> Context:
        """The step's context from its prediction and its reads of the walk's past."""
        g = self.grid
        activity = pred.spread + np.dot(self.recent_weights, past[: self.recent_weights.size])  # below 2**25
        bins = self.bin_of.take(np.minimum(activity >> (self.depth - 8), THRESHOLDS[-1]))
        residual, signed = past[-2:]  # the earlier plane's (0 for the first)
        coarse = self.cross_of.take(np.minimum(residual >> (self.depth - 8), CROSS_THRESHOLDS[-1]))
        coarse += self.context_base.take(step.lane)
        contexts = coarse + bins
        if g.design.rich_bias:
            pattern = pred.pattern + SIGN_BITS[np.sign(signed) + 1]
            classes = (coarse + self.bias_bins.take(bins)) * self.patterns + pattern
        else:
            classes = contexts * self.patterns + pred.pattern
        count = self.bias_count.take(classes)
        blend = pred.blend + (2 * self.bias.take(classes) + count) // (2 * count)
        count = self.count.take(contexts)
        scale = np.maximum(self.spread.take(contexts), count >> 1) / (FRAC * count)  # at least 1/16 of a sample
        return Context(pred.predictions, blend, pred.ref, bins, contexts, classes, scale)

    def store(self, step: Step, ctx: Context, x: np.ndarray) -> None:
        """Keep the step's reconstructed samples ``x`` (coding order) and what follows from them."""
        d = x - ctx.ref
        signed = FRAC * d - ctx.blend
        residual = np.abs(signed)
        self.cells.reshape(FIELDS, -1)[:, self.at] = np.stack([x, d, residual, signed])
        if ctx.predictions is not None:
            block = self.errors[:, step.row - self.first, step.start : step.stop].reshape(len(ctx.predictions), -1)
            block[:, step.order] = errors(ctx.predictions, d.astype(np.int32))
        accumulate(self.spread, self.count, ctx.contexts, residual)
        accumulate(self.bias, self.bias_count, ctx.classes, signed)


def errors(p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The predictions' errors (saturated) at samples of d, both int32."""
    e = p - FRAC * d
    return np.minimum(np.abs(e, out=e), ERROR_CAP, out=e)


def accumulate(total: np.ndarray, count: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """Add integer ``values`` to ``total`` and one to ``count`` at ``index``; halve both where the
    count reaches LIMIT (only entries touched now can)."""
    np.add.at(total, index, values)
    np.add.at(count, index, 1)
    full = index[count[index] >= LIMIT]  # halved once however often it repeats
    if full.size:
        total[full] >>= 1
        count[full] >>= 1


@dataclass
class Batch:
    """One step's samples as the coder sees them, in coding order: symbol q = quantised (x -
    prediction), and its Laplacian (centre ``mean``, ``scale``, both in steps of 2 max_error + 1)."""

    span: slice  # where they lie in the walk's coding order (``Grid.order``)
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
        return np.sign(e) * ((np.abs(e) + self.max_error) // self.step) if self.max_error else e

    def reconstruct(self, q: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        return clamp(prediction + q * self.step, 0, self.peak)


def walk(grid: Grid, quantiser: Quantiser, coefs: np.ndarray, scales: np.ndarray, code: Coder,
         image: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Visit every sample in coding order; return the reconstructed (planes, H, W) samples.

    ``scales`` is the learned table of Laplacian scales per activity bin (8-bit units), the prior
    of the online statistics. ``image``: a lossless tile's samples, which its encoder knows ahead
    (``padded``): the walk then computes their predictions all at once (``State.foresee``), and
    only what depends on its past step by step.
    """
    state = State(grid, quantiser.depth, coefs, scales, errors=image is None)
    ahead = state.foresee(image) if image is not None else None
    decoded = np.empty(grid.planes * grid.height * grid.width, dtype=np.int64)  # in coding order
    start = 0
    for step in grid.walk_steps:
        span = slice(start, start + step.at.size)
        state.enter(step)
        if ahead is None:
            pred, past = state.step_prediction(step)
        else:
            pred, past = Prediction(None, *(a[span] for a in ahead)), state.past()
        ctx = state.context(step, pred, past)
        full = clamp(FRAC * ctx.ref + ctx.blend, 0, FRAC * quantiser.peak)
        prediction = (full + FRAC // 2) >> FRAC_BITS
        mean = (full - FRAC * prediction) / (FRAC * quantiser.step)
        x = code(Batch(span, step.plane, prediction, mean, ctx.scale / quantiser.step, ctx.bins))
        state.store(step, ctx, x)
        decoded[span] = x
        start = span.stop
    samples = np.empty_like(decoded)
    samples[grid.order] = decoded
    return samples.reshape(grid.planes, grid.height, grid.width)
