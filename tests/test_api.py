"""api.encode / api.decode with the installed model: sizes, modes, metadata, limits, determinism."""

from __future__ import annotations

import dataclasses
import io
import math
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from xcodec import api, container
from xcodec.metrics import psnr
from xcodec.container import Bitstream, StreamKind
from xcodec.errors import FormatError, InputError, ModelError, XcodecError
from xcodec.image import open_image
from xcodec.models import zoo

from tests.conftest import make_photo


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    return message


def reencode(data: bytes, **header_changes) -> bytes:
    """The same file with some header fields replaced (and so a new, correct CRC)."""
    bitstream = container.unpack(data)
    return container.pack(Bitstream(dataclasses.replace(bitstream.header, **header_changes), bitstream.streams))


# The hostile-file and tiling tests below craft headers with padding to a multiple of 64 and two
# streams per tile: they use a model with that layout whatever the default model is.
PADDED = "hyperprior"


@pytest.fixture(scope="module")
def manifest():
    return zoo.load(PADDED)[1]


@pytest.fixture(scope="module")
def encoded_97x61() -> bytes:
    return api.encode(make_photo(97, 61), quality=4, model=PADDED)


class ReachedDecompress(Exception):
    pass


@pytest.fixture
def forbid_decompress(monkeypatch):
    """Fail loudly (instead of allocating) if decoding gets as far as the model's decompress()."""
    calls = []
    net, _ = zoo.load(zoo.DEFAULT_MODEL)

    def decompress(self, streams, height, width, *args, **kwargs):
        calls.append((height, width))
        raise ReachedDecompress(f"decompress() was asked for a {width}x{height} image")

    monkeypatch.setattr(type(net), "decompress", decompress)
    return calls


# --- round trips --------------------------------------------------------------------------------


def test_round_trip_keeps_the_size(sized_photo):
    data = api.encode(sized_photo, quality=3)
    assert data.startswith(b"\x89XSC")
    h = container.unpack(data).header
    assert (h.width, h.height, h.channels) == (*sized_photo.size, 3)
    stride = zoo.load(zoo.DEFAULT_MODEL)[0].stride
    assert 0 <= h.pad_bottom < stride and 0 <= h.pad_right < stride
    assert (h.height + h.pad_bottom) % stride == 0 and (h.width + h.pad_right) % stride == 0
    out = api.decode(data)
    assert out.size == sized_photo.size
    assert out.mode == "RGB"
    assert np.asarray(out).dtype == np.uint8
    assert api.decode(data).tobytes() == out.tobytes()  # decoding is deterministic


def test_info_reports_the_header(encoded_97x61, manifest):
    info = api.info(encoded_97x61)
    assert info.size == len(encoded_97x61)
    assert (info.header.width, info.header.height, info.header.quality) == (97, 61, 4.0)
    assert info.header.model == PADDED
    assert info.header.model_hash == manifest.model_hash
    assert [kind for kind, _ in info.streams] == [StreamKind.CODED] * info.header.streams_per_tile
    assert info.bpp == pytest.approx(8 * len(encoded_97x61) / (97 * 61))
    assert sum(size for _, size in info.streams) < len(encoded_97x61)


def test_grayscale_comes_back_grayscale(photo):
    gray = photo(97, 61).convert("L")
    data = api.encode(gray, quality=4)
    assert container.unpack(data).header.channels == 1
    out = api.decode(data)
    assert out.mode == "L" and out.size == gray.size


@pytest.mark.parametrize("mode", ["1", "LA"])
def test_other_gray_modes_come_back_grayscale(photo, mode):
    image = photo(40, 30).convert(mode)  # LA from convert() is fully opaque
    out = api.decode(api.encode(image, quality=2))
    assert out.mode == "L" and out.size == (40, 30)


def test_palette_image_codes_like_its_rgb_version(photo):
    rgb = photo(97, 61)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert palette.mode == "P"
    data = api.encode(palette, quality=4)
    assert data == api.encode(palette.convert("RGB"), quality=4)
    out = api.decode(data)
    assert out.mode == "RGB" and out.size == rgb.size


