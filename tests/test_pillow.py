"""The Pillow plugin, through Pillow's own API: ``Image.open``, ``verify``, ``load`` and ``save``."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import xcodec.pillow  # noqa: F401  (registers XSC)
from xcodec import api, container
from xcodec.models import zoo

from tests.conftest import REPO_ROOT, make_photo


@pytest.fixture(scope="module")
def xsc() -> bytes:
    """An .xsc file written through Pillow, at quality 3."""
    out = io.BytesIO()
    make_photo(70, 45, seed=3).save(out, format="XSC", quality=3)
    return out.getvalue()


def test_open_a_path_reads_the_header_without_decoding(xsc, tmp_path):
    path = tmp_path / "photo.xsc"
    path.write_bytes(xsc)
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("XSC", "RGB", (70, 45))
        assert image.info["quality"] == 3 and image.info["model"] == zoo.DEFAULT_MODEL
        assert image._im is None  # nothing decoded yet
        assert np.array_equal(np.asarray(image), np.asarray(api.decode(xsc)))


def test_open_needs_no_torch(xsc, tmp_path):
    """Opening and verifying run without torch: the model loads only for the pixels."""
    path = tmp_path / "photo.xsc"
    path.write_bytes(xsc)
    code = (f"import sys; from PIL import Image; import xcodec.pillow; image = Image.open({str(path)!r}); "
            "print(image.format, image.mode, *image.size); image.verify(); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["XSC", "RGB", "70", "45"]


def test_open_a_file_object_and_load(xsc):
    with Image.open(io.BytesIO(xsc)) as image:
        image.load()
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.asarray(api.decode(xsc)))


def test_verify_passes_a_good_file_and_open_refuses_a_corrupted_one(xsc):
    with Image.open(io.BytesIO(xsc)) as image:
        image.verify()
    broken = bytearray(xsc)
    broken[len(broken) // 2] ^= 0x10
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(bytes(broken)))


def test_save_with_options_by_extension_and_round_trip(tmp_path):
    image = make_photo(64, 40, seed=5)
    path = tmp_path / "out.xsc"
    image.save(path, quality=6.5, effort=0, model="hyperprior", tile=0)
    header = api.info(path.read_bytes()).header
    assert (header.model, header.quality, header.width, header.height) == ("hyperprior", 6.5, 64, 40)
    with Image.open(path) as decoded:
        assert decoded.size == image.size
        assert np.array_equal(np.asarray(decoded), np.asarray(api.decode(path.read_bytes())))


def test_save_to_bpp_and_grayscale(tmp_path):
    out = io.BytesIO()
    make_photo(64, 40, seed=6).save(out, format="XSC", bpp=1.0)
    assert api.info(out.getvalue()).bpp <= 1.0 or api.info(out.getvalue()).header.quality == 1
    gray = make_photo(64, 40, seed=6).convert("L")
    gray.save(tmp_path / "gray.xsc")
    with Image.open(tmp_path / "gray.xsc") as decoded:
        assert decoded.mode == "L"
        assert decoded.info["quality"] == api.DEFAULT_QUALITY
        decoded.load()


def test_save_refuses_what_it_cannot_code():
    with pytest.raises(ValueError, match="either quality or bpp"):
        make_photo(8, 8).save(io.BytesIO(), format="XSC", quality=2, bpp=0.5)
    with pytest.raises(OSError, match="effort levels"):
        make_photo(8, 8).save(io.BytesIO(), format="XSC", effort=99)


def test_registered():
    assert Image.registered_extensions()[".xsc"] == "XSC"
    assert Image.MIME["XSC"] == "image/x-xsc"
    assert xcodec.pillow._accept(container.MAGIC + b"\x03") and not xcodec.pillow._accept(b"\x89PNG")


def test_encode_a_folder_skips_xsc_files_with_the_plugin_registered(run_cli, tmp_path, xsc):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_photo(32, 24).save(folder / "a.png")
    (folder / "b.xsc").write_bytes(xsc)
    result = run_cli("encode", folder, "--out-dir", tmp_path / "coded")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "coded").iterdir()) == ["a.xsc"]


def test_register_xsc_opener_beside_the_import():
    xcodec.pillow.register_xsc_opener()  # again: harmless
    assert Image.registered_extensions()[".xsc"] == "XSC" and xcodec.pillow.MAX_PIXELS == xcodec.pillow.DEFAULT_MAX_PIXELS


def test_xcodec_s_pixel_limit_applies_unless_the_app_raises_it():
    """Issue 20, item 2: a 198 KB upload claiming 12288x14336 passed Pillow's 179-Mpixel limit and then
    decoded for 11 minutes. Now Image.open refuses it, as Pillow refuses its own bombs."""
    from tests.hostile import claim

    seed = container.unpack(api.encode(make_photo(16, 16), quality=1))
    bomb = claim(seed, 12288, 14336, 1024, bytes(1176))
    with pytest.raises(Image.DecompressionBombError, match="register_xsc_opener"):
        Image.open(io.BytesIO(bomb))
    saved = Image.MAX_IMAGE_PIXELS
    try:
        xcodec.pillow.register_xsc_opener(max_pixels=12288 * 14336)
        Image.MAX_IMAGE_PIXELS = None  # and Pillow's own, which would warn above 89 Mpixel
        with Image.open(io.BytesIO(bomb)) as image:
            assert image.size == (12288, 14336)  # opened; not loaded here
    finally:
        xcodec.pillow.register_xsc_opener()
        Image.MAX_IMAGE_PIXELS = saved


def test_save_keywords_replace_the_image_s_metadata(tmp_path):
    """exif=, icc_profile= and xmp= as in Pillow's JPEG, PNG and WebP writers; the EXIF given is the one whose
    orientation is applied."""
    from PIL import ImageCms

    image = make_photo(40, 24, seed=2)
    image.info["icc_profile"] = b"the image's own profile, replaced below"
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Camera", 6  # make, orientation: displayed rotated
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    image.save(out, format="XSC", exif=exif.tobytes(), icc_profile=srgb, xmp=b"<x:xmpmeta/>")
    with Image.open(io.BytesIO(out.getvalue())) as decoded:
        assert decoded.size == (24, 40)
        assert decoded.getexif()[0x010F] == "Camera" and decoded.getexif()[0x0112] == 1
        assert decoded.info["icc_profile"] == srgb and decoded.info["xmp"] == b"<x:xmpmeta/>"
    out = io.BytesIO()
    image.save(out, format="XSC", exif=exif)  # an Image.Exif, as Pillow takes it
    assert container.unpack(out.getvalue()).stream(container.StreamKind.EXIF) is not None
    out = io.BytesIO()
    image.save(out, format="XSC", icc_profile=None)
    assert container.unpack(out.getvalue()).stream(container.StreamKind.ICC) is None
    assert image.size == (40, 24) and image.info["icc_profile"].startswith(b"the image's own")  # the caller's image as it was
