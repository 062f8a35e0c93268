"""Lossless and near-lossless coding of one tile of integer samples into one stream.

The stream (``xcodec.entropy``'s laplacian stream): a uniform bit, 1 if the least-squares
coefficients follow (``features + 1`` per plane and coefficient set of the design; a tile of fewer
than ``FIT_PIXELS`` pixels, or whose coefficients would cost more than they save, has none, and
they are zero), then the samples in the walk's order (``walk.walk``). The encoder fits the coefficients to the tile, codes it, and checks
that every reconstructed sample lies within the error bound of the original before it returns.
"""

from __future__ import annotations

import numpy as np

from ..entropy import StreamReader, StreamWriter
from ..errors import FormatError, InputError
from .tables import Table
from .tokens import Histograms
from .walk import COEF_BITS, COEF_LIMIT, DESIGNS, GRADIENT, PAD, Batch, Grid, Quantiser, gradient, padded, parity, walk

COEF_BITS_MAX = 16  # the bit length of the largest coefficient magnitude, 2**15
RIDGE = 1e-3  # per sample, keeps the least-squares fit of a flat tile well posed
FIT_PIXELS = 4096
FIT_STRIDE = 3  # the fit sees every third sample (in raster order): as good a fit, a third of the time


def fit(image: tuple[np.ndarray, np.ndarray], grid: Grid, depth: int) -> tuple[np.ndarray, float]:
    """Per plane and coefficient set, the least-squares coefficients of ``d`` on its features (of
    the tile's ``padded`` samples), in 1/2**COEF_BITS: (planes, classes, features + 1); and about
    how many bits they save.

    The saving is estimated as log2 of the ratio of the mean absolute errors of the gradient
    predictor (W + N - NW) and of the fitted one, per sample: a Laplacian's entropy grows with
    the log of its scale.
    """
    size = grid.design.features + 1
    d = image[1]
    ys, xs = np.divmod(np.arange(0, grid.height * grid.width, FIT_STRIDE), grid.width)  # every FIT_STRIDE-th, raster order
    parities = parity(ys, xs)
    at = (2 * d.shape[1] + grid.image_rows[ys]) * d.shape[2] + xs + PAD  # in the raveled padded planes, plane 0
    offsets = np.array([(k * d.shape[1] + dy) * d.shape[2] + dx for dy, dx, k, _ in grid.feature_sources])
    flat, plane_size = d.reshape(-1), d.shape[1] * d.shape[2]
    coefs = np.zeros((grid.planes, grid.design.classes, size), dtype=np.int64)
    saving = 0.0
    for p in range(grid.planes):
        sets = grid.ls_class(gradient(flat[at + p * plane_size + offsets[: max(GRADIENT) + 1, None]]), parities, depth)
        order = np.argsort(sets, kind="stable")  # each set's samples together
        chosen = at[order] + p * plane_size
        bounds = np.searchsorted(sets[order], np.arange(grid.design.classes + 1))
        errors = np.zeros(2)  # the sums of the absolute errors of W + N - NW and of the fitted predictor
        for c, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):  # a set at a time: less memory
            rows = np.empty((stop - start, size))  # the features and a constant
            rows[:, :-1], rows[:, -1] = flat.take(chosen[start:stop, None] + offsets), 1
            target = flat.take(chosen[start:stop]).astype(np.float64)
            gram = rows.T @ rows + RIDGE * max(rows.shape[0], size) * np.eye(size)
            solution = np.linalg.solve(gram, rows.T @ target)
            coefs[p, c] = np.clip(np.round(solution * 2**COEF_BITS), -COEF_LIMIT, COEF_LIMIT - 1)
            planar = rows[:, 1] + rows[:, 0] - rows[:, 2]
            # Sums of integers and of multiples of 2**-COEF_BITS, exact in any order.
            errors += [np.abs(target - prediction).sum() for prediction in (planar, rows @ coefs[p, c] / 2**COEF_BITS)]
        errors = errors / at.size + 0.5
        saving += grid.height * grid.width * np.log2(errors[0] / errors[1])
    return coefs, saving


def coef_bits(coefs: np.ndarray, packed: bool) -> float:
    """The bits ``write_coefs`` takes for ``coefs``."""
    coefs = coefs.reshape(-1, coefs.shape[-1])
    if not packed:
        return 16.0 * coefs.size
    lengths = np.array([int(np.abs(column).max()).bit_length() for column in coefs.T])
    return float(lengths.size * np.log2(COEF_BITS_MAX + 1) + (coefs.shape[0] * (lengths + 1) * (lengths > 0)).sum())


def write_coefs(writer: StreamWriter, coefs: np.ndarray, packed: bool) -> None:
    """The coefficients, each a uniform 16-bit symbol (two's complement), or ``packed``: per
    feature (column of the (sets, features + 1) array) the bit length ``e`` of its largest
    magnitude (0..16), then its coefficients, each ``c + 2**e`` in ``e + 1`` bits (none when ``e`` is 0)."""
    coefs = coefs.reshape(-1, coefs.shape[-1])
    if not packed:
        for c in coefs.reshape(-1):
            writer.uniform(int(c) + COEF_LIMIT, 2 * COEF_LIMIT)
        return
    for column in coefs.T:
        e = int(np.abs(column).max()).bit_length()
        writer.uniform(e, COEF_BITS_MAX + 1)
        for c in column if e else ():
            writer.uniform(int(c) + (1 << e), 2 << e)