def test_opaque_rgba_codes_like_rgb(photo):
    rgb = photo(97, 61)
    rgba = rgb.convert("RGBA")
    assert rgba.getchannel("A").getextrema() == (255, 255)
    data = api.encode(rgba, quality=4)
    assert data == api.encode(rgb, quality=4)
    assert api.decode(data).mode == "RGB"


def transparent(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    alpha = np.full((image.height, image.width), 255, dtype=np.uint8)
    alpha[0, 0] = 254  # a single, barely transparent pixel is still transparency
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def test_transparency_is_coded_unless_dropped(photo):
    rgba = transparent(photo(97, 61))
    data = api.encode(rgba, quality=4)
    decoded = api.decode(data)
    assert decoded.mode == "RGBA" and decoded.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()
    dropped = api.encode(rgba, quality=4, drop_alpha=True)
    assert dropped == api.encode(rgba.convert("RGB"), quality=4)
    assert api.decode(dropped).mode == "RGB"


def test_transparent_palette_and_gray_alpha_are_coded(photo):
    palette = photo(32, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    assert api.decode(api.encode(palette, quality=4)).mode == "RGBA"
    assert api.decode(api.encode(palette, quality=4, drop_alpha=True)).mode == "RGB"
    la = transparent(photo(32, 32)).convert("LA")
    assert api.decode(api.encode(la, quality=4)).mode == "LA"
    assert api.decode(api.encode(la, quality=4, drop_alpha=True)).mode == "L"


def test_16_bit_input_is_coded_at_8_bits_with_a_warning(photo):
    gray = np.asarray(photo(50, 30).convert("L"))
    wide = Image.frombytes("I;16", (50, 30), (gray.astype("<u2") * 257).tobytes())
    assert wide.mode == "I;16"
    with pytest.warns(UserWarning, match="8 bits"):
        data = api.encode(wide, quality=4)
    # v * 257 / 65535 * 255 == v: the 16-bit image is exactly the 8-bit one.
    assert data == api.encode(Image.fromarray(gray), quality=4)
    out = api.decode(data)
    assert out.mode == "L" and out.size == (50, 30)


def test_cmyk_is_converted(photo):
    out = api.decode(api.encode(photo(40, 20).convert("CMYK"), quality=4))
    assert out.mode == "RGB" and out.size == (40, 20)


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    photo(40, 24).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    jpeg = Image.open(io.BytesIO(buffer.getvalue()))
    assert jpeg.size == (40, 24) and jpeg.getexif().get(0x0112) == 6
    data = api.encode(jpeg, quality=4)
    assert (container.unpack(data).header.width, container.unpack(data).header.height) == (24, 40)
    assert api.decode(data).size == (24, 40)


def test_exif_orientation_1_keeps_the_size(photo):
    exif = Image.Exif()
    exif[0x0112] = 1
    buffer = io.BytesIO()
    photo(40, 24).save(buffer, "JPEG", exif=exif.tobytes())
    assert api.decode(api.encode(Image.open(io.BytesIO(buffer.getvalue())), quality=4)).size == (40, 24)


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_icc_profile_survives(photo, srgb_icc):
    image = photo(64, 64)
    image.info["icc_profile"] = srgb_icc
    data = api.encode(image, quality=4)
    assert container.unpack(data).stream(StreamKind.ICC) == srgb_icc
    out = api.decode(data)
    assert out.info.get("icc_profile") == srgb_icc


def test_icc_profile_survives_from_a_png_file(photo, srgb_icc, save_png):
    path = save_png(photo(33, 20), "icc.png", icc_profile=srgb_icc)
    with Image.open(path) as source:
        data = api.encode(source, quality=4)
    out = api.decode(data)
    assert out.info.get("icc_profile") == srgb_icc
    saved = io.BytesIO()
    out.save(saved, "PNG", icc_profile=out.info["icc_profile"])
    assert Image.open(io.BytesIO(saved.getvalue())).info.get("icc_profile") == srgb_icc


def test_no_icc_profile_means_no_icc_stream(encoded_97x61):
    assert container.unpack(encoded_97x61).stream(StreamKind.ICC) is None
    assert not api.decode(encoded_97x61).info.get("icc_profile")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_unreadable_bytes_are_an_input_error():
    for data in (b"", b"not an image", _png_header_only(16, 16)):  # the last one has no pixel data
        with pytest.raises(InputError) as info:
            open_image(data, api.DEFAULT_MAX_PIXELS)
        one_line(info.value)


def test_decompression_bomb_is_an_input_error():
    with pytest.raises(InputError):
        open_image(_png_header_only(20000, 10000), api.DEFAULT_MAX_PIXELS)


def test_empty_image_is_refused():
    with pytest.raises(InputError):
        api.encode(Image.new("RGB", (0, 0)), quality=4)


# --- quality ------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [0, 0.99, 8.01, 9, -1, math.nan, math.inf])
def test_quality_outside_1_to_8_is_refused(photo, quality):
    with pytest.raises(InputError, match="quality") as info:
        api.encode(photo(8, 8), quality=quality)
    one_line(info.value)


@pytest.mark.parametrize("quality", [1.0, 2.5, 3.3, 7.9, 8.0])
def test_fractional_quality(photo, quality):
    image = photo(64, 64)
    data = api.encode(image, quality=quality)
    stored = container.unpack(data).header.quality
    assert stored == container.quantize_quality(quality)
    assert abs(stored - quality) <= 1 / 512
    assert api.encode(image, quality=stored) == data
    assert api.decode(data).size == (64, 64)


def test_higher_quality_gives_a_larger_file_when_the_model_says_so():
    image = make_photo(256, 192, seed=1)
    sizes = {q: len(api.encode(image, quality=q)) for q in (1, 4, 8)}
    net, _ = zoo.load(zoo.DEFAULT_MODEL)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255)
    with torch.no_grad():
        estimate = {q: net.to("cpu").estimate_bits(x, q) / 8 for q in (1, 4, 8)}
    # The model's own estimate must be clearly increasing before the real sizes have to be.
    if not (estimate[4] > 1.05 * estimate[1] + 32 and estimate[8] > 1.05 * estimate[4] + 32):
        pytest.skip(f"the installed model does not rate higher quality as costlier here: {estimate} ({sizes})")
    assert sizes[1] < sizes[4] < sizes[8], sizes


@pytest.mark.parametrize("model", zoo.available())
def test_file_size_is_within_one_percent_of_the_models_estimate(model):
    image = make_photo(256, 192, seed=2)  # a multiple of 64: no padding in the file either
    net, _ = zoo.load(model)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255)
    for quality in (1, 6):
        data = api.encode(image, quality=quality, model=model, device="cpu")
        coded = sum(len(payload) for _, payload in container.unpack(data).streams)
        with torch.no_grad():
            estimate = net.to("cpu").estimate_bits(x, quality) / 8
        # 8 bytes: the last ANS word of each of the two streams.
        assert abs(coded - estimate) <= 0.01 * estimate + 8, (quality, coded, estimate)


