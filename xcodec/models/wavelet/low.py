"""The coarsest low band: MED prediction and a context model of each residual's Laplacian scale.

Files of format version 7 (``LOW_CONTEXT_VERSION``): each value is predicted by the median edge
detector of LOCO-I (``med``) from its decoded neighbours, and its residual is coded under a
Laplacian whose scale mixes the channel's mean residual (one index per channel, sent first) with
the residual magnitudes around it: of its own channel where already decoded, and of the earlier
colour channels all around (``context_scale``). Encoder and decoder visit the values in one walk
(``walk``, anti-diagonal wavefronts ``x + 2y = t``: every neighbour it reads is on an earlier
one), on integers: the weighted sums of magnitudes are integers, the scale one float64 product
and sum, its table entry a search by comparisons, so both sides choose the same probabilities.

Files of versions 3 to 5 code the band by 2D-difference DPCM with one scale per channel
(``read_flat_low``); their decoding is kept, their encoding is not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ...container import STREAMS_VERSION
from ...entropy import StreamReader, StreamWriter
from .bands import CHANNELS
from .quantise import LOW_LIMIT
from .rate import SCALE_COUNT, SCALES, coded_bits, laplace_bits

LOW_CONTEXT_VERSION = STREAMS_VERSION  # the first .xsc format version whose wavelet streams code the low band this way
# Neighbours (dy, dx) whose residual magnitudes set a value's scale: W, N, NE, WW, NN of its own
# channel (decoded before it), and the value itself and its four neighbours in each earlier channel.
OWN = ((0, -1), (-1, 0), (-1, 1), (0, -2), (-2, 0))
CROSS = ((0, 0), (0, -1), (-1, 0), (0, 1), (1, 0))
# Per channel, in 1/256: the weight of the channel's mean residual, of each OWN magnitude, then of
# each CROSS magnitude of channel 0 and of channel 1. Fitted by likelihood on 241 training photos
# (not Kodak) at qualities 1 to 8 (docs/training-log.md); part of the format, like the scale table.
WEIGHTS = (
    (120, 49, 47, 31, 14, 9),
    (97, 33, 33, 18, 6, 2, 14, 0, 0, 0, 0),
    (62, 21, 22, 7, 2, 1, 1, 0, 0, 0, 0, 74, 0, 0, 11, 13),
)
WEIGHT_SCALE = 256
TOP, LEFT = 2, 2  # the walk's planes are padded by 2 rows above, 2 columns left, 1 below and 2 right
# What the walk asks for each wavefront: channel, rows, columns, predictions, scale indices -> residuals.
TakeResiduals = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def med(w, n, nw):
    """LOCO-I's median edge detector: min(W, N) above an edge, max(W, N) below, else W + N - NW
    (of numpy arrays or tensors)."""
    xp = torch if isinstance(w, Tensor) else np
    low, high = xp.minimum(w, n), xp.maximum(w, n)
    return xp.where(nw >= high, low, xp.where(nw <= low, high, w + n - nw))


def context_scale(c: int, base, total):
    """The Laplacian scale (quantiser steps, float64) of channel ``c``'s values from its mean
    residual ``base`` and ``total``, the integer sum of the weighted magnitudes around them: two
    IEEE operations and an exact division, the same on every machine."""
    return (base * WEIGHTS[c][0] + total) / WEIGHT_SCALE


def table_index(scale: np.ndarray) -> np.ndarray:
    """The table entries of scales: the first at or above each, clamped to the table (comparisons only)."""
    return np.minimum(np.searchsorted(SCALES, np.maximum(scale, SCALES[0])), SCALE_COUNT - 1)


def shifted(planes: Tensor, dy: int, dx: int) -> Tensor:
    """Each value's neighbour (dy, dx) in the last two dimensions, zero outside the plane."""
    h, w = planes.shape[-2:]
    padded = nn.functional.pad(planes, (2, 2, 2, 2))
    return padded[..., 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]


def residuals(low_q: Tensor) -> Tensor:
    """The residuals of (..., 3, h, w) values after MED prediction from their decoded neighbours."""
    return low_q - med(shifted(low_q, 0, -1), shifted(low_q, -1, 0), shifted(low_q, -1, -1))


def magnitudes(r: Tensor) -> Tensor:
    """|r| as the contexts see it: the corner residual (the value itself, no neighbour to predict it) counts as 0."""
    a = r.abs()
    a[..., 0, 0] = 0
    return a


def own_sum(c: int, plane: Tensor) -> Tensor:
    """Training: the weighted sum of each value's OWN magnitudes in channel ``c``'s ``plane`` (..., h, w)."""
    return sum(weight * shifted(plane, *d) for weight, d in zip(WEIGHTS[c][1 : 1 + len(OWN)], OWN))


def cross_sum(c: int, planes: Tensor) -> Tensor:
    """The weighted sum of each value's CROSS magnitudes in the earlier channels of ``planes`` (..., 3, h, w)."""
    weights = WEIGHTS[c][1 + len(OWN) :]
    total = torch.zeros_like(planes[..., 0, :, :])
    for e in range(c):
        for weight, d in zip(weights[e * len(CROSS) : (e + 1) * len(CROSS)], CROSS):
            total = total + weight * shifted(planes[..., e, :, :], *d)
    return total


def base_index(r: Tensor) -> int:
    """Encoder's choice of a channel's mean scale: the table index of its mean |r|."""
    return int(table_index(r.abs().double().mean().numpy()))


