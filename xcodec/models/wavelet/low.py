"""The coarsest low band: 2D-difference DPCM, one Laplacian scale per channel sent in the stream."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ...entropy import StreamReader, StreamWriter
from .bands import CHANNELS
from .quantise import LOW_LIMIT
from .rate import SCALE_COUNT, SCALES, coded_bits, laplace_bits


def low_residuals(low_q: Tensor) -> Tensor:
    """r = q - (left + up - up-left): the planar predictor; the decoder inverts it by two cumsums."""
    padded = nn.functional.pad(low_q, (1, 0, 1, 0))
    return padded.diff(dim=-1).diff(dim=-2)


def low_scale_index(residuals: Tensor) -> int:
    """Encoder's choice of the Laplacian scale of one channel's residuals (maximum likelihood)."""
    b = max(float(residuals.abs().mean()), SCALES[0])
    return int(np.clip(np.searchsorted(SCALES, b), 0, SCALE_COUNT - 1))


def low_bits(low_q: Tensor) -> Tensor:
    """Training: the code length (N, count) of low bands (N, 3, h, w) under the DPCM Laplacian, at
    each channel's maximum-likelihood scale (the coder rounds it to the table)."""
    residuals = low_residuals(low_q)
    scale = residuals.detach().abs().mean((-2, -1), keepdim=True).clamp_min(SCALES[0])
    return laplace_bits(residuals, torch.log(scale)).flatten(1)


def write_low(writer: StreamWriter, low_q: Tensor) -> list[float]:
    """Code the low band's residuals; returns each channel's code length in bits (``coded_bits``,
    its scale index included)."""
    residuals = low_residuals(low_q)
    bits = []
    for c in range(CHANNELS):
        index = low_scale_index(residuals[c])
        writer.uniform(index, SCALE_COUNT)
        writer.laplace(residuals[c].numpy(), np.full(residuals[c].numel(), SCALES[index]), LOW_LIMIT)
        coded = coded_bits(residuals[c], torch.tensor(math.log(SCALES[index])), LOW_LIMIT)
        bits.append(math.log2(SCALE_COUNT) + float(coded.sum()))
    return bits


def read_low(reader: StreamReader, shape: tuple[int, int]) -> Tensor:
    channels = []
    for _ in range(CHANNELS):
        scales = np.full(shape[0] * shape[1], SCALES[reader.uniform(SCALE_COUNT)])
        residuals = torch.from_numpy(reader.laplace(scales, LOW_LIMIT).astype(np.float64)).view(shape)
        channels.append(residuals.cumsum(-1).cumsum(-2))
    return torch.stack(channels)
