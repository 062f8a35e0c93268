"""What every codec command line has: --version, --quiet/--verbose, the default quality in --help,
progress per tile, --recursive, animated inputs, PGM/PPM outputs, a readable bench --help, and
per-file times without the model load. Through the command line (``run_cli``)."""

from __future__ import annotations

import re
import time

import pytest
from rich.console import Console

from xcodec import __version__, api, cli
from xcodec.bench.codecs import ALL_CODECS
from xcodec.defaults import DEFAULT_QUALITY, TILE_ALIGN

from tests.conftest import make_photo


def text(output: bytes) -> str:
    return " ".join(output.decode("utf-8", "replace").replace("│", " ").split())


@pytest.fixture
def images(tmp_path):
    """photos/a.png (RGB), photos/sub/b.png (grayscale)."""
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    make_photo(40, 24, seed=1).save(tmp_path / "photos" / "a.png")
    make_photo(24, 40, seed=2).convert("L").save(tmp_path / "photos" / "sub" / "b.png")
    return tmp_path / "photos"


def test_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.decode().strip() == f"xcodec {__version__}"


def test_help_shows_the_default_quality_and_bench_lists_its_codecs(run_cli):
    assert f"Default: {DEFAULT_QUALITY:g}." in text(run_cli("encode", "--help").stdout)
    bench = text(run_cli("bench", "--help").stdout)
    assert all(re.search(rf"\b{name}\b \(", bench) for name in ALL_CODECS), bench
    assert "xcodec,jpeg" not in bench  # no comma-joined default


def test_quiet_prints_nothing_and_verbose_the_details(run_cli, images):
    quiet = run_cli("encode", images / "a.png", "-o", "a.xsc", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == b""
    verbose = text(run_cli("decode", "a.xsc", "-o", "a.png", "--verbose").stderr)
    header = api.info((images.parent / "a.xsc").read_bytes()).header
    assert f"model {header.model} (weights {header.model_hash.hex()}" in verbose
    assert "40x24, RGB, 1x1 tiles of" in verbose and "1 coded (" in verbose and "coding" in verbose
    both = run_cli("encode", images / "a.png", "--quiet", "--verbose")
    assert both.returncode == 2 and "either --quiet or --verbose" in text(both.stderr)


def test_progress_per_tile_of_one_image(run_cli, tmp_path, monkeypatch):
    """On a terminal, one image coded in two tiles shows a tile bar; ``api`` reports each tile."""
    make_photo(2 * TILE_ALIGN, TILE_ALIGN).save(tmp_path / "wide.png")
    monkeypatch.setattr(cli, "err", Console(stderr=True, force_terminal=True, width=100))
    result = run_cli("encode", "wide.png", "--tile", TILE_ALIGN)
    assert result.returncode == 0 and "tiles" in result.stderr.decode(), result.stderr
    calls = []
    api.decode((tmp_path / "wide.xsc").read_bytes(), on_tile=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_recursive_mirrors_subfolders(run_cli, images, tmp_path):
    flat = run_cli("encode", images, "-d", "flat")
    assert flat.returncode == 0 and sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a.xsc"]
    deep = run_cli("encode", images, "-r", "-d", "coded")
    assert deep.returncode == 0, deep.stderr
    assert (tmp_path / "coded" / "a.xsc").is_file() and (tmp_path / "coded" / "sub" / "b.xsc").is_file()
    decoded = run_cli("decode", "coded", "--recursive", "--out-dir", "decoded")
    assert decoded.returncode == 0 and (tmp_path / "decoded" / "sub" / "b.png").is_file()
    empty = run_cli("decode", images)  # no .xsc files in the folder itself
    assert empty.returncode == 2 and "--recursive looks into its subfolders" in text(empty.stderr)


def test_animated_input_warns_that_only_the_first_frame_is_coded(run_cli, tmp_path):
    frames = [make_photo(16, 16, seed=i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = run_cli("encode", "anim.gif")
    assert result.returncode == 0
    assert "warning: anim.gif: animated image of 3 frames: coding the first frame only" in result.stderr.decode()


def test_pgm_is_grayscale_or_refused_and_ppm_is_rgb(run_cli, images, tmp_path):
    run_cli("encode", images / "a.png", "-o", "rgb.xsc")
    run_cli("encode", images / "sub" / "b.png", "-o", "gray.xsc")
    assert run_cli("decode", "gray.xsc", "-o", "gray.pgm").returncode == 0
    assert (tmp_path / "gray.pgm").read_bytes()[:2] == b"P5"
    refused = run_cli("decode", "rgb.xsc", "-o", "rgb.pgm")
    assert refused.returncode == 1 and "PGM holds grayscale only" in text(refused.stderr)
    assert not (tmp_path / "rgb.pgm").exists()
    for name in ("rgb", "gray"):
        assert run_cli("decode", f"{name}.xsc", "-o", f"{name}.ppm").returncode == 0
        assert (tmp_path / f"{name}.ppm").read_bytes()[:2] == b"P6"


def test_batch_times_leave_out_the_model_load(run_cli, images, monkeypatch):
    """A model that takes 2 s to load: each file's time on its line leaves those 2 s out."""
    load = cli.load_model

    def slow(name):
        time.sleep(2)
        name, seconds = load(name)
        return name, seconds + 2

    monkeypatch.setattr(cli, "load_model", slow)
    start = time.perf_counter()
    result = run_cli("encode", images, "-r", "-d", "coded", "-j", "1")  # the patched load runs in this process
    wall = time.perf_counter() - start
    times = [float(t) for t in re.findall(r", ([0-9.]+) s$", result.stderr.decode(), re.M)]
    assert result.returncode == 0 and len(times) == 2, result.stderr
    assert sum(times) < wall - 2 * 2 + 0.1
