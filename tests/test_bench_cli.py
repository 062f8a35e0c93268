"""`xcodec bench` end to end on tiny images: outputs, the result cache (re-run, resume, one more
codec, a line cut short), shards and their merge, skipped codecs, light-field patches and parallel workers."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from xcodec.bench import codecs as codecs_mod
from xcodec.bench.run import Cache
from xcodec.cli import app
from xcodec.tools import lightfield

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--device", "cpu"]


def bench(*args: str):
    result = CliRunner().invoke(app, ["bench", *map(str, args), *FAST])
    return result


def cached(out: Path) -> dict[str, int]:
    """Results per codec in the cache of an output folder."""
    return {path.stem: len(path.read_text().splitlines()) for path in sorted((out / "cache").glob("*.jsonl"))}


def stderr(result) -> str:
    text = result.stderr if hasattr(result, "stderr") else result.output
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two 176x176 crops of the bundled sample photo (large enough for 5-scale MS-SSIM)."""
    folder = tmp_path_factory.mktemp("images")
    photo = Image.open(ROOT / "xcodec/samples/chelsea.png").convert("RGB")
    photo.crop((0, 0, 176, 176)).save(folder / "a.png")
    photo.crop((200, 100, 376, 276)).save(folder / "b.png")
    return folder


@pytest.fixture(scope="module")
def anchors(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("anchors")
    (folder / "paper-codec.json").write_text(json.dumps({
        "name": "Published codec", "description": "made up",
        "results": {"bpp": [0.2, 0.5, 1.0, 2.0], "psnr-rgb": [28, 32, 36, 40], "ms-ssim-rgb": [0.93, 0.97, 0.99, 0.996]}}))
    return folder


@pytest.fixture(scope="module")
def first_run(images, anchors, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = bench(images, "--out", out, "--codecs", "xcodec,jpeg,webp,jp2", "--models", "hyperprior", "--qualities", "1,8",
                   "--settings", "jpeg=20,80", "--settings", "webp=20,80", "--settings", "jp2=0.5,2",
                   "--anchors", anchors, "--anchor-curve", "jpeg,paper-codec")
    return out, result


def test_outputs(first_run):
    out, result = first_run
    assert result.exit_code == 0, result.output
    assert "16 results, 0 cached, 16 to compute" in stderr(result)
    stdout = result.stdout
    assert ": 2 images" in stdout and "BD-rate against jpeg" in stdout and "BD-rate against paper-codec" in stdout
    for name in ("report.md", "rows.csv", "summary.json", "rd-psnr.png", "rd-ms-ssim.png", "rd-lpips.png", "rd-dists.png"):
        assert (out / name).is_file(), name
    for plot in out.glob("rd-*.png"):
        assert Image.open(plot).size[0] > 500
    rows = list(csv.DictReader((out / "rows.csv").open()))
    assert len(rows) == 16
    assert {r["codec"] for r in rows} == {"xcodec-hyperprior", "jpeg", "webp", "jp2"}
    for r in rows:
        assert int(r["bytes"]) > 0 and float(r["bpp"]) == pytest.approx(8 * int(r["bytes"]) / (176 * 176))
        assert 0 < float(r["lpips"]) < 2 and 0 < float(r["ms_ssim"]) <= 1 and float(r["psnr"]) > 0
        assert 0 < float(r["dists"]) < 1
        assert float(r["encode_s"]) > 0 and float(r["encode_peak_mib"]) > 0
    xc = [r for r in rows if r["codec"] == "xcodec-hyperprior"]
    assert all(float(r["estimated_bpp"]) > 0 for r in xc)
    data = json.loads((out / "results" / "jpeg.json").read_text())
    assert data["name"] == "jpeg"
    assert set(data["results"]) >= {"bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb", "lpips-alex", "dists", "encoding_time", "decoding_time"}
    assert data["results"]["quality"] == [20, 80] and data["results"]["bpp"][0] < data["results"]["bpp"][1]
    assert sorted(p.name for p in (out / "results").glob("*.json")) == ["jp2.json", "jpeg.json", "webp.json", "xcodec-hyperprior.json"]
    report = (out / "report.md").read_text()
    assert "## BD-rate against jpeg" in report and "paper-codec (published)" in report and "![rd-psnr](rd-psnr.png)" in report
    summary = json.loads((out / "summary.json").read_text())
    webp = next(e for e in summary["bd"] if e["curve"] == "webp" and e["anchor"] == "jpeg")
    assert webp["psnr"]["bd_rate_percent"] is not None
    for key in ("lpips", "dists"):  # distances: BD-rate on their negation, no BD-quality
        assert math.isfinite(webp[key]["bd_rate_percent"]) and "bd_quality_db" not in webp[key]
    assert "| BD-rate LPIPS | overlap | BD-rate DISTS | overlap |" in report
    assert cached(out) == {"jp2": 4, "jpeg": 4, "webp": 4, "xcodec-hyperprior": 4}


def test_rerun_uses_the_cache_and_adds_only_new_work(first_run, images):
    out, _ = first_run
    args = [images, "--out", out, "--codecs", "jpeg,webp,jp2", "--settings", "jpeg=20,80", "--settings", "webp=20,80",
            "--settings", "jp2=0.5,2"]
    before = {p: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}
    again = bench(*args)
    assert again.exit_code == 0, again.output
    assert "12 results, 12 cached, 0 to compute" in stderr(again)
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").iterdir()} == before
    # one more codec: only that codec is computed
    more = bench(*args[:4], "jpeg,webp,jp2,jpeg444", *args[5:], "--settings", "jpeg444=50")
    assert "14 results, 12 cached, 2 to compute" in stderr(more)
    assert cached(out)["jpeg444"] == 2
    # an interrupted run: results that are missing are computed, the others are kept; a line that
    # a crash cut short is skipped, and the next results start a line of their own
    webp = out / "cache" / "webp.jsonl"
    lines = webp.read_text().splitlines()
    webp.write_text("\n".join(lines[:1]) + "\n" + lines[1][:40])
    resumed = bench(*args)
    assert "12 results, 9 cached, 3 to compute" in stderr(resumed)
    assert cached(out)["webp"] == 5 and len(Cache(out / "cache").rows("webp")) == 4


def test_shards_merge(images, tmp_path):
    common = ["--codecs", "jpeg", "--settings", "jpeg=30,70", "--no-plots"]
    for i in range(2):
        r = bench(images, "--out", tmp_path / f"shard{i}", "--shard", f"{i}/2", *common)
        assert r.exit_code == 0 and "1 images x 1 codecs: 2 results" in stderr(r)
    merged = bench(images, "--out", tmp_path / "all", "--merge", tmp_path / "shard0", "--merge", tmp_path / "shard1",
                   "--no-compute", *common)
    assert merged.exit_code == 0, merged.output
    assert "merged 4 new results" in stderr(merged) and "4 results, 4 cached, 0 to compute" in stderr(merged)
    assert cached(tmp_path / "all") == {"jpeg": 4}
    rows = list(csv.DictReader((tmp_path / "all" / "rows.csv").open()))
    assert sorted({r["image"] for r in rows}) == ["a.png", "b.png"]
    # --no-compute reports what is there and says what is missing
    partial = bench(images, "--out", tmp_path / "shard0", "--no-compute", *common)
    assert partial.exit_code == 0 and "2 to compute" in stderr(partial)
    assert "not in the cache and are missing" in (tmp_path / "shard0" / "report.md").read_text()
    assert bench(images, "--shard", "2/2", *common).exit_code == 2


def test_missing_codec_package_is_skipped(images, tmp_path, monkeypatch):
    def missing(self):
        raise ImportError("No module named 'pillow_jxl'")

    monkeypatch.setattr(codecs_mod.JPEGXL, "load_plugin", missing)
    r = bench(images, "--out", tmp_path, "--codecs", "jpeg,jxl", "--settings", "jpeg=50", "--limit", "1", "--no-plots", "--no-lpips", "--no-dists")
    assert r.exit_code == 0, r.output
    assert "jxl: skipped, needs the `pillow-jxl-plugin` package" in stderr(r)
    assert "jxl" not in {row["codec"] for row in csv.DictReader((tmp_path / "rows.csv").open())}
    assert bench(images, "--codecs", "jpeg,nope").exit_code == 2


def test_every_codec_encodes_and_decodes():
    """Each registered codec that can run here round-trips a small image at its lowest and highest setting."""
    rgb = np.asarray(Image.open(ROOT / "xcodec/samples/chelsea.png").convert("RGB"))[:72, :96]
    for name, cls in codecs_mod.CONVENTIONAL.items():
        codec = cls(threads=1)
        if codec.unavailable():
            continue
        sizes = []
        for setting in (codec.settings[0], codec.settings[-1]):
            data = codec.encode(rgb, setting)
            assert codec.decode(data).shape == rgb.shape, name
            sizes.append(len(data))
        assert sizes[0] < sizes[1], name
        assert codec.version()


def test_lightfield_patches(tmp_path):
    """Patches cut by `python -m xcodec.tools.lightfield` are an ordinary folder for the bench."""
    lightfield.write_views(lightfield.synthetic(5, 5, 96, 128), tmp_path / "lf" / "scene")
    patches = lightfield.extract_patches(tmp_path / "lf", tmp_path / "patches", patch=48, view_step=2, limit=3)
    assert [p.name for p in patches] == ["scene__u00_v00__y0_x16.png", "scene__u00_v00__y0_x64.png", "scene__u00_v00__y48_x16.png"]
    r = bench(tmp_path / "patches", "--out", tmp_path / "out", "--codecs", "jpeg", "--settings", "jpeg=50", "--no-lpips", "--no-dists")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "out" / "rows.csv").open()))
    assert [row["image"] for row in rows] == [p.name for p in patches]
    assert all(row["ms_ssim"] == "nan" for row in rows)  # 48 px is below MS-SSIM's 161
    assert "3 images are smaller than 161 px on a side: MS-SSIM (5 scales) is undefined" in (tmp_path / "out" / "report.md").read_text()


