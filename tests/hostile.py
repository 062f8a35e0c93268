"""Hostile and odd ``.xsc`` files, as an attacker writes them on purpose: every one structurally
valid (right checksum, a stream table that fits its tile grid) and named after what it claims.

``cases(seed)`` builds them from ``seed``, a real file of the default model; each ``Case`` says
whether every entry point must refuse it (with a phrase of the one-line error) or decode it (with a
phrase of the one-line warning, when its metadata cannot be read or the output cannot hold it). ``tests/test_hostile.py`` runs
each through ``api.decode``, ``xcodec decode``, ``xcodec info`` and the Pillow plugin, with time and
memory bounds; ``python -m tests.hostile`` prints what each one costs.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import time
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image

from xcodec import container
from xcodec.container import Bitstream, StreamKind
from xcodec.defaults import DEFAULT_MAX_PIXELS


@dataclass
class Case:
    data: bytes
    refused: str | None = None  # a phrase of the error every entry point must end in; None: it decodes
    warning: str | None = None  # a phrase of the warning that decoding it gives
    suffix: str = ".png"  # the output the command line writes
    output_warning: str | None = None  # a phrase of the warning that writing that output gives


def png(width: int, height: int, rows: int | None = None, colour: int = 0) -> bytes:
    """An 8-bit PNG that claims ``width`` x ``height`` and holds ``rows`` of its rows (all: None)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + b"\x80" * (1 if colour == 0 else 3) * width  # filter type 0, then the samples
    pixels = zlib.compress(row * (height if rows is None else rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def icc(size: int) -> bytes:
    """The bytes of an ICC profile of ``size`` bytes as far as its header goes (size, 'acsp')."""
    return struct.pack(">I", size) + bytes(32) + b"acsp" + bytes(size - 40)


def exif(size: int) -> bytes:
    """An EXIF block of about ``size`` bytes: a TIFF structure with a long ImageDescription."""
    tags = Image.Exif()
    tags[0x010E] = "x" * size
    tags[0x010F] = "Camera"
    return b"Exif\0\0" + tags.tobytes()


def claim(seed: Bitstream, width: int, height: int, tile: int, payload: bytes, **header) -> bytes:
    """``seed``'s header (its model and weights) claiming another size and tiling, each tile's streams ``payload``."""
    h = dataclasses.replace(seed.header, width=width, height=height, tile=tile, **header)
    coded = [(StreamKind.CODED, payload)] * (h.tiles * h.streams_per_tile)
    return container.pack(Bitstream(h, coded))


def with_streams(seed: Bitstream, **kinds: bytes) -> bytes:
    """``seed`` with metadata streams (``icc``, ``exif``, ``xmp``, ``alpha``) added or replaced."""
    extra = {StreamKind[name.upper()]: data for name, data in kinds.items()}
    streams = [(kind, data) for kind, data in seed.streams if kind not in extra] + list(extra.items())
    return container.pack(Bitstream(seed.header, streams))


def cases(seed: bytes) -> dict[str, Case]:
    """The hostile files made from ``seed`` (a small real file of a stride-1 model, one tile)."""
    b = container.unpack(seed)
    h = b.header
    tile = container.tile_streams(b)[0][0]
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><!-- ' + b"x" * 70_000 + b" --></x:xmpmeta>"
    return {
        # issue 20, item 1: 200x200 in 1-pixel tiles, 520 KB, decoded for a minute
        "one-pixel tiles": Case(claim(b, 200, 200, 1, tile[:8]), refused="at least 64 pixels"),
        # item 2: 168 copies of a flat tile claiming 12288x14336 (Pillow's limit let it through)
        "flat tiles, 176 Mpixel": Case(claim(b, 12288, 14336, 1024, bytes(1176)), refused="above the limit"),
        # more pixels than the coded bytes can hold: 8192x8192 from 6,400 bytes
        "pixels beyond the bytes": Case(claim(b, 8192, 8192, 1024, bytes(100)), refused="pixels to decode from"),
        "a billion pixels from 1 KB": Case(claim(b, 1 << 20, 4096, 2048, b"\0"), refused="pixels to decode from"),
        # item 3: an alpha stream that claims a huge PNG
        "alpha claims 100000x100000": Case(with_streams(b, alpha=png(100_000, 100_000, rows=0)), refused="alpha stream"),
        # item 8: an alpha PNG holding a tenth of its rows
        "alpha holds a tenth of its rows": Case(with_streams(b, alpha=png(h.width, h.height, rows=h.height // 10)),
                                                refused="alpha stream"),
        "alpha of RGB": Case(with_streams(b, alpha=png(h.width, h.height, colour=2)), refused="alpha stream"),
        "alpha of another size": Case(with_streams(b, alpha=png(h.width + 1, h.height)), refused="alpha stream"),
        "alpha not a PNG": Case(with_streams(b, alpha=b"GIF89a" + bytes(64)), refused="alpha stream"),
        # item 5: metadata that an output format cannot hold, or that is not what its kind says
        "70 KB EXIF to JPEG": Case(with_streams(b, exif=exif(70_000)), suffix=".jpg", output_warning="written without it"),
        "70 KB XMP to JPEG": Case(with_streams(b, xmp=xmp), suffix=".jpg", output_warning="written without it"),
        "17 MB ICC profile to JPEG": Case(with_streams(b, icc=icc(17_000_000)), suffix=".jpg", output_warning="written without it"),
        "junk EXIF to TIFF": Case(with_streams(b, exif=b"Exif\0\0" + bytes(range(256)) * 4), warning="EXIF stream is not readable",
                                  suffix=".tif"),
        "EXIF with a broken IFD": Case(with_streams(b, exif=b"Exif\0\0II*\0\x08\0\0\0\xff\xff" + bytes(20)),
                                       warning="EXIF stream is not readable", suffix=".tif"),
        "junk ICC profile": Case(with_streams(b, icc=b"not a profile" * 20), warning="ICC profile stream is not readable",
                                 suffix=".jpg"),
        "ICC profile of another size": Case(with_streams(b, icc=icc(4096)[:2048]), warning="ICC profile stream is not readable"),
        "XMP not UTF-8": Case(with_streams(b, xmp=b"\xff\xfe<x:xmpmeta>\x80"), warning="XMP stream is not readable",
                              suffix=".webp"),
        # item 9: what the header alone decides (the command line refuses these without torch)
        "padding of another model": Case(claim(b, h.width, h.height, 0, tile, pad_bottom=63), refused="padding"),
        "streams per tile of another model": Case(
            container.pack(Bitstream(dataclasses.replace(h, streams_per_tile=2), [(StreamKind.CODED, tile)] * 2)),
            refused="streams per tile"),
        "other weights": Case(claim(b, h.width, h.height, 0, tile, model_hash=bytes(8)), refused="other weights"),
        "unknown model": Case(claim(b, h.width, h.height, 0, tile, model="nosuchmodel"), refused="unknown model"),
        "size at the pixel limit, flat": Case(claim(b, 8192, 8193, 2048, bytes(4624)), refused="above the limit"),
    }


def header_only(streams: int) -> bytes:
    """A valid file of ``streams`` tiles of 64x64 (two bytes each) and no real data: what ``info`` must summarise at once."""
    side = 64 * int(streams**0.5)
    h = container.Header("wavelet", bytes(8), 1.0, side, side, tile=64)
    return container.pack(Bitstream(h, [(StreamKind.CODED, b"\0\0")] * h.tiles))


def flat(models: list[str], sides: list[int]) -> None:
    """The most compressible honest files: flat images at quality 1 in one tile, their padded pixels
    per byte of coded streams, the time to decode them, and the time to refuse the same file with its
    stream cut to the fewest bytes ``container.MAX_PIXELS_PER_BYTE`` admits (docs/robustness.md)."""
    from xcodec import api
    from xcodec.errors import XcodecError

    for model in models:
        for side in sides:
            for value in (0, 255):
                data = api.encode(Image.new("RGB", (side, side), (value,) * 3), quality=1, model=model, tile=side, device="cpu")
                b = container.unpack(data)
                coded = sum(len(d) for kind, d in b.streams if kind == StreamKind.CODED)
                height, width = b.header.padded_size
                start = time.perf_counter()
                api.decode(data, device="cpu")
                honest = time.perf_counter() - start
                fewest = -(-height * width // container.MAX_PIXELS_PER_BYTE)
                cut = [(kind, d[: max(4, fewest // len(b.streams)) // 4 * 4]) for kind, d in b.streams]
                start = time.perf_counter()
                try:
                    api.decode(container.pack(Bitstream(b.header, cut)), device="cpu")
                    outcome = "decoded"
                except XcodecError as exc:
                    outcome = type(exc).__name__
                print(f"{model} {side}x{side} flat {value}: {coded:,} bytes, {height * width / coded:.0f} pixels per byte, "
                      f"decoded in {honest:.2f} s; cut to {sum(len(d) for _, d in cut):,} bytes: {outcome} in "
                      f"{time.perf_counter() - start:.2f} s", flush=True)


def main() -> None:
    """Decode every case and print what it cost (the numbers of docs/robustness.md); ``--flat MODEL,.. SIDE,..``
    measures the flat images instead (``flat``)."""
    import sys

    from xcodec import api
    from xcodec.bench.run import PeakMemory
    from xcodec.errors import XcodecError
    from tests.conftest import make_photo

    if sys.argv[1:2] == ["--flat"]:
        flat(sys.argv[2].split(","), [int(side) for side in sys.argv[3].split(",")])
        return
    seed = api.encode(make_photo(64, 48), quality=4, device="cpu")
    api.decode(seed, device="cpu")  # the model loads outside the measured cases
    for name, case in cases(seed).items():
        start = time.perf_counter()
        with PeakMemory() as memory, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                api.decode(case.data, device="cpu", max_pixels=DEFAULT_MAX_PIXELS)
                outcome = "decoded" + "".join(f"; warning: {w.message}" for w in caught)
            except XcodecError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
        print(f"{name}: {len(case.data):,} bytes, {time.perf_counter() - start:.3f} s, +{memory.extra:.0f} MiB: {outcome}")


if __name__ == "__main__":
    main()
