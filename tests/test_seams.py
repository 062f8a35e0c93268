"""Tile-border smoothing (format version 12): steps between flat tiles go, edges and texture stay."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_photo
from tests.test_golden import CORPUS
from xcodec import api, container
from xcodec.models.seams import WIDTH, smooth_seams


def two_tiles(left: int, right: int, size: int = 64) -> np.ndarray:
    """Two flat ``size`` x ``size`` tiles side by side, of levels ``left`` and ``right``."""
    rgb = np.full((size, 2 * size, 3), left, dtype=np.uint8)
    rgb[:, size:] = right
    return rgb


def test_a_step_between_flat_tiles_becomes_two_ramps_that_meet_at_the_border():
    rgb = two_tiles(100, 110)
    smooth_seams(rgb, 64, threshold=20.0)
    row = rgb[32, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0) and np.abs(np.diff(row)).max() <= 1  # no step left, nothing overshoots
    assert row[64] - row[63] <= 1 and row[60] > 100 and row[67] < 110
    assert np.all(row[: 64 - WIDTH] == 100) and np.all(row[64 + WIDTH :] == 110)  # only the bands change
    assert np.all(rgb == rgb[:1])  # every line alike


def test_horizontal_borders_are_smoothed_as_vertical_ones():
    columns, rows = two_tiles(100, 110), two_tiles(100, 110).transpose(1, 0, 2).copy()
    smooth_seams(columns, 64, threshold=20.0)
    smooth_seams(rows, 64, threshold=20.0)
    assert np.array_equal(rows.transpose(1, 0, 2), columns) and not np.array_equal(columns, two_tiles(100, 110))


@pytest.mark.parametrize("left,right", [(100, 130), (130, 100)])
def test_a_step_above_the_threshold_is_the_image_s_own_edge(left, right):
    rgb = two_tiles(left, right)
    smooth_seams(rgb, 64, threshold=20.0)
    assert np.array_equal(rgb, two_tiles(left, right))


def test_a_busy_neighbourhood_is_left_as_it_is():
    rgb = two_tiles(100, 110)
    rgb[:, 1::2] += 20  # stripes: each pixel 20 from its neighbours, the step at the border 10
    before = rgb.copy()
    smooth_seams(rgb, 64, threshold=20.0)
    assert np.array_equal(rgb, before)


def test_one_tile_and_borders_beside_a_tile_narrower_than_the_ramp_are_left():
    rgb = two_tiles(100, 110)
    for tile, image in ((0, rgb), (128, rgb), (64, rgb[:, : 64 + WIDTH - 1])):
        before = image.copy()
        smooth_seams(image, tile, threshold=20.0)
        assert np.array_equal(image, before)


def test_version_12_changes_version_11_s_pixels_only_beside_the_tile_borders_and_lowers_the_seams():
    image = make_photo(192, 128, seed=3)
    # that photo at quality 1 in tiles of 64 (main 0d6288c): the coded streams of versions 10 to 13
    data = (CORPUS / "version-13-photo-tiles.xsc").read_bytes()
    bitstream = container.unpack(data)
    assert bitstream.header.version == container.GRAIN_VERSION
    bitstream.header.version = container.FILTER_VERSION
    bitstream.streams = [(kind, payload) for kind, payload in bitstream.streams if kind not in container.SIDE]
    older = container.pack(bitstream)
    new, old = (np.asarray(api.decode(d, device="cpu", threads=1)).astype(int) for d in (data, older))
    band = np.zeros(new.shape[:2], dtype=bool)
    for border in (64, 128):
        band[:, border - WIDTH : border + WIDTH] = True
    band[64 - WIDTH : 64 + WIDTH] = True
    changed = np.any(new != old, axis=2)
    assert changed.any() and not (changed & ~band).any()
    original = np.asarray(image).astype(int)

    def seam(x: np.ndarray) -> float:
        """Mean step across the borders, less the original's."""
        cols = [np.abs(x[:, c] - x[:, c - 1]).mean() - np.abs(original[:, c] - original[:, c - 1]).mean() for c in (64, 128)]
        return np.mean(cols + [np.abs(x[64] - x[63]).mean() - np.abs(original[64] - original[63]).mean()])

    assert seam(new) < seam(old) / 2
    unsmoothed = [np.asarray(api.decode(d, device="cpu", threads=1, postfilter=False)) for d in (data, older)]
    assert np.array_equal(*unsmoothed)  # postfilter=False skips the smoothing with the post-filter
