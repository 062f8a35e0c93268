"""Lossless and near-lossless coding: bit-exact round trips, the error bound, the version-6 header."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xcodec.pillow  # noqa: F401  (registers .xsc with Pillow)
from xcodec import api, container, deep
from xcodec.png import write_png
from xcodec.container import Bitstream, Header, StreamKind
from xcodec.errors import FormatError, InputError
from xcodec.lossless import fit as fitting
from xcodec.lossless import tables
from xcodec.lossless.tokens import Alphabet
from xcodec.lossless.walk import DESIGNS

from tests.conftest import make_photo


def samples(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


def round_trip(image: Image.Image, **kwargs) -> tuple[bytes, Image.Image]:
    data = api.encode(image, **kwargs)
    return data, api.decode(data)


def test_rgb_round_trip_is_bit_exact_at_every_size(sized_photo):
    data, decoded = round_trip(sized_photo, lossless=True)
    assert decoded.mode == "RGB" and decoded.size == sized_photo.size
    assert np.array_equal(samples(decoded), samples(sized_photo))
    assert container.unpack(data).header.max_error == 0


def test_gray_and_rgba_round_trips_are_bit_exact(photo):
    gray = photo(61, 37).convert("L")
    assert np.array_equal(samples(round_trip(gray, lossless=True)[1]), samples(gray))
    rgba = photo(45, 30, seed=2).convert("RGBA")
    alpha = np.tile(np.arange(45, dtype=np.uint8) * 5, (30, 1))
    rgba.putalpha(Image.fromarray(alpha))
    decoded = round_trip(rgba, lossless=True)[1]
    assert decoded.mode == "RGBA" and np.array_equal(samples(decoded), samples(rgba))


def test_sixteen_bit_gray_keeps_its_sixteen_bits(photo):
    base = samples(photo(50, 33).convert("L"))
    high = (base * 257 + np.random.default_rng(0).integers(0, 200, base.shape)).astype(np.uint16)
    image = Image.fromarray(high)
    assert image.mode == "I;16"
    data, decoded = round_trip(image, lossless=True)
    assert container.unpack(data).header.bit_depth == 16
    assert decoded.mode == "I;16" and np.array_equal(np.asarray(decoded), high)


def test_tiled_image_is_bit_exact_and_codes_each_tile(photo):
    image = photo(150, 97, seed=3)
    data, decoded = round_trip(image, lossless=True, tile=64)
    assert container.unpack(data).header.tiles == 6
    assert np.array_equal(samples(decoded), samples(image))


@pytest.mark.parametrize("bound", [1, 2, 3, 4])
def test_near_lossless_keeps_every_sample_within_the_bound(photo, bound):
    image = photo(80, 53, seed=bound)
    data, decoded = round_trip(image, max_error=bound)
    error = np.abs(samples(decoded) - samples(image))
    assert error.max() == bound  # within the bound, and the bound is used
    assert len(data) < len(api.encode(image, lossless=True))
    assert container.unpack(data).header.max_error == bound


def test_near_lossless_sixteen_bit_gray_stays_within_the_bound():
    high = np.random.default_rng(1).integers(0, 1 << 16, (20, 31)).astype(np.uint16)
    decoded = round_trip(Image.fromarray(high), max_error=3)[1]
    assert np.abs(np.asarray(decoded).astype(np.int64) - high).max() <= 3


def test_conflicting_or_out_of_range_options_are_refused(photo):
    with pytest.raises(InputError, match="lossless means max_error 0"):
        api.encode(photo(8, 8), lossless=True, max_error=2)
    with pytest.raises(InputError, match="max_error"):
        api.encode(photo(8, 8), max_error=5)


def exact_file(photo, **changes) -> bytes:
    """A valid lossless file, its header fields changed (the checksum recomputed)."""
    bitstream = container.unpack(api.encode(photo(9, 7), lossless=True))
    for key, value in changes.items():
        setattr(bitstream.header, key, value)
    return container.pack(bitstream)


def test_version_6_header_round_trips_and_older_versions_are_unchanged(photo):
    data = exact_file(photo)
    assert data[4] == container.EXACT_VERSION
    h = container.unpack(data).header
    assert (h.quality, h.bit_depth, h.max_error, h.model) == (0.0, 8, 0, tables.NAME)
    lossy = Header("hyperprior", bytes(8), 4.0, 9, 7)
    assert container.pack(Bitstream(lossy, [(StreamKind.CODED, b"")]))[4] == container.VERSION


@pytest.mark.parametrize("changes, message", [
    ({"quality": 4.0}, "quality"),
    ({"max_error": 5}, "max error"),
    ({"bit_depth": 12}, "bits"),
    ({"bit_depth": 16, "model": "lossless"}, "16 bits only in grayscale"),
    ({"model": "wavelet"}, "names model"),
    ({"tile": 32}, "at least 64"),
])
def test_parser_refuses_inconsistent_version_6_headers(photo, changes, message):
    with pytest.raises(FormatError, match=message):
        container.unpack(exact_file(photo, **changes))


def test_lossy_headers_still_refuse_sixteen_bits(photo):
    bitstream = container.unpack(api.encode(photo(9, 7), lossless=True))
    bitstream.header.max_error, bitstream.header.quality, bitstream.header.bit_depth = None, 4.0, 16
    with pytest.raises(FormatError, match="lossless files only"):  # a lossy file never names the lossless coder
        container.unpack(container.pack(bitstream))
    bitstream.header.model = "hyperprior"
    with pytest.raises(FormatError, match="16 bits"):
        container.unpack(container.pack(bitstream))


def test_a_lossless_file_has_no_realism_stream(photo):
    bitstream = container.unpack(api.encode(photo(9, 7), lossless=True))
    bitstream.streams.append((StreamKind.REALISM, container.realism_stream(0.5)))
    with pytest.raises(FormatError, match="REALISM stream"):
        container.unpack(container.pack(bitstream))
    with pytest.raises(InputError, match="realism"):
        api.encode(photo(9, 7), lossless=True, realism=0.5)
    with pytest.raises(InputError, match="realism"):
        api.decode(api.encode(photo(9, 7), lossless=True), realism=0.5)


def test_decoder_refuses_first_generation_sixteen_bit_rgb_and_a_stream_with_data_left_over(photo):
    with pytest.raises(FormatError, match="16 bits"):
        api.decode(exact_file(photo, bit_depth=16, model="lossless"))
    bitstream = container.unpack(api.encode(photo(9, 7), lossless=True))
    bitstream.streams[0] = (StreamKind.CODED, bitstream.streams[0][1] + struct.pack("<I", 1))
    with pytest.raises(FormatError, match="corrupted"):
        api.decode(container.pack(bitstream))


def test_command_line_lossless_and_near_lossless(run_cli, save_png, photo, tmp_path):
    image = photo(70, 45)
    source = save_png(image)
    result = run_cli("encode", source, "-o", "a.xsc", "--lossless")
    assert result.returncode == 0, result.stderr
    assert b"lossless" in result.stderr + result.stdout
    assert run_cli("decode", "a.xsc", "-o", "a.png").returncode == 0
    assert np.array_equal(samples(Image.open(tmp_path / "a.png")), samples(image))
    assert run_cli("encode", source, "-o", "b.xsc", "--max-error", "2").returncode == 0
    assert run_cli("decode", "b.xsc", "-o", "b.png").returncode == 0
    assert np.abs(samples(Image.open(tmp_path / "b.png")) - samples(image)).max() <= 2
    assert run_cli("encode", source, "-o", "c.xsc", "--lossless", "-q", "3").returncode != 0
    assert run_cli("encode", source, "-o", "c.xsc", "--max-error", "5").returncode != 0


def rgb16(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth 16-bit RGB photo with noise in its low bits (as a scanner's), (H, W, 3) uint16."""
    ys, xs = np.mgrid[:height, :width]
    base = np.stack([20000 + 300 * xs + 100 * ys, 30000 + 150 * np.sin(ys / 3.0) * 100, 10000 + 200 * (xs ^ ys)], -1)
    noise = np.random.default_rng(seed).integers(0, 512, (height, width, 3))
    return np.clip(base + noise, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("size", [(1, 1), (37, 23), (150, 97)])
def test_sixteen_bit_rgb_round_trip_is_bit_exact(size):
    high = rgb16(*size)
    data = api.encode(high, lossless=True, tile=64)
    h = container.unpack(data).header
    assert (h.bit_depth, h.channels, h.model) == (16, 3, tables.NAME)
    decoded, metadata = api.decode_samples(data)
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, high) and metadata == {}
    with pytest.warns(UserWarning, match="16-bit RGB"):
        image = api.decode(data)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), (high.astype(np.int64) * 255 + 32767) // 65535)


