"""Turning whatever Pillow reads into the 8-bit RGB that the models code, deliberately.

- EXIF orientation is applied, so the decoded image looks as the original was displayed.
- Grayscale, bilevel and palette images are coded as RGB and decoded back to their channel count.
- An alpha channel that is fully opaque is dropped; real transparency is kept as an alpha plane,
  coded losslessly on its own (PNG), unless the caller asks to drop it.
- EXIF (its orientation set to 1, since it is applied) and XMP are kept, unless the caller strips
  them; the ICC profile is always kept.
- 16-bit and 32-bit integer images (grayscale, RGB, RGBA) are reduced to 8 bits with a warning,
  except 16-bit grayscale for lossless coding (``keep_depth``), which keeps its 16 bits. 16-bit
  RGB, which Pillow cannot hold, comes to lossless coding as an array (``from_samples``).
- CMYK, YCbCr and LAB images are converted to RGB by Pillow.
- Of an animated image (GIF, APNG, WebP), the first frame is coded, with a warning.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .defaults import check_pixels
from .errors import FormatError, InputError
from .png import SIGNATURE, write_png

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# PGM and PPM are Pillow's PPM writer, made to write the type that the extension names.
OUTPUT_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP",
                  ".ppm": "PPM", ".pgm": "PGM", ".jpg": "JPEG", ".jpeg": "JPEG"}


ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}  # outputs that hold an alpha channel
METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}  # outputs that hold an ICC profile, EXIF and XMP
PNG_MODES = {"L", "LA", "RGB", "RGBA", "I;16"}  # the decoder's images, which ``png.write_png`` writes
METADATA_NAMES = {"icc_profile": "ICC profile", "exif": "EXIF", "xmp": "XMP"}
# The largest metadata block (bytes) each output holds, where Pillow's writer has a limit: a JPEG
# segment holds 65,533 bytes (XMP: less its 29-byte name), and an ICC profile spans 255 segments.
OUTPUT_LIMITS = {"JPEG": {"exif": 65533, "xmp": 65533 - 29, "icc_profile": 255 * (65533 - 14)}}
ORIENTATION = 0x0112


@dataclass
class SourceImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    channels: int  # 1 or 3: what the decoder gives back
    icc_profile: bytes | None
    exif: bytes | None = None
    xmp: bytes | None = None
    alpha: np.ndarray | None = None  # (H, W) uint8, when the image has transparency
    deep: np.ndarray | None = None  # (H, W) or (H, W, 3) uint16 samples kept at 16 bits (``keep_depth``, ``from_samples``)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an image file, refusing one of more than ``max_pixels`` before decoding its pixels."""
    try:
        image = Image.open(io.BytesIO(data))
        check_pixels(image.width, image.height, max_pixels)
        if image.mode in ("RGB", "RGBA") and any(";16" in str(tile[3]) for tile in image.tile):  # Pillow reads 8 of 16 bits
            warnings.warn(f"{image.mode};16 input has more than 8 bits per sample; coding it at 8 bits", stacklevel=2)
        if getattr(image, "n_frames", 1) > 1:
            warnings.warn(f"animated image of {image.n_frames} frames: coding the first frame only", stacklevel=2)
        image.load()
    except UnidentifiedImageError:
        raise InputError("the input is not an image format that Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"the image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read the input image ({exc})") from None
    return image


def prepare(image: Image.Image, drop_alpha: bool = False, strip: bool = False,
            metadata: dict[str, bytes | None] | None = None, keep_depth: bool = False) -> SourceImage:
    """Convert a Pillow image to 8-bit RGB, alpha and metadata under the rules in this module's docstring.

    ``metadata`` (``icc_profile``, ``exif``, ``xmp``: bytes, or None for none) replaces the image's
    own, as the keywords of Pillow's ``save`` do; its EXIF orientation is the one applied.
    """
    info = dict(image.info)
    for key, value in (metadata or {}).items():
        info.pop("XML:com.adobe.xmp" if key == "xmp" else key, None)
        info[key] = value.tobytes() if isinstance(value, Image.Exif) else value
    if info.get("exif") and (problem := _exif_problem(info["exif"])):
        warnings.warn(f"the EXIF block is not readable ({problem}): coding the image without it", stacklevel=2)
        info["exif"] = None
    if info != image.info:
        image = image.copy()  # the same pixels with other metadata; the caller's image stays as it was
        image.info = info
    icc = image.info.get("icc_profile")
    oriented = ORIENTATION in image.getexif()
    if oriented:
        image = ImageOps.exif_transpose(image)  # otherwise a copy of the image (0.06 s for 24 Mpixel)
    exif = xmp = alpha = None
    if not strip:
        exif = _exif(image, oriented)
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
        xmp = xmp.encode() if isinstance(xmp, str) else xmp
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        image = image.convert("RGBA")
    channels = 1 if image.mode in GRAY_MODES else 3
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        plane = np.asarray(image.getchannel("A"))
        alpha = plane if plane.min() < 255 and not drop_alpha else None
        image = image.convert("L" if channels == 1 else "RGB")
    deep = _gray16(image) if keep_depth else None
    if image.mode in HIGH_DEPTH_MODES:
        if deep is None:
            warnings.warn(f"{image.mode} input has more than 8 bits per sample; coding it at 8 bits", stacklevel=2)
        samples = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or samples.max() > 255 else 255.0
        if image.mode == "F" and samples.max() <= 1.0:
            peak = 1.0
        image = Image.fromarray(np.clip(np.round(samples / peak * 255), 0, 255).astype(np.uint8), "L")
    rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError("the image is empty")
    return SourceImage(rgb, channels, icc, exif, xmp or None, alpha, deep)


def from_samples(samples: np.ndarray, metadata: dict[str, bytes | None] | None = None) -> SourceImage:
    """A (H, W, 3) uint16 array of 16-bit RGB samples (which Pillow cannot hold) as a source image
    for lossless coding, with ``metadata`` (``icc_profile``, ``exif``, ``xmp``; None: none)."""
    if samples.dtype != np.uint16 or samples.ndim != 3 or samples.shape[2] != 3 or 0 in samples.shape:
        raise InputError(f"an array to code is (H, W, 3) uint16 16-bit RGB, not {samples.dtype} of shape {samples.shape}")
    metadata = metadata or {}
    rgb = ((samples.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return SourceImage(rgb, 3, metadata.get("icc_profile"), metadata.get("exif"), metadata.get("xmp"), None, samples)


def _gray16(image: Image.Image) -> np.ndarray | None:
    """The samples of a 16-bit grayscale image (Pillow's I;16 modes, or I within 0..65535)."""
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return None
    samples = np.asarray(image, dtype=np.int64)
    return samples.astype(np.uint16) if samples.min(initial=0) >= 0 and samples.max(initial=0) < 1 << 16 else None


def _exif(image: Image.Image, oriented: bool) -> bytes | None:
    """The EXIF block of a file that has one (not what Pillow derives from XMP or TIFF tags), orientation 1."""
    if not image.info.get("exif"):
        return None
    exif = image.getexif()
    if oriented:
        exif[ORIENTATION] = 1
    return exif.tobytes()


def to_pil(rgb: np.ndarray, channels: int, icc_profile: bytes | None, exif: bytes | None = None,
           xmp: bytes | None = None, alpha: Image.Image | None = None) -> Image.Image:
    """The decoded image: L or RGB, LA or RGBA with ``alpha``, with its metadata in ``info``."""
    image = Image.fromarray(rgb, "RGB")
    if channels == 1:
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(alpha)
    image.info.update(read_metadata(icc_profile, exif, xmp))
    return image


def read_metadata(icc_profile: bytes | None, exif: bytes | None, xmp: bytes | None) -> dict[str, bytes]:
    """The metadata streams of a file as Pillow's ``info``, each dropped with a warning unless its
    structure is what its kind says (an ICC profile header, a TIFF structure, UTF-8): the pixels
    matter more than the metadata, and outputs must not fail on it."""
    problems = {"icc_profile": _icc_problem, "exif": _exif_problem, "xmp": _xmp_problem}
    info = {}
    for key, value in (("icc_profile", icc_profile), ("exif", exif), ("xmp", xmp)):
        if value and (problem := problems[key](value)):
            warnings.warn(f"the {METADATA_NAMES[key]} stream is not readable ({problem}): the image is decoded without it",
                          stacklevel=3)
        elif value:
            info[key] = value
    return info


def _icc_problem(data: bytes) -> str | None:
    if len(data) < 128 or data[36:40] != b"acsp":
        return "no ICC profile header"
    if int.from_bytes(data[:4], "big") > len(data):
        return f"its header says {int.from_bytes(data[:4], 'big'):,} bytes, the stream has {len(data):,}"
    return None


def _exif_problem(data: bytes) -> str | None:
    """Why Pillow cannot read and write ``data`` as an EXIF block (None when it can)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow warns of corrupt IFDs and reads on
            exif = Image.Exif()
            exif.load(data)
            exif.tobytes()
    except Exception as exc:  # noqa: BLE001 - a stranger's bytes raise whatever Pillow's parser meets
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _xmp_problem(data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    return None


def encode_alpha(alpha: np.ndarray) -> bytes:
    """An alpha plane as the bytes of a grayscale PNG (lossless: zlib with PNG's filters)."""
    out = io.BytesIO()
    Image.fromarray(alpha, "L").save(out, "PNG", optimize=True)
    return out.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> Image.Image:
    """The alpha plane of an ``alpha`` stream; ``FormatError`` unless it is a whole 8-bit grayscale PNG
    of the image's size (``_check_alpha``), which is checked before a pixel of it is decoded."""
    _check_alpha(data, width, height)
    try:
        plane = PngImagePlugin.PngImageFile(io.BytesIO(data))  # not Image.open: its pixel limit is Pillow's, not ours
        plane.load()
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors of a broken PNG
        raise FormatError(f"corrupted .xsc alpha stream ({exc})") from None
    return plane


def _check_alpha(data: bytes, width: int, height: int) -> None:
    """An 8-bit grayscale, non-interlaced PNG of ``width`` x ``height`` whose pixel data inflates to
    exactly its rows (a filter byte and ``width`` samples each); no more than that is inflated."""
    if not data.startswith(SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise FormatError("invalid .xsc alpha stream (not a PNG)")
    size, depth, colour, interlace = struct.unpack_from(">8sBB2xB", data, 16)
    if (depth, colour, interlace) != (8, 0, 0) or size != struct.pack(">II", width, height):
        found = "x".join(str(n) for n in struct.unpack(">II", size))
        raise FormatError(f"invalid .xsc alpha stream (a PNG of {found} pixels, {depth}-bit colour type {colour}"
                          f"{', interlaced' if interlace else ''}; expected 8-bit grayscale {width}x{height})")
    pixels, pos = [], 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            pixels.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    rows = height * (width + 1)
    inflater = zlib.decompressobj()
    try:
        inflated = len(inflater.decompress(b"".join(pixels), rows + 1))
    except zlib.error as exc:
        raise FormatError(f"corrupted .xsc alpha stream ({exc})") from None
    if inflated != rows or not inflater.eof:
        held = f"{inflated // (width + 1):,} of its {height:,} rows" if inflated < rows else "more than its rows"
        raise FormatError(f"invalid .xsc alpha stream (its PNG holds {held})")


def output_format(suffix: str) -> str:
    fmt = OUTPUT_FORMATS.get(suffix.lower())
    if fmt is None:
        raise InputError(f"unknown output extension {suffix!r} (use one of {', '.join(sorted(OUTPUT_FORMATS))})")
    return fmt


def check_format(fmt: str, channels: int, depth: int = 8) -> None:
    """Refuse an output format that cannot hold the image (before it is decoded)."""
    if fmt == "PGM" and channels != 1:
        raise InputError("PGM holds grayscale only and this image is RGB: write .ppm or .png")
    if depth == 16 and channels == 3 and fmt not in ("PNG", "TIFF"):
        raise InputError(f"this image is 16-bit RGB, which {fmt} does not hold here: write .png or .tif")


def save_bytes(image: Image.Image, fmt: str, threads: int = 1) -> bytes:
    """The image in ``fmt``, with the metadata the format holds; transparency flattened on white where
    it cannot be kept. A PNG is compressed on ``threads`` threads (``png.write_png``)."""
    check_format(fmt, len(image.getbands()) - image.mode.endswith("A"))
    info = image.info
    if fmt == "PNG":
        if image.mode not in PNG_MODES:
            raise ValueError(f"no PNG of a {image.mode} image here")
        return write_png(np.asarray(image), info.get("icc_profile"), info.get("exif"), info.get("xmp"), threads)
    if image.mode.endswith("A") and fmt not in ALPHA_FORMATS:
        warnings.warn(f"{fmt} has no alpha channel: the image is flattened on white (write .png, .webp or .tif to keep it)")
        flat = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        image = flat.convert(image.mode[:-1])
    if image.mode == "LA" and fmt == "WEBP":
        image = image.convert("RGBA")
    if fmt == "PPM" and image.mode == "L":
        image = image.convert("RGB")  # Pillow would write a PGM
    out = io.BytesIO()
    info = _fitting(info, fmt)
    kwargs = _metadata(info, fmt)
    if info.get("icc_profile") and fmt in METADATA_FORMATS:
        kwargs["icc_profile"] = info["icc_profile"]
    if fmt == "JPEG":
        kwargs["quality"] = 95
    if fmt == "WEBP":
        kwargs["lossless"] = True
    image.save(out, "PPM" if fmt == "PGM" else fmt, **kwargs)
    return out.getvalue()


def _fitting(info: dict, fmt: str) -> dict:
    """``info`` less the metadata blocks that ``fmt`` cannot hold, or not at their size, each left out
    with a one-line warning."""
    fitting = dict(info)
    if fmt not in METADATA_FORMATS:
        if dropped := [METADATA_NAMES[key] for key in METADATA_NAMES if info.get(key)]:
            warnings.warn(f"{fmt} holds no {' or '.join(dropped)}: written without {'it' if len(dropped) == 1 else 'them'} "
                          f"(write .png, .jpg, .webp or .tif to keep {'it' if len(dropped) == 1 else 'them'})")
        return fitting
    for key, limit in OUTPUT_LIMITS.get(fmt, {}).items():
        if info.get(key) and len(info[key]) > limit:
            warnings.warn(f"{fmt} holds an {METADATA_NAMES[key]} block of at most {limit:,} bytes, not {len(info[key]):,}: "
                          f"written without it (write .png, .webp or .tif to keep it)")
            del fitting[key]
    return fitting


def _metadata(info: dict, fmt: str) -> dict:
    """Pillow's save options that write the EXIF and XMP in ``info`` into ``fmt`` (JPEG, WebP, TIFF)."""
    exif, xmp = info.get("exif"), info.get("xmp")
    if fmt in ("JPEG", "WEBP"):
        return {key: value for key, value in (("exif", exif), ("xmp", xmp)) if value}
    if fmt == "TIFF" and (exif or xmp):
        tags = Image.Exif()
        if exif:
            tags.load(exif)
        if xmp:
            tags[700] = xmp  # TIFF's XMP tag
        return {"exif": tags}
    return {}