def low_bits(low_q: Tensor) -> Tensor:
    """Training: the code length (N, count) of low bands (N, 3, h, w), gradients into the values;
    each channel's base is its mean |r| (the coder rounds it to the table)."""
    r = residuals(low_q)
    a = magnitudes(r.detach())
    base = r.detach().abs().mean((-2, -1)).clamp_min(SCALES[0])
    scales = [context_scale(c, base[:, c, None, None], own_sum(c, a[:, c]) + cross_sum(c, a)) for c in range(CHANNELS)]
    return laplace_bits(r, torch.log(torch.stack(scales, 1).clamp_min(SCALES[0]))).flatten(1)


@functools.cache
def wavefronts(h: int, w: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """Per wavefront x + 2y = t of an (h, w) plane, t = 0, 1, ...: its rows, its columns, and its
    positions in the walk's padded planes (flat)."""
    fronts = []
    for t in range(w + 2 * (h - 1)):
        ys = np.arange(max(0, -((w - 1 - t) // 2)), min(h - 1, t // 2) + 1)
        xs = t - 2 * ys
        fronts.append((ys, xs, (ys + TOP) * (w + LEFT + 2) + xs + LEFT))
    return tuple(fronts)


def walk(shape: tuple[int, int], bases: list[int], take: TakeResiduals) -> np.ndarray:
    """The one walk of the low band, shared by the encoder and the decoder: channel by channel,
    wavefront by wavefront, the predictions and scale indices of the values it reaches, and
    ``take`` supplies their residuals. Returns the values (3, h, w), int64."""
    h, w = shape
    stride = w + LEFT + 2
    values = np.zeros((CHANNELS, h + TOP + 1, stride), dtype=np.int64)
    mags = np.zeros_like(values)
    # the OWN neighbours as flat offsets, then W, N, NW for the prediction
    own = np.array([dy * stride + dx for dy, dx in OWN])[:, None]
    w_, n_, nw_ = -1, -stride, -stride - 1
    corner = TOP * stride + LEFT
    for c in range(CHANNELS):
        base = SCALES[bases[c]]
        weights = np.array(WEIGHTS[c][1 : 1 + len(OWN)])
        cross = np.pad(cross_sum(c, torch.from_numpy(mags[:, TOP : TOP + h, LEFT : LEFT + w])).numpy(),
                       ((TOP, 1), (LEFT, 2))).reshape(-1)
        plane, magnitude = values[c].reshape(-1), mags[c].reshape(-1)
        for ys, xs, at in wavefronts(h, w):
            prediction = med(plane[at + w_], plane[at + n_], plane[at + nw_])
            total = weights @ magnitude[at + own] + cross[at]
            r = take(c, ys, xs, prediction, table_index(context_scale(c, base, total)))
            plane[at] = prediction + r
            magnitude[at] = np.abs(r)
            magnitude[corner] = 0  # see ``magnitudes``
    return values[:, TOP : TOP + h, LEFT : LEFT + w]


def write_low(writer: StreamWriter, low_q: Tensor) -> list[float]:
    """Code the low band (3, h, w) of integers within +-LOW_VALUE_LIMIT; returns each channel's code
    length in bits (``coded_bits``, its base index included)."""
    values = low_q.long().numpy()
    bases = [base_index(residuals(low_q.long())[c]) for c in range(CHANNELS)]
    for index in bases:
        writer.uniform(index, SCALE_COUNT)
    coded: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(CHANNELS)]

    def take(c: int, ys: np.ndarray, xs: np.ndarray, prediction: np.ndarray, index: np.ndarray) -> np.ndarray:
        symbols = values[c, ys, xs] - prediction
        writer.laplace(symbols, SCALES[index], LOW_LIMIT)
        coded[c].append((symbols, index))
        return symbols

    walk(values.shape[-2:], bases, take)
    bits = []
    for pieces in coded:
        symbols, index = (np.concatenate(part) for part in zip(*pieces))
        cost = coded_bits(torch.from_numpy(symbols).double(), torch.from_numpy(np.log(SCALES[index])), LOW_LIMIT)
        bits.append(math.log2(SCALE_COUNT) + float(cost.sum()))
    return bits


def read_low(reader: StreamReader, shape: tuple[int, int]) -> Tensor:
    """The low band (3, h, w) of a version-7 stream, float64."""
    bases = [reader.uniform(SCALE_COUNT) for _ in range(CHANNELS)]

    def take(c: int, ys: np.ndarray, xs: np.ndarray, prediction: np.ndarray, index: np.ndarray) -> np.ndarray:
        return reader.laplace(SCALES[index], LOW_LIMIT).astype(np.int64)

    return torch.from_numpy(walk(shape, bases, take).astype(np.float64))


def read_flat_low(reader: StreamReader, shape: tuple[int, int]) -> Tensor:
    """The low band (3, h, w) of a stream of versions 3 to 5: per channel one ``Uniform(1200)``
    scale index, then its 2D-difference residuals in raster order, decoded by two cumulative sums."""
    channels = []
    for _ in range(CHANNELS):
        scales = np.full(shape[0] * shape[1], SCALES[reader.uniform(SCALE_COUNT)])
        r = torch.from_numpy(reader.laplace(scales, LOW_LIMIT).astype(np.float64)).view(shape)
        channels.append(r.cumsum(-1).cumsum(-2))
    return torch.stack(channels)
