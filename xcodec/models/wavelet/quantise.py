"""Quantisation: the quality-to-step rule, the encoder's two roundings (one per effort) and the
straight-through rounding of training."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...entropy import SYMBOL_LIMIT
from .rate import laplace_bits

# Global quantiser step (8-bit pixel units) at quality 1 and 8, log-linear in between.
STEP_Q1, STEP_Q8 = 120.0, 6.0
DEADZONE = 0.3  # encoder rounding at effort 0: q = sign(x) floor(|x| / step + DEADZONE)
RDO_LAMBDA = 0.15  # effort 1: squared error (in steps) per bit (measured best of 0.08, 0.15, 0.25)
RECON = 0.1  # initial decoder offset: x = sign(q) (|q| + RECON) step
# Symbol ranges: the finest level's coefficients stay far inside +-511 at every quality (its steps
# are the largest), the other levels inside +-4095; the low band's residuals need more. The low
# band's values stay within +-LOW_VALUE_LIMIT, so that a residual (a value less its prediction,
# which lies between two of its neighbours) stays in range; a low band of 8-bit pixels stays
# below about 2,000.
FINEST_LIMIT, LOW_LIMIT = 511, (1 << 15) - 1
LOW_VALUE_LIMIT = LOW_LIMIT // 2


def step_for(quality: Tensor) -> Tensor:
    """Global quantiser step for (fractional) qualities in [1, 8]."""
    t = (quality - 1) / 7
    return torch.exp(math.log(STEP_Q1) + t * (math.log(STEP_Q8) - math.log(STEP_Q1)))


def ste(x: Tensor, offset: float) -> Tensor:
    """Dead-zone rounding sign(x) floor(|x| + offset) forward, identity gradient backward."""
    return x + (torch.sign(x) * torch.floor(x.abs() + offset) - x).detach()


def symbol_limit(level: int) -> int:
    return FINEST_LIMIT if level == 0 else SYMBOL_LIMIT


def dead_zone(ratio: Tensor, limit: int) -> Tensor:
    """Effort 0's symbols: dead-zone rounding (straight-through), clamped to the range +-``limit``."""
    return ste(ratio, DEADZONE).clamp(-limit, limit)


def rdo_symbols(ratio: Tensor, log_scale: Tensor, recon: Tensor | float, limit: int) -> Tensor:
    """Rate-distortion optimised quantisation of one pass: per coefficient, the nearest level, the
    one below it or zero, whichever minimises error**2 + RDO_LAMBDA * bits.

    Inside a pass the Laplacian scales are already fixed (they depend on earlier passes only), so
    the choices are independent and exact; their effect on later contexts is not counted.
    ``ratio`` is in quantiser steps, where a step's squared error costs the same in every band.
    """
    magnitude = ratio.abs()
    top = torch.floor(magnitude - recon + 0.5).clamp(0, limit)
    candidates = torch.stack([top, (top - 1).clamp_min(0), torch.zeros_like(top)])
    error = torch.where(candidates > 0, magnitude - candidates - recon, magnitude)
    cost = error.square() + RDO_LAMBDA * laplace_bits(candidates, log_scale)
    # the first of the cheapest, as argmin over the three would pick (which runs 10x slower on a CPU)
    lower = cost[1] < cost[0]
    best = torch.where(lower, candidates[1], candidates[0])
    best = torch.where(cost[2] < torch.where(lower, cost[1], cost[0]), candidates[2], best)
    return torch.sign(ratio) * best
