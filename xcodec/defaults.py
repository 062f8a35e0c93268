"""The defaults and limits that the command line checks before it loads anything heavy (torch-free).

``xcodec.api`` takes its defaults from here, so the Python API and the command line agree.
"""

from .errors import InputError

DEFAULT_QUALITY = 4.0
DEFAULT_MAX_PIXELS = 16 * 1024 * 1024
DEFAULT_TILE = 1024  # pixels; bounds the memory of encoding and decoding, whatever the image size
TILE_ALIGN = 64  # tile sizes are multiples of this, which every model's alignment divides


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image of more than ``max_pixels`` pixels, before any of them is decoded."""
    if width * height > max_pixels:
        raise InputError(
            f"{width}x{height} is {width * height:,} pixels, above the limit of {max_pixels:,} (raise it with --max-pixels)"
        )


def check_realism(realism: float) -> float:
    """Refuse a realism outside [0, 1] (NaN included): 0 is the fidelity output, 1 the perceptual one."""
    if not 0.0 <= realism <= 1.0:  # False for NaN
        raise InputError(f"realism must be between 0 and 1, got {realism}")
    return realism
