"""PSNR, the distortion measure of the core (``xcodec compare``); the benchmark adds MS-SSIM and LPIPS."""

from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10(255^2 / MSE) of two 8-bit arrays, the MSE over every sample (all pixels and channels)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
