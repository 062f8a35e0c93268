"""Lossless and near-lossless coding of one tile of integer samples into one stream.

The stream (``xcodec.entropy``'s laplacian stream): a uniform bit, 1 if the least-squares
coefficients follow (``FEATURES + 1`` per plane, each a uniform 16-bit symbol, two's complement; a
tile of fewer than ``FIT_PIXELS`` pixels has none: they would cost more than they save, and are
zero), then the samples in the walk's order (``walk.walk``). The encoder fits the coefficients to the tile, codes it, and checks
that every reconstructed sample lies within the error bound of the original before it returns.
"""

from __future__ import annotations

import numpy as np

from ..entropy import StreamReader, StreamWriter
from ..errors import InputError
from .walk import COEF_BITS, Batch, COEF_LIMIT, FEATURES, Grid, Quantiser, blank, features, reference, segments, walk

RIDGE = 1e-3  # per sample, keeps the least-squares fit of a flat tile well posed
FIT_PIXELS = 4096
FIT_STRIDE = 3  # the fit sees every third sample (in raster order): as good a fit, a third of the time


def differences(samples: np.ndarray, grid: Grid, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The walk's sample and ``d`` arrays, filled with a tile's samples (what a lossless walk reconstructs)."""
    x, d = blank(grid, depth)
    for p in range(grid.planes):
        idx = grid.index(p).reshape(-1)
        x[idx] = samples[p].reshape(-1)
        d[idx] = x[idx] - reference(x, idx, segments(np.full(idx.size, p), grid.planes), grid)
    return x, d


def fit(samples: np.ndarray, grid: Grid, depth: int) -> np.ndarray:
    """Per plane, the least-squares coefficients of ``d`` on its features, in 1/2**COEF_BITS."""
    _, d = differences(samples, grid, depth)
    coefs = np.zeros((grid.planes, FEATURES + 1), dtype=np.int64)
    for p in range(grid.planes):
        idx = grid.index(p).reshape(-1)[::FIT_STRIDE]
        a = np.concatenate([features(d, idx, grid), np.ones((idx.size, 1), np.int64)], 1).astype(np.float64)
        gram = a.T @ a + RIDGE * idx.size * np.eye(FEATURES + 1)
        solution = np.linalg.solve(gram, a.T @ d[idx].astype(np.float64))
        coefs[p] = np.clip(np.round(solution * 2**COEF_BITS), -COEF_LIMIT, COEF_LIMIT - 1)
    return coefs


def encode_tile(samples: np.ndarray, depth: int, max_error: int, scales: np.ndarray) -> bytes:
    """Code (planes, H, W) integer samples of ``depth`` bits within +-``max_error``."""
    planes, height, width = samples.shape
    grid, quantiser = Grid(height, width, planes), Quantiser(depth, max_error)
    fitted = height * width >= FIT_PIXELS
    coefs = fit(samples, grid, depth) if fitted else np.zeros((planes, FEATURES + 1), dtype=np.int64)
    writer = StreamWriter()
    writer.uniform(int(fitted), 2)
    for c in coefs.reshape(-1) if fitted else ():
        writer.uniform(int(c) + COEF_LIMIT, 2 * COEF_LIMIT)
    original, _ = differences(samples, grid, depth)

    def code(batch: Batch) -> np.ndarray:
        q = quantiser.symbols(original[batch.idx], batch.prediction)
        writer.laplace(q, batch.scale, quantiser.limit, batch.mean)
        return quantiser.reconstruct(q, batch.prediction)

    decoded = walk(grid, quantiser, coefs, scales, code)
    error = int(np.abs(decoded - samples).max(initial=0))
    if error > max_error:  # a bug, never the input's fault; refuse to write the file
        raise InputError(f"internal error: a sample would be off by {error} (bound {max_error})")
    return writer.finish()


def decode_tile(payload: bytes, planes: int, height: int, width: int, depth: int, max_error: int,
                scales: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_tile``: (planes, H, W) int64 samples; ``FormatError`` on a broken stream."""
    grid, quantiser = Grid(height, width, planes), Quantiser(depth, max_error)
    reader = StreamReader(payload)
    count = planes * (FEATURES + 1) if reader.uniform(2) else 0
    coefs = np.zeros(planes * (FEATURES + 1), dtype=np.int64)
    coefs[:count] = [reader.uniform(2 * COEF_LIMIT) - COEF_LIMIT for _ in range(count)]
    coefs = coefs.reshape(planes, FEATURES + 1)

    def code(batch: Batch) -> np.ndarray:
        q = reader.laplace(batch.scale, quantiser.limit, batch.mean).astype(np.int64)
        return quantiser.reconstruct(q, batch.prediction)

    decoded = walk(grid, quantiser, coefs, scales, code)
    reader.finish()
    return decoded