def read_coefs(reader: StreamReader, shape: tuple[int, int], packed: bool) -> np.ndarray:
    """Inverse of ``write_coefs``: (sets, features + 1) int64; ``FormatError`` on a broken stream."""
    if not packed:
        values = [reader.uniform(2 * COEF_LIMIT) - COEF_LIMIT for _ in range(shape[0] * shape[1])]
        return np.array(values, dtype=np.int64).reshape(shape)
    coefs = np.zeros(shape, dtype=np.int64)
    for j in range(shape[1]):
        e = reader.uniform(COEF_BITS_MAX + 1)
        if e:
            coefs[:, j] = [reader.uniform(2 << e) - (1 << e) for _ in range(shape[0])]
    if (coefs < -COEF_LIMIT).any() or (coefs >= COEF_LIMIT).any():
        raise FormatError("corrupted entropy-coded stream (a coefficient out of range)")
    return coefs


def encode_tile(samples: np.ndarray, depth: int, max_error: int, table: Table, model: str) -> bytes:
    """Code (planes, H, W) integer samples of ``depth`` bits within +-``max_error`` with the
    generation ``model`` of the coder."""
    planes, height, width = samples.shape
    grid, quantiser = Grid(height, width, planes, DESIGNS[model]), Quantiser(depth, max_error)
    image = padded(samples, grid, depth) if max_error == 0 or height * width >= FIT_PIXELS else None
    coefs, saving = fit(image, grid, depth) if height * width >= FIT_PIXELS else (None, 0.0)
    fitted = saving > coef_bits(coefs, grid.design.packed) if coefs is not None else False
    if not fitted:
        coefs = np.zeros((planes, grid.design.classes, grid.design.features + 1), dtype=np.int64)
    writer = StreamWriter()
    writer.uniform(int(fitted), 2)
    if fitted:
        write_coefs(writer, coefs, grid.design.packed)
    original = samples.reshape(-1).take(grid.order)  # in coding order

    histograms = Histograms(table.counts, planes, quantiser.limit, grid.design.alphabet) if grid.design.tokens else None

    def code(batch: Batch) -> np.ndarray:
        q = quantiser.symbols(original[batch.span], batch.prediction)
        if histograms is None:
            writer.laplace(q, batch.scale, quantiser.limit, batch.mean)
            return quantiser.reconstruct(q, batch.prediction)
        contexts = histograms.contexts(batch.plane, batch.mean, batch.scale)
        symbols, raw, sizes = histograms.symbols(q, batch.mean)
        touched = np.zeros(histograms.totals.size, dtype=bool)  # the step's distinct contexts, without a sort
        touched[contexts] = True
        rows = (np.cumsum(touched) - 1)[contexts]
        writer.categorical(symbols, histograms.probabilities(np.flatnonzero(touched)), rows)
        long = sizes > 1
        if long.any():
            writer.uniforms(raw[long], sizes[long])
        histograms.update(contexts, symbols)
        return original[batch.span] if max_error == 0 else quantiser.reconstruct(q, batch.prediction)

    decoded = walk(grid, quantiser, coefs, table.scales, code, image if max_error == 0 else None)
    error = int(np.abs(decoded - samples).max(initial=0))
    if error > max_error:  # a bug, never the input's fault; refuse to write the file
        raise InputError(f"internal error: a sample would be off by {error} (bound {max_error})")
    return writer.finish()


def decode_tile(payload: bytes, planes: int, height: int, width: int, depth: int, max_error: int,
                table: Table, model: str) -> np.ndarray:
    """Inverse of ``encode_tile``: (planes, H, W) int64 samples; ``FormatError`` on a broken stream."""
    grid, quantiser = Grid(height, width, planes, DESIGNS[model]), Quantiser(depth, max_error)
    reader = StreamReader(payload)
    coefs = np.zeros((planes * grid.design.classes, grid.design.features + 1), dtype=np.int64)
    if reader.uniform(2):
        coefs = read_coefs(reader, coefs.shape, grid.design.packed)

    histograms = Histograms(table.counts, planes, quantiser.limit, grid.design.alphabet) if grid.design.tokens else None

    def code(batch: Batch) -> np.ndarray:
        if histograms is None:
            q = reader.laplace(batch.scale, quantiser.limit, batch.mean).astype(np.int64)
            return quantiser.reconstruct(q, batch.prediction)
        contexts = histograms.contexts(batch.plane, batch.mean, batch.scale)
        symbols = reader.categorical(histograms.probabilities(contexts)).astype(np.int64)
        sizes = histograms.sizes[symbols]
        raw, long = np.zeros_like(symbols), sizes > 1
        if long.any():
            raw[long] = reader.uniforms(sizes[long])
        histograms.update(contexts, symbols)
        return quantiser.reconstruct(histograms.values(symbols, raw, batch.mean), batch.prediction)

    decoded = walk(grid, quantiser, coefs, table.scales, code)
    reader.finish()
    return decoded