def test_sixteen_bit_rgb_near_lossless_stays_within_the_bound():
    high = rgb16(61, 40, seed=4)
    decoded, _ = api.decode_samples(api.encode(high, max_error=3))
    assert np.abs(decoded.astype(np.int64) - high).max() == 3


def test_arrays_are_sixteen_bit_rgb_and_coded_exactly_only():
    with pytest.raises(InputError, match="lossless=True or max_error"):
        api.encode(rgb16(8, 8))
    with pytest.raises(InputError, match=r"array \(uint8\).*Image.fromarray"):  # an 8-bit array: the way to code it
        api.encode(np.zeros((8, 8, 3), np.uint8), quality=4)
    with pytest.raises(InputError, match="uint16"):
        api.encode(rgb16(8, 8).astype(np.int32), lossless=True)
    with pytest.raises(InputError, match="decode reads this one"):
        api.decode_samples(api.encode(Image.new("RGB", (8, 8)), quality=4))


def filtered_png(high: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of ``high`` whose rows use PNG's five filters in turn (None, Sub, Up, Average, Paeth)."""
    height, width, _ = high.shape
    raw = high.astype(">u2").reshape(height, width * 3).view(np.uint8).astype(np.int64)
    rows = []
    for y in range(height):
        up = raw[y - 1] if y else np.zeros_like(raw[y])
        left, corner = (np.concatenate([np.zeros(6, np.int64), row[:-6]]) for row in (raw[y], up))
        pa, pb, pc = np.abs(up - corner), np.abs(left - corner), np.abs(left + up - 2 * corner)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
        predicted = [0 * up, left, up, (left + up) >> 1, paeth][y % 5]
        rows.append(bytes([y % 5]) + ((raw[y] - predicted) & 0xFF).astype(np.uint8).tobytes())
    png = write_png(high)
    start = png.index(b"IDAT") - 4
    end = png.index(b"IEND") - 4
    body = zlib.compress(b"".join(rows))
    return png[:start] + struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body)) + png[end:]


