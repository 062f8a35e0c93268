"""``xcodec compare``: PSNR, MS-SSIM, LPIPS and DISTS, EXIF orientation and 16-bit inputs, and ``--crops``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageOps

from xcodec import api, compare
from xcodec.metrics import MS_SSIM_MIN_SIDE
from xcodec.metrics import psnr

from tests.conftest import make_photo

SIDE = MS_SSIM_MIN_SIDE + 7  # MS-SSIM needs both sides of at least this


def scores(result) -> dict:
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """(folder, original RGB array): original.png and its original.xsc at quality 3, effort 0."""
    folder = tmp_path_factory.mktemp("coded")
    image = make_photo(SIDE, SIDE + 9, seed=4)
    image.save(folder / "original.png")
    (folder / "original.xsc").write_bytes(api.encode(image, quality=3, effort=0))
    return folder, np.asarray(image)


def test_scores_of_an_xsc_file_against_its_original(run_cli, coded):
    folder, rgb = coded
    data = (folder / "original.xsc").read_bytes()
    decoded = np.asarray(api.decode(data))
    fields = scores(run_cli("compare", "original.png", "original.xsc", "--json", cwd=folder))
    assert fields["psnr"] == pytest.approx(psnr(rgb, decoded))
    assert 0 < fields["ms_ssim"] < 1 and fields["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - fields["ms_ssim"]))
    assert 0 < fields["lpips"] < 1 and 0 < fields["dists"] < 1
    assert fields["bytes"] == len(data) and fields["bpp"] == pytest.approx(api.info(data).bpp)
    lines = run_cli("compare", "original.png", "original.xsc", "--no-lpips", cwd=folder).stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == ["PSNR", "MS-SSIM", "DISTS", f"{fields['bpp']:.4f}"]
    assert lines[2] == f"DISTS {fields['dists']:.4f}"


def test_exif_orientation_is_applied(run_cli, tmp_path):
    """An original that displays rotated compares with its decoded image (which is rotated too)."""
    image = make_photo(40, 24, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.png", exif=exif)
    decoded = api.decode(api.encode(Image.open(tmp_path / "rotated.png"), quality=3, effort=0))
    assert decoded.size == (24, 40)
    decoded.save(tmp_path / "decoded.png")
    fields = scores(run_cli("compare", "rotated.png", "decoded.png", "--json", "--no-lpips", "--no-dists"))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "rotated.png")))
    assert fields["psnr"] == pytest.approx(psnr(shown, np.asarray(decoded)))
    assert fields["ms_ssim"] is None  # too small for MS-SSIM: null, not a number


def test_16_bit_original_is_compared_at_8_bits(run_cli, tmp_path):
    """A 16-bit original and its exact 8-bit reduction are identical (Pillow would clip it to 255)."""
    levels = np.asarray(make_photo(48, 32, seed=6).convert("L"), dtype=np.uint16)
    Image.fromarray(levels * 257).save(tmp_path / "deep.png")  # v * 257 / 65535 * 255 == v
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "eight.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    result = run_cli("compare", "deep.png", "eight.png", "--no-lpips", "--no-dists")
    assert result.returncode == 0 and result.stdout.decode().splitlines()[0] == "PSNR inf dB"
    assert "more than 8 bits per sample" in result.stderr.decode()


def test_crops_picture(run_cli, coded):
    folder, rgb = coded
    result = run_cli("compare", "original.png", "original.xsc", "--crops", "crops.png", "--crop-size", 64,
                     "--crop-count", 2, "--no-lpips", "--no-dists", cwd=folder)
    assert result.returncode == 0, result.stderr.decode()
    assert "wrote crops.png: 2 crops of 64x64" in result.stderr.decode()
    columns = 3 if "AVIF" in result.stderr.decode() else 2
    picture = Image.open(folder / "crops.png")
    cell = 64 * compare.ZOOM
    assert picture.size == (columns * cell + (columns + 1) * compare.GAP,
                            compare.LABEL_HEIGHT + 2 * (cell + compare.GAP) + compare.GAP)
    again = run_cli("compare", "original.png", "original.xsc", "--crops", "crops.png", cwd=folder)
    assert again.returncode == 1 and "exists" in again.stderr.decode()  # refused before any work
    decoded_png = folder / "decoded.png"
    api.decode((folder / "original.xsc").read_bytes()).save(decoded_png)
    plain = run_cli("compare", "original.png", "decoded.png", "--crops", "other.png", "--no-lpips", "--no-dists", cwd=folder)
    assert plain.returncode == 1 and "--crops needs the .xsc file" in plain.stderr.decode()


def test_pick_crops_finds_detail_without_overlap():
    rgb = np.full((100, 120, 3), 128, dtype=np.uint8)
    rgb[60:90, 10:40] = np.random.default_rng(0).integers(0, 256, (30, 30, 3))  # the only detail
    corners = compare.pick_crops(rgb, 3, 32)
    assert len(corners) == 3 and all(0 <= t <= 100 - 32 and 0 <= l <= 120 - 32 for t, l in corners)
    top, left = corners[0]
    assert top <= 60 and top + 32 >= 90 - 2 and left <= 10 and left + 32 >= 40 - 2  # covers the texture
    assert all(abs(a[0] - b[0]) >= 32 or abs(a[1] - b[1]) >= 32 for i, a in enumerate(corners) for b in corners[i + 1 :])


def test_avif_reference_fits_the_budget():
    rgb = np.asarray(make_photo(64, 48, seed=8))
    found = compare.avif_at_size(rgb, 600)
    if found is None:
        pytest.skip("this Pillow has no AVIF")
    quality, data, decoded = found
    assert len(data) <= 600 or quality == 0
    assert decoded.shape == rgb.shape
