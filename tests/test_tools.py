"""The research probes in xcodec.tools: every entry point answers --help, and the light-field tool
cuts patches from the command line (the probes' measurements are in the docs they feed)."""

from __future__ import annotations

import importlib
import sys

import pytest

from xcodec.tools import lightfield

TOOLS = ["ceiling", "cost", "lightfield", "lpips_weights", "scale", "tiling"]


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
