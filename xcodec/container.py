"""The ``.xsc`` container, format versions 3 to 15. ``docs/bitstream.md`` specifies it byte by byte.

Layout (all integers little-endian)::

    magic 0x89 'X' 'S' 'C' | version u8 | model name (u8 length + ASCII) | weights hash 8 bytes
    | quality u16 (1/256 steps) | width u32 | height u32 | channels u8 | bit depth u8
    | pad bottom u16 | pad right u16 | tile size u32 | streams per tile u8 | stream count u32
    | (kind u8, length u32) per stream | stream payloads, in table order
    | CRC-32 of every preceding byte, u32

The padded image is coded as independent square tiles in raster order, each as ``streams per
tile`` ``coded`` streams whose contents the model defines; metadata streams (``icc``) follow the
last tile. Version 4 is version 3 with three more metadata kinds (``exif``, ``xmp``, ``alpha``);
an encoder writes version 3 when a file has none of them, so that such files stay readable by
decoders that know only version 3. Version 5 adds a ``realism`` stream (the encoder's suggested
realism for the perceptual decoder, one byte in percent), written only when the user chose one.
Version 6 marks a sample-exact (lossless or near-lossless) file: version 4 with a ``max error``
byte after the bit depth, a quality field of 0 and 8 or 16 bits per sample; lossy files never use it.
Version 7 is version 5 (its layout and stream kinds) for a model whose coded streams changed at
version 7 (the ``wavelet`` model's low band); the model decodes the streams of older versions as
they were written, and an encoder writes version 7 when the header asks for it.
Version 8 is version 7 with an ``adapt`` stream: decoder parameters that the encoder fitted to the
image (the ``wavelet`` model's post-filter at effort 2), at most ``MAX_ADAPT_BYTES``, whose contents
the model checks; an encoder writes it only for a file that has one.
Version 9 is version 8 (its layout and stream kinds, the ``adapt`` stream optional) for a model
whose decoder changed at version 9 for the file's tile size (the ``wavelet`` post-filter's global
attention, bounded on large tiles); the model decodes older versions as before, and an encoder
writes version 9 when the header asks for it.
Version 10 is version 9 (its layout and stream kinds, the ``adapt`` stream optional, its decoder)
for a model whose coded streams changed again at version 10 (the ``wavelet`` model's signs); an
encoder writes version 10 when the header asks for it.
Version 11 is version 10 (its layout, stream kinds and coded streams) for a model whose decoder
changed at version 11 (the ``wavelet`` model's post-filter, convolutions only); an encoder writes
version 11 when the header asks for it.
Version 12 is version 11 (its layout, stream kinds, coded streams and post-filter) for a model whose
decoder smooths the borders between tiles from version 12 on (``models.seams``); an encoder writes
version 12 when the header asks for it.
Version 13 is version 12 with a ``grain`` stream: the strength of the photo's film grain, which the
model's perceptual decoder draws (``models.grain``), three bytes; an encoder writes version 13 when
the header asks for it, and the stream only for a file that has grain.
Version 14 is version 13 (its layout, stream kinds and decoder) for a model whose coded streams
changed again at version 14 (the ``wavelet`` model codes every detail symbol as a magnitude, then a
sign); an encoder writes version 14 when the header asks for it.
Version 15 is version 14 with a ``gains`` stream: the gains of the perceptual decoder's detail per
block of each tile, which the encoder chose for the realism its user suggested (``models.gains``),
whose contents the model checks against the tile grid; an encoder writes version 15 only for a
file that has one, version 14 otherwise.
Every field is validated before it is used, the stream table
against the tile grid, and the pixels claimed against the coded bytes (``MAX_PIXELS_PER_BYTE``),
before any model is loaded or anything the size of the image is allocated; any inconsistency
raises ``FormatError`` with a one-line message. ``read_table`` does this without cutting the
payloads out of the file (a table of millions of streams costs no million objects); ``unpack``
cuts them out too. Version-2 files (a ``hyper`` and a ``latent``
stream per tile, no streams-per-tile field) are read as version 3 with two coded streams per tile.
"""

