"""The attacker's test suite: every file of ``tests/hostile.py`` through every entry point.

``api.decode``, ``xcodec decode``, ``xcodec info`` and the Pillow plugin (``Image.open``, ``load``,
``exif_transpose``, ``save``, as an app that accepts uploads uses it) each end in a one-line error
(or a decoded image with one-line warnings, where the file's pixels are good and only its metadata
cannot be kept), never a traceback, within 2 s and 256 MiB beyond decoding a real small image.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
import warnings

import pytest
from PIL import Image, ImageOps

import xcodec.pillow  # noqa: F401  (registers XSC)
from tests import hostile
from tests.conftest import REPO_ROOT, make_photo
from tests.test_cli import PROBE, words
from xcodec import api, container
from xcodec.bench.run import PeakMemory
from xcodec.container import Bitstream, Header, StreamKind
from xcodec.defaults import may_have_gpu
from xcodec.errors import XcodecError

SECONDS = 2.0  # to refuse a case, or beyond decoding the seed (a 64x48 image)
MEMORY_MIB = 256


def _names() -> list[str]:
    """The cases' names, from a seed of the right structure (no model needed to name them)."""
    seed = container.pack(Bitstream(Header("wavelet", bytes(8), 4.0, 64, 48), [(StreamKind.CODED, bytes(16))]))
    return list(hostile.cases(seed))


@pytest.fixture(scope="module")
def seed() -> tuple[bytes, float]:
    """A real file, and the seconds that decoding it takes here (the model loaded before)."""
    data = api.encode(make_photo(64, 48, seed=11), quality=4, device="cpu")
    api.decode(data, device="cpu")
    start = time.perf_counter()
    api.decode(data, device="cpu")
    return data, time.perf_counter() - start


@pytest.fixture(scope="module")
def cases(seed) -> dict[str, hostile.Case]:
    return hostile.cases(seed[0])


@pytest.fixture(scope="module")
def allowed(seed):
    """Seconds a case may take: SECONDS to refuse it, or beyond decoding the seed (three times, for a busy machine)."""
    return lambda case: SECONDS + (0 if case.refused else 3 * seed[1])


def one_line(message: str) -> str:
    assert message and "\n" not in message, repr(message)
    return message


@pytest.mark.parametrize("name", _names())
def test_api_decode(cases, allowed, name):
    case = cases[name]
    start = time.perf_counter()
    with PeakMemory() as memory, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.refused:
            with pytest.raises(XcodecError) as info:
                api.decode(case.data, device="cpu")
            assert case.refused in one_line(str(info.value))
        else:
            image = api.decode(case.data, device="cpu")
            header = container.unpack(case.data).header
            assert image.size == (header.width, header.height)
    elapsed = time.perf_counter() - start
    messages = [one_line(str(w.message)) for w in caught]
    assert case.warning is None or any(case.warning in m for m in messages), messages
    assert elapsed < allowed(case), f"{elapsed:.2f} s"
    assert memory.extra < MEMORY_MIB, f"{memory.extra:.0f} MiB"


@pytest.mark.parametrize("name", _names())
def test_command_line_decode(cases, name, run_cli, tmp_path):
    case = cases[name]
    (tmp_path / "case.xsc").write_bytes(case.data)
    target = tmp_path / f"out{case.suffix}"
    start = time.perf_counter()
    result = run_cli("decode", "case.xsc", "-o", target, "--device", "cpu")  # a traceback fails the test
    elapsed = time.perf_counter() - start
    lines = result.stderr.decode().splitlines()
    if case.refused:
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert case.refused in lines[0] and not target.exists()
        assert elapsed < SECONDS, f"{elapsed:.2f} s"
    else:
        assert result.returncode == 0, lines
        assert all(line.startswith("warning: case.xsc: ") for line in lines[:-1]) and " -> " in lines[-1], lines
        assert all(any(phrase in line for line in lines) for phrase in (case.warning, case.output_warning) if phrase), lines
        with Image.open(target) as out:
            out.load()


@pytest.mark.parametrize("name", _names())
def test_command_line_info(cases, name, run_cli, tmp_path):
    """``info`` shows any file that parses, whatever its model or claims, and refuses the others in a line."""
    (tmp_path / "case.xsc").write_bytes(cases[name].data)
    start = time.perf_counter()
    result = run_cli("info", "case.xsc")
    assert time.perf_counter() - start < 1.0
    if result.returncode:
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    else:
        assert b"bpp" in result.stdout


