"""The lossless coder's learned tables, one per generation: ``weights/NAME.safetensors`` with its
manifest, ``NAME`` the model name in the file (``lossless``, ``lossless-2``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from ..defaults import LOSSLESS_MODEL, LOSSLESS_MODELS
from ..errors import ModelError
from ..models.manifest import WEIGHTS_DIR, Manifest, read_manifest, verified_path
from .walk import BINS

NAME = LOSSLESS_MODEL  # the generation encoders write


@cache
def load(name: str = NAME, weights_dir: Path = WEIGHTS_DIR) -> tuple[np.ndarray, Manifest]:
    """The Laplacian scale of every context bin (float64, 8-bit units) of generation ``name``,
    hash-checked; no torch."""
    if name not in LOSSLESS_MODELS:
        raise ModelError(f"{name!r} is not a lossless coder ({', '.join(LOSSLESS_MODELS)})")
    manifest = read_manifest(name, weights_dir)
    path = verified_path(weights_dir / f"{name}.safetensors", manifest.sha256)
    scales = load_file(path).get("scales")
    if scales is None or scales.shape != (BINS,) or scales.dtype != np.float64 or not (scales > 0).all():
        raise ModelError(f"{path} is not a table of {BINS} positive float64 scales")
    return scales, manifest
