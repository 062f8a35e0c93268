"""BD-rate (PCHIP) on a known pair, on synthetic curves, and the loading of published curves."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from xcodec.bench.bdrate import bd_quality, bd_rate, monotone
from xcodec.bench.curves import find, load_anchors, load_file

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"

# CompressAI's published Kodak results (compressai-kodak/vtm.json and
# compressai-kodak/compressai-bmshj2018-hyperprior_mse_cuda.json in ../shared/anchors), copied here
# so that the test does not depend on that folder.
VTM = {
    "bpp": [0.04824490017361111, 0.11249542236328125, 0.24581654866536465, 0.4905454847547744,
            0.8748101128472224, 1.43084971110026, 2.3246070014105906, 3.6326090494791665],
    "psnr": [26.14484539430146, 28.493021754424603, 31.199873720014093, 34.26153257289846,
             37.419793158067485, 40.42444421698711, 43.505766973634486, 46.59176008512777],
}
HYPERPRIOR = {
    "bpp": [0.13129340277777776, 0.20889282226562503, 0.3198581271701389, 0.47835625542534727,
            0.6686876085069443, 0.9388258192274304, 1.2591722276475694, 1.6602240668402775],
    "psnr": [27.581536752297392, 29.196703405493214, 30.972162072759534, 32.83818257445048,
             34.52626403063645, 36.74334835426406, 38.58384824012354, 40.556865931529494],
}


def test_known_pair_hyperprior_vs_vtm():
    bd = bd_rate(VTM["bpp"], VTM["psnr"], HYPERPRIOR["bpp"], HYPERPRIOR["psnr"])
    assert bd.value == pytest.approx(30.486, abs=0.01)  # "about +30%", as CompressAI's plots report it
    assert bd.overlap == pytest.approx(0.6346, abs=1e-3)
    assert bd.poor and "overlap" in bd.note
    assert bd.format() == "+30.49%*"
    # and the other way round it is a saving
    assert bd_rate(HYPERPRIOR["bpp"], HYPERPRIOR["psnr"], VTM["bpp"], VTM["psnr"]).value < 0


def test_known_pair_from_the_shared_files():
    if not (ANCHORS / "compressai-kodak" / "vtm.json").exists():
        pytest.skip("../shared/anchors is not beside this checkout")
    curves, _ = load_anchors([ANCHORS / "compressai-kodak"])
    vtm = find(curves, "vtm")
    hp = find(curves, "compressai-bmshj2018-hyperprior_mse_cuda")
    assert vtm.bpp[:2] == VTM["bpp"][:2]
    assert bd_rate(vtm.bpp, vtm.psnr, hp.bpp, hp.psnr).value == pytest.approx(30.486, abs=0.01)
    assert hp.ms_ssim_db is not None and len(hp.ms_ssim_db) == len(hp.bpp)


def test_cross_check_with_bjontegaard_package():
    bjontegaard = pytest.importorskip("bjontegaard")
    rng = np.random.default_rng(0)
    cases = [(VTM, HYPERPRIOR)]
    for _ in range(5):
        rate = np.sort(rng.uniform(0.05, 2.5, 6))
        quality = 25 + 6 * np.log2(rate / 0.05) + rng.uniform(0, 0.2, 6).cumsum()
        rate2 = rate * rng.uniform(0.6, 1.4)
        quality2 = quality + rng.uniform(-1, 1)
        cases.append(({"bpp": rate, "psnr": quality}, {"bpp": rate2, "psnr": quality2}))
    for a, t in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = bjontegaard.bd_rate(a["bpp"], a["psnr"], t["bpp"], t["psnr"], method="pchip", require_matching_points=False)
            ref_q = bjontegaard.bd_psnr(a["bpp"], a["psnr"], t["bpp"], t["psnr"], method="pchip", require_matching_points=False)
        assert bd_rate(a["bpp"], a["psnr"], t["bpp"], t["psnr"]).value == pytest.approx(ref, abs=1e-9)
        assert bd_quality(a["bpp"], a["psnr"], t["bpp"], t["psnr"]).value == pytest.approx(ref_q, abs=1e-9)


def test_synthetic_curves():
    rate = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    quality = 30 + 3 * np.log2(rate / 0.1)
    assert bd_rate(rate, quality, rate, quality).value == pytest.approx(0, abs=1e-12)
    assert bd_rate(rate, quality, 0.8 * rate, quality).value == pytest.approx(-20, abs=1e-9)
    assert bd_quality(rate, quality, rate, quality + 0.5).value == pytest.approx(0.5, abs=1e-9)
    # points in any order, with a dominated one that must not break the interpolation
    shuffled = bd_rate(rate, quality, np.r_[1.25 * rate[::-1], 0.5], np.r_[quality[::-1], 20.0])
    assert shuffled.value == pytest.approx(25, abs=1e-9)
    no_overlap = bd_rate(rate, quality, rate, quality + 100)
    assert math.isnan(no_overlap.value) and no_overlap.format() == "n/a"
    assert math.isnan(bd_rate(rate, quality, [0.5], [33.0]).value)


def test_monotone_drops_unusable_points():
    r, q = monotone([0.4, 0.1, 0.2, 0.3, float("nan"), 0.5], [33, 30, 32, 31, 40, 35])
    assert r.tolist() == [0.1, 0.2, 0.4, 0.5] and q.tolist() == [30, 32, 33, 35]


def test_anchor_formats(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "codec.json").write_text(json.dumps(
        {"name": "Codec A", "results": {"bpp": [0.1, 0.5], "psnr-rgb": [30, 35], "ms-ssim-rgb": [0.9, 0.99]}}))
    (tmp_path / "paper.json").write_text(json.dumps({"psnr": [29, 33], "bpp": [0.12, 0.6]}))
    (tmp_path / "nested.json").write_text(json.dumps({"source": "x", "kodak": {"S": {"bpp": [0.1, 0.2], "psnr": [30, 31]}}}))
    (tmp_path / "dbonly.json").write_text(json.dumps({"name": "D", "results": {"bpp": [0.1, 0.2], "ms-ssim-db-rgb": [10, 12]}}))
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    curves, skipped = load_anchors([tmp_path])
    ids = sorted(c.id for c in curves)
    assert ids == ["codec", "dbonly", "nested/kodak/S", "paper"]
    assert any("other.json" in s for s in skipped)
    a = find(curves, "codec a")
    assert a.ms_ssim_db == pytest.approx([10.0, 20.0])
    assert find(curves, "dbonly").psnr is None and find(curves, "dbonly").metric("psnr") is None
    assert [c.id for c in load_anchors([tmp_path], select=["kodak"])[0]] == ["nested/kodak/S"]
    assert load_file(tmp_path / "other.json") == []
