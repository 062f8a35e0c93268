"""Sign contexts (format version 10): the second checkerboard pass codes a detail symbol's sign
apart from its magnitude, with the signs of the anchors along the band's edges as context.

Along an edge, neighbouring coefficients of the band that follows it share their sign: in HL (the
vertical edges) the anchors above and below, in LH the anchors left and right, in HH all four. The
context ``v`` of a second-pass symbol is the sum of those anchors' signs, clamped to +-2
(``edge_contexts``); the decoder has it before the pass. Where ``v`` is 0 the sign is a fair bit, and
the symbol is coded as before, under the symmetric Laplacian of its scale. Elsewhere:

- its magnitude ``m = |q|`` under the same Laplacian folded onto ``m >= 0`` (``write_magnitudes``),
  exactly: a zero flag, then ``m - 1``, which is geometric of ratio ``r = exp(-1/b)``, split as
  ``(j << k) + t``: ``j`` under a Laplacian of scale ``b / 2**k`` centred on ``(b / 2**k) ln 2 - 1/2``
  over ``[0, (limit - 1) >> k]`` (constriction's quantiser gives symbol 0 all the mass below it,
  which makes ``j`` exactly geometric when ``b / 2**k <= 1 / ln 2``: ``k`` is the least such), and
  the ``k`` bits of ``t``, independent, bit ``i`` being 1 with probability ``r**(2**i) / (1 + r**(2**i))``;
- if ``m > 0``, whether its sign is that of ``v``: a binary symbol whose probability the tile
  learns as it goes (``SignCounts``), per level, orientation, luma or chroma, and ``|v|``, from a
  start that ``SIGN_WEIGHTS`` gives per quality.

The folded code's probabilities (``folded_tables``) are integers computed with ``decimal``, whose
operations are correctly rounded, so they are the same on every machine, as the scale table is.

From format version 14 on, every detail symbol is folded (``write_pass``): the anchors and the
second pass's symbols of context 0 as well, their signs then fair bits. The magnitudes cost what the
symmetric Laplacians do less a bit per nonzero symbol, which the sign takes back, so the file's size
hardly changes; but most symbols are zeros of a small scale, and a zero flag decodes about twice as
fast in constriction as a Laplacian symbol, which computes its distribution symbol by symbol.
"""

from __future__ import annotations

import decimal
import functools
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ...entropy import StreamReader, StreamWriter
from .bands import Band
from .rate import SCALE_COUNT, SCALES