def test_encode_to_bpp_stays_within_the_target():
    image = make_photo(64, 64, seed=4)
    pixels = 64 * 64
    low = api.encode(image, quality=1)
    high = api.encode(image, quality=8)
    for target in (8 * len(low) / pixels, 8 * (len(low) + len(high)) / 2 / pixels):
        data = api.encode_to_bpp(image, target)
        assert 8 * len(data) / pixels <= target + 1e-12
        assert len(data) >= len(low)
        assert api.decode(data).size == (64, 64)
    assert api.encode_to_bpp(image, 8 * len(high) / pixels) == high


def test_encode_to_bpp_below_quality_1_returns_quality_1():
    image = make_photo(40, 40, seed=5)
    assert api.encode_to_bpp(image, 0.001) == api.encode(image, quality=1)


def test_encode_to_bpp_codes_kept_analyses_in_worker_processes_to_the_same_file():
    """Six tiles analysed once, then coded at each quality tried by threads or by worker processes
    (which inherit the analyses): the file ``encode`` writes at the quality chosen, on any count."""
    image = make_photo(160, 128, seed=6)
    files = [api.encode_to_bpp(image, 1.0, tile=64, device="cpu", threads=count) for count in (1, 2)]
    quality = container.unpack(files[0]).header.quality
    assert files[0] == files[1] == api.encode(image, quality=quality, tile=64, device="cpu", threads=2)
    assert container.unpack(files[0]).header.tiles == 6


