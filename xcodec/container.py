"""The ``.xsc`` container, format version 2. ``docs/bitstream.md`` specifies it byte by byte.

Layout (all integers little-endian)::

    magic 0x89 'X' 'S' 'C' | version u8 | model name (u8 length + ASCII) | weights hash 8 bytes
    | quality u16 (1/256 steps) | width u32 | height u32 | channels u8 | bit depth u8
    | pad bottom u16 | pad right u16 | tile size u32 | stream count u32
    | (kind u8, length u32) per stream | stream payloads, in table order
    | CRC-32 of every preceding byte, u32

The padded image is coded as independent square tiles in raster order, each one ``hyper`` and
one ``latent`` stream; an optional ``icc`` stream follows the last tile. Every field is validated
before it is used, and the stream table against the tile grid, before anything the size of the
image is allocated; any inconsistency raises ``FormatError`` with a one-line message.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import FormatError

MAGIC = b"\x89XSC"
VERSION = 2
MAX_MODEL_NAME = 64
MAX_SIDE = 1 << 20  # a hard sanity bound; the decoded-pixel limit is enforced by the API
QUALITY_STEPS = 256  # quality is stored in 1/256 steps

_HEAD = struct.Struct("<8sHIIBBHHII")  # weights hash, quality, width, height, channels, depth, pads, tile, count
_ENTRY = struct.Struct("<BI")
_CRC = struct.Struct("<I")


class StreamKind(IntEnum):
    HYPER = 1  # side information: the hyper-latent z, factorized prior
    LATENT = 2  # the latent y, conditional Gaussians (one stream per slice/tile as the model needs)
    ICC = 16  # ICC colour profile of the source image, copied verbatim


@dataclass
class Header:
    model: str
    model_hash: bytes
    quality: float
    width: int
    height: int
    channels: int = 3
    bit_depth: int = 8
    pad_bottom: int = 0
    pad_right: int = 0
    tile: int = 0  # side of the square tiles in pixels; 0: the whole padded image is one tile

    @property
    def padded_size(self) -> tuple[int, int]:
        """Height and width of the padded image that the tiles cover."""
        return self.height + self.pad_bottom, self.width + self.pad_right

    @property
    def tile_grid(self) -> tuple[int, int]:
        """Rows and columns of tiles (the last row and column may be narrower than the tile size)."""
        height, width = self.padded_size
        side = self.tile or max(height, width)
        return -(-height // side), -(-width // side)

    def tile_boxes(self) -> Iterator[tuple[int, int, int, int]]:
        """(top, left, height, width) of each tile of the padded image, in raster order."""
        height, width = self.padded_size
        side = self.tile or max(height, width)
        for top in range(0, height, side):
            for left in range(0, width, side):
                yield top, left, min(side, height - top), min(side, width - left)


@dataclass
class Bitstream:
    header: Header
    streams: list[tuple[StreamKind, bytes]] = field(default_factory=list)

    def stream(self, kind: StreamKind) -> bytes | None:
        return next((data for k, data in self.streams if k == kind), None)


def quantize_quality(quality: float) -> float:
    """The quality the container can represent (1/256 steps)."""
    return round(quality * QUALITY_STEPS) / QUALITY_STEPS


def pack(bitstream: Bitstream) -> bytes:
    h = bitstream.header
    name = h.model.encode("ascii")
    if not 0 < len(name) <= MAX_MODEL_NAME:
        raise ValueError("model name must be 1..64 ASCII characters")
    if len(h.model_hash) != 8:
        raise ValueError("model hash must be 8 bytes")
    parts = [
        MAGIC, bytes([VERSION, len(name)]), name,
        _HEAD.pack(h.model_hash, round(h.quality * QUALITY_STEPS), h.width, h.height, h.channels,
                   h.bit_depth, h.pad_bottom, h.pad_right, h.tile, len(bitstream.streams)),
    ]
    parts += [_ENTRY.pack(int(kind), len(data)) for kind, data in bitstream.streams]
    parts += [data for _, data in bitstream.streams]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def unpack(data: bytes) -> Bitstream:
    """Parse and validate a ``.xsc`` file; raise ``FormatError`` on anything unexpected."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise FormatError("not an .xsc file (bad magic)")
    if len(data) < 6:
        raise FormatError("truncated .xsc header")
    if data[4] != VERSION:
        raise FormatError(f"unsupported .xsc format version {data[4]} (this xcodec reads version {VERSION})")
    if len(data) < 6 + _CRC.size:
        raise FormatError("truncated .xsc file")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise FormatError("corrupted .xsc file (checksum mismatch)")

    pos = 6
    name_len = data[5]
    if not 0 < name_len <= MAX_MODEL_NAME or pos + name_len + _HEAD.size > len(body):
        raise FormatError("invalid .xsc header (model name)")
    try:
        model = body[pos : pos + name_len].decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("invalid .xsc header (model name is not ASCII)") from None
    pos += name_len
    model_hash, q, *sizes, count = _HEAD.unpack_from(body, pos)
    pos += _HEAD.size
    header = Header(model, model_hash, q / QUALITY_STEPS, *sizes)
    _validate(header)

    if pos + count * _ENTRY.size > len(body):
        raise FormatError("truncated .xsc stream table")
    table = [_ENTRY.unpack_from(body, pos + i * _ENTRY.size) for i in range(count)]
    pos += count * _ENTRY.size
    if pos + sum(length for _, length in table) != len(body):
        raise FormatError("invalid .xsc stream table (lengths do not match the file size)")
    streams = []
    for kind, length in table:
        try:
            streams.append((StreamKind(kind), body[pos : pos + length]))
        except ValueError:
            raise FormatError(f"unknown .xsc stream kind {kind}") from None
        pos += length
    _validate_streams(header, [kind for kind, _ in streams])
    return Bitstream(header, streams)


def tile_streams(bitstream: Bitstream) -> list[dict[StreamKind, bytes]]:
    """The streams of each tile, in raster order (``unpack`` has checked that they are all there)."""
    coded = [(kind, data) for kind, data in bitstream.streams if kind != StreamKind.ICC]
    return [dict(coded[i : i + 2]) for i in range(0, len(coded), 2)]


def _validate(h: Header) -> None:
    if not 1 <= h.quality <= 8:
        raise FormatError(f"invalid .xsc header (quality {h.quality} outside 1..8)")
    if not (0 < h.width <= MAX_SIDE and 0 < h.height <= MAX_SIDE):
        raise FormatError(f"invalid .xsc header (image size {h.width}x{h.height})")
    if h.channels not in (1, 3) or h.bit_depth != 8:
        raise FormatError(f"invalid .xsc header ({h.channels} channels, {h.bit_depth} bits)")
    if h.tile > MAX_SIDE:
        raise FormatError(f"invalid .xsc header (tile size {h.tile})")


def _validate_streams(h: Header, kinds: list[StreamKind]) -> None:
    rows, cols = h.tile_grid
    if kinds[-1:] == [StreamKind.ICC]:
        kinds = kinds[:-1]
    # Compare the counts first: a hostile header may claim billions of tiles.
    if len(kinds) != 2 * rows * cols or kinds != [StreamKind.HYPER, StreamKind.LATENT] * (rows * cols):
        raise FormatError(
            f"invalid .xsc stream table ({len(kinds)} coded streams for {rows}x{cols} tiles; "
            "expected a hyper and a latent stream per tile)"
        )