PROBABILITY_BITS = 16  # the binary symbols' probabilities, in 1/2**16
SIGN_BITS = 8  # SIGN_WEIGHTS, in 1/256
INCREMENT = 16  # what a coded sign adds to its context's weight (``SignCounts``)
SIGN_PIECE = 64  # ``SignCounts`` learns after each piece of a pass's signs
BITS = 10  # the most bits of ``t``: the largest scale, about 1,370, has k = 10 (``folded_tables`` checks it)
# The probability (in 1/256) that a second-pass sign agrees with its context's, per quality
# ⌊Q + 1/2⌋ = 1 .. 8, level (0, 1, 2, 3 and up), orientation (HL, LH, HH), luma or chroma, and |v|
# (1, 2). Counted on 27 training photos that are held out of no set (every 4th of the other SUN
# photos, every 50th BSDS500 photo) at each quality, and kept within 16..240: a sign against the
# table costs at most 4 bits until ``SignCounts`` learns the image (docs/training-log.md). Part of
# the format, like the scale table.
SIGN_WEIGHTS = np.array((
    (  # quality 1: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((240, 240), (128, 128)), ((227, 240), (128, 128)), ((26, 64), (128, 128))),
        (((186, 232), (213, 205)), ((192, 231), (205, 171)), ((97, 82), (128, 128))),
        (((162, 209), (208, 240)), ((178, 217), (232, 240)), ((116, 111), (47, 43))),
        (((147, 178), (183, 211)), ((168, 204), (201, 238)), ((118, 110), (113, 110))),
    ),
    (  # quality 2: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((223, 240), (128, 128)), ((212, 240), (128, 128)), ((26, 16), (128, 128))),
        (((169, 215), (240, 240)), ((181, 219), (240, 235)), ((106, 93), (128, 128))),
        (((153, 190), (210, 240)), ((169, 206), (227, 240)), ((120, 110), (88, 45))),
        (((145, 170), (175, 205)), ((163, 197), (190, 232)), ((119, 110), (111, 99))),
    ),
    (  # quality 3: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((201, 239), (192, 171)), ((202, 235), (205, 171)), ((32, 16), (128, 128))),
        (((159, 197), (233, 240)), ((173, 207), (240, 240)), ((107, 93), (64, 128))),
        (((147, 177), (220, 239)), ((164, 197), (230, 240)), ((119, 112), (65, 64))),
        (((140, 163), (165, 194)), ((162, 192), (183, 224)), ((120, 110), (103, 89))),
    ),
    (  # quality 4: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((186, 225), (236, 240)), ((192, 226), (230, 224)), ((42, 16), (128, 128))),
        (((152, 181), (232, 240)), ((166, 197), (240, 240)), ((106, 93), (51, 37))),
        (((143, 168), (213, 239)), ((161, 189), (222, 240)), ((121, 113), (47, 26))),
        (((137, 158), (160, 184)), ((162, 188), (176, 215)), ((119, 111), (98, 81))),
    ),
    (  # quality 5: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((177, 210), (239, 240)), ((186, 217), (236, 240)), ((54, 16), (128, 128))),
        (((148, 170), (230, 240)), ((161, 189), (240, 240)), ((107, 92), (22, 23))),
        (((140, 161), (193, 231)), ((158, 185), (207, 240)), ((120, 114), (42, 18))),
        (((133, 155), (156, 177)), ((161, 186), (174, 206)), ((120, 111), (96, 77))),
    ),
    (  # quality 6: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((172, 200), (237, 240)), ((182, 210), (230, 240)), ((60, 19), (102, 128))),
        (((145, 163), (231, 240)), ((158, 184), (240, 240)), ((107, 92), (57, 18))),
        (((138, 156), (176, 217)), ((158, 181), (196, 235)), ((121, 114), (39, 16))),
        (((131, 152), (151, 169)), ((160, 185), (171, 200)), ((118, 111), (95, 76))),
    ),
    (  # quality 7: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((168, 193), (228, 240)), ((181, 205), (227, 240)), ((64, 22), (91, 102))),
        (((144, 159), (231, 240)), ((158, 179), (240, 240)), ((106, 90), (71, 34))),
        (((136, 153), (169, 205)), ((157, 179), (189, 226)), ((120, 114), (41, 16))),
        (((132, 150), (148, 163)), ((161, 183), (168, 195)), ((117, 111), (96, 77))),
    ),
    (  # quality 8: levels 0, 1, 2, 3+; HL, LH, HH; luma, chroma; |v| = 1, 2
        (((168, 188), (216, 240)), ((180, 203), (217, 240)), ((65, 24), (102, 85))),
        (((143, 156), (225, 240)), ((158, 176), (237, 240)), ((106, 89), (68, 44))),
        (((138, 151), (166, 195)), ((158, 177), (186, 219)), ((119, 114), (47, 16))),
        (((131, 149), (147, 159)), ((161, 182), (169, 193)), ((118, 111), (95, 76))),
    ),
), dtype=np.int64)


class Folded(NamedTuple):
    """Per scale index: the Golomb shift ``k``, the zero flag's and the remainder bits' weights
    (P(m > 0) and P(bit = 1) in 1/2**16; bits past ``k`` unused), and ``j``'s scale and centre."""

    shift: np.ndarray  # (SCALE_COUNT,) int64
    zero: np.ndarray  # (SCALE_COUNT, 2) float64: P(m = 0), P(m > 0)
    bits: np.ndarray  # (SCALE_COUNT * BITS, 2) float64, row index * BITS + i: P(bit i = 0), P(bit i = 1)
    scale: np.ndarray  # (SCALE_COUNT,) float64
    centre: np.ndarray  # (SCALE_COUNT,) float64


