"""EXIF, XMP and alpha: kept as their own streams (format version 4), written into the outputs that
hold them, ``--strip`` and ``--drop-alpha``; through the command line and Pillow's API."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

import xcodec.pillow  # noqa: F401  (registers XSC)
from xcodec import api, container
from xcodec.container import Bitstream, StreamKind
from xcodec.errors import FormatError

from tests.conftest import make_photo

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
MAKE = 0x010F
ORIENTATION = 0x0112


def kinds(data: bytes) -> list[str]:
    """The file's metadata kinds (the model's coded and side streams aside)."""
    return [kind.name for kind, _ in container.unpack(data).streams if kind != StreamKind.CODED and kind not in container.SIDE]


@pytest.fixture
def tagged(tmp_path):
    """A JPEG that displays rotated (EXIF orientation 6) with a camera make and an XMP packet."""
    exif = Image.Exif()
    exif[ORIENTATION], exif[MAKE] = 6, "Camera"
    make_photo(40, 24, seed=9).save(tmp_path / "tagged.jpg", exif=exif.tobytes(), xmp=XMP, quality=95)
    return tmp_path / "tagged.jpg"


@pytest.fixture
def rgba(tmp_path):
    """A PNG with a transparent band, a half-transparent band and opaque pixels."""
    pixels = np.asarray(make_photo(40, 24, seed=10).convert("RGBA")).copy()
    pixels[:8, :, 3], pixels[8:10, :, 3] = 0, 128
    Image.fromarray(pixels).save(tmp_path / "rgba.png")
    return tmp_path / "rgba.png"


def test_exif_and_xmp_are_kept_and_written_into_outputs(run_cli, tagged, tmp_path):
    assert run_cli("encode", tagged, "-o", "tagged.xsc").returncode == 0
    data = (tmp_path / "tagged.xsc").read_bytes()
    assert container.unpack(data).header.version == container.FOLDED_VERSION  # the default model's (wavelet) files
    assert kinds(data) == ["EXIF", "XMP"]
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        result = run_cli("decode", "tagged.xsc", "-o", f"out{suffix}")
        assert result.returncode == 0, result.stderr
        out = Image.open(tmp_path / f"out{suffix}")
        assert out.size == (24, 40)  # the orientation is applied ...
        assert out.getexif()[ORIENTATION] == 1 and out.getexif()[MAKE] == "Camera", suffix  # ... and now says so
        xmp = out.info.get("xmp") or out.info.get("XML:com.adobe.xmp")
        assert (xmp.encode() if isinstance(xmp, str) else xmp) == XMP, suffix


def test_strip_drops_exif_and_xmp(run_cli, tagged, tmp_path):
    assert run_cli("encode", tagged, "-o", "bare.xsc", "--strip").returncode == 0
    data = (tmp_path / "bare.xsc").read_bytes()
    assert kinds(data) == [] and container.unpack(data).header.version == container.FOLDED_VERSION


def test_transparency_is_coded_losslessly(run_cli, rgba, tmp_path):
    assert run_cli("encode", rgba, "-o", "rgba.xsc").returncode == 0
    assert kinds((tmp_path / "rgba.xsc").read_bytes()) == ["ALPHA"]
    for suffix in (".png", ".webp", ".tif"):
        assert run_cli("decode", "rgba.xsc", "-o", f"out{suffix}").returncode == 0
        out = Image.open(tmp_path / f"out{suffix}")
        assert out.mode == "RGBA" and out.getchannel("A").tobytes() == Image.open(rgba).getchannel("A").tobytes()
    flat = run_cli("decode", "rgba.xsc", "-o", "out.jpg")
    assert flat.returncode == 0 and "JPEG has no alpha channel: the image is flattened on white" in flat.stderr.decode()
    assert run_cli("encode", rgba, "-o", "opaque.xsc", "--drop-alpha").returncode == 0
    assert kinds((tmp_path / "opaque.xsc").read_bytes()) == []


def test_pillow_opens_rgba_and_metadata_from_the_header(rgba, tagged):
    data = io.BytesIO()
    Image.open(rgba).save(data, format="XSC")
    with Image.open(data) as image:
        assert image.mode == "RGBA" and image._im is None
        assert image.getchannel("A").tobytes() == Image.open(rgba).getchannel("A").tobytes()
    data = io.BytesIO()
    Image.open(tagged).save(data, format="XSC")
    with Image.open(data) as image:
        assert image.mode == "RGB" and image.info["xmp"] == XMP and image.getexif()[MAKE] == "Camera"


def test_a_bad_alpha_stream_is_a_format_error(rgba):
    bitstream = container.unpack(api.encode(Image.open(rgba), quality=3))
    alpha = bitstream.stream(StreamKind.ALPHA)
    for bad in (b"not a png", alpha[: len(alpha) // 2], _png(Image.new("L", (3, 3))), _png(Image.new("RGB", (40, 24)))):
        streams = [(kind, bad if kind == StreamKind.ALPHA else data) for kind, data in bitstream.streams]
        with pytest.raises(FormatError, match="alpha stream"):
            api.decode(container.pack(Bitstream(bitstream.header, streams)))


def test_version_3_files_may_not_hold_the_new_kinds():
    header = container.Header("hyperprior", bytes(8), 4.0, 8, 8)
    data = bytearray(container.pack(Bitstream(header, [(StreamKind.CODED, b"x"), (StreamKind.EXIF, b"e")])))
    assert data[4] == 4
    data[4] = container.VERSION
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    with pytest.raises(FormatError, match="EXIF stream"):
        container.unpack(bytes(data))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_unreadable_exif_block_is_dropped_with_a_warning(run_cli, tmp_path, fmt):
    """Issue 20, item 6: Pillow opens such files; the encoder crashed on them (SyntaxError from the plugin)."""
    path = tmp_path / f"junk.{fmt.lower()}"
    make_photo(40, 24, seed=12).save(path, fmt, exif=b"Exif\0\0this is not a TIFF structure")
    result = run_cli("encode", path, "-o", "junk.xsc")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 0, lines
    assert len(lines) == 2 and lines[0].startswith(f"warning: {path}: the EXIF block is not readable (not a TIFF file"), lines
    assert kinds((tmp_path / "junk.xsc").read_bytes()) == []
    with pytest.warns(UserWarning, match="EXIF block is not readable"):
        Image.open(path).save(io.BytesIO(), format="XSC")  # the plugin too


def test_metadata_an_output_cannot_hold_is_left_out_with_a_warning(run_cli, tmp_path):
    """Issue 20, item 5: an honest PNG with a 70 KB XMP packet encoded, and decoding it to JPEG failed."""
    xmp = XMP.replace(b"/>", b"/><!-- " + b"x" * 70_000 + b" -->")
    make_photo(40, 24, seed=13).save(tmp_path / "big.png", pnginfo=_xmp_text(xmp))
    assert run_cli("encode", "big.png").returncode == 0
    assert kinds((tmp_path / "big.xsc").read_bytes()) == ["XMP"]
    result = run_cli("decode", "big.xsc", "-o", "big.jpg")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 0, lines
    assert lines[0] == (f"warning: big.xsc: JPEG holds an XMP block of at most 65,504 bytes, not {len(xmp):,}: written without "
                        "it (write .png, .webp or .tif to keep it)"), lines
    assert "xmp" not in Image.open(tmp_path / "big.jpg").info
    assert run_cli("decode", "big.xsc", "-o", "big.webp").stderr.decode().count("warning") == 0


def _xmp_text(xmp: bytes):
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_itxt("XML:com.adobe.xmp", xmp.decode())
    return text


def test_an_output_without_metadata_says_what_it_leaves_out(run_cli, tagged, tmp_path):
    assert run_cli("encode", tagged, "-o", "tagged.xsc").returncode == 0
    result = run_cli("decode", "tagged.xsc", "-o", "out.bmp")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 0 and lines[0] == ("warning: tagged.xsc: BMP holds no EXIF or XMP: written without them "
                                                   "(write .png, .jpg, .webp or .tif to keep them)"), lines
