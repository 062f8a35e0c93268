"""Light-field reading on a small synthetic light field that the test renders (no dataset needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xcodec.tools import lightfield as lf


@pytest.fixture(scope="module")
def field():
    return lf.synthetic(rows=5, cols=5, height=96, width=128, disparity=2)


def test_synthetic_has_parallax(field):
    U, V, H, W, _ = field.shape
    assert (U, V, H, W) == (5, 5, 96, 128)
    centre = field[2, 2].astype(int)
    s = 32  # the square: min(96, 128) // 3, centred
    top, left = (H - s) // 2, (W - s) // 2
    # one column to the right: the square moved 2 px right, the background did not move
    right = field[2, 3].astype(int)
    assert np.array_equal(right[top : top + s, left + 2 : left + 2 + s], centre[top : top + s, left : left + s])
    assert np.array_equal(right[:10], centre[:10])
    down = field[3, 2].astype(int)
    assert np.array_equal(down[top + 2 : top + 2 + s, left : left + s], centre[top : top + s, left : left + s])
    assert not np.array_equal(field[0, 0], field[4, 4])


def test_hci_folder_roundtrip(field, tmp_path):
    folder = tmp_path / "scene"
    lf.write_views(field, folder)  # input_Cam000.png .. input_Cam024.png
    assert (folder / "input_Cam024.png").exists()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "gt_disp_lowres.png")  # extra files are ignored
    (folder / "parameters.cfg").write_text("[meta]\n")
    views = lf.view_files(folder)
    assert views[(0, 0)].name == "input_Cam000.png" and views[(1, 0)].name == "input_Cam005.png"
    assert views[(4, 4)].name == "input_Cam024.png"
    assert np.array_equal(lf.read_views(folder), field)


def test_two_index_names_and_rectangular_grid(field, tmp_path):
    folder = tmp_path / "stanford"
    part = field[:, 1:4]  # 5 rows x 3 columns
    lf.write_views(part, folder, pattern="out_{row:02d}_{col:02d}_-381.1_1720.2.png")
    assert np.array_equal(lf.read_views(folder), part)
    hci = tmp_path / "hci-rect"
    lf.write_views(part, hci)
    with pytest.raises(ValueError, match="grid"):
        lf.read_views(hci)  # 15 views: not square, the grid must be given
    assert np.array_equal(lf.read_views(hci, lf.Grid(5, 3)), part)


@pytest.mark.parametrize("layout", ["tiles", "interleaved"])
def test_grid_image_roundtrip(field, tmp_path, layout):
    path = lf.write_grid(field, tmp_path / f"{layout}.png", layout)
    big = np.asarray(Image.open(path))
    assert big.shape == (5 * 96, 5 * 128, 3)
    if layout == "tiles":
        assert np.array_equal(big[96:192, 256:384], field[1, 2])
    else:
        assert np.array_equal(big[1::5, 2::5], field[1, 2])
    assert np.array_equal(lf.read_grid(path, lf.Grid.parse(f"5x5:{layout}")), field)
    with pytest.raises(ValueError):
        lf.read_grid(path, lf.Grid(7, 7))


def test_grid_parse():
    assert lf.Grid.parse("9x9") == lf.Grid(9, 9, "tiles")
    assert lf.Grid.parse("15x13:interleaved") == lf.Grid(15, 13, "interleaved")
    for bad in ("9", "9x", "9x9:zigzag", "0x3"):
        with pytest.raises(ValueError):
            lf.Grid.parse(bad)


def test_find_and_extract_patches(field, tmp_path):
    root = tmp_path / "sets"
    lf.write_views(field, root / "hci" / "scene_a")
    lf.write_views(field[::-1], root / "hci" / "scene_b")
    found = lf.find_light_fields(root)
    assert [(name, kind) for name, _, kind in found] == [("hci/scene_a", "views"), ("hci/scene_b", "views")]
    assert lf.select_views(5, 5, 2) == [(0, 0), (0, 2), (0, 4), (2, 0), (2, 2), (2, 4), (4, 0), (4, 2), (4, 4)]
    assert lf.patch_origins(96, 128, 48) == [(0, 16), (0, 64), (48, 16), (48, 64)]
    out = tmp_path / "patches"
    paths = lf.extract_patches(root, out, patch=48, view_step=2)
    assert len(paths) == 2 * 9 * 4
    first = out / "hci-scene_a__u00_v00__y0_x16.png"
    assert first in paths
    assert np.array_equal(np.asarray(Image.open(first)), field[0, 0, 0:48, 16:64])
    again = lf.extract_patches(root, out, patch=48, view_step=2)  # idempotent
    assert again == paths
    grids = tmp_path / "grids"
    lf.write_grid(field, grids / "lytro.png")
    assert [k for *_, k in lf.find_light_fields(grids, lf.Grid(5, 5))] == ["grid"]
    grid_patches = lf.extract_patches(grids, tmp_path / "gp", patch=64, view_step=4, grid=lf.Grid(5, 5))
    # step 4 from the centre of a 5x5 grid keeps only the central view; 96x128 holds 1x2 patches of 64
    assert [p.name for p in grid_patches] == ["lytro__u02_v02__y16_x0.png", "lytro__u02_v02__y16_x64.png"]
    assert np.array_equal(np.asarray(Image.open(grid_patches[1])), field[2, 2, 16:80, 64:128])