# --- limits -------------------------------------------------------------------------------------


def test_max_pixels_in_encode(photo):
    image = photo(97, 61)
    with pytest.raises(InputError, match="pixels") as info:
        api.encode(image, quality=4, max_pixels=97 * 61 - 1)
    one_line(info.value)
    assert api.encode(image, quality=4, max_pixels=97 * 61) == api.encode(image, quality=4)


def test_max_pixels_in_decode(encoded_97x61):
    with pytest.raises(InputError, match="pixels"):
        api.decode(encoded_97x61, max_pixels=97 * 61 - 1)
    assert api.decode(encoded_97x61, max_pixels=97 * 61).size == (97, 61)


def test_the_default_pixel_limit_admits_todays_camera_photos():
    """Unasked (the file's size bounds the work of decoding it: ``container.MAX_PIXELS_PER_BYTE``)."""
    api.check_pixels(9504, 6336, api.DEFAULT_MAX_PIXELS)  # a 61-Mpixel full-frame sensor
    with pytest.raises(InputError, match="--max-pixels"):
        api.check_pixels(9504, 6336, 50_000_000)


@pytest.mark.parametrize("side,tile,error", [(container.MAX_SIDE, 0, FormatError), (10240, 2048, InputError)])
def test_huge_claimed_size_is_refused_quickly_without_allocating(encoded_97x61, forbid_decompress, side, tile, error):
    # one tile of 2^20 x 2^20 is more than a decoder takes; 25 tiles of 2048 are more pixels than allowed
    # (with the coded bytes that so many pixels need: 2 KB a tile)
    data = hostile(encoded_97x61, side, side, tile, lambda i: bytes(2048))
    if tile:
        assert api.info(data).header.width == side  # a well-formed file: only the size is outrageous
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match="pixels") as info:
            api.decode(data)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(info.value)
    assert elapsed < 2.0
    assert peak < 8 * 2**20
    assert forbid_decompress == []


def test_padding_cannot_inflate_the_decoded_area(encoded_97x61, forbid_decompress):
    data = reencode(encoded_97x61, width=1, height=1, pad_bottom=65535, pad_right=65535)
    with pytest.raises(XcodecError):
        api.decode(data)
    assert forbid_decompress == []


def test_padding_that_does_not_match_the_model_is_refused(encoded_97x61):
    with pytest.raises(FormatError, match="padding"):
        api.decode(reencode(encoded_97x61, pad_bottom=0))


# --- determinism and model identity -------------------------------------------------------------


def test_encoding_is_identical_for_1_and_2_threads(photo, torch_threads):
    image = photo(130, 70)
    torch.set_num_threads(1)
    one = api.encode(image, quality=5.5, device="cpu")
    torch.set_num_threads(2)
    two = api.encode(image, quality=5.5, device="cpu")
    assert one == two
    assert torch.get_num_threads() == 2  # the one-thread analysis gives the caller's count back


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_a_file_encoded_on_the_gpu_decodes_on_the_cpu_like_a_cpu_encoded_one(photo):
    # The README promises this: the GPU's analysis may round a few latents differently, nothing more.
    image = photo(130, 70)
    rgb = np.asarray(image.convert("RGB"))
    gpu, cpu = (api.encode(image, quality=5.5, device=device) for device in ("cuda", "cpu"))
    assert abs(len(gpu) - len(cpu)) <= 0.02 * len(cpu)
    quality = [psnr(rgb, np.asarray(api.decode(data, device="cpu"))) for data in (gpu, cpu)]
    assert abs(quality[0] - quality[1]) < 0.1


