"""The .xsc container: byte layout, round trip, and every rejection path (always a one-line FormatError)."""

from __future__ import annotations

import struct
import time
import zlib

import pytest

from xcodec import container
from xcodec.container import MAGIC, MAX_SIDE, Bitstream, Header, StreamKind
from xcodec.errors import FormatError, XcodecError

HASH = bytes(range(1, 9))


def craft(*, magic: bytes = MAGIC, version: int = 2, model: bytes = b"hyperprior", name_len: int | None = None,
          model_hash: bytes = HASH, quality_raw: int = 4 * 256, width: int = 97, height: int = 61,
          channels: int = 3, depth: int = 8, pad_bottom: int = 3, pad_right: int = 31, tile: int = 0,
          streams=((1, b"hyper side info"), (2, b"latent!!"), (16, b"icc")), table=None,
          count: int | None = None, tail: bytes = b"", crc: bool = True) -> bytes:
    """Build an .xsc file field by field, independently of ``container.pack``.

    ``table`` overrides the (kind, length) entries, ``count`` the stream count, ``tail`` appends
    bytes before the CRC; with ``crc=True`` the checksum is always correct for what was built.
    """
    table = [(kind, len(data)) for kind, data in streams] if table is None else table
    body = magic + bytes([version, len(model) if name_len is None else name_len]) + model
    body += model_hash + struct.pack("<HIIBBHHII", quality_raw, width, height, channels, depth, pad_bottom,
                                     pad_right, tile, len(table) if count is None else count)
    body += b"".join(struct.pack("<BI", kind, length) for kind, length in table)
    body += b"".join(data for _, data in streams) + tail
    return body + struct.pack("<I", zlib.crc32(body) if crc else 0)


def assert_format_error(data: bytes, match: str | None = None) -> FormatError:
    with pytest.raises(FormatError, match=match) as info:
        container.unpack(data)
    message = str(info.value)
    assert message and "\n" not in message, f"message must be one non-empty line: {message!r}"
    return info.value


@pytest.fixture
def bitstream() -> Bitstream:
    header = Header("hyperprior", HASH, 4.25, 97, 61, 3, 8, 3, 31, tile=64)  # 1x2 tiles
    return Bitstream(header, [
        (StreamKind.HYPER, bytes(range(256)) * 3),
        (StreamKind.LATENT, b"\x00\x01\x02\x03" * 50),
        (StreamKind.HYPER, b"second tile"),
        (StreamKind.LATENT, b""),  # an empty stream is legal
        (StreamKind.ICC, b"fake icc profile \x00\xff" * 7),
    ])


@pytest.fixture
def packed(bitstream) -> bytes:
    return container.pack(bitstream)


# --- round trip and layout ----------------------------------------------------------------------


def test_round_trip_preserves_header_and_streams(bitstream, packed):
    out = container.unpack(packed)
    assert out.header == bitstream.header
    assert out.streams == bitstream.streams
    assert all(isinstance(kind, StreamKind) for kind, _ in out.streams)
    assert out.stream(StreamKind.ICC) == bitstream.streams[4][1]
    assert out.stream(StreamKind.LATENT) == bitstream.streams[1][1]  # the first of its kind
    assert container.pack(out) == packed


def test_layout_matches_the_documented_byte_order():
    streams = [(StreamKind.HYPER, b"abc"), (StreamKind.LATENT, b"defgh"), (StreamKind.ICC, b"icc")]
    header = Header("hyperprior", HASH, 4.0, 97, 61, 3, 8, 3, 31)
    expected = craft(streams=[(int(k), d) for k, d in streams])
    assert container.pack(Bitstream(header, streams)) == expected
    assert expected.startswith(b"\x89XSC\x02")
    assert struct.unpack("<I", expected[-4:])[0] == zlib.crc32(expected[:-4])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("quality", [1.0, 2.5, 3.3, 7.99609375, 8.0])
