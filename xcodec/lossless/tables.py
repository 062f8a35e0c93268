"""The lossless coder's learned table, shipped as ``weights/lossless.safetensors`` with its manifest."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from ..defaults import LOSSLESS_MODEL
from ..errors import ModelError
from ..models.manifest import WEIGHTS_DIR, Manifest, read_manifest, verified_path
from .walk import BINS

NAME = LOSSLESS_MODEL  # the model name in the container and of the weights files


@cache
def load(weights_dir: Path = WEIGHTS_DIR) -> tuple[np.ndarray, Manifest]:
    """The Laplacian scale of every context bin (float64, 8-bit units), hash-checked; no torch."""
    manifest = read_manifest(NAME, weights_dir)
    path = verified_path(weights_dir / f"{NAME}.safetensors", manifest.sha256)
    scales = load_file(path).get("scales")
    if scales is None or scales.shape != (BINS,) or scales.dtype != np.float64 or not (scales > 0).all():
        raise ModelError(f"{path} is not a table of {BINS} positive float64 scales")
    return scales, manifest
