"""``xcodec compare``: how far a decoded image is from its original, in numbers and in a picture.

Both images are read as the encoder reads its input (:func:`xcodec.image.prepare`): EXIF orientation
applied, more than 8 bits per sample scaled to 8, alpha dropped; so a 16-bit or rotated original is
compared with what was coded, not with Pillow's raw view of it. The crops picture puts the same
crops of the original, the decoded image and, for reference, AVIF at the same file size side by
side, each column labelled with its bit rate and whole-image PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import metrics

ZOOM = 2  # crops are enlarged (nearest neighbour) so that single pixels show
GAP = 6  # pixels between cells
LABEL_HEIGHT = 40


@dataclass
class Scores:
    psnr: float
    ms_ssim: float  # NaN when a side is 160 pixels or less, or pytorch-msssim is missing
    lpips: float  # NaN when not asked for
    dists: float  # NaN when not asked for

    @property
    def ms_ssim_db(self) -> float:
        return metrics.to_db(self.ms_ssim)


def scores(a: np.ndarray, b: np.ndarray, device: str = "cpu", with_lpips: bool = True, with_dists: bool = True) -> Scores:
    """PSNR, MS-SSIM, LPIPS and DISTS of two uint8 RGB arrays of the same shape."""
    try:
        ms_ssim = metrics.ms_ssim(a, b, device)
    except ImportError:
        ms_ssim = math.nan
    return Scores(metrics.psnr(a, b), ms_ssim, metrics.lpips(a, b, device) if with_lpips else math.nan,
                  metrics.dists(a, b, device) if with_dists else math.nan)


def pick_crops(rgb: np.ndarray, count: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``count`` non-overlapping ``size`` squares with the most detail.

    Detail is the sum of absolute differences between neighbouring pixels (edges and texture,
    where codecs differ), over windows on a grid of ``size // 4``; the most detailed first.
    """
    height, width = rgb.shape[:2]
    gray = rgb.astype(np.float64).mean(axis=2)
    detail = np.zeros_like(gray)
    detail[:, 1:] += np.abs(np.diff(gray, axis=1))
    detail[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(detail.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 4)
    tops = np.unique(np.append(np.arange(0, height - size + 1, step), height - size))
    lefts = np.unique(np.append(np.arange(0, width - size + 1, step), width - size))
    t, l = np.meshgrid(tops, lefts, indexing="ij")
    sums = integral[t + size, l + size] - integral[t, l + size] - integral[t + size, l] + integral[t, l]
    chosen: list[tuple[int, int]] = []
    for index in np.argsort(-sums, axis=None, kind="stable"):
        top, left = int(t.flat[index]), int(l.flat[index])
        if all(abs(top - y) >= size or abs(left - x) >= size for y, x in chosen):
            chosen.append((top, left))
            if len(chosen) == count:
                break
    return chosen


def avif_at_size(rgb: np.ndarray, budget: int) -> tuple[int, bytes, np.ndarray] | None:
    """AVIF as the benchmark codes it (4:4:4), at the highest quality whose file fits ``budget`` bytes.

    Bisection on quality 0..100 (8 encodes); quality 0 when even that is larger. Returns the
    quality, the file and its decoded pixels, or None when this Pillow has no AVIF.
    """
    from .bench.codecs import AVIF

    codec = AVIF()
    if codec.unavailable():
        return None
    low, high = 0, 100
    best = codec.encode(rgb, low)
    quality = low
    while low < high:
        mid = (low + high + 1) // 2
        data = codec.encode(rgb, mid)
        if len(data) <= budget:
            low, best, quality = mid, data, mid
        else:
            high = mid - 1
    return quality, best, codec.decode(best)


def crops_picture(columns: list[tuple[str, np.ndarray]], corners: list[tuple[int, int]], size: int) -> Image.Image:
    """A grid: one column per (label, image), one row per crop corner, the label above each column."""
    cell = size * ZOOM
    width = len(columns) * cell + (len(columns) + 1) * GAP
    height = LABEL_HEIGHT + len(corners) * (cell + GAP) + GAP
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=13)
    for col, (label, rgb) in enumerate(columns):
        x = GAP + col * (cell + GAP)
        draw.multiline_text((x, 4), label, fill="black", font=font, spacing=3)
        for row, (top, left) in enumerate(corners):
            crop = Image.fromarray(rgb[top : top + size, left : left + size])
            picture.paste(crop.resize((cell, cell), Image.Resampling.NEAREST), (x, LABEL_HEIGHT + row * (cell + GAP)))
    return picture
