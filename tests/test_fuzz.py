"""A short fuzz run (hypothesis drives the mutations of ``tests/fuzz.py``) and the regression corpus.

Every input must end in a decoded image of the header's size or a one-line ``XcodecError``; the
long runs and their numbers are in ``docs/robustness.md``.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return fuzz.make_seeds()


@pytest.fixture(scope="module")
def parser_seeds(seeds) -> list[bytes]:
    return seeds + fuzz.hostile_files(seeds[0])


def fuzz_settings(examples: int) -> settings:
    """Reproducible (derandomized, no example database) and without hypothesis's time limit."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz_settings(400)
@given(rng=st.randoms(use_true_random=False))
def test_parser_never_crashes(parser_seeds, rng):
    data = fuzz.mutate(rng.choice(parser_seeds), rng.choice(parser_seeds), rng)
    assert not fuzz.outcome(data, decode=False).startswith("crash"), data.hex()


@fuzz_settings(40)
@given(rng=st.randoms(use_true_random=False))
def test_decoder_never_crashes_or_hangs(seeds, rng):
    data = fuzz.mutate(rng.choice(seeds), rng.choice(seeds), rng)
    start = time.perf_counter()
    result = fuzz.outcome(data, decode=True)
    assert not result.startswith("crash"), f"{result}: {data.hex()}"
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("kind", [*fuzz.CRAFTED, "raw model name"])
def test_crafted_files_are_decoded_or_refused(seeds, kind):
    """Each kind of valid-structure mutation, on a tiled seed and on the grayscale one with an ICC
    profile: a decoded image or a one-line error, quickly."""
    import random

    for i, seed in enumerate(seeds[1::3]):
        _, data = fuzz.craft(seed, random.Random(i), kind)
        start = time.perf_counter()
        result = fuzz.outcome(data, decode=True)
        assert not result.startswith("crash"), f"{result}: {data.hex()}"
        assert time.perf_counter() - start < 10


@pytest.mark.parametrize("path", sorted(fuzz.CORPUS.glob("*.xsc")), ids=lambda p: p.name)
def test_regression_corpus(path):
    assert not fuzz.outcome(path.read_bytes(), decode=True).startswith("crash")


def test_corpus_through_the_command_line(run_cli, tmp_path):
    result = run_cli("decode", fuzz.CORPUS, "--out-dir", tmp_path / "out", "--max-pixels", fuzz.MAX_PIXELS)
    text = result.stderr.decode()
    assert result.returncode in (0, 1), text
    assert "Traceback" not in text and "unexpected" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[-1].endswith("failed")
    assert all(line.startswith("error: ") or " -> " in line for line in lines[:-1]), text
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]
