"""The second generation's probability model: adaptive histograms of residual tokens.

A symbol ``q`` (the quantised sample minus its integer prediction) is coded as a *token* with a
categorical distribution, then, for large magnitudes, a few raw low bits:

- The sign is flipped where the Laplacian's centre (``mean``, within half a step of the
  prediction) is negative, so that every histogram sees the centre on the same side.
- Magnitudes below ``DIRECT`` are tokens of their own; above, a token names the octave and the two
  bits after the leading one, and the bits below those follow, uniform (JPEG XL's hybrid integers).
  Symbols run from the largest negative magnitude's token to the largest positive one's, so that the
  lowest symbol, which an ANS coder writes no bits for at the end of a stream, is the rarest.
- The histogram is chosen by the context: the plane, the walk's scale (``SCALE_EDGES``, a third of
  an octave apart) and whether the centre lies a quarter of a step or more from the prediction. Its
  counts start from a learned table (``weights/lossless-2.safetensors``: ``counts``, as
  ``PRIOR_TOTAL`` units per context) and grow by ``INCREMENT`` per coded token, halving past
  ``LIMIT``; encoder and decoder update them identically, in integers, after each step of the walk.

So the shape of the distribution is learned, where the first generation assumed a Laplacian: the
residuals of one scale context are a mixture of Laplacians, more peaked and with heavier tails.
"""

from __future__ import annotations

import numpy as np

DIRECT = 16  # magnitudes below this are tokens of their own
SUB = 4  # tokens per octave above (the two bits after the leading one)
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


def magnitude_tokens(limit: int) -> int:
    """How many tokens the magnitudes 0..limit take."""
    return int(split(np.array([limit]))[0][0]) + 1


def split(magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token, raw bits and their count of non-negative magnitudes."""
    octave = np.searchsorted(POWERS, magnitude, side="right") - 1  # floor(log2), in integers
    shift = np.maximum(octave - 2, 0)
    small = magnitude < DIRECT
    token = np.where(small, magnitude, DIRECT + (octave - DIRECT.bit_length() + 1) * SUB + ((magnitude >> shift) & (SUB - 1)))
    bits = np.where(small, 0, shift)
    return token, magnitude & ((1 << bits) - 1), bits


def join(token: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Inverse of ``split``: magnitudes from tokens and raw bits."""
    large = np.maximum(token - DIRECT, 0)
    head = (SUB | (large % SUB)) << raw_bits(token)  # the leading one and the two bits after it
    return np.where(token >= DIRECT, head + raw, token)


def raw_bits(token: np.ndarray) -> np.ndarray:
    """How many raw bits follow each token of a magnitude (its octave less 2)."""
    return np.where(token >= DIRECT, (np.maximum(token - DIRECT, 0) // SUB) + DIRECT.bit_length() - 3, 0)


TOKENS = magnitude_tokens((1 << 16) - 1)  # per sign, of 16-bit samples: the prior table's


class Histograms:
    """The adaptive token counts of every context of a tile."""

    def __init__(self, prior: np.ndarray, planes: int, limit: int):
        """``prior``: (PLANES, BUCKETS, LEVELS, 2 TOKENS - 1) integer counts; ``limit``: the largest
        magnitude of a symbol."""
        self.tokens = magnitude_tokens(limit)  # per sign
        self.size = 2 * self.tokens - 1
        table = prior[..., TOKENS - self.tokens : TOKENS + self.tokens - 1]  # the tokens up to limit
        # Integers held as float64 (exact below 2**53), the type constriction takes.
        self.counts = table[:planes].reshape(-1, self.size).astype(np.float64)
        self.totals = self.counts.sum(1)
        magnitude = np.abs(np.arange(self.size) - (self.tokens - 1))  # of every symbol's token
        self.bits, self.head = raw_bits(magnitude), join(magnitude, np.zeros_like(magnitude))
        self.sizes = 1 << self.bits  # the range of each symbol's raw bits
        # Every signed magnitude's (-limit..limit, at + limit) symbol and raw bits: ``symbols`` by lookup.
        signed = np.arange(-limit, limit + 1)
        token, _, bits = split(np.abs(signed))
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
        return self.counts[contexts]

    def update(self, contexts: np.ndarray, token: np.ndarray) -> None:
        increment = float(INCREMENT)  # of the arrays' type: ufunc.at takes its fast path
        np.add.at(self.counts.reshape(-1), contexts * self.size + token, increment)
        np.add.at(self.totals, contexts, increment)
        full = contexts[self.totals[contexts] > LIMIT]  # halved once however often it repeats
        if full.size:
            full = np.unique(full)
            self.counts[full] = np.floor((self.counts[full] + 1) / 2)  # (c + 1) >> 1, exact
            self.totals[full] = self.counts[full].sum(1)  # integers below 2**53: exact in any order