def test_altered_model_hash_is_refused(encoded_97x61, manifest):
    wrong = bytes(b ^ 0xFF for b in manifest.model_hash)
    with pytest.raises(ModelError) as info:
        api.decode(reencode(encoded_97x61, model_hash=wrong))
    one_line(info.value)


def test_unknown_model_is_refused(encoded_97x61):
    with pytest.raises(ModelError, match="nosuchmodel") as info:
        api.decode(reencode(encoded_97x61, model="nosuchmodel"))
    one_line(info.value)
    with pytest.raises(ModelError):
        api.encode(make_photo(8, 8), quality=4, model="nosuchmodel")


def test_missing_streams_are_a_format_error(encoded_97x61):
    bitstream = container.unpack(encoded_97x61)
    for dropped in range(len(bitstream.streams)):
        streams = bitstream.streams[:dropped] + bitstream.streams[dropped + 1 :]
        with pytest.raises(FormatError):
            api.decode(container.pack(Bitstream(bitstream.header, streams)))


def test_streams_per_tile_must_be_the_model_s(encoded_97x61):
    bitstream = container.unpack(encoded_97x61)  # one tile: keep its first stream only
    header = dataclasses.replace(bitstream.header, streams_per_tile=1)
    with pytest.raises(FormatError, match="streams per tile") as info:
        api.decode(container.pack(Bitstream(header, bitstream.streams[:1])))
    one_line(info.value)


def test_a_latent_stream_of_odd_length_is_a_format_error(encoded_97x61):
    bitstream = container.unpack(encoded_97x61)
    streams = bitstream.streams[:1] + [(k, d + b"\x01") for k, d in bitstream.streams[1:]]
    with pytest.raises(FormatError):
        api.decode(container.pack(Bitstream(bitstream.header, streams)))


def test_a_latent_stream_ending_in_a_zero_word_is_a_format_error(encoded_97x61):
    bitstream = container.unpack(encoded_97x61)
    streams = bitstream.streams[:1] + [(k, d + bytes(4)) for k, d in bitstream.streams[1:]]
    with pytest.raises(FormatError):
        api.decode(container.pack(Bitstream(bitstream.header, streams)))


def test_corrupted_file_is_a_format_error(encoded_97x61):
    damaged = bytearray(encoded_97x61)
    damaged[len(damaged) // 2] ^= 0x10
    with pytest.raises(FormatError):
        api.decode(bytes(damaged))


def test_unknown_device_is_an_input_error(photo):
    with pytest.raises(InputError):
        api.encode(photo(8, 8), quality=4, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError):
            api.encode(photo(8, 8), quality=4, device="cuda")


# --- tiles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,tile,grid", [((130, 70), 64, (2, 3)), ((97, 61), 64, (1, 2)), ((200, 130), 128, (2, 2)),
                                            ((3, 200), 64, (4, 1))])
def test_tiled_round_trip(size, tile, grid):
    image = make_photo(*size, seed=3)
    data = api.encode(image, quality=4, tile=tile)
    header = container.unpack(data).header
    assert (header.tile, header.tile_grid) == (tile, grid)
    out = api.decode(data)
    assert out.size == image.size
    untiled = api.decode(api.encode(image, quality=4, tile=0))
    assert psnr(np.asarray(out), np.asarray(image)) > psnr(np.asarray(untiled), np.asarray(image)) - 2
    assert api.encode(image, quality=4, tile=tile) == data  # deterministic


def test_tiles_are_coded_independently():
    image = make_photo(128, 64, seed=6)
    tiled = container.tile_streams(container.unpack(api.encode(image, quality=4, tile=64)))
    for i, left in enumerate((0, 64)):
        alone = container.unpack(api.encode(image.crop((left, 0, left + 64, 64)), quality=4, tile=0))
        assert container.tile_streams(alone) == [tiled[i]]


@pytest.mark.parametrize("tile", [0, 192, 1024, 10**6])
def test_one_tile_has_one_representation(tile):
    image = make_photo(130, 70)  # padded to 192x128
    data = api.encode(image, quality=4, tile=tile)
    assert container.unpack(data).header.tile == 0
    assert data == api.encode(image, quality=4, tile=0)