@functools.cache
def folded_tables() -> Folded:
    """The folded code's tables for every scale of ``SCALES``, in 40-digit decimal arithmetic."""
    one = 1 << PROBABILITY_BITS
    shift = np.zeros(SCALE_COUNT, np.int64)
    nonzero = np.zeros(SCALE_COUNT, np.int64)
    scale, centre = np.zeros(SCALE_COUNT), np.zeros(SCALE_COUNT)
    rows: list[list[int]] = []
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        ln2 = decimal.Decimal(2).ln()

        def weight(p: decimal.Decimal) -> int:
            return min(max(int((p * one).to_integral_value(decimal.ROUND_HALF_EVEN)), 1), one - 1)

        for i, b in enumerate(SCALES):
            b = decimal.Decimal(float(b))  # the float64 entry, exactly
            k = 0
            while b * ln2 > 2**k:
                k += 1
            shift[i] = k
            nonzero[i] = weight((-1 / (2 * b)).exp())
            scale[i] = float(b / 2**k)  # exact: a power of two
            centre[i] = float(b / 2**k * ln2 - decimal.Decimal("0.5"))
            ratios = [(-1 / b).exp()]  # r ** (2 ** bit), by squaring
            for _ in range(BITS - 1):
                ratios.append(ratios[-1] * ratios[-1])
            rows.append([weight(r / (1 + r)) for r in ratios])
    assert shift.max() == BITS
    ones = np.array(rows, np.int64).reshape(-1)
    return Folded(shift, np.stack([one - nonzero, nonzero], 1).astype(np.float64),
                  np.stack([one - ones, ones], 1).astype(np.float64), scale, centre)


def edge_contexts(plane: Tensor, orientation: int) -> Tensor:
    """The contexts ``v`` (h, w), int64 in -2..2, of band ``plane`` (h, w) whose anchors are decoded
    (zeros elsewhere): at each position, the sum of the signs of the anchors along the edges of
    ``orientation`` (0 HL: above and below; 1 LH: left and right; 2 HH: the four), zero outside."""
    s = torch.nn.functional.pad(torch.sign(plane).long(), (1, 1, 1, 1))
    vertical, horizontal = s[:-2, 1:-1] + s[2:, 1:-1], s[1:-1, :-2] + s[1:-1, 2:]
    return (vertical, horizontal, vertical + horizontal)[orientation].clamp(-2, 2)


class SignCounts:
    """The second passes' sign probabilities in one tile, learned as it is coded: per context (level
    0, 1, 2 or 3 and up, orientation, luma or chroma, ``|v|``) two integer weights, disagree and
    agree, that start from ``SIGN_WEIGHTS`` at the file's quality (summing to 256) and grow by
    ``INCREMENT`` with each sign coded (as if the table were 16 signs seen before). The signs of a
    pass are coded in pieces of ``SIGN_PIECE``, each under the weights of the signs before it, so
    that the encoder and the decoder learn alike without a symbol-by-symbol loop."""

    def __init__(self, quality: float):
        agree = SIGN_WEIGHTS[min(max(int(np.floor(quality + 0.5)), 1), 8) - 1].reshape(-1)
        self.weights = np.stack([(1 << SIGN_BITS) - agree, agree], 1).astype(np.float64)

    @staticmethod
    def rows(band: Band, context: np.ndarray) -> np.ndarray:
        level, c, o = band
        return np.ravel_multi_index((min(level, 3), o, min(c, 1)), SIGN_WEIGHTS.shape[1:-1]) * 2 + np.abs(context) - 1

    def pieces(self, rows: np.ndarray):
        """Each piece's slice and its weights, (n, 2), before the caller codes it and ``learn``s it."""
        for start in range(0, len(rows), SIGN_PIECE):
            piece = slice(start, start + SIGN_PIECE)
            yield piece, self.weights[rows[piece]]

    def learn(self, rows: np.ndarray, agree: np.ndarray) -> None:
        np.add.at(self.weights, (rows, agree), INCREMENT)

    def write(self, writer: StreamWriter, rows: np.ndarray, agree: np.ndarray) -> float:
        """Code ``agree`` (n,) of contexts ``rows``; returns the bits they cost (the code length)."""
        bits = 0.0
        for piece, weights in self.pieces(rows):
            writer.categorical(agree[piece], weights)
            bits -= float(np.log2(weights[np.arange(len(weights)), agree[piece]] / weights.sum(1)).sum())
            self.learn(rows[piece], agree[piece])
        return bits

    def read(self, reader: StreamReader, rows: np.ndarray) -> np.ndarray:
        agree = np.zeros(len(rows), np.int64)
        for piece, weights in self.pieces(rows):
            agree[piece] = reader.categorical(weights, check=False)
            self.learn(rows[piece], agree[piece])
        return agree


