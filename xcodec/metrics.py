"""Distortion metrics (CompressAI's conventions: per image, then averaged), for ``xcodec compare``,
the benchmark and training.

- ``psnr``: 10 log10(255^2 / MSE) of 8-bit RGB arrays, the MSE over all pixels and the three
  channels; ``batch_psnr`` the same per image of float batches in [0, 1] (differentiable: training).
- ``ms_ssim``: multi-scale SSIM on RGB in [0, 1] (``pytorch_msssim``, 5 scales, 11x11 Gaussian
  window, sigma 1.5, the standard weights; as CompressAI's ``eval_model``). Needs both sides longer
  than 160 pixels; smaller images get NaN. ``to_db`` = -10 log10(1 - MS-SSIM).
- ``lpips``: LPIPS v0.1, AlexNet (see :mod:`xcodec.bench.lpips`); lower is better.
- ``dists``: DISTS, VGG16 (see :mod:`xcodec.bench.dists`); lower is better. Never a training loss.

Torch loads only when MS-SSIM, LPIPS or DISTS is computed, so ``psnr`` stays cheap to import.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

MS_SSIM_MIN_SIDE = 161  # (11 - 1) * 2**4 + 1: the window must fit at the coarsest of the 5 scales
METRICS_VERSION = "psnr-rgb8, ms-ssim pytorch_msssim data_range=1, lpips v0.1 alex"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10(255^2 / MSE) of two 8-bit arrays, the MSE over every sample (all pixels and channels)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def batch_psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    """The same per image of batches (N, C, H, W) in [0, 1], differentiable (the post-filter's loss);
    an image that decodes exactly counts 100 dB, so that a flat crop cannot make the loss infinite."""
    mse = (x_hat - x).square().flatten(1).mean(1).clamp_min(1e-10)
    return -10 * mse.log10()


def ms_ssim(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> float:
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def t(x):
        return torch.from_numpy(np.array(x, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255).to(device)

    with torch.inference_mode():
        return float(_ms_ssim(t(a), t(b), data_range=1.0))


def to_db(msssim: float) -> float:
    """MS-SSIM in decibels, -10 log10(1 - MS-SSIM), as learned-compression papers plot it."""
    if math.isnan(msssim):
        return math.nan
    return math.inf if msssim >= 1 else -10 * math.log10(1 - msssim)


def lpips(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> float:
    from .bench.lpips import lpips as _lpips

    return _lpips(a, b, device)


def dists(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> float:
    from .bench.dists import dists as _dists

    return _dists(a, b, device)


def all_metrics(a: np.ndarray, b: np.ndarray, device: str = "cpu", with_lpips: bool = True, with_dists: bool = True) -> dict:
    m = ms_ssim(a, b, device)
    return {"psnr": psnr(a, b), "ms_ssim": m, "ms_ssim_db": to_db(m),
            "lpips": lpips(a, b, device) if with_lpips else math.nan,
            "dists": dists(a, b, device) if with_dists else math.nan}
