"""The .xsc container: byte layout, round trip, and every rejection path (always a one-line FormatError)."""

from __future__ import annotations

import struct
import time
import zlib

import pytest

from xcodec import container
from xcodec.container import MAGIC, MAX_SIDE, MAX_TILE, Bitstream, Header, StreamKind
from xcodec.errors import FormatError, XcodecError

HASH = bytes(range(1, 9))


def craft(*, magic: bytes = MAGIC, version: int = 3, model: bytes = b"hyperprior", name_len: int | None = None,
          model_hash: bytes = HASH, quality_raw: int = 4 * 256, width: int = 97, height: int = 61,
          channels: int = 3, depth: int = 8, pad_bottom: int = 3, pad_right: int = 31, tile: int = 0,
          per_tile: int = 2, streams=((1, b"hyper side info"), (1, b"latent!!"), (16, b"icc")), table=None,
          count: int | None = None, tail: bytes = b"", crc: bool = True) -> bytes:
    """Build an .xsc file field by field, independently of ``container.pack``.

    ``table`` overrides the (kind, length) entries, ``count`` the stream count, ``tail`` appends
    bytes before the CRC; with ``crc=True`` the checksum is always correct for what was built.
    ``version=2`` leaves out the streams-per-tile byte (pass version-2 stream kinds).
    """
    table = [(kind, len(data)) for kind, data in streams] if table is None else table
    body = magic + bytes([version, len(model) if name_len is None else name_len]) + model
    body += model_hash + struct.pack("<HIIBBHHI", quality_raw, width, height, channels, depth, pad_bottom,
                                     pad_right, tile)
    body += (b"" if version == 2 else bytes([per_tile])) + struct.pack("<I", len(table) if count is None else count)
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
    header = Header("hyperprior", HASH, 4.25, 97, 61, 3, 8, 3, 31, tile=64, streams_per_tile=2)  # 1x2 tiles
    return Bitstream(header, [
        (StreamKind.CODED, bytes(range(256)) * 3),
        (StreamKind.CODED, b"\x00\x01\x02\x03" * 50),
        (StreamKind.CODED, b"second tile"),
        (StreamKind.CODED, b""),  # an empty stream is legal
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
    assert out.stream(StreamKind.CODED) == bitstream.streams[0][1]  # the first of its kind
    assert container.pack(out) == packed


def test_layout_matches_the_documented_byte_order():
    streams = [(StreamKind.CODED, b"abc"), (StreamKind.CODED, b"defgh"), (StreamKind.ICC, b"icc")]
    header = Header("hyperprior", HASH, 4.0, 97, 61, 3, 8, 3, 31, streams_per_tile=2)
    expected = craft(streams=[(int(k), d) for k, d in streams])
    assert container.pack(Bitstream(header, streams)) == expected
    assert expected.startswith(b"\x89XSC\x03")
    assert struct.unpack("<I", expected[-4:])[0] == zlib.crc32(expected[:-4])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("quality", [1.0, 2.5, 3.3, 7.99609375, 8.0])
def test_header_values_round_trip(quality, channels, monkeypatch):
    monkeypatch.setattr(container, "MAX_PIXELS_PER_BYTE", 2**40)  # extreme sizes from a byte per tile
    header = Header("m", b"\xff" * 8, container.quantize_quality(quality), MAX_SIDE, 1, channels, 8, 65535, 0, 1024)
    streams = [(StreamKind.CODED, b"x")] * header.tiles
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
    assert out.header == Header("hyperprior", HASH, 4.0, 97, 61, 3, 8, 3, 31, streams_per_tile=2)
    assert out.streams == [(StreamKind.CODED, b"hyper side info"), (StreamKind.CODED, b"latent!!"),
                           (StreamKind.ICC, b"icc")]


def test_version_2_files_are_read_as_two_coded_streams_per_tile():
    out = container.unpack(craft(version=2, streams=[(1, b"hyper"), (2, b"latent!!"), (16, b"icc")]))
    assert (out.header.version, out.header.streams_per_tile) == (2, 2)
    assert out.streams == [(StreamKind.CODED, b"hyper"), (StreamKind.CODED, b"latent!!"), (StreamKind.ICC, b"icc")]


@pytest.mark.parametrize("streams", [
    [(2, b"l"), (1, b"h")],  # latent before hyper
    [(1, b"h"), (1, b"h")],
    [(1, b"h"), (16, b"icc"), (2, b"l")],  # the icc stream comes last
    [(1, b"h"), (2, b"l"), (2, b"l")],
    [(1, b"h"), (2, b"l"), (17, b"?")],
], ids=["order", "two-hypers", "icc-in-between", "extra-latent", "version-3-kind"])
def test_version_2_streams_must_be_a_hyper_and_a_latent_per_tile(streams):
    assert_format_error(craft(version=2, streams=streams), match="stream table")


@pytest.mark.parametrize("name", ["x" * 65, "", "../weights/transformer", "/etc/passwd", "Transformer", "a.b", "é"])
def test_pack_refuses_what_it_cannot_represent(name):
    with pytest.raises(ValueError):
        container.pack(Bitstream(Header(name, HASH, 4.0, 1, 1), []))


def test_pack_refuses_a_short_hash():
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


@pytest.mark.parametrize("version", [0, 1, 16, 255])
def test_unknown_version_is_refused_for_the_version(version):
    data = craft(version=version)
    assert zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]  # the checksum itself is right
    error = assert_format_error(data, match="version")
    assert str(version) in str(error)


def test_version_7_is_written_when_the_header_asks_and_holds_every_lossy_kind(bitstream):
    bitstream.header.version = container.STREAMS_VERSION
    bitstream.streams.append((StreamKind.REALISM, b"\x32"))
    data = container.pack(bitstream)
    assert data[4] == container.STREAMS_VERSION
    out = container.unpack(data)
    assert out.header.version == container.STREAMS_VERSION and out.streams == bitstream.streams
    assert container.pack(out) == data  # a file read as version 7 is written as version 7 again
    bitstream.header.version = 4  # any other version read from a file: the lowest that holds the streams
    assert container.pack(bitstream)[4] == 5


@pytest.mark.parametrize("version", [container.DECODER_VERSION, container.SIGNS_VERSION, container.FILTER_VERSION,
                                     container.SEAMS_VERSION, container.GRAIN_VERSION, container.FOLDED_VERSION])
def test_versions_9_to_14_are_written_when_the_header_asks_and_hold_every_kind_of_version_8(bitstream, version):
    bitstream.header.version = version
    for streams in ([], [(StreamKind.REALISM, b"\x32"), (StreamKind.ADAPT, b"\x01\x02\x03\x04")]):
        bitstream.streams += streams
        data = container.pack(bitstream)
        assert data[4] == version  # with or without an adapt stream
        out = container.unpack(data)
        assert out.header.version == version and out.streams == bitstream.streams
        assert container.pack(out) == data


@pytest.mark.parametrize("delta", [-15, -2, -1, 1, 2, 1000, 2**32 - 1 - 15])
def test_stream_lengths_inconsistent_with_file_size(delta):
    table = [(1, 15 + delta), (1, 8), (16, 3)]
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


@pytest.mark.parametrize("kind", [0, 2, 3, 15, 24, 255])
def test_unknown_stream_kind(kind):
    error = assert_format_error(craft(streams=[(1, b"h"), (kind, b"??"), (1, b"l")]), match="stream kind")
    assert str(kind) in str(error)


@pytest.mark.parametrize("kind", ["EXIF", "XMP", "ALPHA", "ADAPT", "GRAIN", "GAINS"])
def test_reserved_stream_kinds_are_refused_by_name(kind):
    data = craft(streams=[(1, b"h"), (1, b"l"), (StreamKind[kind], b"??")])
    assert_format_error(data, match=f"{kind} stream, which this xcodec does not read")


def test_a_metadata_kind_appears_once():
    assert_format_error(craft(streams=[(1, b"h"), (1, b"l"), (16, b"a"), (16, b"b")]), match="twice")


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


@pytest.mark.parametrize("model", [b"", b"x" * 65, b"x" * 255, b"hyper\xe9prior", b"../weights/transformer",
                                   b"/etc/passwd", b"Transformer", b"a b", b"a\x00"])
@pytest.mark.parametrize("version", [2, 3])
def test_model_name_must_be_an_identifier(model, version):
    assert_format_error(craft(model=model, version=version, streams=[(1, b"h"), (2 if version == 2 else 1, b"l")]),
                        match="model name")


def test_model_name_running_past_the_file():
    # A name length that eats the fixed header fields.
    assert_format_error(craft(model=b"m", name_len=60, streams=[]), match="truncated")


def test_errors_are_xcodec_errors():
    with pytest.raises(XcodecError):
        container.unpack(b"")


# --- tiles --------------------------------------------------------------------------------------


def tile_streams(tiles: int, per_tile: int = 2) -> list[tuple[int, bytes]]:
    return [(1, bytes([j, i])) for i in range(tiles) for j in range(per_tile)]


@pytest.mark.parametrize("tile,grid", [(0, (1, 1)), (64, (1, 2)), (128, (1, 1)), (4096, (1, 1))])
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
    assert per_tile[-1] == [bytes([0, len(boxes) - 1]), bytes([1, len(boxes) - 1])]


@pytest.mark.parametrize("per_tile", [1, 3, 255])
def test_streams_per_tile_is_the_header_s(per_tile):
    out = container.unpack(craft(tile=64, per_tile=per_tile, streams=tile_streams(2, per_tile)))
    assert out.header.streams_per_tile == per_tile
    assert [len(t) for t in container.tile_streams(out)] == [per_tile, per_tile]


def test_zero_streams_per_tile_is_refused():
    assert_format_error(craft(per_tile=0, streams=[]), match="streams per tile")


@pytest.mark.parametrize("tiles", [0, 1, 3, 100])
def test_stream_count_must_match_the_tile_count(tiles):
    assert_format_error(craft(tile=64, streams=tile_streams(tiles)), match="1x2 tiles of 2 streams")


@pytest.mark.parametrize("streams", [
    [(1, b"h"), (16, b"icc"), (1, b"l")],  # metadata comes last
    [(16, b"icc"), (1, b"h"), (1, b"l")],
    [(1, b"h"), (1, b"l"), (1, b"l")],
], ids=["icc-in-between", "icc-first", "extra-stream"])
def test_coded_streams_of_every_tile_come_first(streams):
    assert_format_error(craft(streams=streams), match="stream table")


@pytest.mark.parametrize("tile", [1, 32, 63])
def test_tiles_smaller_than_the_minimum_are_refused(tile):
    # a tile costs a decoder a model call whatever its size: 1-pixel tiles made a 520 KB file of a
    # 200x200 image decode for a minute
    assert_format_error(craft(tile=tile, streams=tile_streams(4)), match=f"at least {container.MIN_TILE} pixels")


@pytest.mark.parametrize("width,height,tile", [(2048, 2048, 0), (4096, 4096, 1024), (1 << 20, 64, 2048)])
def test_the_pixels_a_file_claims_are_bounded_by_its_coded_bytes(width, height, tile):
    # an honest file has a byte of coded streams for every 907 pixels at most (a flat image)
    tiles = -(-width // (tile or width)) * -(-height // (tile or height))
    needed = width * height // container.MAX_PIXELS_PER_BYTE
    for total, ok in ((needed - 1, False), (needed, True)):
        streams = [(1, bytes(total // tiles + (i < total % tiles))) for i in range(tiles)]
        data = craft(width=width, height=height, pad_bottom=0, pad_right=0, tile=tile, per_tile=1, streams=streams)
        if ok:
            assert container.unpack(data).header.width == width
        else:
            assert_format_error(data, match=f"{width}x{height} pixels to decode from {total:,} bytes")


def test_a_billion_tiles_are_refused_without_building_them():
    # 2^20 x 2^20 pixels in tiles of 64: 2^28 tiles, announced by a 60-byte file.
    data = craft(width=MAX_SIDE, height=MAX_SIDE, pad_bottom=0, pad_right=0, tile=64)
    start = time.perf_counter()
    assert_format_error(data, match="tiles")
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("tile,width,height", [(0, 2049, 61), (0, 97, 4000), (4096, 4096, 64), (MAX_TILE + 64, 97, 4000)])
def test_tiles_larger_than_a_decoder_takes_are_refused(tile, width, height):
    # whatever its size, a tile is decoded whole: its side bounds the decoder's memory
    data = craft(tile=tile, width=width, height=height, pad_bottom=0, pad_right=0, streams=[], count=0)
    assert_format_error(data, match=f"at most {MAX_TILE} pixels")


def test_tile_larger_than_the_format_allows():
    assert_format_error(craft(tile=MAX_SIDE + 1), match="tile size")
