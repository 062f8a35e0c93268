"""The probability model of the second and third generations: adaptive histograms of residual tokens.

A symbol ``q`` (the quantised sample minus its integer prediction) is coded as a *token* with a
categorical distribution, then, for large magnitudes, a few raw low bits:

- The sign is flipped where the Laplacian's centre (``mean``, within half a step of the
  prediction) is negative, so that every histogram sees the centre on the same side.
- Magnitudes below ``Alphabet.direct`` (16; 8 in ``lossless-3``) are tokens of their own; above, a
  token names the octave and the two bits after the leading one (one in ``lossless-3``), and the
  bits below those follow, uniform (JPEG XL's hybrid integers).
  Symbols run from the largest negative magnitude's token to the largest positive one's, so that the
  lowest symbol, which an ANS coder writes no bits for at the end of a stream, is the rarest.
- The histogram is chosen by the context: the plane, the walk's scale (``SCALE_EDGES``, a third of
  an octave apart) and whether the centre lies a quarter of a step or more from the prediction. Its
  counts start from a learned table (``weights/NAME.safetensors``: ``counts``, as
  ``PRIOR_TOTAL`` units per context) and grow by ``INCREMENT`` per coded token, halving past
  ``LIMIT``; encoder and decoder update them identically, in integers, after each step of the walk.

So the shape of the distribution is learned, where the first generation assumed a Laplacian: the
residuals of one scale context are a mixture of Laplacians, more peaked and with heavier tails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POWERS = 1 << np.arange(17, dtype=np.int64)
# Scale buckets: bucket k >= 1 holds scales (in steps) of at least SCALE_EDGES[k - 1], from 1/32 up
# to 2**16, three per octave; integers over 1024, so that both sides compare the same numbers.
SCALE_EDGES = np.array([round(32 * 2 ** (k / 3)) for k in range(63)], dtype=np.float64) / 1024
BUCKETS = SCALE_EDGES.size + 1
LEVELS = 2  # the centre's distance from the prediction: below a quarter of a step, or not
PLANES = 3
PRIOR_TOTAL = 256
INCREMENT = 8
LIMIT = 1 << 17


@dataclass(frozen=True)
class Alphabet:
    """How magnitudes become tokens and raw bits: those below ``direct`` are tokens of their own;
    above, a token names the octave and the ``log2(sub)`` bits after the leading one (both powers
    of two, ``sub <= direct``)."""

    direct: int = 16
    sub: int = 4

    def split(self, magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token, raw bits and their count of non-negative magnitudes."""
        octave = np.searchsorted(POWERS, magnitude, side="right") - 1  # floor(log2), in integers
        shift = np.maximum(octave - self.sub.bit_length() + 1, 0)
        small = magnitude < self.direct
        large = self.direct + (octave - self.direct.bit_length() + 1) * self.sub + ((magnitude >> shift) & (self.sub - 1))
        bits = np.where(small, 0, shift)
        return np.where(small, magnitude, large), magnitude & ((1 << bits) - 1), bits

    def join(self, token: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Inverse of ``split``: magnitudes from tokens and raw bits."""
        large = np.maximum(token - self.direct, 0)
        head = (self.sub | (large % self.sub)) << self.raw_bits(token)  # the leading one and the bits after it
        return np.where(token >= self.direct, head + raw, token)

    def raw_bits(self, token: np.ndarray) -> np.ndarray:
        """How many raw bits follow each token of a magnitude (its octave less log2(sub))."""
        octave = np.maximum(token - self.direct, 0) // self.sub + self.direct.bit_length() - 1
        return np.where(token >= self.direct, octave - self.sub.bit_length() + 1, 0)

    def magnitude_tokens(self, limit: int) -> int:
        """How many tokens the magnitudes 0..limit take."""
        return int(self.split(np.array([limit]))[0][0]) + 1

    @property
    def tokens(self) -> int:
        """Tokens per sign of 16-bit samples: the prior table's."""
        return self.magnitude_tokens((1 << 16) - 1)

    @property
    def counts_shape(self) -> tuple[int, int, int, int]:
        """The prior table's shape: (PLANES, BUCKETS, LEVELS, symbols)."""
        return PLANES, BUCKETS, LEVELS, 2 * self.tokens - 1


class Histograms:
    """The adaptive token counts of every context of a tile."""

    def __init__(self, prior: np.ndarray, planes: int, limit: int, alphabet: Alphabet):
        """``prior``: ``alphabet.counts_shape`` integer counts; ``limit``: the largest magnitude of a symbol."""
        self.tokens = alphabet.magnitude_tokens(limit)  # per sign
        self.size = 2 * self.tokens - 1
        table = prior[..., alphabet.tokens - self.tokens : alphabet.tokens + self.tokens - 1]  # the tokens up to limit
        # Integers held as float64 (exact below 2**53), the type constriction takes.
        self.counts = table[:planes].reshape(-1, self.size).astype(np.float64)
        self.totals = self.counts.sum(1)
        magnitude = np.abs(np.arange(self.size) - (self.tokens - 1))  # of every symbol's token
        self.bits, self.head = alphabet.raw_bits(magnitude), alphabet.join(magnitude, np.zeros_like(magnitude))
        self.sizes = 1 << self.bits  # the range of each symbol's raw bits
        # Every signed magnitude's (-limit..limit, at + limit) symbol and raw bits: ``symbols`` by lookup.
        signed = np.arange(-limit, limit + 1)
        token, _, bits = alphabet.split(np.abs(signed))
        self.symbol_of = self.tokens - 1 + np.sign(signed) * token
        self.sizes_of, self.low_of = 1 << bits, (1 << bits) - 1
        self.limit = limit

    def contexts(self, plane: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        bucket = SCALE_EDGES.searchsorted(scale, side="right")
        return (plane * BUCKETS + bucket) * LEVELS + (np.abs(mean) >= 0.25)

    def symbols(self, q: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens, raw bits and their ranges (2**bits, 1 for none) of symbols ``q`` (centre ``mean``)."""
        at = np.where(mean < 0, -q, q) + self.limit
        return self.symbol_of[at], np.abs(at - self.limit) & self.low_of[at], self.sizes_of[at]

    def values(self, token: np.ndarray, raw: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Inverse of ``symbols``."""
        magnitude = self.head[token] + raw
        return np.where((token < self.tokens - 1) != (mean < 0), -magnitude, magnitude)

    def raw_bits(self, token: np.ndarray) -> np.ndarray:
        """How many raw bits follow each symbol."""
        return self.bits[token]

    def probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return self.counts.take(contexts, axis=0)  # twice as fast as indexing

    def update(self, contexts: np.ndarray, token: np.ndarray) -> None:
        increment = float(INCREMENT)  # of the arrays' type: ufunc.at takes its fast path
        np.add.at(self.counts.reshape(-1), contexts * self.size + token, increment)
        np.add.at(self.totals, contexts, increment)
        full = contexts[self.totals[contexts] > LIMIT]  # halved once however often it repeats
        if full.size:
            full = np.unique(full)
            self.counts[full] = np.floor((self.counts[full] + 1) / 2)  # (c + 1) >> 1, exact
            self.totals[full] = self.counts[full].sum(1)  # integers below 2**53: exact in any order
