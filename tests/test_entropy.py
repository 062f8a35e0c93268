"""ANS coding through constriction: exact round trips, near-ideal sizes, and malformed streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xcodec.entropy import PIECE, SYMBOL_LIMIT, decode_categorical, decode_gaussian, encode_categorical, encode_gaussian
from xcodec.errors import FormatError

# A scale table like the models' (0.11 .. 256, about 12% apart); the coder takes any table.
SCALES = np.geomspace(0.11, 256.0, 70)


def gaussian_data(rng: np.random.Generator, shape, index_range=(0, len(SCALES))):
    scale_index = rng.integers(*index_range, size=shape)
    symbols = np.round(rng.normal(0.0, SCALES[scale_index])).astype(np.int32)
    return symbols, scale_index


def gaussian_bits(symbols: np.ndarray, stds: np.ndarray) -> float:
    """Information content of integer symbols under zero-mean Gaussians quantized to unit bins."""
    k = torch.from_numpy(np.abs(symbols).astype(np.float64).reshape(-1))
    s = torch.from_numpy(stds.astype(np.float64).reshape(-1))
    # P(k) = Phi((k + 1/2)/s) - Phi((k - 1/2)/s), taken on the negative side to avoid cancellation.
    p = torch.special.ndtr((-k + 0.5) / s) - torch.special.ndtr((-k - 0.5) / s)
    return float(-torch.log2(p).sum())


# --- gaussian -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_round_trip_is_exact(seed):
    rng = np.random.default_rng(seed)
    symbols, scale_index = gaussian_data(rng, (4, 50, 60))
    data = encode_gaussian(symbols, scale_index, SCALES)
    assert isinstance(data, bytes) and len(data) % 4 == 0
    decoded = decode_gaussian(data, scale_index, SCALES)
    assert decoded.shape == scale_index.shape
    assert np.issubdtype(decoded.dtype, np.integer)
    assert np.array_equal(decoded, symbols)


def test_gaussian_large_magnitudes_round_trip():
    rng = np.random.default_rng(2)
    n = 2000
    symbols = rng.integers(-SYMBOL_LIMIT, SYMBOL_LIMIT + 1, size=n).astype(np.int32)
    symbols[:6] = [SYMBOL_LIMIT, -SYMBOL_LIMIT, SYMBOL_LIMIT - 1, -SYMBOL_LIMIT + 1, 0, SYMBOL_LIMIT // 2 + 7]
    scale_index = rng.integers(0, len(SCALES), size=n)
    scale_index[:6] = 0  # the narrowest Gaussian: those symbols are astronomically unlikely
    data = encode_gaussian(symbols, scale_index, SCALES)
    assert np.array_equal(decode_gaussian(data, scale_index, SCALES), symbols)


def test_gaussian_symbols_beyond_the_limit_are_clamped():
    symbols = np.array([SYMBOL_LIMIT + 1, -SYMBOL_LIMIT - 5, 2**30, 7])
    scale_index = np.array([10, 10, 10, 10])
    decoded = decode_gaussian(encode_gaussian(symbols, scale_index, SCALES), scale_index, SCALES)
    assert decoded.tolist() == [SYMBOL_LIMIT, -SYMBOL_LIMIT, SYMBOL_LIMIT, 7]


def test_gaussian_empty_and_single_symbol():
    empty = np.zeros((0,), dtype=np.int64)
    data = encode_gaussian(np.zeros((0,), dtype=np.int32), empty, SCALES)
    assert len(data) % 4 == 0
    assert decode_gaussian(data, empty, SCALES).size == 0
    shaped = np.zeros((1, 0, 3), dtype=np.int64)
    assert decode_gaussian(encode_gaussian(np.zeros((1, 0, 3)), shaped, SCALES), shaped, SCALES).shape == (1, 0, 3)
    for value in (0, 1, -1, SYMBOL_LIMIT):
        one = np.array([[value]], dtype=np.int32)
        idx = np.array([[0]])
        assert decode_gaussian(encode_gaussian(one, idx, SCALES), idx, SCALES).tolist() == [[value]]


def test_all_zero_symbols_at_the_smallest_scale_cost_almost_nothing():
    scale_index = np.zeros(10_000, dtype=np.int64)
    data = encode_gaussian(np.zeros(10_000, dtype=np.int32), scale_index, SCALES)
    assert np.array_equal(decode_gaussian(data, scale_index, SCALES), np.zeros(10_000))
    assert len(data) <= 10_000 / 8 * 0.05 + 8  # far below 0.05 bits per symbol


def test_gaussian_size_is_close_to_the_information_content():
    rng = np.random.default_rng(3)
    # Realistic scales (0.5 .. 50): the coder's probability floor is negligible there.
    low = int(np.searchsorted(SCALES, 0.5))
    high = int(np.searchsorted(SCALES, 50.0))
    symbols, scale_index = gaussian_data(rng, (100_000,), (low, high))
    data = encode_gaussian(symbols, scale_index, SCALES)
    ideal = gaussian_bits(symbols, SCALES[scale_index])
    bits = 8 * len(data)
    assert ideal > 100_000  # the test data carries real information
    assert bits <= 1.01 * ideal + 4 * 32, (bits, ideal)
    assert bits >= 0.99 * ideal - 4 * 32, (bits, ideal)  # a coder cannot beat the entropy by much


def test_gaussian_decoding_needs_the_same_scales():
    rng = np.random.default_rng(4)
    symbols, scale_index = gaussian_data(rng, (5000,), (20, 50))
    data = encode_gaussian(symbols, scale_index, SCALES)
    shifted = np.clip(scale_index + 1, 0, len(SCALES) - 1)
    assert not np.array_equal(decode_gaussian(data, shifted, SCALES), symbols)


# --- categorical --------------------------------------------------------------------------------


def random_pmfs(rng: np.random.Generator, channels: int, levels: int) -> np.ndarray:
    return rng.dirichlet(np.full(levels, 0.7), size=channels)


def sample_categorical(rng: np.random.Generator, pmfs: np.ndarray, count: int) -> np.ndarray:
    return np.stack([rng.choice(pmfs.shape[1], size=count, p=pmf) for pmf in pmfs]).astype(np.int32)


@pytest.mark.parametrize("channels,levels,count", [(5, 33, 2000), (1, 2, 1), (96, 255, 12), (3, 7, 1)])
def test_categorical_round_trip_is_exact(channels, levels, count):
    rng = np.random.default_rng(channels * 1000 + levels)
    pmfs = random_pmfs(rng, channels, levels)
    symbols = sample_categorical(rng, pmfs, count)
    data = encode_categorical(symbols, pmfs)
    assert isinstance(data, bytes) and len(data) % 4 == 0
    decoded = decode_categorical(data, pmfs, count)
    assert decoded.shape == (channels, count)
    assert decoded.dtype == np.int32
    assert np.array_equal(decoded, symbols)


def test_gaussian_stream_with_data_left_over_is_refused():
    rng = np.random.default_rng(8)
    symbols, scale_index = gaussian_data(rng, (50,), (0, 40))
    data = encode_gaussian(symbols, scale_index, SCALES)
    longer = encode_gaussian(*gaussian_data(rng, (400,), (0, 40)), SCALES)  # a spliced stream
    for damaged in (longer, data + b"\x01\x00\x00\x00"):
        with pytest.raises(FormatError, match="corrupted"):
            decode_gaussian(damaged, scale_index, SCALES)


def test_categorical_stream_with_data_left_over_is_refused():
    rng = np.random.default_rng(9)
    pmfs = random_pmfs(rng, 4, 33)
    data = encode_categorical(sample_categorical(rng, pmfs, 50), pmfs)
    longer = encode_categorical(sample_categorical(rng, pmfs, 400), pmfs)  # a spliced stream
    for damaged in (longer, data + b"\x01\x00\x00\x00", rng.integers(1, 255, 400, dtype=np.uint8).tobytes()):
        with pytest.raises(FormatError, match="corrupted"):
            decode_categorical(damaged, pmfs, 50)


def test_categorical_uniform_symbols_and_extremes():
    rng = np.random.default_rng(5)
    pmfs = random_pmfs(rng, 4, 255)
    symbols = rng.integers(0, 255, size=(4, 500)).astype(np.int32)  # not drawn from the pmfs
    symbols[:, 0], symbols[:, 1] = 0, 254
    assert np.array_equal(decode_categorical(encode_categorical(symbols, pmfs), pmfs, 500), symbols)


def test_categorical_zero_probability_entries_are_still_codable():
    # The shipped z tables are clamped at 0, and the encoder may emit any offset within the radius.
    pmfs = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    symbols = np.array([[2, 3, 0, 1], [0, 3, 1, 2]], dtype=np.int32)
    assert np.array_equal(decode_categorical(encode_categorical(symbols, pmfs), pmfs, 4), symbols)


def test_categorical_out_of_range_symbols_are_clamped():
    pmfs = np.full((1, 5), 0.2)
    decoded = decode_categorical(encode_categorical(np.array([[-3, 9, 2]]), pmfs), pmfs, 3)
    assert decoded.tolist() == [[0, 4, 2]]


def test_categorical_empty():
    pmfs = np.full((3, 5), 0.2)
    data = encode_categorical(np.zeros((3, 0), dtype=np.int32), pmfs)
    assert decode_categorical(data, pmfs, 0).shape == (3, 0)


def test_categorical_size_is_close_to_the_information_content():
    rng = np.random.default_rng(6)
    pmfs = random_pmfs(rng, 10, 40)
    symbols = sample_categorical(rng, pmfs, 10_000)  # 100k symbols in all
    data = encode_categorical(symbols, pmfs)
    ideal = float(-np.log2(np.take_along_axis(pmfs, symbols, axis=1)).sum())
    bits = 8 * len(data)
    assert ideal > 100_000
    assert bits <= 1.01 * ideal + 4 * 32, (bits, ideal)
    assert bits >= 0.99 * ideal - 4 * 32, (bits, ideal)


def test_categorical_channel_order_matters():
    rng = np.random.default_rng(7)
    pmfs = random_pmfs(rng, 2, 16)
    pmfs[1] = np.roll(pmfs[0], 5)
    symbols = sample_categorical(rng, pmfs, 300)
    data = encode_categorical(symbols, pmfs)
    try:  # the wrong tables give other symbols, or leave data over
        assert not np.array_equal(decode_categorical(data, pmfs[::-1].copy(), 300), symbols)
    except FormatError:
        pass


# --- malformed streams --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_streams():
    rng = np.random.default_rng(8)
    symbols, scale_index = gaussian_data(rng, (300,), (10, 40))
    pmfs = random_pmfs(rng, 3, 9)
    cat = sample_categorical(rng, pmfs, 100)
    return (encode_gaussian(symbols, scale_index, SCALES), scale_index), (encode_categorical(cat, pmfs), pmfs)


@pytest.mark.parametrize("cut", [1, 2, 3, 5])
def test_length_not_a_multiple_of_four_is_a_format_error(valid_streams, cut):
    (gdata, scale_index), (cdata, pmfs) = valid_streams
    assert len(gdata) > 8 and len(cdata) > 8
    for data in (gdata[:-cut], gdata + b"\x01" * cut, b"\x01" * cut):
        if len(data) % 4 == 0:
            continue
        with pytest.raises(FormatError, match="multiple of 4"):
            decode_gaussian(data, scale_index, SCALES)
    for data in (cdata[:-cut], cdata + b"\x01" * cut, b"\x01" * cut):
        if len(data) % 4 == 0:
            continue
        with pytest.raises(FormatError, match="multiple of 4"):
            decode_categorical(data, pmfs, 100)


@pytest.mark.parametrize("decoder", ["gaussian", "categorical"])
def test_stream_ending_in_a_zero_word_is_a_format_error(valid_streams, decoder):
    (gdata, scale_index), (cdata, pmfs) = valid_streams
    with pytest.raises(FormatError):
        if decoder == "gaussian":
            decode_gaussian(gdata + b"\x00\x00\x00\x00", scale_index, SCALES)
        else:
            decode_categorical(cdata + b"\x00\x00\x00\x00", pmfs, 100)


def test_information_content_helper():
    # P(0) under N(0, 1) quantized to unit bins is erf(1/(2*sqrt 2)) = 0.3829.
    assert gaussian_bits(np.array([0]), np.array([1.0])) == pytest.approx(-math.log2(math.erf(0.5 / math.sqrt(2))))


# --- streams that run dry -----------------------------------------------------------------------


def test_an_empty_stream_with_symbols_to_read_is_refused():
    with pytest.raises(FormatError, match="ends before its symbols do"):
        decode_gaussian(b"", np.zeros(10, dtype=np.int64), SCALES)
    with pytest.raises(FormatError, match="ends before its symbols do"):
        decode_categorical(b"", np.full((2, 5), 0.2), 3)


def test_a_stream_that_runs_dry_is_refused_within_a_piece():
    rng = np.random.default_rng(5)
    symbols, scale_index = gaussian_data(rng, (3 * PIECE,), (20, 40))
    data = encode_gaussian(symbols, scale_index, SCALES)
    with pytest.raises(FormatError, match="ends before its symbols do"):
        decode_gaussian(data[: len(data) // 2], scale_index, SCALES)
    z = rng.integers(0, 8, size=(4, 300))
    pmfs = np.full((4, 8), 1 / 8)
    data = encode_categorical(z, pmfs)
    with pytest.raises(FormatError, match="ends before its symbols do"):
        decode_categorical(data[: len(data) // 2], pmfs, 300)