def test_sixteen_bit_png_reader_undoes_every_filter():
    high = rgb16(29, 17, seed=5)
    assert deep.is_png16_rgb(filtered_png(high)) and np.array_equal(deep.read_png16(filtered_png(high)), high)
    assert np.array_equal(deep.read_png16(write_png(high, b"profile")), high)
    assert Image.open(io.BytesIO(write_png(high, b"profile"))).info["icc_profile"] == b"profile"


def test_command_line_sixteen_bit_rgb_png_in_png_and_tiff_out(run_cli, tmp_path):
    high = rgb16(70, 45, seed=6)
    (tmp_path / "in.png").write_bytes(filtered_png(high))
    result = run_cli("encode", "in.png", "-o", "in.xsc", "--lossless")
    assert result.returncode == 0 and b"8 bits" not in result.stderr, result.stderr
    assert container.unpack((tmp_path / "in.xsc").read_bytes()).header.bit_depth == 16
    assert run_cli("decode", "in.xsc", "-o", "out.png").returncode == 0
    assert np.array_equal(deep.read_png16((tmp_path / "out.png").read_bytes()), high)
    assert run_cli("decode", "in.xsc", "-o", "out.tif").returncode == 0
    tiff = Image.open(tmp_path / "out.tif")
    offset = tiff.tile[0].offset
    assert tiff.tile[0].args[0] == "RGB;16L" and tiff.size == (70, 45)
    pixels = np.frombuffer((tmp_path / "out.tif").read_bytes()[offset : offset + high.nbytes], "<u2").reshape(high.shape)
    assert np.array_equal(pixels, high)
    assert run_cli("decode", "in.xsc", "-o", "out.jpg").returncode != 0


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_command_line_sixteen_bit_gray_out_as_sixteen_bits(run_cli, tmp_path, suffix):
    high = np.random.default_rng(2).integers(0, 1 << 16, (17, 23)).astype(np.uint16)
    Image.fromarray(high).save(tmp_path / "in.png")
    assert run_cli("encode", "in.png", "-o", "in.xsc", "--lossless").returncode == 0
    assert run_cli("decode", "in.xsc", "-o", f"out{suffix}").returncode == 0
    out = Image.open(tmp_path / f"out{suffix}")
    assert out.mode.startswith("I") and np.array_equal(np.asarray(out).astype(np.int64), high)


def test_pillow_plugin_saves_lossless_and_near_lossless(photo):
    image = photo(40, 30)
    for options, bound in (({"lossless": True}, 0), ({"max_error": 3}, 3)):
        out = io.BytesIO()
        image.save(out, "XSC", **options)
        reopened = Image.open(io.BytesIO(out.getvalue()))
        assert reopened.info["max_error"] == bound
        assert np.abs(samples(reopened) - samples(image)).max() <= bound