from __future__ import annotations

import array
import itertools
import re
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from .defaults import LOSSLESS_MODELS
from .errors import FormatError

MAGIC = b"\x89XSC"
VERSION = 3  # the lowest version ``pack`` writes: coded and icc streams only
EXACT_VERSION = 6  # what it writes for a lossless or near-lossless file
STREAMS_VERSION = 7  # version 5 whose coded streams follow a model's later stream format
ADAPT_VERSION = 8  # version 7 with an ``adapt`` stream
DECODER_VERSION = 9  # version 8 whose model decodes the file's tiles as it did not before version 9
SIGNS_VERSION = 10  # version 9 whose coded streams follow a model's later stream format
FILTER_VERSION = 11  # version 10 whose model post-filters the decoded tiles as it did not before version 11
SEAMS_VERSION = 12  # version 11 whose model smooths the borders between decoded tiles
GRAIN_VERSION = 13  # version 12 with a ``grain`` stream
FOLDED_VERSION = 14  # version 13 whose coded streams follow a model's later stream format
GAINS_VERSION = 15  # version 14 with a ``gains`` stream
READABLE_VERSIONS = (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
MAX_ERROR = 4  # the largest error bound of a near-lossless file
EXACT_DEPTHS = (8, 16)
# The lossless coder's walk allocates about 400 MB for a tile of 1024 x 1024 pixels (1.6 GB at 2048),
# so its tiles are at most this many pixels a side, on both sides.
EXACT_MAX_TILE = 1024
MAX_SIDE = 1 << 20  # a hard sanity bound; the decoded-pixel limit is enforced by the API
# The largest tile side a decoder takes, whatever the file says: a tile is decoded whole, and the
# memory it needs grows with its area (with the transformer, a peak of 1.5 GiB for 1024 x 1024, 2.3 GiB
# for 2048 x 2048).
MAX_TILE = 2048
# The smallest tile side a file may declare (0, one tile, aside): a tile costs a decoder a model call
# and a post-filter whatever its size, so tiny tiles would multiply the work of a small file.
MIN_TILE = 64
# The most padded pixels a file may claim per byte of its coded streams. A decoder's work grows with
# the pixels, not with the bytes, so this bounds the work a file can demand by its size: about twice
# what the most compressible honest file reaches (a flat image at quality 1; docs/robustness.md).
MAX_PIXELS_PER_BYTE = 2048
# The longest ``adapt`` stream: a model's per-image parameters are a few hundred small integers.
MAX_ADAPT_BYTES = 4096
QUALITY_STEPS = 256  # quality is stored in 1/256 steps
MODEL_NAME = re.compile(r"[a-z0-9_-]{1,64}")

_HEAD = struct.Struct("<8sHIIBBHHI")  # weights hash, quality, width, height, channels, depth, pads, tile
_EXACT_HEAD = struct.Struct("<8sHIIBBBHHI")  # version 6: the same with max error after the depth
_COUNTS = {2: struct.Struct("<I"), **{v: struct.Struct("<BI") for v in READABLE_VERSIONS[1:]}}  # (streams per tile,) stream count
_ENTRY = struct.Struct("<BI")
_CRC = struct.Struct("<I")


class StreamKind(IntEnum):
    CODED = 1  # a model's payload; its meaning is the model's (its position within the tile)
    ICC = 16  # ICC colour profile of the source image, copied verbatim
    EXIF = 17  # EXIF block ("Exif\0\0", TIFF header, IFDs), orientation 1 (version 4)
    XMP = 18  # XMP packet, UTF-8 (version 4)
    ALPHA = 19  # the alpha plane, a grayscale 8-bit PNG of the image's size (version 4)
    REALISM = 20  # the suggested realism for the perceptual decoder, u8 percent 0..100 (version 5)
    ADAPT = 21  # decoder parameters fitted to the image, the model's format (version 8)
    GRAIN = 22  # the film grain's strength for the perceptual decoder, 3 bytes (version 13)
    GAINS = 23  # the gains of the perceptual decoder's detail per block of each tile, the model's format (version 15)


METADATA = {2: (StreamKind.ICC,), 3: (StreamKind.ICC,), 4: (StreamKind.ICC, StreamKind.EXIF, StreamKind.XMP, StreamKind.ALPHA)}
_KINDS = {int(kind): kind for kind in StreamKind}
METADATA[5] = (*METADATA[4], StreamKind.REALISM)
METADATA[EXACT_VERSION] = METADATA[4]  # a sample-exact file has no realism stream
METADATA[STREAMS_VERSION] = METADATA[5]
METADATA[ADAPT_VERSION] = (*METADATA[5], StreamKind.ADAPT)
METADATA[DECODER_VERSION] = METADATA[ADAPT_VERSION]
METADATA[SIGNS_VERSION] = METADATA[ADAPT_VERSION]
METADATA[FILTER_VERSION] = METADATA[ADAPT_VERSION]
METADATA[SEAMS_VERSION] = METADATA[ADAPT_VERSION]
METADATA[GRAIN_VERSION] = (*METADATA[ADAPT_VERSION], StreamKind.GRAIN)
METADATA[FOLDED_VERSION] = METADATA[GRAIN_VERSION]
METADATA[GAINS_VERSION] = (*METADATA[FOLDED_VERSION], StreamKind.GAINS)
SIDE = (StreamKind.ADAPT, StreamKind.GRAIN, StreamKind.GAINS)  # the streams that a model writes and reads (``Codec.side_streams``)
GRAIN_BYTES = 3


def valid_model_name(name: str) -> bool:
    """Model names are identifiers (``[a-z0-9_-]{1,64}``), never paths."""
    return MODEL_NAME.fullmatch(name) is not None


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
    streams_per_tile: int = 1
    # of the file it was read from; ``pack`` writes the lowest that holds the streams or, when the
    # header has STREAMS_VERSION or later (a model whose coded streams need it), STREAMS_VERSION, and
    # ADAPT_VERSION for a file with an ``adapt`` stream; DECODER_VERSION, SIGNS_VERSION, FILTER_VERSION,
    # SEAMS_VERSION, GRAIN_VERSION or FOLDED_VERSION when the header has it, and from FOLDED_VERSION on
    # GAINS_VERSION for a file with a ``gains`` stream
    version: int = VERSION
    max_error: int | None = None  # sample-exact files (version 6): every sample within +-max_error; None: lossy

    @property
    def padded_size(self) -> tuple[int, int]:
        """Height and width of the padded image that the tiles cover."""
        return self.height + self.pad_bottom, self.width + self.pad_right

    @property
    def tile_size(self) -> tuple[int, int]:
        """Height and width of the largest tile (the first)."""
        height, width = self.padded_size
        return min(self.tile or height, height), min(self.tile or width, width)

    @property
    def tiles(self) -> int:
        rows, cols = self.tile_grid
        return rows * cols

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
    if not valid_model_name(h.model):
        raise ValueError(f"model name {h.model!r} is not an identifier [a-z0-9_-]{{1,64}}")
    if len(h.model_hash) != 8:
        raise ValueError("model hash must be 8 bytes")
    name = h.model.encode("ascii")
    if h.max_error is None and h.version >= DECODER_VERSION:
        version = min(h.version, FOLDED_VERSION)
        if version == FOLDED_VERSION and any(kind == StreamKind.GAINS for kind, _ in bitstream.streams):
            version = GAINS_VERSION
    elif h.max_error is None and h.version >= STREAMS_VERSION:
        version = ADAPT_VERSION if any(kind == StreamKind.ADAPT for kind, _ in bitstream.streams) else STREAMS_VERSION
    elif h.max_error is None:
        version = min(v for v, kinds in METADATA.items() if VERSION <= v < EXACT_VERSION
                      if all(kind == StreamKind.CODED or kind in kinds for kind, _ in bitstream.streams))
    else:
        version = EXACT_VERSION
    depth = (h.bit_depth,) if h.max_error is None else (h.bit_depth, h.max_error)
    parts = [
        MAGIC, bytes([version, len(name)]), name,
        (_HEAD if h.max_error is None else _EXACT_HEAD).pack(
            h.model_hash, round(h.quality * QUALITY_STEPS), h.width, h.height, h.channels, *depth, h.pad_bottom,
            h.pad_right, h.tile),
        _COUNTS[version].pack(h.streams_per_tile, len(bitstream.streams)),
    ]
    parts += [_ENTRY.pack(int(kind), len(data)) for kind, data in bitstream.streams]
    parts += [data for _, data in bitstream.streams]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


@dataclass
class Table:
    """A parsed and validated file whose payloads are not yet cut out of it: its header, and each
    stream's kind and length (``kinds[i]`` a ``StreamKind`` value). Millions of streams cost no
    million objects here, so ``info`` and the header checks answer at once whatever the file."""

    header: Header
    kinds: bytes
    lengths: array.array
    body: bytes  # the file less its checksum
    offset: int  # where the first payload starts in ``body``

    def sizes(self, kind: StreamKind) -> array.array:
        """The lengths of the streams of ``kind`` (coded streams come first, metadata kinds once)."""
        if kind == StreamKind.CODED:
            return self.lengths[: self.kinds.count(kind)]
        index = self.kinds.find(kind)
        return self.lengths[index : index + 1] if index >= 0 else array.array(self.lengths.typecode)

    def stream(self, kind: StreamKind) -> bytes | None:
        """The payload of the first stream of ``kind``, or None."""
        index = self.kinds.find(kind)
        if index < 0:
            return None
        start = self.offset + sum(self.lengths[:index])
        return self.body[start : start + self.lengths[index]]

    def bitstream(self) -> Bitstream:
        """Every stream cut out of the file."""
        starts = itertools.accumulate(self.lengths, initial=self.offset)
        return Bitstream(self.header, [(_KINDS[kind], self.body[start : start + length])
                                       for kind, start, length in zip(self.kinds, starts, self.lengths)])


def unpack(data: bytes) -> Bitstream:
    """Parse and validate a ``.xsc`` file; raise ``FormatError`` on anything unexpected."""
    return read_table(data).bitstream()


def read_table(data: bytes) -> Table:
    """Parse and validate a ``.xsc`` file, its payloads left in place (``unpack`` cuts them out)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise FormatError("not an .xsc file (bad magic)")
    if len(data) < 6:
        raise FormatError("truncated .xsc header")
    version = data[4]
    if version not in READABLE_VERSIONS:
        raise FormatError(f"unsupported .xsc format version {version} (this xcodec reads versions 2 to {READABLE_VERSIONS[-1]})")
    if len(data) < 6 + _CRC.size:
        raise FormatError("truncated .xsc file")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise FormatError("corrupted .xsc file (checksum mismatch)")

    pos = 6
    counts = _COUNTS[version]
    head = _EXACT_HEAD if version == EXACT_VERSION else _HEAD
    name_len = data[5]
    if pos + name_len + head.size + counts.size > len(body):
        raise FormatError("truncated .xsc header")
    model = body[pos : pos + name_len].decode("latin-1")
    if not valid_model_name(model):
        raise FormatError("invalid .xsc header (the model name is not an identifier [a-z0-9_-])")
    pos += name_len
    model_hash, q, *sizes = head.unpack_from(body, pos)
    pos += head.size
    max_error = sizes.pop(4) if version == EXACT_VERSION else None
    per_tile, count = (2, *counts.unpack_from(body, pos)) if version == 2 else counts.unpack_from(body, pos)
    pos += counts.size
    header = Header(model, model_hash, q / QUALITY_STEPS, *sizes, streams_per_tile=per_tile, version=version,
                    max_error=max_error)
    _validate(header)

    end = pos + count * _ENTRY.size
    if end > len(body):
        raise FormatError("truncated .xsc stream table")
    kinds, lengths = _split_table(body[pos:end])
    if end + sum(lengths) != len(body):
        raise FormatError("invalid .xsc stream table (lengths do not match the file size)")
    if version == 2:
        kinds = _v2_kinds(kinds)
    for kind in set(kinds):
        _stream_kind(kind, version)
    _validate_streams(header, kinds)
    _validate_work(header, sum(lengths[: kinds.count(StreamKind.CODED)]))
    table = Table(header, kinds, lengths, body, end)
    realism_hint(table)
    if not all(0 < size <= MAX_ADAPT_BYTES for size in table.sizes(StreamKind.ADAPT)):
        raise FormatError(f"invalid .xsc adapt stream (1 to {MAX_ADAPT_BYTES} bytes)")
    if not all(size == GRAIN_BYTES for size in table.sizes(StreamKind.GRAIN)):
        raise FormatError(f"invalid .xsc grain stream ({GRAIN_BYTES} bytes)")
    return table


def realism_stream(realism: float) -> bytes:
    """The ``realism`` stream of a suggested realism in [0, 1] (kept in percent)."""
    return bytes([round(realism * 100)])


def realism_hint(streams: Table | Bitstream) -> float | None:
    """The realism the file's encoder suggested, or None; ``FormatError`` for a malformed stream."""
    data = streams.stream(StreamKind.REALISM)
    if data is None:
        return None
    if len(data) != 1 or data[0] > 100:
        raise FormatError("invalid .xsc realism stream (expected one byte, 0..100 percent)")
    return data[0] / 100


def _split_table(entries: bytes) -> tuple[bytes, array.array]:
    """The kinds and the lengths of a stream table's 5-byte entries, by byte slicing (no loop in Python)."""
    lengths = bytearray(4 * (len(entries) // _ENTRY.size))
    for i in range(4):
        lengths[i::4] = entries[i + 1 :: _ENTRY.size]
    values = array.array("I", lengths)  # 4 bytes wherever CPython runs
    if sys.byteorder == "big":
        values.byteswap()
    return entries[:: _ENTRY.size], values


def _stream_kind(kind: int, version: int) -> StreamKind:
    try:
        known = StreamKind(kind)
    except ValueError:
        raise FormatError(f"unknown .xsc stream kind {kind}") from None
    if known != StreamKind.CODED and known not in METADATA[version]:
        raise FormatError(f"the .xsc file has a {known.name} stream, which this xcodec does not read in version {version}")
    return known


def tile_streams(bitstream: Bitstream) -> list[list[bytes]]:
    """The payloads of each tile, in raster order (``unpack`` has checked that they are all there)."""
    coded = [data for kind, data in bitstream.streams if kind == StreamKind.CODED]
    n = bitstream.header.streams_per_tile
    return [coded[i : i + n] for i in range(0, len(coded), n)]


def _validate(h: Header) -> None:
    if h.max_error is not None:
        _validate_exact(h)
    elif not 1 <= h.quality <= 8:
        raise FormatError(f"invalid .xsc header (quality {h.quality} outside 1..8)")
    elif h.model in LOSSLESS_MODELS:
        raise FormatError(f"invalid .xsc header (model {h.model!r} codes lossless files only, version {EXACT_VERSION})")
    if not (0 < h.width <= MAX_SIDE and 0 < h.height <= MAX_SIDE):
        raise FormatError(f"invalid .xsc header (image size {h.width}x{h.height})")
    if h.channels not in (1, 3) or h.bit_depth not in (EXACT_DEPTHS if h.max_error is not None else (8,)):
        raise FormatError(f"invalid .xsc header ({h.channels} channels, {h.bit_depth} bits)")
    if h.tile > MAX_SIDE:
        raise FormatError(f"invalid .xsc header (tile size {h.tile})")
    if 0 < h.tile < MIN_TILE:
        raise FormatError(f"invalid .xsc header (tile size {h.tile}; tiles are at least {MIN_TILE} pixels a side)")
    if max(h.tile_size) > MAX_TILE:
        raise FormatError(f"the .xsc file has tiles of {h.tile_size[1]}x{h.tile_size[0]} pixels; this xcodec decodes "
                          f"tiles of at most {MAX_TILE} pixels a side")
    if h.streams_per_tile < 1:
        raise FormatError("invalid .xsc header (0 streams per tile)")


def _validate_exact(h: Header) -> None:
    """Version 6: the lossless coder's file, quality 0 (unused), an error bound of 0 (lossless) ..
    MAX_ERROR, one stream per tile, no padding, 16 bits only in grayscale for ``lossless`` (the first
    generation; the later ones have 16-bit RGB too), tiles of at most
    ``EXACT_MAX_TILE`` pixels a side."""
    if h.model not in LOSSLESS_MODELS:
        raise FormatError(f"invalid .xsc header (a lossless file names model {h.model!r}, not one of {', '.join(LOSSLESS_MODELS)})")
    if h.quality != 0:
        raise FormatError(f"invalid .xsc header (quality {h.quality} in a lossless file, which has none)")
    if h.max_error > MAX_ERROR:
        raise FormatError(f"invalid .xsc header (max error {h.max_error} outside 0..{MAX_ERROR})")
    if (h.streams_per_tile, h.pad_bottom, h.pad_right) != (1, 0, 0):
        raise FormatError("invalid .xsc header (a lossless file has one stream per tile and no padding)")
    if h.bit_depth == 16 and h.channels != 1 and h.model == LOSSLESS_MODELS[0]:
        raise FormatError(f"invalid .xsc header (model {h.model!r} has 16 bits only in grayscale)")
    if max(h.tile_size) > EXACT_MAX_TILE:
        raise FormatError(f"the .xsc file has lossless tiles of {h.tile_size[1]}x{h.tile_size[0]} pixels; this xcodec "
                          f"decodes lossless tiles of at most {EXACT_MAX_TILE} pixels a side")


def _v2_kinds(kinds: bytes) -> bytes:
    """Version 2: a hyper (1) and a latent (2) stream per tile, then at most an icc (16) stream; as version-3 kinds."""
    if not re.fullmatch(rb"(?:\x01\x02)*\x10?", kinds):
        raise FormatError("invalid .xsc stream table (expected a hyper and a latent stream per tile)")
    return kinds.replace(b"\x02", b"\x01")


def _validate_streams(h: Header, kinds: bytes) -> None:
    """The coded streams of every tile first, then metadata, each metadata kind at most once."""
    coded = kinds.count(StreamKind.CODED)
    metadata = kinds[coded:]
    # Compare the counts first: a hostile header may claim billions of tiles.
    if coded != h.streams_per_tile * h.tiles or StreamKind.CODED in metadata:
        rows, cols = h.tile_grid
        raise FormatError(
            f"invalid .xsc stream table ({coded} coded streams for {rows}x{cols} tiles of "
            f"{h.streams_per_tile} streams each, then metadata)"
        )
    if len(set(metadata)) != len(metadata):
        raise FormatError("invalid .xsc stream table (a metadata stream appears twice)")


def work_fits(h: Header, coded_bytes: int) -> bool:
    """Whether a file of this header and ``coded_bytes`` of coded streams passes the work bound:
    at most ``MAX_PIXELS_PER_BYTE`` padded pixels per byte."""
    height, width = h.padded_size
    return height * width <= coded_bytes * MAX_PIXELS_PER_BYTE


def _validate_work(h: Header, coded_bytes: int) -> None:
    if not work_fits(h, coded_bytes):
        height, width = h.padded_size
        raise FormatError(f"invalid .xsc file ({width}x{height} pixels to decode from {coded_bytes:,} bytes of coded "
                          f"streams; a file has a byte of them for every {MAX_PIXELS_PER_BYTE:,} pixels at least)")
