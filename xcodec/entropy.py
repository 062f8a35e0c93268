"""ANS entropy coding through constriction.

Three kinds of streams:
- *categorical*: symbols of one channel share a fixed probability table (the factorized prior of
  the hyper-latent). Tables come from the checkpoint, so they are identical everywhere.
- *gaussian*: each symbol has its own zero-mean quantized Gaussian whose standard deviation is an
  entry of a fixed scale table, selected by an integer index (the model computes those indices in
  exact integer arithmetic). Symbols are residuals ``round(y - mean)``.
- *laplacian* (``StreamWriter``/``StreamReader``): the ``wavelet`` model's single stream per tile,
  a sequence of zero-mean quantized Laplacians with per-symbol scales (entries of the model's
  fixed table) and a few uniform symbols, written in decoding order and encoded backwards.

A stream is constriction's ANS output: little-endian uint32 words. The decoder refuses a stream
with data left over after its last symbol, and one that runs dry: a read from an empty coder.
constriction would decode such a read (as the lowest symbol of the range, again and again), so a
file of empty streams would decode to noise, and a tiny file could make the decoder work through a
large image for nothing. Gaussian symbols are read in pieces of ``PIECE`` so that a stream that runs
dry is caught within one piece. A valid stream is empty before a read only if every symbol of that
read and of all later ones is the lowest of its range (the encoder writes no bits for them): latent
residuals of -4095, or hyper-latents clamped at the low end of their table, which the models'
priors make vanishingly unlikely. Reads whose lowest symbol is a common one (the ``wavelet``
model's one-sided Laplacians and binary symbols of version 10, and from version 14 every read of its
detail bands) are not checked: a valid stream may end in them; the checked reads before and after
them catch a stream that runs dry (from version 14 the low band's, first in a tile's stream: a
stream that runs dry after them decodes the rest of its tile as zeros, no more work than the
container's bound on the pixels per coded byte allows a valid file).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import constriction
import numpy as np

from .errors import FormatError

# Gaussian symbols lie in [-limit, limit] (the models clamp them before they use them as context).
# constriction's quantizer gives every symbol of that range a minimal probability, so a wider range
# costs rate: [-32768, 32768] cost 0.0056 bits per symbol, 0.7% of a Kodak file at quality 1.
SYMBOL_LIMIT = (1 << 12) - 1
PRECISION = 24  # constriction's stream models: probabilities in multiples of 2**-PRECISION, none below one
_GAUSSIAN = constriction.stream.model.QuantizedGaussian(-SYMBOL_LIMIT, SYMBOL_LIMIT)
PIECE = 1 << 12


def _to_bytes(coder: constriction.stream.stack.AnsCoder) -> bytes:
    return coder.get_compressed().astype("<u4").tobytes()


def _from_bytes(data: bytes) -> constriction.stream.stack.AnsCoder:
    if len(data) % 4:
        raise FormatError("corrupted entropy-coded stream (length is not a multiple of 4)")
    try:
        return constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    except ValueError:  # constriction rejects, e.g., a stream that ends in a zero word
        raise FormatError("corrupted entropy-coded stream") from None


def _check_not_dry(coder: constriction.stream.stack.AnsCoder, count: int) -> None:
    if count and coder.is_empty():
        raise FormatError("corrupted entropy-coded stream (it ends before its symbols do)")


def _check_finished(coder: constriction.stream.stack.AnsCoder) -> None:
    """Refuse a stream with data left over (spliced or damaged): an encoder's stream ends exactly
    where its last symbol does."""
    if not coder.is_empty():
        raise FormatError("corrupted entropy-coded stream (data left over)")


def encode_gaussian(symbols: np.ndarray, scale_index: np.ndarray, scales: np.ndarray) -> bytes:
    """Code integer ``symbols`` (clamped to the coder's range) with N(0, scales[scale_index])."""
    coder = constriction.stream.stack.AnsCoder()
    symbols = np.clip(symbols.reshape(-1), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int32)
    stds = scales[scale_index.reshape(-1)].astype(np.float64)
    coder.encode_reverse(symbols, _GAUSSIAN, np.zeros_like(stds), stds)
    return _to_bytes(coder)


class GaussianReader:
    """Decodes a gaussian stream in consecutive pieces, in the order they were encoded.

    Context models need this: the scales of a later chunk depend on the symbols of earlier ones.
    """

    def __init__(self, data: bytes, scales: np.ndarray):
        self.coder = _from_bytes(data)
        self.scales = scales

    def read(self, scale_index: np.ndarray) -> np.ndarray:
        """The next ``scale_index.size`` symbols (int32), shaped like ``scale_index``."""
        stds = self.scales[scale_index.reshape(-1)].astype(np.float64)
        return _decode_pieces(self.coder, _GAUSSIAN, stds).reshape(scale_index.shape)

    def finish(self) -> None:
        """Call after the last ``read``: refuses a stream with data left over."""
        _check_finished(self.coder)


def _decode_pieces(coder: constriction.stream.stack.AnsCoder, model, scales: np.ndarray,
                   means: np.ndarray | None = None) -> np.ndarray:
    """Symbols with the given scales (and means; None: zero), read in pieces of ``PIECE``, refusing a dry stream."""
    return _decode_parameters(coder, model, np.zeros_like(scales) if means is None else means, scales)


def _decode_parameters(coder: constriction.stream.stack.AnsCoder, model, *parameters: np.ndarray,
                       check: bool = True) -> np.ndarray:
    """One symbol per row of the ``parameters`` of ``model``, read in pieces of ``PIECE``, refusing a
    dry stream (without ``check``, reading it: the lowest symbols)."""
    pieces = []
    for start in range(0, len(parameters[0]), PIECE):
        piece = [p[start : start + PIECE] for p in parameters]
        if check:
            _check_not_dry(coder, len(piece[0]))
        try:
            pieces.append(coder.decode(model, *piece))
        except (ValueError, RuntimeError):
            raise FormatError("corrupted entropy-coded stream") from None
    return np.concatenate(pieces or [np.zeros(0, np.int32)])


_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)  # probabilities per symbol
_UNIFORM = constriction.stream.model.Uniform()  # a size per symbol


