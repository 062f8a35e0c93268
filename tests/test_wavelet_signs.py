"""Format version 10: the second checkerboard pass's signs, coded apart from their magnitudes with
the signs of the anchors along the band's edges as context; version 14: every detail symbol coded
so, a fair bit for a sign without context (``xcodec.models.wavelet.signs``)."""

from __future__ import annotations

import decimal

import numpy as np
import pytest
import torch

from xcodec.entropy import SYMBOL_LIMIT, StreamReader, StreamWriter
from xcodec.models.wavelet.quantise import FINEST_LIMIT
from xcodec.models.wavelet.rate import SCALE_COUNT, SCALES
from xcodec.models.wavelet.signs import (
    BITS, SIGN_PIECE, SIGN_WEIGHTS, SignCounts, edge_contexts, folded_tables, read_magnitudes, read_pass, write_magnitudes,
    write_pass,
)

LIMITS = [FINEST_LIMIT, SYMBOL_LIMIT]


def laplace_symbols(rng: np.random.Generator, index: np.ndarray, limit: int) -> np.ndarray:
    return np.clip(np.round(rng.laplace(0.0, SCALES[index])), -limit, limit).astype(np.int64)


def test_the_golomb_shift_is_the_least_that_makes_the_quotient_geometric():
    """``j`` is exactly geometric under the shifted Laplacian when b / 2**k <= 1 / ln 2."""
    tables = folded_tables()
    ln2 = float(decimal.Decimal(2).ln())
    assert tables.shift.max() == BITS and tables.shift.min() == 0
    assert np.all(tables.scale * ln2 <= 1 + 1e-12)
    assert np.all((tables.shift == 0) | (2 * tables.scale * ln2 > 1))
    assert np.array_equal(tables.scale * 2.0**tables.shift, SCALES)
    assert np.all((tables.centre >= -0.5) & (tables.centre <= 0.5))
    assert np.all((tables.zero >= 1) & (tables.zero < 2**16)) and np.all(tables.zero.sum(1) == 2**16)


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("lo,hi", [(0, 300), (300, 500), (500, 700), (700, 900)])
def test_folded_magnitudes_round_trip_and_cost_a_bit_less_per_nonzero_symbol(limit, lo, hi):
    """The folded code is the symmetric Laplacian's without the sign: one bit less per nonzero symbol."""
    rng = np.random.default_rng(lo + limit)
    index = rng.integers(lo, hi, 20000)
    q = laplace_symbols(rng, index, limit)
    writer = StreamWriter()
    writer.laplace(q, SCALES[index], limit)
    signed = 8 * len(writer.finish())
    writer = StreamWriter()
    write_magnitudes(writer, np.abs(q), index, limit)
    data = writer.finish()
    reader = StreamReader(data)
    assert np.array_equal(read_magnitudes(reader, index, limit), np.abs(q))
    reader.finish()
    assert abs(8 * len(data) + np.count_nonzero(q) - signed) <= max(0.002 * signed, 64)


@pytest.mark.parametrize("limit", LIMITS)
def test_extreme_magnitudes_round_trip_at_every_scale(limit):
    index = np.repeat(np.arange(SCALE_COUNT), 4)
    m = np.tile([0, 1, limit - 1, limit], SCALE_COUNT)
    writer = StreamWriter()
    write_magnitudes(writer, m, index, limit)
    reader = StreamReader(writer.finish())
    assert np.array_equal(read_magnitudes(reader, index, limit), m)
    reader.finish()


def test_edge_contexts_sum_the_anchors_along_each_orientation():
    plane = torch.zeros(3, 3)
    plane[0, 1], plane[1, 0], plane[1, 2], plane[2, 1] = 5.0, -2.0, -1.0, 3.0  # above, left, right, below
    assert [int(edge_contexts(plane, o)[1, 1]) for o in range(3)] == [2, -2, 0]
    plane[2, 1] = -3.0
    assert [int(edge_contexts(plane, o)[1, 1]) for o in range(3)] == [0, -2, -2]
    assert edge_contexts(plane, 0)[0, 0] == -1  # below it, and nothing above it: outside the plane


@pytest.mark.parametrize("band", [(0, 0, 0), (1, 1, 2), (4, 2, 1)])
@pytest.mark.parametrize("anchors", [False, True])
def test_a_pass_round_trips_and_saves_what_its_signs_tell(band, anchors):
    """Any symbols with any contexts (the anchors: none) decode; a pass that ends in zeros at small
    scales (the lowest symbols, which take no bits at a stream's end) decodes too; the stream is the
    symmetric Laplacians' less the bits ``write_pass`` says its signs save, which signs that agree
    with their contexts 3 times in 4 make more than a tenth of a bit each (the anchors' save none)."""
    rng = np.random.default_rng(band[0])
    limit = FINEST_LIMIT if band[0] == 0 else SYMBOL_LIMIT
    index = rng.integers(250, 900, 30000)
    context = rng.integers(-2, 3, len(index))
    q = np.abs(laplace_symbols(rng, index, limit))
    q[:100] = limit
    q *= np.where(rng.random(len(q)) < 0.75, 1, -1) * np.sign(context)
    q = np.where(context == 0, laplace_symbols(rng, index, limit), q)
    tail = np.zeros(500, np.int64)
    q, index, context = np.concatenate([q, tail]), np.concatenate([index, tail]), np.concatenate([context, tail + 1])
    context = None if anchors else context
    writers = StreamWriter(), StreamWriter()
    saved = write_pass(writers[0], q, index, context, limit, band, SignCounts(3.0))
    writers[1].laplace(q, SCALES[index], limit)
    data, plain = writers[0].finish(), 8 * len(writers[1].finish())
    reader = StreamReader(data)
    assert np.array_equal(read_pass(reader, index, context, limit, band, SignCounts(3.0)), q)
    reader.finish()
    # the 100 symbols at +-limit a few bits each apart: the two codes put the tail's mass elsewhere
    assert abs(8 * len(data) - (plain - saved)) < 0.002 * plain + 4 * 100
    assert saved == 0 if anchors else saved > 0.1 * np.count_nonzero(q * context)


def test_sign_weights_start_from_the_table_and_learn_the_signs_coded():
    signs = SignCounts(1.4)  # quality 1's row
    rows = signs.rows((0, 0, 2), np.array([1, -2]))  # level 0, luma, HH: its signs mostly disagree
    assert np.array_equal(signs.weights[rows], [[256 - 26, 26], [256 - 64, 64]])
    writer = StreamWriter()
    agree = np.ones(1000, np.int64)
    first = signs.write(writer, np.full(1000, rows[0]), agree)
    assert np.array_equal(signs.weights[rows[0]], [256 - 26, 26 + 16 * 1000])
    # the first piece at the table's 26/256 (3.3 bits each), the next ones learnt: soon almost free
    assert SIGN_PIECE * np.log2(256 / 26) < first < 2 * SIGN_PIECE * np.log2(256 / 26)
    assert signs.write(writer, np.full(1000, rows[0]), agree) < 30


def test_the_sign_table_is_probabilities_in_its_range():
    assert SIGN_WEIGHTS.shape == (8, 4, 3, 2, 2)
    assert SIGN_WEIGHTS.min() >= 16 and SIGN_WEIGHTS.max() <= 240