def test_header_values_round_trip(quality, channels):
    header = Header("m", b"\xff" * 8, container.quantize_quality(quality), MAX_SIDE, 1, channels, 8, 65535, 0)
    streams = [(StreamKind.HYPER, b""), (StreamKind.LATENT, b"")]
    out = container.unpack(container.pack(Bitstream(header, streams)))
    assert out.header == header
    assert out.streams == streams
    assert abs(out.header.quality - quality) <= 0.5 / container.QUALITY_STEPS


def test_quantize_quality_uses_256ths():
    assert container.quantize_quality(3.3) == round(3.3 * 256) / 256
    assert container.quantize_quality(2.5) == 2.5
    assert container.quantize_quality(1 + 1 / 1024) == 1.0


def test_crafted_valid_file_is_accepted():
    # Guards the helper: the rejection tests below only mean something if craft() is right.
    out = container.unpack(craft())
    assert out.header == Header("hyperprior", HASH, 4.0, 97, 61, 3, 8, 3, 31)
    assert out.streams == [(StreamKind.HYPER, b"hyper side info"), (StreamKind.LATENT, b"latent!!"),
                           (StreamKind.ICC, b"icc")]


def test_pack_refuses_what_it_cannot_represent():
    header = Header("x" * 65, HASH, 4.0, 1, 1)
    with pytest.raises(ValueError):
        container.pack(Bitstream(header, []))
    with pytest.raises(ValueError):
        container.pack(Bitstream(Header("", HASH, 4.0, 1, 1), []))
    with pytest.raises(ValueError):
        container.pack(Bitstream(Header("m", b"short", 4.0, 1, 1), []))


# --- damaged files ------------------------------------------------------------------------------


def test_every_truncation_is_refused(packed):
    assert len(packed) > 40
    for length in range(len(packed)):  # includes 0..10 bytes and every cut inside the header/table/streams
        assert_format_error(packed[:length])


@pytest.mark.parametrize("length", range(11))
def test_tiny_inputs_are_refused(length):
    assert_format_error(craft()[:length])
    assert_format_error(bytes(length))
    assert_format_error(b"\xff" * length)


def test_every_flipped_byte_is_caught(packed):
    for position in range(len(packed)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(packed)
            damaged[position] ^= mask
            assert_format_error(bytes(damaged))


def test_appended_and_removed_bytes_are_caught(packed):
    assert_format_error(packed + b"\x00")
    assert_format_error(packed + packed)
    assert_format_error(packed[:20] + packed[21:])


def test_zeroed_crc_is_caught():
    assert_format_error(craft(crc=False), match="checksum")


@pytest.mark.parametrize("magic", [b"\x89PNG", b"XSC\x89", b"\x89xsc", b"\x00XSC", b"\x89XSD"])
def test_wrong_magic(magic):
    assert_format_error(craft(magic=magic), match="magic")


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_unknown_version_is_refused_for_the_version(version):
    data = craft(version=version)
    assert zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]  # the checksum itself is right
    error = assert_format_error(data, match="version")
    assert str(version) in str(error)


@pytest.mark.parametrize("delta", [-15, -2, -1, 1, 2, 1000, 2**32 - 1 - 15])
def test_stream_lengths_inconsistent_with_file_size(delta):
    table = [(1, 15 + delta), (2, 8), (16, 3)]
    assert_format_error(craft(table=table), match="stream table")


def test_stream_count_larger_than_the_table():
    # 5 entries announced, 3 present: the table runs into the payloads and the lengths cannot add up.
    assert_format_error(craft(count=5), match="stream table")
    assert_format_error(craft(streams=[], count=255), match="stream table")
    assert_format_error(craft(streams=[], count=2**32 - 1), match="stream table")  # refused before reading it


def test_stream_count_smaller_than_the_table():
    assert_format_error(craft(count=2), match="stream table")


def test_payload_after_the_last_stream_is_refused():
    assert_format_error(craft(tail=b"extra"), match="stream table")


@pytest.mark.parametrize("kind", [0, 3, 15, 17, 255])
def test_unknown_stream_kind(kind):
    error = assert_format_error(craft(streams=[(1, b"h"), (kind, b"??"), (2, b"l")]), match="stream kind")
    assert str(kind) in str(error)