def test_parallel_workers(tmp_path):
    """Two worker processes (small images and no LPIPS or DISTS, so that the workers need not load torch)."""
    from xcodec.bench.run import execute, plan, select_images

    images = tmp_path / "small"
    images.mkdir()
    photo = Image.open(ROOT / "xcodec/samples/chelsea.png").convert("RGB")
    for i, name in enumerate(("a.png", "b.png")):
        photo.crop((60 * i, 0, 60 * i + 64, 64)).save(images / name)
    # a plugin codec too: worker processes must register the plugin themselves
    chosen = [codecs_mod.JPEG((50,))] + [c for c in (codecs_mod.JPEGXL((50,)), codecs_mod.HEIC((30,))) if not c.unavailable()]
    imgs = select_images(sorted(images.glob("*.png")), images)
    cache = Cache(tmp_path / "cache")
    tasks, done, total = plan(chosen, imgs, cache, "cpu", lpips=False, dists=False)
    n = 2 * len(chosen)
    assert (done, total, len(tasks)) == (0, n, n)
    outcomes = execute(tasks, jobs=2, threads=1, cache=cache)
    assert [o.error for o in outcomes if o.error] == []
    assert sorted(o.image for o in outcomes) == sorted(["a.png", "b.png"] * len(chosen))
    assert sum(cached(tmp_path).values()) == n


def test_a_cached_xcodec_result_is_not_reused_across_format_versions(monkeypatch):
    """The same weights code to other bytes in another .xsc version (the low band's context, the
    signs' contexts): the cache key must tell them apart."""
    from xcodec.bench.codecs import XcodecCodec
    from xcodec.models.wavelet.codec import WaveletCodec

    before = XcodecCodec("wavelet").version()
    monkeypatch.setattr(WaveletCodec, "file_version", WaveletCodec.file_version - 1)
    assert XcodecCodec("wavelet").version() != before
