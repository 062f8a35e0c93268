"""Stage (i) training of the wavelet model (``xcodec.train.context``): runs, resumes, exports."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, make_photo
from xcodec.models import zoo


def run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "xcodec.train.context", *args], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300)


@pytest.mark.slow
def test_context_training_resumes_and_exports(tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for seed in range(3):
        make_photo(96, 80, seed=seed).save(data / f"{seed}.png")
    common = ["--data", str(data), "--run-dir", str(tmp_path / "run"), "--crop", "64", "--batch-size", "2",
              "--log-every", "1"]
    run(*common, "--max-steps", "2")
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    run(*common, "--max-steps", "3", "--resume")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert (first["step"], state["step"]) == (2, 3)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]
    # only the context networks learn in stage (i): the transform stays CDF 9/7
    assert torch.equal(state["model"]["log_steps"], first["model"]["log_steps"])
    assert not all(torch.equal(state["model"][k], first["model"][k]) for k in state["model"] if k.startswith("context."))

    manifest = zoo.export(tmp_path / "run" / "last.pt", "wavelet", {}, tmp_path / "weights")
    assert (manifest.arch, manifest.info["steps"]) == ("wavelet", 3)
    model, _ = zoo.load("wavelet", tmp_path / "weights")
    x = torch.rand(1, 3, 20, 30)
    decoded = model.decompress(model.compress(x, 3.0), 20, 30, 3.0, torch.device("cpu"))
    assert decoded.shape == x.shape
