"""Turning whatever Pillow reads into the 8-bit RGB that the models code, deliberately.

- EXIF orientation is applied, so the decoded image looks as the original was displayed.
- Grayscale, bilevel and palette images are coded as RGB and decoded back to their channel count.
- An alpha channel that is fully opaque is dropped; real transparency is refused unless the caller
  asks to drop it (the codec has no alpha plane, and silently flattening would lose data).
- 16-bit and 32-bit integer images (grayscale, RGB, RGBA) are reduced to 8 bits with a warning.
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
from .errors import InputError

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# PGM and PPM are Pillow's PPM writer, made to write the type that the extension names.
OUTPUT_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP",
                  ".ppm": "PPM", ".pgm": "PGM", ".jpg": "JPEG", ".jpeg": "JPEG"}


@dataclass
class SourceImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    channels: int  # 1 or 3: what the decoder gives back
    icc_profile: bytes | None


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


def prepare(image: Image.Image, drop_alpha: bool = False) -> SourceImage:
    """Convert a Pillow image to 8-bit RGB under the rules in this module's docstring."""
    icc = image.info.get("icc_profile")
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        image = image.convert("RGBA")
    channels = 1 if image.mode in GRAY_MODES else 3
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255 and not drop_alpha:
            raise InputError("the image has transparency, which xcodec cannot code; flatten it first or pass --drop-alpha")
        image = image.convert("L" if channels == 1 else "RGB")
    if image.mode in HIGH_DEPTH_MODES:
        warnings.warn(f"{image.mode} input has more than 8 bits per sample; coding it at 8 bits", stacklevel=2)
        samples = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or samples.max() > 255 else 255.0
        if image.mode == "F" and samples.max() <= 1.0:
            peak = 1.0
        image = Image.fromarray(np.clip(np.round(samples / peak * 255), 0, 255).astype(np.uint8), "L")
    rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError("the image is empty")
    return SourceImage(rgb, channels, icc)


def to_pil(rgb: np.ndarray, channels: int, icc_profile: bytes | None) -> Image.Image:
    image = Image.fromarray(rgb, "RGB")
    if channels == 1:
        image = image.convert("L")
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    return image


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
    check_format(fmt, len(image.getbands()))
    if fmt == "PPM" and image.mode == "L":
        image = image.convert("RGB")  # Pillow would write a PGM
    out = io.BytesIO()
    kwargs = {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") and fmt in ("PNG", "TIFF", "WEBP", "JPEG") else {}
    if fmt == "JPEG":
        kwargs["quality"] = 95
    if fmt == "WEBP":
        kwargs["lossless"] = True
    image.save(out, "PPM" if fmt == "PGM" else fmt, **kwargs)
    return out.getvalue()