@functools.cache
def _laplace(low: int, high: int) -> constriction.stream.model.QuantizedLaplace:
    return constriction.stream.model.QuantizedLaplace(low, high)


class _Rows(NamedTuple):
    table: np.ndarray
    rows: np.ndarray


class StreamWriter:
    """A laplacian stream: symbols collected in decoding order, encoded backwards (ANS is a stack)."""

    def __init__(self):
        self.chunks: list[tuple] = []

    def laplace(self, symbols: np.ndarray, scales: np.ndarray, limit: int, means: np.ndarray | None = None,
                low: int | None = None) -> None:
        """Integer ``symbols`` in [-limit, limit] (``low``: [low, limit]; clamped) with Laplacians of
        ``scales`` centred on ``means`` (None: zero; exact values, such as multiples of a power of
        two, on both sides). The end symbols of the range take the mass beyond it.

        Every symbol of the range gets a minimal probability, so a range no wider than the symbols
        need saves rate: about (2 limit + 1) / 2**24 of a bit per symbol.
        """
        low = -limit if low is None else low
        symbols = np.clip(symbols.reshape(-1), low, limit).astype(np.int32)
        scales = scales.reshape(-1).astype(np.float64)
        centre = np.zeros_like(scales) if means is None else means.reshape(-1).astype(np.float64)
        self.chunks.append((symbols, _laplace(low, limit), centre, scales))

    def uniform(self, value: int, size: int) -> None:
        """One symbol in 0..size-1, all equally likely."""
        self.chunks.append((np.array([value], dtype=np.int32), constriction.stream.model.Uniform(size)))

    def categorical(self, symbols: np.ndarray, probabilities: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Symbols in 0..L-1, each with its row of ``probabilities`` (n, L): non-negative and finite
        (exact values on both sides, such as integer counts), normalised by constriction. With
        ``rows``, symbol i has row ``rows[i]`` of ``probabilities``: a few distinct rows are kept
        until ``finish``, not one per symbol."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        table = probabilities if rows is None else _Rows(probabilities, rows)
        self.chunks.append((symbols.astype(np.int32), _CATEGORICAL, table))

    def uniforms(self, values: np.ndarray, sizes: np.ndarray) -> None:
        """Symbols each in 0..size-1 of its own ``sizes`` (at least 2), all equally likely."""
        self.chunks.append((values.astype(np.int32), _UNIFORM, sizes.astype(np.int32)))

    def finish(self) -> bytes:
        coder = constriction.stream.stack.AnsCoder()
        for chunk in reversed(self.chunks):
            coder.encode_reverse(*(c.table[c.rows] if isinstance(c, _Rows) else c for c in chunk))
        return _to_bytes(coder)


class StreamReader:
    """Reads a laplacian stream in the order ``StreamWriter`` collected it."""

    def __init__(self, data: bytes):
        self.coder = _from_bytes(data)

    def laplace(self, scales: np.ndarray, limit: int, means: np.ndarray | None = None, low: int | None = None) -> np.ndarray:
        """Symbols written by ``StreamWriter.laplace`` with the same arguments. A range from ``low`` = 0
        has a common lowest symbol, which may end a valid stream: such reads are not checked for a
        dry stream (see ``categorical``)."""
        scales = scales.reshape(-1).astype(np.float64)
        centre = np.zeros_like(scales) if means is None else means.reshape(-1).astype(np.float64)
        model = _laplace(-limit if low is None else low, limit)
        return _decode_parameters(self.coder, model, centre, scales, check=low is None or low < 0)

    def categorical(self, probabilities: np.ndarray, rows: np.ndarray | None = None, check: bool = True) -> np.ndarray:
        """Symbols written by ``StreamWriter.categorical`` with the same arguments (``rows``: the row of
        ``probabilities`` of each). Without ``check``, for symbols whose lowest (0) is common: a valid
        stream may be empty before such a read (its remaining symbols all 0, which take no bits at the
        end of an ANS stream), so the read does not refuse a dry stream; the checked reads around it do."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        table = probabilities if rows is None else probabilities[rows]
        return _decode_parameters(self.coder, _CATEGORICAL, table, check=check)

    def uniforms(self, sizes: np.ndarray) -> np.ndarray:
        """Raw bits, which may end a valid stream as zeros (the lowest symbols, which take no bits at
        the end of an ANS stream): read without the check for a dry stream (the last symbols a
        stream's own decoder reads in any case, it refuses data left over)."""
        try:
            return self.coder.decode(_UNIFORM, sizes.astype(np.int32))
        except (ValueError, RuntimeError):
            raise FormatError("corrupted entropy-coded stream") from None

    def uniform(self, size: int) -> int:
        _check_not_dry(self.coder, 1)
        try:
            return int(self.coder.decode(constriction.stream.model.Uniform(size), 1)[0])
        except (ValueError, RuntimeError):
            raise FormatError("corrupted entropy-coded stream") from None

    def finish(self) -> None:
        """Call after the last read: refuses a stream with data left over."""
        _check_finished(self.coder)


def decode_gaussian(data: bytes, scale_index: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_gaussian`` in one piece: int32 symbols shaped like ``scale_index``."""
    reader = GaussianReader(data, scales)
    symbols = reader.read(scale_index)
    reader.finish()
    return symbols


def _categorical(pmf: np.ndarray) -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(pmf.astype(np.float64), perfect=False)


def encode_categorical(symbols: np.ndarray, pmfs: np.ndarray) -> bytes:
    """Code ``symbols`` (C, n) in 0..L-1 where row c uses the table ``pmfs[c]`` (C, L)."""
    coder = constriction.stream.stack.AnsCoder()
    symbols = np.clip(symbols, 0, pmfs.shape[1] - 1).astype(np.int32)
    for c in reversed(range(len(pmfs))):  # ANS is a stack: encode backwards, decode forwards
        coder.encode_reverse(symbols[c], _categorical(pmfs[c]))
    return _to_bytes(coder)


def decode_categorical(data: bytes, pmfs: np.ndarray, count: int) -> np.ndarray:
    """Inverse of ``encode_categorical``: (C, count) int32 symbols; refuses data left over."""
    coder = _from_bytes(data)
    rows = []
    for pmf in pmfs:
        _check_not_dry(coder, count)
        try:
            rows.append(coder.decode(_categorical(pmf), count))
        except (ValueError, RuntimeError):
            raise FormatError("corrupted entropy-coded stream") from None
    _check_finished(coder)
    return np.stack(rows).astype(np.int32)
