"""The defaults and limits that the command line checks before it loads anything heavy (torch-free).

``xcodec.api`` takes its defaults from here, so the Python API and the command line agree.
"""

import os
import sys
from pathlib import Path

from .errors import InputError

DEFAULT_MODEL = "wavelet"
DEFAULT_QUALITY = 4.0
# 8192 x 8192: today's camera photos (a 61-Mpixel full-frame sensor gives 9504 x 6336). A file cannot
# claim these pixels for less than a byte per container.MAX_PIXELS_PER_BYTE of them, so the limit
# bounds the size of an image, and the file's own size the work of decoding it.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
DEFAULT_TILE = 1024  # pixels; bounds the memory of encoding and decoding, whatever the image size
# The coder of lossless and near-lossless files (``xcodec.lossless``): what encoders write, and the
# generations decoders read (``lossless`` and ``lossless-2``, the older ones, are no longer written).
LOSSLESS_MODEL = "lossless-3"
LOSSLESS_MODELS = ("lossless", "lossless-2", LOSSLESS_MODEL)
TILE_ALIGN = 64  # tile sizes are multiples of this, which every model's alignment divides
# The environment variable by which a batch tells the forkserver of its workers what to prepare (``xcodec.preload``).
PRELOAD = "XCODEC_PRELOAD"
# Device files of the GPU drivers that torch's "cuda" device can use (NVIDIA, ROCm, WSL).
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


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


def check_gpu(device: str) -> None:
    """Refuse ``cuda`` at once where no CUDA GPU can be (no driver's device file, none visible, macOS);
    elsewhere torch decides (``api.resolve_device``)."""
    if device == "cuda" and not may_have_gpu():
        raise InputError("--device cuda was asked for, but no CUDA GPU is available")


def may_have_gpu() -> bool:
    """Whether torch might find a CUDA GPU here, told without importing it (False: it cannot)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1") or sys.platform == "darwin":
        return False
    return not sys.platform.startswith("linux") or any(Path(p).exists() for p in GPU_DEVICE_FILES)