@pytest.mark.parametrize("name", _names())
def test_pillow_plugin(cases, allowed, name):
    """As an app that accepts uploads: open, load, exif_transpose, save; OSError or Pillow's
    DecompressionBombError for what it cannot take."""
    case = cases[name]
    start = time.perf_counter()
    with PeakMemory() as memory, warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(case.data)) as image:
                image.load()
                ImageOps.exif_transpose(image).save(io.BytesIO(), "PNG")
        except (OSError, Image.DecompressionBombError) as exc:
            assert case.refused, f"{name}: {exc}"
            one_line(str(exc))
        else:
            assert not case.refused, f"{name} was decoded"
    assert time.perf_counter() - start < allowed(case)
    assert memory.extra < MEMORY_MIB


def test_info_summarises_a_million_streams_at_once(run_cli, tmp_path):
    """Issue 20, item 4: one table row per stream took 40 s for a 1.3 MB file. Now a summary; --json lists them all."""
    data = hostile.header_only(1024 * 1024)
    assert len(data) > 7_000_000
    (tmp_path / "many.xsc").write_bytes(data)
    start = time.perf_counter()
    result = run_cli("info", "many.xsc")
    assert time.perf_counter() - start < 1.0
    assert result.returncode == 0
    text = words(result.stdout.decode())
    assert "coded streams 1,048,576 streams, 2,097,152 bytes (largest 2, 2, 2, ...)" in text
    assert len(result.stdout.decode().splitlines()) < 30
    start = time.perf_counter()
    listed = run_cli("info", "many.xsc", "--json")
    assert time.perf_counter() - start < 5.0
    assert listed.stdout.count(b'"kind"') == 1024 * 1024


@pytest.mark.parametrize("folder,name", [("d[", "]x.xsc"), ("[b]old", "x.xsc"), ("plain", "[red]x.xsc")])
def test_info_shows_paths_as_text(run_cli, tmp_path, folder, name):
    """Issue 20, item 7: 'd[/]x.xsc' ended in a MarkupError, a folder named [b]old showed as 'old'."""
    (tmp_path / folder).mkdir()
    path = tmp_path / folder / name
    path.write_bytes(hostile.header_only(4))
    relative = f"{folder}/{name}"
    result = run_cli("info", relative)
    assert result.returncode == 0, result.stderr
    assert relative in result.stdout.decode().replace("\n", "")


# --- refused before torch loads, once for a batch (fresh processes) -------------------------------

def probe(args: list[str], cwd) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    return result, time.perf_counter() - start


@pytest.mark.parametrize("name", ["padding of another model", "streams per tile of another model", "other weights",
                                  "unknown model", "pixels beyond the bytes", "one-pixel tiles"])
def test_header_refusals_need_no_torch(cases, name, tmp_path):
    """Issue 20, item 9: these took 5-8 s and 1.2 GiB (torch and the model) before."""
    (tmp_path / "a.xsc").write_bytes(cases[name].data)
    (tmp_path / "b.xsc").write_bytes(cases[name].data)
    result, elapsed = probe(["decode", "a.xsc", "b.xsc", "--out-dir", "out"], tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and lines[-1] == "no torch", result.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 2 and all(cases[name].refused in line for line in errors), lines
    assert elapsed < 5, f"{elapsed:.1f} s"


ARGUMENTS = {  # refused once for a whole batch, before torch loads
    "unknown model": (["--model", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    "effort the model lacks": (["--effort", "3"], "has effort levels 0..2, not 3"),
    "no GPU": (["--device", "cuda"], "no CUDA GPU is available"),
}


@pytest.mark.parametrize("case", ARGUMENTS.values(), ids=ARGUMENTS.keys())
def test_a_batch_s_common_error_is_refused_once_without_torch(case, tmp_path):
    args, message = case
    if "cuda" in args and may_have_gpu():
        pytest.skip("a GPU may be here: torch decides")
    for name in "ab":
        make_photo(16, 16).save(tmp_path / f"{name}.png")
    result, elapsed = probe(["encode", "a.png", "b.png", "--out-dir", "out", *args], tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and lines[-1] == "no torch", lines
    assert message in words(result.stderr) and words(result.stderr).count("error:") == 1, lines
    assert not (tmp_path / "out").exists()
    assert elapsed < 5, f"{elapsed:.1f} s"
