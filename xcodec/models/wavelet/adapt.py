"""Effort 2: the post-filter's last convolution adapted to the image, sent in the file's ``adapt`` stream.

The post-filter ends in a 3x3 convolution (``tail``) from its features ``z`` (``width`` channels at
half resolution) to 12 channels, the 2x2-folded RGB correction. The encoder adds a per-image 1x1
update ``A`` (12 x (width + 1): the centre taps and the biases) that minimises the squared error
of the post-filtered image: a linear least-squares problem in ``A``, solved in closed form from the
normal equations of every tile (``Normal``, summed over the tiles: one ``A`` per image), without a
gradient step. ``A`` is sent as integers in steps of 2**-shift; the encoder picks the shift, or
sends nothing, by the rate-distortion cost of the training loss (``lambda_for``). The adapted tail is
the shipped one plus ``A``: the decoder's work is the same as without it.

Stream (one ANS stream, ``docs/bitstream.md``): a ``Uniform(SHIFTS)`` symbol, ``shift - MIN_SHIFT``;
a ``Uniform(SCALE_COUNT)`` symbol, the index of the entries' Laplacian scale in ``SCALES``; then the
entries row by row (output channel, then input channel, the bias last), each a ``QuantizedLaplace``
symbol in +-``LIMIT`` of mean 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...entropy import StreamReader, StreamWriter
from ...errors import FormatError
from ..blocks import pad_to
from ..codec import lambda_for
from ..postfilter import PostFilter
from .low import base_index
from .rate import SCALE_COUNT, SCALES

MIN_SHIFT, SHIFTS = 4, 16  # entries in steps of 2**-4 .. 2**-19 (the encoder measured 2**-9 .. 2**-12 best)
LIMIT = 2047  # the largest magnitude of an entry, in steps
RIDGE = 1e-4  # the least squares' ridge, relative to the mean diagonal of the normal matrix
STREAM_TABLE_BYTES = 5  # the stream's entry in the container's table


class Normal(NamedTuple):
    """The least-squares problem of one tile (float64): ``gram`` = Z Z^T ((width + 1) x (width + 1)),
    ``cross`` = Z T^T ((width + 1) x 12), for the features Z (a row of ones appended) and the target
    T (the original minus the post-filtered image, folded), and the tile's ``pixels``."""

    gram: Tensor
    cross: Tensor
    pixels: int

    def __add__(self, other: Normal) -> Normal:
        return Normal(self.gram + other.gram, self.cross + other.cross, self.pixels + other.pixels)


def normal(postfilter: PostFilter, x: Tensor, x_hat: Tensor, quality: Tensor, tokens: int | None = None) -> Normal:
    """The least-squares problem of a tile: original ``x`` and decoded ``x_hat`` (1, 3, H, W), the
    post-filter's global attention bounded by ``tokens`` as the file's decoder bounds it."""
    z = postfilter.features(x_hat, quality, tokens)
    residual = F.conv2d(z, postfilter.tail.weight, postfilter.tail.bias, padding=1)
    target = F.pixel_unshuffle(pad_to(x - x_hat, 2, "replicate"), 2) - residual
    features = torch.cat([z[0].flatten(1), torch.ones_like(z[0, :1]).flatten(1)]).double()
    gram, cross = features @ features.T, features @ target[0].flatten(1).double().T
    return Normal(gram.cpu(), cross.cpu(), x.shape[-2] * x.shape[-1])


def write(entries: np.ndarray, shift: int) -> bytes:
    """The ``adapt`` stream of integer ``entries`` (12, width + 1) in steps of 2**-shift."""
    writer = StreamWriter()
    writer.uniform(shift - MIN_SHIFT, SHIFTS)
    index = base_index(torch.from_numpy(entries))
    writer.uniform(index, SCALE_COUNT)
    writer.laplace(entries, np.full(entries.size, SCALES[index]), LIMIT)
    return writer.finish()


def read(data: bytes, postfilter: PostFilter) -> tuple[Tensor, Tensor]:
    """The adapted tail (weight, bias) of an ``adapt`` stream; ``FormatError`` for a malformed one."""
    reader = StreamReader(data)
    shift = MIN_SHIFT + reader.uniform(SHIFTS)
    scale = SCALES[reader.uniform(SCALE_COUNT)]
    weight, bias = postfilter.tail.weight, postfilter.tail.bias
    outputs, width = weight.shape[:2]
    entries = reader.laplace(np.full(outputs * (width + 1), scale), LIMIT)
    reader.finish()
    update = torch.from_numpy(entries.reshape(outputs, width + 1).astype(np.float32)).to(weight.device) * 2.0**-shift  # exact
    weight = weight.detach().clone()
    weight[:, :, 1, 1] += update[:, :width]
    return weight, bias.detach() + update[:, width]


def fit(problem: Normal, quality: float) -> bytes | None:
    """The ``adapt`` stream that lowers the image's rate-distortion cost most (``lambda_for``, squared
    error in [0, 1] units, bits per pixel), or None when none lowers it."""
    gram, cross = problem.gram, problem.cross
    ridge = RIDGE * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    best = torch.linalg.solve(gram + ridge, cross).T.numpy()  # (12, width + 1)
    weight = float(lambda_for(torch.tensor([quality]))) * 255**2 / (3 * problem.pixels)
    chosen, lowest = None, 0.0
    for shift in range(MIN_SHIFT, MIN_SHIFT + SHIFTS):
        entries = np.round(best * 2.0**shift)
        if np.abs(entries).max() > LIMIT:
            break
        update = torch.from_numpy(entries.T * 2.0**-shift)
        change = float((update * (gram @ update)).sum() - 2 * (update * cross).sum())  # of the squared error
        data = write(entries.astype(np.int64), shift)
        cost = weight * change + 8 * (len(data) + STREAM_TABLE_BYTES) / problem.pixels
        if cost < lowest:
            chosen, lowest = data, cost
    return chosen

