"""The defaults and limits that the command line checks before it loads anything heavy (torch-free).

``xcodec.api`` takes its defaults from here, so the Python API and the command line agree.
"""

from .errors import InputError

DEFAULT_QUALITY = 4.0
DEFAULT_MAX_PIXELS = 16 * 1024 * 1024
DEFAULT_TILE = 1024  # pixels; bounds the memory of encoding and decoding, whatever the image size
LOSSLESS_MODEL = "lossless"  # the coder of lossless and near-lossless files (``xcodec.lossless``)
TILE_ALIGN = 64  # tile sizes are multiples of this, which every model's alignment divides


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image of more than ``max_pixels`` pixels, before any of them is decoded."""
    if width * height > max_pixels:
        raise InputError(
            f"{width}x{height} is {width * height:,} pixels, above the limit of {max_pixels:,} (raise it with --max-pixels)"
        )