def test_fitted_scale_recovers_a_laplacian():
    rng = np.random.default_rng(0)
    residuals = rng.laplace(0.0, 3.0, 20000)
    bins = np.zeros(residuals.size, dtype=np.int64)
    bins[::2] = 1
    scales = fitting.fit_scales(bins, residuals, count=2)
    assert np.allclose(scales, 3.0, rtol=0.05)


@pytest.mark.parametrize("name", ["lossless", "lossless-2", tables.NAME])
def test_shipped_tables_are_hash_checked(name):
    table, manifest = tables.load(name)
    assert table.scales.shape == (manifest.config["bins"],) and (np.diff(table.scales) >= 0).all()
    assert (table.counts is None) == (name == "lossless")


def test_flat_image_keeps_a_positive_scale():
    """Long runs of exact predictions shrink a context's statistics; its scale stays above zero."""
    flat = Image.new("RGB", (200, 200), (90, 140, 200))
    data, decoded = round_trip(flat, lossless=True)
    assert np.array_equal(samples(decoded), samples(flat))
    assert 8 * len(data) / (200 * 200) < 0.1


def test_decoder_refuses_lossless_tiles_above_its_limit(photo):
    """The walk's memory grows with the tile: a file claiming a larger one is refused before it runs."""
    bitstream = container.unpack(api.encode(photo(9, 7), lossless=True))
    bitstream.header.width = bitstream.header.height = container.EXACT_MAX_TILE + 1
    with pytest.raises(FormatError, match="lossless tiles"):
        container.read_table(container.pack(bitstream))  # the header alone decides, before any table loads
    with pytest.raises(InputError, match=f"tiles are limited to {container.EXACT_MAX_TILE}"):
        api.encode(photo(container.EXACT_MAX_TILE + 1, 3), lossless=True, tile=0)


def test_a_flat_image_is_coded_within_the_work_bound(monkeypatch):
    """A near-flat image codes to fewer bytes than decoders accept for its pixels: the encoder
    halves its tiles until the file passes the bound (here a stricter one, to keep the test small)."""
    monkeypatch.setattr(container, "MAX_PIXELS_PER_BYTE", 256)
    flat = Image.new("L", (256, 256), 7)
    data, decoded = round_trip(flat, lossless=True)
    table = container.read_table(data)
    assert table.header.tile in (64, 128)
    assert container.work_fits(table.header, sum(table.sizes(StreamKind.CODED)))
    assert np.array_equal(samples(decoded), samples(flat))


def test_lossless_batches_go_through_the_workers_and_the_header_checks(run_cli, photo, tmp_path):
    (tmp_path / "in").mkdir()
    images = [photo(40 + 10 * i, 30, seed=i) for i in range(3)]
    for i, image in enumerate(images):
        image.save(tmp_path / "in" / f"p{i}.png")
    result = run_cli("encode", "in", "-d", "coded", "--lossless", "-j", "2")
    assert result.returncode == 0, result.stderr
    other = container.unpack((tmp_path / "coded" / "p0.xsc").read_bytes())
    other.header.model_hash = bytes(8)  # made with other weights: refused before any table or model loads
    (tmp_path / "coded" / "p0.xsc").write_bytes(container.pack(other))
    result = run_cli("decode", "coded", "-d", "out", "-j", "2")
    assert result.returncode == 1 and b"other weights" in result.stderr
    for i in (1, 2):
        assert np.array_equal(samples(Image.open(tmp_path / "out" / f"p{i}.png")), samples(images[i]))
    fields = json.loads(run_cli("info", "coded/p1.xsc", "--json").stdout)
    assert (fields["max_error"], fields["bit_depth"], fields["model"]) == (0, 8, tables.NAME)


def test_bench_lossless_checks_the_round_trip_and_reports_each_codec(run_cli, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (48, 40), (90, 140, 200)).save(folder / "a.png")
    result = run_cli("bench", folder, "--lossless", "--codecs", "xcodec-lossless,png", "--out", "out")
    assert result.returncode == 0, result.stderr
    assert b"xcodec --lossless" in result.stdout and b"PNG" in result.stdout