@pytest.mark.parametrize("tile", [-64, 1, 63, 100])
def test_invalid_tile_size_is_refused(tile):
    with pytest.raises(InputError, match="tile") as info:
        api.encode(make_photo(130, 70), quality=4, tile=tile, model=PADDED)
    one_line(info.value)


def test_tile_size_that_is_not_a_multiple_of_the_stride_is_refused(forbid_decompress):
    data = api.encode(make_photo(97, 61), quality=4, tile=64, model=PADDED)  # 128x64 padded: 1x2 tiles
    with pytest.raises(FormatError, match="tile size"):
        api.decode(reencode(data, tile=96))  # still 1x2 tiles, so the stream table matches
    assert forbid_decompress == []


def test_tile_count_that_does_not_match_the_streams_is_refused(encoded_97x61, forbid_decompress):
    tiled = api.encode(make_photo(97, 61), quality=4, tile=64, model=PADDED)  # 1x2 tiles
    for data in (reencode(encoded_97x61, tile=64), reencode(encoded_97x61, tile=1), reencode(tiled, tile=0)):
        with pytest.raises(FormatError, match="tiles") as info:
            api.decode(data)
        one_line(info.value)
    assert forbid_decompress == []


def test_tiled_encoding_is_identical_for_1_and_2_threads(torch_threads):
    image = make_photo(130, 70, seed=8)
    torch.set_num_threads(1)
    one = api.encode(image, quality=5.5, device="cpu", tile=64)
    torch.set_num_threads(2)
    assert api.encode(image, quality=5.5, device="cpu", tile=64) == one


# --- hostile files: refused at once, whatever they claim ----------------------------------------


def hostile(encoded: bytes, width: int, height: int, tile: int, payload=lambda i: b"") -> bytes:
    """A file with the header of a real one, claiming another size and tiling, with made-up streams."""
    real = container.unpack(encoded).header
    header = dataclasses.replace(real, width=width, height=height, pad_bottom=-height % 64, pad_right=-width % 64,
                                 tile=tile)
    coded = [(StreamKind.CODED, payload(i)) for i in range(header.tiles * header.streams_per_tile)]
    return container.pack(Bitstream(header, coded))


@pytest.mark.parametrize("width,height,tile,payload", [
    (256, 256, 0, lambda i: b""),  # 63 bytes of empty streams decoded into noise
    (4096, 4096, 1024, lambda i: b""),  # 16 tiles of empty streams: minutes and 1.9 GB
    (4096, 4096, 1024, lambda i: struct.pack("<2I", 0xDEADBEEF, i + 1)),  # a few words each
    (4096, 4096, 0, lambda i: bytes(2000)),  # one tile of 4096: 4.1 GB
], ids=["empty", "16-empty-tiles", "16-short-tiles", "one-huge-tile"])
def test_hostile_files_are_refused_within_seconds(encoded_97x61, width, height, tile, payload, run_cli, tmp_path):
    data = hostile(encoded_97x61, width, height, tile, payload)
    assert len(data) < 4 * 1024
    (tmp_path / "hostile.xsc").write_bytes(data)
    start = time.perf_counter()
    result = run_cli("decode", tmp_path / "hostile.xsc", "-o", tmp_path / "out.png")
    assert time.perf_counter() - start < 10
    assert result.returncode == 1
    assert len(result.stderr.decode().strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_truncated_latent_stream_is_refused(encoded_97x61):
    bitstream = container.unpack(encoded_97x61)
    (kind, z), (_, y) = bitstream.streams[:2]
    streams = [(kind, z), (kind, y[: len(y) // 8 * 4])] + bitstream.streams[2:]
    with pytest.raises(FormatError, match="ends before its symbols do") as info:
        api.decode(container.pack(Bitstream(bitstream.header, streams)))
    one_line(info.value)


def test_the_encoder_refuses_tiles_larger_than_decoders_take():
    with pytest.raises(InputError, match=f"limited to {container.MAX_TILE} pixels") as info:
        api.encode(make_photo(container.MAX_TILE + 1, 8), quality=4, tile=0)
    one_line(info.value)
