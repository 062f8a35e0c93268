"""PSNR, the distortion measure of the core: of 8-bit images (``xcodec compare``, the benchmark) and
of batches of float images (training); the benchmark adds MS-SSIM and LPIPS."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10(255^2 / MSE) of two 8-bit arrays, the MSE over every sample (all pixels and channels)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def batch_psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    """The same per image of batches (N, C, H, W) in [0, 1], differentiable (the post-filter's loss);
    an image that decodes exactly counts 100 dB, so that a flat crop cannot make the loss infinite."""
    mse = (x_hat - x).square().flatten(1).mean(1).clamp_min(1e-10)
    return -10 * mse.log10()