GOLDEN = {  # version-6 files of the first generation (model ``lossless``): SHA-256 of the decoded samples
    "version-6-lossless.xsc": "a7599ea1bb0d7f7c0cb65a119fccf230d90ed6209df45728fd21a0590f76044f",
    "version-6-max-error-2.xsc": "c3fc6c17f0af3fd7d415b559c750ddf95c892167ad4fea0c4a52c53b362d47ac",
    "version-6-gray16.xsc": "9644c518560d195a6105c4f4450a133a47d7423ab08cc2ca703cc7f84a142daf",
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_first_generation_files_still_decode_to_the_same_samples(name):
    data = (Path(__file__).parent / "corpus" / name).read_bytes()
    assert container.unpack(data).header.model == "lossless" != tables.NAME
    assert hashlib.sha256(np.asarray(api.decode(data)).tobytes()).hexdigest() == GOLDEN[name]


def golden_inputs(generation: str) -> dict[str, tuple[object, dict]]:
    """The inputs of the golden files of ``generation`` (``lossless-2`` and on) and the options they were coded with."""
    photo = make_photo(101, 67, seed=3)  # odd sizes, above the fit's 4096 pixels
    rng = np.random.default_rng(7)
    gray = np.asarray(photo.convert("L"), dtype=np.uint16)[:45, :77] * 257 + rng.integers(0, 256, (45, 77))
    rgb = np.asarray(photo, dtype=np.uint16)[:40, :70] * 257 + rng.integers(0, 256, (40, 70, 3))
    return {f"{generation}-rgb.xsc": (photo, {"lossless": True}), f"{generation}-max-error-2.xsc": (photo, {"max_error": 2}),
            f"{generation}-gray16.xsc": (Image.fromarray(gray.astype(np.uint16)), {"lossless": True}),
            f"{generation}-rgb16.xsc": (rgb.astype(np.uint16), {"lossless": True})}


GOLDEN_2 = {  # files of the second generation (``lossless-2``), written before its walk was rearranged for speed
    "lossless-2-rgb.xsc": "8c2eb2bdbc5a64aa74d12bd3ccae529ec3a811313d88eb0069d942e72021c0b2",
    "lossless-2-max-error-2.xsc": "aae22daf7b08d959be57ce9e1f7b4d3cfe3c8d6d83d51c29731df81b2844e5e7",
    "lossless-2-gray16.xsc": "effd9ce90e42e17cf5743affc5d736d50615a8594444fcaddb82e792d3a59918",
    "lossless-2-rgb16.xsc": "41364df6d5693e55274cdcb6bd2cd81200407fa4673077e657066b8d98b4dda9",
}
GOLDEN_3 = {  # files of the third generation (``lossless-3``)
    "lossless-3-rgb.xsc": "8c2eb2bdbc5a64aa74d12bd3ccae529ec3a811313d88eb0069d942e72021c0b2",
    "lossless-3-max-error-2.xsc": "d5706307504c7cf8a1426ddb54dbd171cdee7b28a2462ede166ca3937522177b",
    "lossless-3-gray16.xsc": "effd9ce90e42e17cf5743affc5d736d50615a8594444fcaddb82e792d3a59918",
    "lossless-3-rgb16.xsc": "41364df6d5693e55274cdcb6bd2cd81200407fa4673077e657066b8d98b4dda9",
}


@pytest.mark.parametrize("name, generation", [(n, "lossless-2") for n in GOLDEN_2] + [(n, "lossless-3") for n in GOLDEN_3])
def test_later_generations_files_decode_to_the_same_samples_and_encode_to_the_same_bytes(name, generation, monkeypatch):
    """Every generation from ``lossless-2`` on still decodes its files, and encodes them again byte for byte."""
    data = (Path(__file__).parent / "corpus" / name).read_bytes()
    assert container.unpack(data).header.model == generation
    decoded, _ = api.decode_samples(data)
    assert hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest() == {**GOLDEN_2, **GOLDEN_3}[name]
    image, options = golden_inputs(generation)[name]
    monkeypatch.setattr(tables, "NAME", generation)
    assert api.encode(image, **options) == data


@pytest.mark.parametrize("alphabet", [Alphabet(), DESIGNS["lossless-3"].alphabet])
def test_tokens_split_and_join_every_sixteen_bit_magnitude(alphabet):
    magnitude = np.arange(1 << 16)
    token, raw, bits = alphabet.split(magnitude)
    assert np.array_equal(alphabet.join(token, raw), magnitude) and np.array_equal(alphabet.raw_bits(token), bits)
    assert (raw < (1 << bits)).all() and token.max() + 1 == alphabet.tokens == alphabet.magnitude_tokens((1 << 16) - 1)
    assert np.array_equal(np.unique(token), np.arange(alphabet.tokens))  # every token of some magnitude
    assert Alphabet().magnitude_tokens(255) == 32 and DESIGNS["lossless-3"].alphabet.magnitude_tokens(255) == 18


@pytest.mark.parametrize("name", ["lossless-2", "lossless-3"])
def test_symbols_round_trip_with_either_sign_of_the_centre(name):
    from xcodec.lossless.tokens import Histograms

    table, _ = tables.load(name)
    histograms = Histograms(table.counts, 3, 255, DESIGNS[name].alphabet)
    q = np.arange(-255, 256)
    for centre in (-0.375, 0.0, 0.25):
        mean = np.full(q.size, centre)
        symbols, raw, sizes = histograms.symbols(q, mean)
        assert symbols.min() >= 0 and symbols.max() < histograms.size and (raw < sizes).all()
        assert np.array_equal(histograms.values(symbols, raw, mean), q)
        assert np.array_equal(1 << histograms.raw_bits(symbols), sizes)


def test_prior_counts_without_data_are_the_laplacians():
    shape = fitting.ALPHABET.counts_shape
    counts = fitting.prior_counts(np.zeros(int(np.prod(shape)), dtype=np.int64))
    assert counts.shape == shape and counts.dtype == np.int64
    assert np.abs(counts.sum(-1) - 256).max() <= 32  # PRIOR_TOTAL, less rounding
    centre = counts.shape[-1] // 2  # the token of 0
    assert (counts[:, :20].argmax(-1) == centre).all()  # narrow scales: 0 is the likeliest


@pytest.mark.parametrize("name", ["lossless-2", "lossless-3"])
@pytest.mark.parametrize("planes, height, width, depth", [(3, 37, 23, 8), (1, 20, 90, 16), (3, 90, 7, 16), (3, 1, 1, 8)])
def test_predictions_computed_ahead_are_the_walks_own(planes, height, width, depth, name):
    """A lossless encoder's predictions of the whole tile ahead (``State.foresee``) give every step
    of the walk the same coder inputs as the walk's own, step by step, and the same samples back
    (odd sizes, 1x1, 8 and 16 bits; all but 1x1 long enough for the walk's arrays to slide)."""
    from xcodec.lossless.codec import fit
    from xcodec.lossless.walk import Grid, Quantiser, padded, walk

    rng = np.random.default_rng(planes * height + depth)
    smooth = np.cumsum(rng.integers(-3, 4, (planes, height, width)), axis=2) + (1 << (depth - 1))
    tile = np.clip(smooth + rng.integers(0, 1 << (depth - 6), smooth.shape), 0, (1 << depth) - 1)
    grid, table = Grid(height, width, planes, DESIGNS[name]), tables.load(name)[0]
    image = padded(tile, grid, depth)
    coefs = fit(image, grid, depth)[0]
    original = tile.reshape(-1).take(grid.order)

    def batches(ahead) -> list:
        seen = []

        def record(batch):
            seen.append((batch.prediction, batch.mean, batch.scale, batch.bins))
            return original[batch.span]

        assert np.array_equal(walk(grid, Quantiser(depth, 0), coefs, table.scales, record, ahead), tile)
        return seen

    stepwise, ahead = batches(None), batches(image)
    assert len(stepwise) == len(ahead) == len(grid.walk_steps)
    assert all(np.array_equal(a, b) for one, other in zip(stepwise, ahead) for a, b in zip(one, other))


def test_strips_visit_every_sample_once_in_fewer_steps():
    """``lossless-3`` codes a tile's two strips side by side: the walk's order is still a permutation
    of the samples, in fewer steps; a tile too short for strips has one."""
    import dataclasses

    from xcodec.lossless.walk import Grid

    one, two = (Grid(90, 61, 3, dataclasses.replace(DESIGNS["lossless-3"], strips=k)) for k in (1, 2))
    assert one.strip_starts.tolist() == [0, 90] and two.strip_starts.tolist() == [0, 44, 90]
    for grid in (one, two):
        assert np.array_equal(np.sort(grid.order), np.arange(3 * 90 * 61))
        assert sum(step.at.size for step in grid.walk_steps) == grid.order.size
    assert len(two.walk_steps) == 2 * 46 + 61 - 2 + 2 * 4 < len(one.walk_steps)
    assert Grid(15, 9, 1, DESIGNS["lossless-3"]).strip_starts.tolist() == [0, 15]