@pytest.mark.parametrize("quality_raw", [0, 1, 255, 8 * 256 + 1, 9 * 256, 65535])
def test_invalid_quality(quality_raw):
    assert_format_error(craft(quality_raw=quality_raw), match="quality")


@pytest.mark.parametrize("quality_raw", [256, 257, 8 * 256])
def test_quality_bounds_are_inclusive(quality_raw):
    assert container.unpack(craft(quality_raw=quality_raw)).header.quality == quality_raw / 256


@pytest.mark.parametrize("width,height", [(0, 61), (97, 0), (0, 0), (MAX_SIDE + 1, 61), (97, MAX_SIDE + 1),
                                          (2**32 - 1, 2**32 - 1)])
def test_invalid_size(width, height):
    assert_format_error(craft(width=width, height=height), match="size")


@pytest.mark.parametrize("channels,depth", [(0, 8), (2, 8), (4, 8), (255, 8), (3, 16), (1, 1), (3, 0)])
def test_invalid_channels_or_depth(channels, depth):
    assert_format_error(craft(channels=channels, depth=depth), match="channels")


@pytest.mark.parametrize("name_len", [0, 65, 200, 255])
def test_invalid_model_name_length(name_len):
    assert_format_error(craft(name_len=name_len), match="model name")


def test_model_name_running_past_the_file():
    # A name length that eats the fixed header fields.
    assert_format_error(craft(model=b"m", name_len=60, streams=[]), match="model name")


def test_non_ascii_model_name():
    assert_format_error(craft(model=b"hyper\xe9prior"), match="ASCII")


def test_errors_are_xcodec_errors():
    with pytest.raises(XcodecError):
        container.unpack(b"")


# --- tiles --------------------------------------------------------------------------------------


def tile_streams(tiles: int) -> list[tuple[int, bytes]]:
    return [(kind, bytes([kind, i])) for i in range(tiles) for kind in (1, 2)]


@pytest.mark.parametrize("tile,grid", [(0, (1, 1)), (64, (1, 2)), (128, (1, 1)), (4096, (1, 1)), (32, (2, 4))])
def test_tile_grid_and_streams(tile, grid):
    # 97x61 padded to 128x64.
    streams = tile_streams(grid[0] * grid[1]) + [(16, b"icc")]
    out = container.unpack(craft(tile=tile, streams=streams))
    assert out.header.tile_grid == grid
    boxes = list(out.header.tile_boxes())
    assert len(boxes) == grid[0] * grid[1]
    assert sum(h * w for _, _, h, w in boxes) == 128 * 64  # the tiles cover the padded image once
    per_tile = container.tile_streams(out)
    assert len(per_tile) == len(boxes)
    assert all(set(t) == {StreamKind.HYPER, StreamKind.LATENT} for t in per_tile)
    assert per_tile[-1][StreamKind.LATENT] == bytes([2, len(boxes) - 1])


@pytest.mark.parametrize("tiles", [0, 1, 3, 100])
def test_stream_count_must_match_the_tile_count(tiles):
    assert_format_error(craft(tile=64, streams=tile_streams(tiles)), match="2 tiles")


@pytest.mark.parametrize("streams", [
    [(2, b"l"), (1, b"h")],  # latent before hyper
    [(1, b"h"), (1, b"h")],
    [(1, b"h"), (16, b"icc"), (2, b"l")],  # the icc stream comes last
    [(1, b"h"), (2, b"l"), (2, b"l")],
], ids=["order", "two-hypers", "icc-in-between", "extra-latent"])
def test_streams_must_be_a_hyper_and_a_latent_per_tile(streams):
    assert_format_error(craft(streams=streams), match="stream table")


def test_a_billion_tiles_are_refused_without_building_them():
    # 2^20 x 2^20 pixels in tiles of 1: 2^40 tiles, announced by a 60-byte file.
    data = craft(width=MAX_SIDE, height=MAX_SIDE, pad_bottom=0, pad_right=0, tile=1)
    start = time.perf_counter()
    assert_format_error(data, match="tiles")
    assert time.perf_counter() - start < 0.5


def test_tile_larger_than_the_format_allows():
    assert_format_error(craft(tile=MAX_SIDE + 1), match="tile size")