def write_magnitudes(writer: StreamWriter, m: np.ndarray, index: np.ndarray, limit: int) -> None:
    """Code magnitudes ``m`` (n,) in 0..limit under the Laplacians of scale indices ``index``, folded."""
    tables = folded_tables()
    writer.categorical((m > 0).astype(np.int32), tables.zero, index)
    m, index = m[m > 0], index[m > 0]
    g, k = m - 1, tables.shift[index]
    for shift in np.unique(k):
        at, top = k == shift, (limit - 1) >> shift
        if top:  # else j = 0: nothing to code (constriction has no model of one symbol)
            writer.laplace(g[at] >> shift, tables.scale[index[at]], top, tables.centre[index[at]], 0)
    for bit in range(int(k.max(initial=0))):
        at = k > bit
        writer.categorical((g[at] >> bit) & 1, tables.bits, index[at] * BITS + bit)


def read_magnitudes(reader: StreamReader, index: np.ndarray, limit: int) -> np.ndarray:
    """The magnitudes ``write_magnitudes`` coded, int64."""
    tables = folded_tables()
    m = reader.categorical(tables.zero, index, check=False).astype(np.int64)
    nonzero = np.flatnonzero(m)
    index = index[nonzero]
    g, k = np.zeros(len(nonzero), np.int64), tables.shift[index]
    for shift in np.unique(k):
        at, top = k == shift, (limit - 1) >> shift
        if top:
            g[at] = reader.laplace(tables.scale[index[at]], top, tables.centre[index[at]], 0).astype(np.int64) << shift
    for bit in range(int(k.max(initial=0))):
        at = np.flatnonzero(k > bit)
        g[at] += reader.categorical(tables.bits, index[at] * BITS + bit, check=False).astype(np.int64) << bit
    m[nonzero] = np.minimum(g + 1, limit)  # a damaged stream's may exceed it; an encoder's never do
    return m


def read_second(reader: StreamReader, index: np.ndarray, context: np.ndarray, limit: int, band: Band,
                signs: SignCounts) -> np.ndarray:
    """Versions 10 to 13: a second pass's symbols (n,) with scale indices ``index`` and contexts
    ``context``, int64: where the context is 0 under the symmetric Laplacians, elsewhere folded (the
    magnitudes, ``read_magnitudes``), then the signs of the nonzero ones under ``signs``."""
    symbols = np.zeros(len(index), np.int64)
    plain, edged = context == 0, np.flatnonzero(context != 0)
    symbols[plain] = reader.laplace(SCALES[index[plain]], limit)
    m = read_magnitudes(reader, index[edged], limit)
    signed = np.flatnonzero(m)
    v = context[edged[signed]]
    agree = signs.read(reader, signs.rows(band, v))
    m[signed] *= np.where(agree == 1, np.sign(v), -np.sign(v))
    symbols[edged] = m
    return symbols


def write_pass(writer: StreamWriter, symbols: np.ndarray, index: np.ndarray, context: np.ndarray | None, limit: int,
               band: Band, signs: SignCounts) -> float:
    """Version 14: code a pass's ``symbols`` (n,) with scale indices ``index``, all folded: their
    magnitudes, then the signs of the nonzero ones, a fair bit each where the ``context`` is 0 (None:
    the anchors, all 0), else under ``signs``. Returns the bits the signs save against a bit each."""
    q = np.clip(symbols, -limit, limit).astype(np.int64)
    write_magnitudes(writer, np.abs(q), index, limit)
    signed = q[q != 0]
    v = np.zeros(len(signed), np.int64) if context is None else context[q != 0]
    fair, edged = v == 0, v != 0
    writer.uniforms((signed[fair] < 0).astype(np.int32), np.full(int(fair.sum()), 2, np.int32))
    agree = (np.sign(signed[edged]) == np.sign(v[edged])).astype(np.int64)
    return int(edged.sum()) - signs.write(writer, signs.rows(band, v[edged]), agree)


def read_pass(reader: StreamReader, index: np.ndarray, context: np.ndarray | None, limit: int, band: Band,
              signs: SignCounts) -> np.ndarray:
    """The symbols (n,) ``write_pass`` coded, int64."""
    m = read_magnitudes(reader, index, limit)
    signed = np.flatnonzero(m)
    v = np.zeros(len(signed), np.int64) if context is None else context[signed]
    fair, edged = np.flatnonzero(v == 0), np.flatnonzero(v)
    sign = np.empty(len(signed), np.int64)
    sign[fair] = 1 - 2 * reader.uniforms(np.full(len(fair), 2, np.int32)).astype(np.int64)
    agree = signs.read(reader, signs.rows(band, v[edged]))
    sign[edged] = np.where(agree == 1, np.sign(v[edged]), -np.sign(v[edged]))
    m[signed] *= sign
    return m
