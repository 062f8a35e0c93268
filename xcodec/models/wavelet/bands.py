"""The geometry of the coefficients: band sizes at any image size, and the coding order of the bands."""

from __future__ import annotations

from torch import Tensor, nn

from .lifting import ORIENTATIONS

LEVELS = 5
CHANNELS = 3

# A band in the walk: (level, channel, orientation); level 0 is the finest.
Band = tuple[int, int, int]


def coding_order(levels: int) -> list[Band]:
    return [(level, c, o) for level in reversed(range(levels)) for c in range(CHANNELS) for o in range(3)]


def band_key(band: Band) -> str:
    level, c, o = band
    return f"l{level}c{c}{ORIENTATIONS[o]}"


def fit(plane: Tensor, h: int, w: int) -> Tensor:
    """Crop or zero-pad the last two dimensions to (h, w) (bands of one level differ by at most 1)."""
    plane = plane[..., :h, :w]
    return nn.functional.pad(plane, (0, w - plane.shape[-1], 0, h - plane.shape[-2]))


def subband_shapes(height: int, width: int, levels: int) -> list[list[tuple[int, int]]]:
    """Sizes of (HL, LH, HH) per level, finest first, for an image of this size."""
    shapes = []
    for _ in range(levels):
        low_h, low_w = -(-height // 2), -(-width // 2)
        high_h, high_w = height // 2, width // 2
        shapes.append([(low_h, high_w), (high_h, low_w), (high_h, high_w)])
        height, width = low_h, low_w
    return shapes


def low_shape(height: int, width: int, levels: int) -> tuple[int, int]:
    for _ in range(levels):
        height, width = -(-height // 2), -(-width // 2)
    return height, width

