"""Tile-border smoothing of a decoded image (``.xsc`` format version 12).

Tiles are coded and decoded on their own (memory bounded by the tile), so at low rates the smooth
areas of two neighbouring tiles settle on slightly different levels and their border shows as a
straight seam (docs/robustness.md measures it). The decoder removes the step where the image is
smooth on both sides: for each line across a border, the step between the two pixels that touch it,
kept where it is small and both sides are flat (``threshold``: the model's, from the quantiser step;
a larger step or a busier neighbourhood is left as the image's own edge or texture), averaged over
``SPAN`` neighbouring lines, and spread as two linear ramps over ``WIDTH`` pixels on each side that
meet halfway. Vertical borders first, then horizontal ones; float64, the same on every machine.
"""

from __future__ import annotations

import numpy as np

WIDTH = 8  # pixels changed on each side of a border
SPAN = 5  # neighbouring lines (odd) over which a border's step is averaged
FLAT = 3  # pixels on each side of a border whose differences tell whether it is flat
_RAMP = (2 * WIDTH - 1 - 2 * np.arange(WIDTH)) / (4 * WIDTH)  # (1 - (i + 0.5) / WIDTH) / 2 at i pixels from the border


def smooth_seams(rgb: np.ndarray, tile: int, threshold: float) -> None:
    """Smooth the borders of the ``tile`` x ``tile`` tiles (0: one tile, nothing to do) of ``rgb``,
    (H, W, 3) uint8, in place. A border with a tile narrower than ``WIDTH`` beside it is left."""
    if tile <= 0:
        return
    ramp = np.r_[_RAMP[::-1], -_RAMP][None, :, None]
    for image in (rgb, rgb.transpose(1, 0, 2)):  # the second pass's columns are the image's rows
        for border in range(tile, image.shape[1] - WIDTH + 1, tile):
            band = image[:, border - WIDTH : border + WIDTH].astype(np.float64)
            left, right = band[:, WIDTH - FLAT : WIDTH], band[:, WIDTH : WIDTH + FLAT]
            step = right[:, 0] - left[:, -1]
            activity = (np.abs(np.diff(left, axis=1)).mean((1, 2)) + np.abs(np.diff(right, axis=1)).mean((1, 2))) / 2
            weight = np.clip(2 - 2 * activity / threshold, 0, 1) * (np.abs(step).max(1) < threshold)
            padded = np.pad(step * weight[:, None], ((SPAN // 2, SPAN // 2), (0, 0)), mode="edge")
            offset = sum(padded[i : i + len(step)] for i in range(SPAN)) / SPAN
            image[:, border - WIDTH : border + WIDTH] = np.clip(np.rint(band + offset[:, None, :] * ramp), 0, 255)
