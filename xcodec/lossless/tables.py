"""The lossless coder's learned tables, one per generation: ``weights/NAME.safetensors`` with its
manifest, ``NAME`` the model name in the file (``lossless``, ``lossless-2``, ``lossless-3``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from safetensors.numpy import load_file

from ..defaults import LOSSLESS_MODEL, LOSSLESS_MODELS
from ..errors import ModelError
from ..models.manifest import WEIGHTS_DIR, Manifest, read_manifest, verified_path
from .walk import BINS, DESIGNS

NAME = LOSSLESS_MODEL  # the generation encoders write


class Table(NamedTuple):
    scales: np.ndarray  # (BINS,) float64: the Laplacian scale of every activity bin, 8-bit units
    counts: np.ndarray | None  # the design's ``alphabet.counts_shape`` int64: the token histograms' prior (``tokens``), or None


@cache
def load(name: str = NAME, weights_dir: Path = WEIGHTS_DIR) -> tuple[Table, Manifest]:
    """The table of generation ``name``, hash-checked; no torch."""
    if name not in LOSSLESS_MODELS:
        raise ModelError(f"{name!r} is not a lossless coder ({', '.join(LOSSLESS_MODELS)})")
    manifest = read_manifest(name, weights_dir)
    path = verified_path(weights_dir / f"{name}.safetensors", manifest.sha256)
    tensors = load_file(path)
    scales = tensors.get("scales")
    if scales is None or scales.shape != (BINS,) or scales.dtype != np.float64 or not (scales > 0).all():
        raise ModelError(f"{path} is not a table of {BINS} positive float64 scales")
    counts, shape = tensors.get("counts"), DESIGNS[name].alphabet.counts_shape
    if DESIGNS[name].tokens and (counts is None or counts.shape != shape or counts.dtype != np.int64
                                 or (counts < 0).any() or (counts.sum(-1) <= 0).any()):
        raise ModelError(f"{path} has no table of {shape} non-negative int64 token counts")
    return Table(scales, counts if DESIGNS[name].tokens else None), manifest
