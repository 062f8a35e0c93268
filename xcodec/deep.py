"""16-bit RGB files, which Pillow reads as 8 bits and cannot write: a PNG reader and a TIFF writer
(``png.write_png`` writes their PNGs, as every PNG).

Lossless coding keeps 16-bit RGB samples (``api.encode`` of a (H, W, 3) uint16 array;
``xcodec encode --lossless`` of a 16-bit RGB PNG), and their files decode to 16-bit PNG or TIFF.
The reader takes non-interlaced PNGs of colour type 2 (RGB) at 16 bits with any of PNG's five row
filters; the writer writes an uncompressed baseline TIFF, with the ICC profile when there is one.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .errors import InputError
from .png import SIGNATURE, paeth

PIXEL = 6  # bytes per pixel: three big-endian 16-bit samples


def is_png16_rgb(data: bytes) -> bool:
    """Whether ``data`` is a PNG of 16-bit RGB samples (colour type 2, no alpha)."""
    return data[:8] == SIGNATURE and data[12:16] == b"IHDR" and data[24:26] == b"\x10\x02"


def read_png16(data: bytes) -> np.ndarray:
    """The (H, W, 3) uint16 samples of a 16-bit RGB PNG (``is_png16_rgb``); ``InputError`` if broken."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
        if kind == b"IEND":
            break
    header = dict(chunks).get(b"IHDR", b"")
    if len(header) != 13:
        raise InputError("cannot read the 16-bit PNG (no image header)")
    width, height, _, _, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if interlace:
        raise InputError("interlaced 16-bit RGB PNGs are not supported; save it without interlacing")
    try:
        raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    except zlib.error as exc:
        raise InputError(f"cannot read the 16-bit PNG ({exc})") from None
    stride = width * PIXEL + 1
    if width == 0 or height == 0 or len(raw) < stride * height:
        raise InputError("cannot read the 16-bit PNG (its pixel data is short)")
    rows = np.frombuffer(raw, dtype=np.uint8)[: stride * height].reshape(height, stride)
    pixels = unfilter(rows[:, 0], rows[:, 1:].reshape(height, width, PIXEL))
    return pixels.reshape(height, width * PIXEL).view(">u2").reshape(height, width, 3).astype(np.uint16)


def unfilter(filters: np.ndarray, filtered: np.ndarray) -> np.ndarray:
    """Undo PNG's row filters: (H, W, bytes per pixel) uint8 in, the same out.

    Sub, Average and Paeth depend on the pixel to the left, Up, Average and Paeth on the row above,
    so the pixels are reconstructed along anti-diagonals y + x = t, each one vectorised.
    """
    if filters.max(initial=0) > 4:
        raise InputError(f"cannot read the 16-bit PNG (row filter {int(filters.max())})")
    height, width, _ = filtered.shape
    out = np.zeros((height + 1, width + 1, filtered.shape[2]), dtype=np.int32)  # a zero row above, column left
    for t in range(height + width - 1):
        y = np.arange(max(0, t - width + 1), min(height, t + 1))
        x = t - y
        a, b, c = out[y + 1, x], out[y, x + 1], out[y, x]  # left, up, up-left
        f = filters[y][:, None]
        predicted = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth(a, b, c)], 0)
        out[y + 1, x + 1] = (filtered[y, x] + predicted) & 0xFF
    return out[1:, 1:].astype(np.uint8)


def write_tiff16(samples: np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """An uncompressed little-endian baseline TIFF of (H, W, 3) uint16 samples, one strip."""
    height, width, _ = samples.shape
    pixels = samples.astype("<u2").tobytes()
    icc = icc_profile or b""
    count = 10 + bool(icc)
    ifd = 8
    extra = ifd + 2 + 12 * count + 4  # where the bits-per-sample values, the ICC profile and the pixels go
    bits, profile = extra, extra + 6
    strip = profile + len(icc) + (len(icc) & 1)
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bits), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, strip), (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    if icc:
        tags.append((34675, 7, len(icc), profile))
    entries = b"".join(struct.pack("<HHI", tag, kind, n) + (struct.pack("<HH", value, 0) if kind == 3 and n == 1
                                                             else struct.pack("<I", value)) for tag, kind, n, value in tags)
    return b"".join([b"II*\x00", struct.pack("<I", ifd), struct.pack("<H", count), entries, b"\x00" * 4,
                     struct.pack("<HHH", 16, 16, 16), icc, b"\x00" * (len(icc) & 1), pixels])
