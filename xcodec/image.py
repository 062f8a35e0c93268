"""Turning whatever Pillow reads into the 8-bit RGB that the models code, deliberately.

- EXIF orientation is applied, so the decoded image looks as the original was displayed.
- Grayscale, bilevel and palette images are coded as RGB and decoded back to their channel count.
- An alpha channel that is fully opaque is dropped; real transparency is kept as an alpha plane,
  coded losslessly on its own (PNG), unless the caller asks to drop it.
- EXIF (its orientation set to 1, since it is applied) and XMP are kept, unless the caller strips
  them; the ICC profile is always kept.
- 16-bit and 32-bit integer images (grayscale, RGB, RGBA) are reduced to 8 bits with a warning,
  except 16-bit grayscale for lossless coding (``keep_depth``), which keeps its 16 bits.
- CMYK, YCbCr and LAB images are converted to RGB by Pillow.
- Of an animated image (GIF, APNG, WebP), the first frame is coded, with a warning.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .defaults import check_pixels
from .errors import FormatError, InputError

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# PGM and PPM are Pillow's PPM writer, made to write the type that the extension names.
OUTPUT_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP",
                  ".ppm": "PPM", ".pgm": "PGM", ".jpg": "JPEG", ".jpeg": "JPEG"}


ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}  # outputs that hold an alpha channel
ORIENTATION = 0x0112


@dataclass
class SourceImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    channels: int  # 1 or 3: what the decoder gives back
    icc_profile: bytes | None
    exif: bytes | None = None
    xmp: bytes | None = None
    alpha: np.ndarray | None = None  # (H, W) uint8, when the image has transparency
    gray16: np.ndarray | None = None  # (H, W) uint16 samples of 16-bit grayscale, with ``keep_depth``


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


def prepare(image: Image.Image, drop_alpha: bool = False, strip: bool = False, keep_depth: bool = False) -> SourceImage:
    """Convert a Pillow image to 8-bit RGB, alpha and metadata under the rules in this module's docstring."""
    icc = image.info.get("icc_profile")
    oriented = ORIENTATION in image.getexif()
    image = ImageOps.exif_transpose(image)
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
    gray16 = _gray16(image) if keep_depth else None
    if image.mode in HIGH_DEPTH_MODES:
        if gray16 is None:
            warnings.warn(f"{image.mode} input has more than 8 bits per sample; coding it at 8 bits", stacklevel=2)
        samples = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or samples.max() > 255 else 255.0
        if image.mode == "F" and samples.max() <= 1.0:
            peak = 1.0
        image = Image.fromarray(np.clip(np.round(samples / peak * 255), 0, 255).astype(np.uint8), "L")
    rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError("the image is empty")
    return SourceImage(rgb, channels, icc, exif, xmp or None, alpha, gray16)


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
    for key, value in (("icc_profile", icc_profile), ("exif", exif), ("xmp", xmp)):
        if value:
            image.info[key] = value
    return image


def encode_alpha(alpha: np.ndarray) -> bytes:
    """An alpha plane as the bytes of a grayscale PNG (lossless: zlib with PNG's filters)."""
    out = io.BytesIO()
    Image.fromarray(alpha, "L").save(out, "PNG", optimize=True)
    return out.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> Image.Image:
    """The alpha plane of an ``alpha`` stream; ``FormatError`` unless it is an 8-bit grayscale PNG of the image's size."""
    try:
        plane = Image.open(io.BytesIO(data), formats=["PNG"])
        if plane.mode != "L" or plane.size != (width, height):
            raise FormatError(f"invalid .xsc alpha stream ({plane.mode} {plane.width}x{plane.height}, not L {width}x{height})")
        plane.load()
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors of a broken PNG
        raise FormatError(f"corrupted .xsc alpha stream ({exc})") from None
    return plane


def output_format(suffix: str) -> str:
    fmt = OUTPUT_FORMATS.get(suffix.lower())
    if fmt is None:
        raise InputError(f"unknown output extension {suffix!r} (use one of {', '.join(sorted(OUTPUT_FORMATS))})")
    return fmt


def check_format(fmt: str, channels: int) -> None:
    """Refuse an output format that cannot hold the image (before it is decoded)."""
    if fmt == "PGM" and channels != 1:
        raise InputError("PGM holds grayscale only and this image is RGB: write .ppm or .png")


def save_bytes(image: Image.Image, fmt: str) -> bytes:
    """The image in ``fmt``, with the metadata the format holds; transparency flattened on white where it cannot be kept."""
    check_format(fmt, len(image.getbands()) - image.mode.endswith("A"))
    info = image.info
    if image.mode.endswith("A") and fmt not in ALPHA_FORMATS:
        warnings.warn(f"{fmt} has no alpha channel: the image is flattened on white (write .png, .webp or .tif to keep it)")
        flat = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        image = flat.convert(image.mode[:-1])
    if image.mode == "LA" and fmt == "WEBP":
        image = image.convert("RGBA")
    if fmt == "PPM" and image.mode == "L":
        image = image.convert("RGB")  # Pillow would write a PGM
    out = io.BytesIO()
    kwargs = _metadata(info, fmt)
    if info.get("icc_profile") and fmt in ("PNG", "TIFF", "WEBP", "JPEG"):
        kwargs["icc_profile"] = info["icc_profile"]
    if fmt == "JPEG":
        kwargs["quality"] = 95
    if fmt == "WEBP":
        kwargs["lossless"] = True
    image.save(out, "PPM" if fmt == "PGM" else fmt, **kwargs)
    return out.getvalue()


def _metadata(info: dict, fmt: str) -> dict:
    """Pillow's save options that write the EXIF and XMP in ``info`` into ``fmt`` (PNG, JPEG, WebP, TIFF)."""
    exif, xmp = info.get("exif"), info.get("xmp")
    if fmt in ("JPEG", "WEBP"):
        return {key: value for key, value in (("exif", exif), ("xmp", xmp)) if value}
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        text = PngInfo()
        if xmp:
            text.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
        return {"pnginfo": text, **({"exif": exif} if exif else {})}
    if fmt == "TIFF" and (exif or xmp):
        tags = Image.Exif()
        if exif:
            tags.load(exif)
        if xmp:
            tags[700] = xmp  # TIFF's XMP tag
        return {"exif": tags}
    return {}
