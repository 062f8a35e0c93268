"""The coder's probability model: a table of Laplacian scales and the bits a symbol costs under it.

Every coefficient is coded under a zero-mean Laplacian quantised to unit bins, whose scale is one
entry of ``SCALES``; the encoder and the decoder pick the entry by integer index, so they use the
same probabilities on any machine. ``laplace_bits`` is the differentiable rate of training,
``coded_bits`` what the ANS coder really spends.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ...entropy import PRECISION

# Laplacian scales (in quantiser steps) the coder may use: SCALE_MIN * SCALE_RATIO**i. The table
# is built by repeated float64 multiplication of two literals (no libm), so it is identical on
# every machine; entry i stands for the natural log  (SCALE_LOG_MIN + i * SCALE_LOG_STEP) / 2**SCALE_BITS.
SCALE_MIN, SCALE_RATIO = 0.011108996538242306, 1.0098134643159469  # exp(-4.5), exp(10 / 1024)
SCALE_BITS, SCALE_LOG_MIN, SCALE_LOG_STEP, SCALE_COUNT = 10, -4.5 * 2**10, 10, 1200


def scale_table() -> np.ndarray:
    table = np.empty(SCALE_COUNT)
    value = SCALE_MIN
    for i in range(SCALE_COUNT):
        table[i] = value
        value *= SCALE_RATIO
    return table


SCALES = scale_table()


def scale_index(log_scale_fixed: Tensor) -> Tensor:
    """Table index of fixed-point natural-log scales: an exact integer floor, clamped to the table."""
    return torch.floor((log_scale_fixed - SCALE_LOG_MIN) / SCALE_LOG_STEP).clamp(0, SCALE_COUNT - 1).long()


def laplace_bits(q: Tensor, log_scale: Tensor) -> Tensor:
    """Bits of integer ``q`` under a zero-mean Laplacian quantised to unit bins: the coder's model,
    less the minimal probability constriction gives every symbol of the range."""
    b = torch.exp(log_scale.clamp(SCALE_LOG_MIN / 2**SCALE_BITS, math.log(SCALES[-1])))
    a = q.abs()
    log_zero = torch.log(-torch.expm1(-0.5 / b))
    log_other = math.log(0.5) - (a - 0.5) / b + torch.log(-torch.expm1(-1 / b))
    return -torch.where(a == 0, log_zero, log_other) / math.log(2)


def coded_bits(q: Tensor, log_scale: Tensor, limit: int) -> Tensor:
    """Bits of integer ``q`` as the coder spends them: ``laplace_bits``, with every symbol of the
    range +-``limit`` given at least constriction's minimal probability. A surprising symbol at a
    tiny scale costs 24 bits, not the Laplacian's 60 or more; the floors' total mass is taken from
    the others (about 1% of a Kodak file at quality 1, mostly zeros). The estimate of a file's size."""
    floor = 2.0**-PRECISION
    p = torch.exp2(-laplace_bits(q, log_scale)) * (1 - (2 * limit + 1) * floor)
    return -torch.log2(torch.clamp(p, min=floor))
