"""The research probes in xcodec.tools: every entry point answers --help, and the light-field tool
cuts patches from the command line (the probes' measurements are in the docs they feed)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

from xcodec.tools import lightfield

TOOLS = ["ablate", "bits", "ceiling", "context_compare", "cost", "lightfield", "lpips_weights", "scale", "tiling"]


@pytest.mark.parametrize("name", TOOLS)
def test_help(name, monkeypatch, capsys):
    module = importlib.import_module(f"xcodec.tools.{name}")
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit:
        module.main()
    assert exit.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_lightfield_command(tmp_path, monkeypatch, capsys):
    lightfield.write_views(lightfield.synthetic(5, 5, 96, 128), tmp_path / "lf" / "scene")
    monkeypatch.setattr(sys, "argv", ["lightfield", str(tmp_path / "lf"), str(tmp_path / "out"), "--patch", "48",
                                      "--view-step", "2"])
    lightfield.main()
    assert capsys.readouterr().out.strip() == f"36 patches of 48px in {tmp_path / 'out'}"
    assert len(list((tmp_path / "out").glob("*.png"))) == 36
    monkeypatch.setattr(sys, "argv", ["lightfield", str(tmp_path / "nothing-here"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="error: "):
        lightfield.main()


@pytest.mark.parametrize("arch", ["hyperprior", "wavelet"])
def test_cost_measures_every_family(arch):
    from xcodec.models import zoo
    from xcodec.tools import cost

    stage = zoo.ARCHITECTURES[arch].training_stages()[0]
    config, size = ({"N": 16, "M": 24}, 128) if arch == "hyperprior" else (stage.config, 8)  # a stride's multiple
    model = zoo.build(arch, config)
    macs = cost.macs_per_pixel(model, size, size)
    assert set(macs) == {"encoder", "decoder", "training forward"} and all(v > 0 for v in macs.values())
    assert cost.step_seconds(model, stage, batch=2, crop=size // 2, steps=1) > 0


def test_ceiling_names_the_parts_a_model_lacks(monkeypatch, capsys):
    from xcodec.tools import ceiling

    monkeypatch.setattr(sys, "argv", ["ceiling", "unused-folder", "--model", "wavelet"])
    with pytest.raises(SystemExit) as exit:
        ceiling.main()
    assert exit.value.code == 2
    assert "has no g_a, g_s, hyper" in capsys.readouterr().err


@pytest.mark.skipif("wavelet" not in __import__("xcodec.models.zoo").models.zoo.available(), reason="no wavelet weights installed")
def test_bits_accounts_for_the_whole_file(tmp_path):
    from tests.conftest import make_photo
    from xcodec.models import zoo
    from xcodec.tools import bits

    make_photo(96, 64, seed=3).save(tmp_path / "photo.png")
    model, _ = zoo.load("wavelet")
    totals = bits.measure(model, "wavelet", [tmp_path / "photo.png"], [2.0], [4, 8])[2.0]
    parts = sum(totals["parts"].values())
    assert {part[2] for part in totals["parts"]} == {"ll", "hl", "lh", "hh"}
    assert parts < totals["file"] < parts + 8 * 100  # the container and the last ANS words
    detail = totals["detail"]
    assert detail["act 4"] == detail["exact"]  # the shipped fixed point, replayed in float64: the same scales
    assert detail["float"] != detail["exact"] and detail["act 8"] != detail["exact"]
    assert 0 < totals["signs"] < parts


def test_sign_contexts_learn_the_signs_along_an_edge_and_not_random_ones():
    from xcodec.tools import bits

    rng = np.random.default_rng(0)
    magnitudes = torch.from_numpy(rng.integers(1, 4, (64, 64)).astype(np.float32))
    rows = torch.from_numpy(rng.choice([-1.0, 1.0], (64, 1)).astype(np.float32))  # one sign per row
    random = torch.from_numpy(rng.choice([-1.0, 1.0], (64, 64)).astype(np.float32))
    count, along = bits.sign_bits({(0, 0, 1): (magnitudes * rows)[None]})  # LH: its edges run along the rows
    _, across = bits.sign_bits({(0, 0, 0): (magnitudes * rows)[None]})  # HL: the same signs, across its edges
    _, noise = bits.sign_bits({(0, 0, 1): (magnitudes * random)[None]})
    assert count == 64 * 64
    assert along < 0.7 * count  # the anchors a bit each, the second pass almost nothing
    assert across > 0.9 * count  # (a little below one bit: 64 rows of one sign each)
    assert 0.98 * count < noise < 1.02 * count


@pytest.mark.skipif("wavelet" not in __import__("xcodec.models.zoo").models.zoo.available(), reason="no wavelet weights installed")
def test_ablate_compares_postfilters_on_the_shipped_files(tmp_path, monkeypatch, capsys):
    """A run's untrained post-filter (the identity) measures as no filter; the shipped ones gain; the
    files and tiles kept by ``--cache`` (in the image folder: not taken for its images) give the same
    table; a run whose codec is not the shipped one is refused."""
    from tests.conftest import make_photo
    from xcodec.models import zoo
    from xcodec.tools import ablate

    make_photo(96, 64, seed=3).save(tmp_path / "photo.png")
    manifest = zoo.read_manifest("wavelet")
    model = zoo.build("wavelet", {**manifest.build_config, "postfilter": {"link": False}})
    shipped = {k: v for k, v in zoo.load_training_weights("wavelet").items() if not k.startswith("postfilter.")}
    model.load_state_dict(shipped, strict=False)
    for name, state in (("run", model.state_dict()), ("other", {**model.state_dict(), "recon": model.recon + 0.01})):
        (tmp_path / name).mkdir()
        torch.save({"arch": "wavelet", "arch_config": {**manifest.build_config, "postfilter": {"link": False}},
                    "model": state, "step": 0, "elapsed": 0.0}, tmp_path / name / "last.pt")
    args = ["ablate", str(tmp_path), "--qualities", "2,4,6", "--time-images", "1", "--cache", str(tmp_path / "cache"), "--runs"]
    monkeypatch.setattr(sys, "argv", [*args, str(tmp_path / "run")])
    tables = []
    for _ in range(2):
        ablate.main()
        lines = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
        tables.append({cells[0][2:]: cells for cells in lines})
    assert len(list((tmp_path / "cache").glob("photo-q*.pt"))) == 3
    for name, cells in tables[0].items():  # the same table but for the times
        assert cells[:2] + cells[3:] == tables[1][name][:2] + tables[1][name][3:]
    rows = tables[0]
    assert rows["none"][3:5] == ["+0.000", "+0.00%"] and rows[str(tmp_path / "run")][3:5] == ["+0.000", "+0.00%"]
    for shipped in ("wavelet (versions <= 10)", "wavelet (version 11)"):  # the file's, checked against api.decode
        assert float(rows[shipped][3]) > 0 and float(rows[shipped][4].rstrip("%*")) < 0
    monkeypatch.setattr(sys, "argv", [*args, str(tmp_path / "other")])
    with pytest.raises(SystemExit, match="not trained on the shipped codec"):
        ablate.main()
