"""Training: exact resume, surviving a kill, export, and two-process DistributedDataParallel."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import make_photo
from xcodec.files import sha256
from xcodec.models import zoo
from xcodec.train.config import TrainConfig
from xcodec.train.data import HELD_OUT, build_pack
from xcodec.train.loop import train

TINY = {"N": 16, "M": 24}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for seed in range(3):
        make_photo(160, 140, seed).save(folder / f"p{seed}.png")
    return folder


def _config(photos: Path, run: Path, steps: int) -> TrainConfig:
    return TrainConfig(data=photos, run_dir=run, model="hyperprior", model_config=TINY, batch_size=2, crop=64, max_steps=steps,
                       warmup_steps=2, log_every=1, threads=1)


def test_the_pack_leaves_out_the_held_out_photos(tmp_path):
    root = tmp_path / "train"
    (root / "sun-hays80").mkdir(parents=True)
    make_photo(80, 70, 0).save(root / HELD_OUT[0])
    make_photo(90, 70, 1).save(root / "sun-hays80" / "kept.jpg")
    for folder in (root, root / "sun-hays80"):  # the whole training folder, or a subfolder of it
        build_pack(folder, tmp_path / "pack.npz", 64)
        with np.load(tmp_path / "pack.npz") as pack:
            assert [pack[k].shape for k in pack.files] == [(70, 90, 3)]


def test_resume_continues_exactly(photos, tmp_path):
    straight = torch.load(train(_config(photos, tmp_path / "a", 4)), weights_only=False)
    train(_config(photos, tmp_path / "b", 2))
    resumed = torch.load(train(_config(photos, tmp_path / "b", 4), resume=True), weights_only=False)
    assert straight["step"] == resumed["step"] == 4
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert rows[0] == "step,minutes,lr,loss,bpp,psnr" and [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3", "4"]


def test_a_resumed_log_with_other_columns_is_rewritten_under_the_new_ones(tmp_path):
    """A stage that logs a new number (the perceptual stage's texture distance) resumes a run whose
    log.csv has the old columns: the old rows keep their numbers under their names, the new column
    is empty in them, and the new rows line up with the header."""
    from xcodec.train.loop import _csv

    path = tmp_path / "log.csv"
    path.write_text("step,minutes,lr,lpips,lost_db\n25,0.4,0.0001,0.04,0.8\n")
    f, writer = _csv(path, ["step", "minutes", "lr", "lpips", "texture", "lost_db"])
    writer.writerow([50, 0.8, 0.0001, 0.05, 0.006, 0.7])
    f.close()
    assert path.read_text().splitlines() == ["step,minutes,lr,lpips,texture,lost_db", "25,0.4,0.0001,0.04,,0.8",
                                             "50,0.8,0.0001,0.05,0.006,0.7"]
    f, writer = _csv(path, ["step", "minutes", "lr", "lpips", "texture", "lost_db"])  # the same columns: appended as is
    f.close()
    assert len(path.read_text().splitlines()) == 3


def test_resume_refuses_a_checkpoint_it_cannot_continue(photos, tmp_path):
    from xcodec.errors import TrainingError

    run = tmp_path / "run"
    train(_config(photos, run, 1))
    with pytest.raises(TrainingError, match="stage rd of hyperprior, not context of wavelet"):
        train(dataclasses.replace(_config(photos, run, 2), model="wavelet", model_config={}), resume=True)
    state = torch.load(run / "last.pt", weights_only=False)
    del state["optimizers"]  # as the programs before the stages wrote them
    torch.save(state, run / "last.pt")
    with pytest.raises(TrainingError, match="older xcodec"):
        train(_config(photos, run, 2), resume=True)


def test_weights_saved_before_the_hyperprior_component_load():
    # The shipped weights and older training runs hold the component's tensors at the model's level.
    torch.manual_seed(3)
    trained = zoo.build("hyperprior", TINY)
    flat = {k.removeprefix("hyper."): v for k, v in trained.state_dict().items()}
    assert "log_gain" in flat and "entropy_bottleneck.quantiles" in flat
    model = zoo.build("hyperprior", TINY)
    model.load_state_dict(flat)
    for name, value in trained.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name


def test_export_then_init(photos, tmp_path):
    checkpoint = train(_config(photos, tmp_path / "run", 2))
    manifest = zoo.export(checkpoint, "tiny", {"note": "test"}, tmp_path / "weights")
    assert manifest.info["steps"] == 2 and manifest.config == TINY
    model, loaded = zoo.load("tiny", tmp_path / "weights")
    assert loaded.sha256 == manifest.sha256
    state = zoo.load_training_weights("tiny", tmp_path / "weights")
    assert "z_pmf" not in state and torch.equal(state["g_a.0.weight"], model.g_a[0].weight)
    (tmp_path / "weights" / "tiny.safetensors").write_bytes(b"tampered")
    zoo.load.cache_clear()
    with pytest.raises(zoo.ModelError, match="sha256"):
        zoo.load("tiny", tmp_path / "weights")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "xcodec.cli", "train", *args]


def _run_args(photos: Path, run: Path) -> list[str]:
    return ["--data", str(photos), "--run-dir", str(run), "--model", "hyperprior", "--model-config", json.dumps(TINY),
            "--batch-size", "2", "--crop", "64", "--threads", "1"]


def _kill_after_three_steps(proc: subprocess.Popen, log) -> None:
    """Read the run's log until step 3 (ranks may be anywhere in a step), then SIGTERM it."""
    deadline = time.monotonic() + 120
    for line in log:
        if line.startswith("step") and int(line.split()[1]) >= 3 or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)


def test_survives_a_kill_and_resumes(photos, tmp_path):
    run = tmp_path / "run"
    args = [*_run_args(photos, run), "--log-every", "1"]
    proc = subprocess.Popen(_cli(*args), stderr=subprocess.PIPE, text=True)
    _kill_after_three_steps(proc, proc.stderr)
    killed_at = torch.load(run / "last.pt", weights_only=False)["step"]
    assert killed_at >= 3
    subprocess.run(_cli(*args, "--resume", "--max-steps", str(killed_at + 2)), check=True, capture_output=True)
    assert torch.load(run / "last.pt", weights_only=False)["step"] == killed_at + 2


TORCHRUN_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun_command(photos: Path, run: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "xcodec.cli", "train",
            *_run_args(photos, run), *args]


def _torchrun(photos: Path, run: Path, *args: str) -> dict:
    """Train with two CPU processes; return the checkpoint."""
    result = subprocess.run(_torchrun_command(photos, run, *args), capture_output=True, text=True, env=TORCHRUN_ENV,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(run / "last.pt", weights_only=False)


def test_a_killed_torchrun_run_saves_and_resumes(photos, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_torchrun_command(photos, run, "--log-every", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=TORCHRUN_ENV)
    _kill_after_three_steps(proc, proc.stdout)
    killed_at = torch.load(run / "last.pt", weights_only=False)["step"]
    assert killed_at >= 3
    assert _torchrun(photos, run, "--resume", "--max-steps", str(killed_at + 2))["step"] == killed_at + 2


def test_two_process_torchrun(photos, tmp_path):
    # a checkpoint after nearly every step: ranks deciding from their own clocks would deadlock
    state = _torchrun(photos, tmp_path / "ddp", "--max-steps", "6", "--checkpoint-minutes", "0.001")
    assert state["step"] == 6
    assert len(state["generators"]) == 2  # one RNG state per rank
    assert not torch.equal(state["generators"][0], state["generators"][1])  # ranks draw different crops


def test_a_single_process_run_resumed_on_two_ranks_draws_different_crops_on_each(photos, tmp_path):
    run = tmp_path / "run"
    train(_config(photos, run, 1))
    state = _torchrun(photos, run, "--resume", "--max-steps", "2")
    assert state["step"] == 2 and len(state["generators"]) == 2
    assert not torch.equal(state["generators"][0], state["generators"][1])


def test_learning_rate_warms_up_holds_then_decays_to_the_end_value(tmp_path):
    from xcodec.train.config import find_stage, learning_rate, settle

    cfg = TrainConfig(data=tmp_path, run_dir=tmp_path, lr=2e-4, warmup_steps=10, decay_start=100, lr_end=1e-5, max_steps=200)
    assert learning_rate(cfg, 0) == pytest.approx(2e-5)
    assert learning_rate(cfg, 9) == learning_rate(cfg, 99) == pytest.approx(2e-4)
    assert learning_rate(cfg, 150) == pytest.approx((2e-4 + 1e-5) / 2)
    assert learning_rate(cfg, 200) == learning_rate(cfg, 500) == pytest.approx(1e-5)
    rates = [learning_rate(cfg, s) for s in range(100, 201)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert learning_rate(TrainConfig(data=tmp_path, run_dir=tmp_path, lr=1e-4, warmup_steps=1), 10**6) == 1e-4
    # the wavelet stages' schedule: a cosine over the whole run, from the first step
    wavelet = settle(TrainConfig(data=tmp_path, run_dir=tmp_path, model="wavelet"), find_stage("wavelet", None))
    assert (wavelet.lr, wavelet.crop, wavelet.decay_start) == (1e-3, 256, 0)
    assert learning_rate(wavelet, 0) == 1e-3 and learning_rate(wavelet, wavelet.max_steps) == pytest.approx(1e-5)


def test_export_with_bench_records_measured_results(photos, tmp_path):
    checkpoint = train(_config(photos, tmp_path / "run", 1))
    weights = tmp_path / "weights"
    env = {**os.environ, "XCODEC_WEIGHTS": str(weights)}
    command = [sys.executable, "-m", "xcodec.cli", "export", "--run-dir", str(checkpoint.parent), "--name", "tiny",
               "--bench", str(photos), "--bench-out", str(tmp_path / "bench")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = zoo.read_manifest("tiny", weights)
    measured = manifest.info["results"][photos.name]
    assert measured["images"] == 3 and measured["quality"] == [float(q) for q in range(1, 9)]
    rows = (tmp_path / "bench" / "rows.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 8  # the bench's own per-image rows, cached for a later `xcodec bench`
    assert sha256(weights / "tiny.safetensors") == manifest.sha256


def test_a_run_from_shipped_weights_counts_their_training_too(photos, tmp_path):
    weights = tmp_path / "weights"
    zoo.export(train(_config(photos, tmp_path / "first", 2)), "tiny", {}, weights)
    run = tmp_path / "second"
    args = [*_run_args(photos, run), "--init", "tiny", "--max-steps", "1"]
    subprocess.run(_cli(*args), check=True, capture_output=True, env={**os.environ, "XCODEC_WEIGHTS": str(weights)})
    manifest = zoo.export(run / "last.pt", "tiny", {}, weights)
    assert manifest.info["steps"] == 2 + 1


def test_ceiling_separates_the_transforms_loss_from_the_quantizations():
    from xcodec.models.codec import to_tensor
    from xcodec.tools.ceiling import ceiling_psnr
    from xcodec.train.loop import validate

    model, _ = zoo.load("hyperprior")
    x = to_tensor(np.asarray(make_photo(128, 128), dtype=np.uint8))
    coded = {row["quality"]: row["psnr"] for row in validate(model, model.training_stages()[0], [x])}
    model.eval()
    top = {q: ceiling_psnr(model, x, q) for q in coded}
    assert coded[1.0] < top[1.0] - 1  # coarse rounding at the lowest quality costs quality
    assert coded[1.0] < coded[8.0]
    assert abs(top[1.0] - top[8.0]) < 1  # unquantized, the gains cancel: the ceiling hardly moves


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="no autogroup scheduling here")
def test_a_niced_run_in_its_own_session_renices_only_that_session():
    # /proc/self/autogroup reads "/autogroup-ID nice N", or nothing in the root group (e.g. a
    # container's init session), which has no autogroup to renice.
    probe = ("import os; os.nice(7); from xcodec.train.loop import nice_session; nice_session(); "
             "print(open('/proc/self/autogroup').read().strip())")
    own_session = subprocess.run([sys.executable, "-c", probe], start_new_session=True, capture_output=True, text=True, check=True)
    assert own_session.stdout.strip().endswith(" nice 7")
    before = Path("/proc/self/autogroup").read_text()
    in_ours = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert in_ours.stdout.strip() == before.strip()
    assert Path("/proc/self/autogroup").read_text() == before


def test_a_stage_with_its_own_module_and_optimizer_resumes_exactly(photos, tmp_path, monkeypatch):
    """A stage declared as data, as a GAN stage would be: an extra module (a critic) that only
    training has, trained by a second objective; both checkpointed, and resuming is exact."""
    from torch import nn

    from xcodec.models.hyperprior import GainHyperprior
    from xcodec.models.stages import Objective, Stage, parts, rate_distortion_loss

    def critic_loss(batch):
        if not batch.options["weight"]:
            return None, {}  # nothing to learn: the loop skips this objective
        with torch.no_grad():
            x_hat = batch.model(batch.x, batch.quality)["x_hat"]
        critic = batch.extras["critic"]
        return critic(x_hat).mean() - critic(batch.x).mean() + batch.options["weight"] * critic[0].weight.square().sum(), {}

    stage = Stage(name="toy", summary="a model and a critic", logged=("loss",), measures=("bpp", "psnr"),
                  objectives=(Objective(parts("g_a", "g_s"), rate_distortion_loss),
                              Objective(parts("extras.critic"), critic_loss, lr=1e-3, clip=None)),
                  validate=lambda model, images, q: {"bpp": 0.0, "psnr": 0.0},
                  extras=lambda options: {"critic": nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 3))},
                  options={"weight": 0.1})
    monkeypatch.setattr(GainHyperprior, "training_stages", classmethod(lambda cls: (stage,)))
    straight = torch.load(train(_config(photos, tmp_path / "a", 3)), weights_only=False)
    train(_config(photos, tmp_path / "b", 1))
    resumed = torch.load(train(_config(photos, tmp_path / "b", 3), resume=True), weights_only=False)
    for part in ("model", "extras"):
        for name, value in straight[part].items():
            assert torch.equal(value, resumed[part][name]), name
    first = torch.load(train(_config(photos, tmp_path / "c", 1)), weights_only=False)
    assert not torch.equal(first["extras"]["critic.0.weight"], straight["extras"]["critic.0.weight"])
    assert torch.equal(first["model"]["h_a.0.weight"], straight["model"]["h_a.0.weight"])  # not a part that learns
    idle = torch.load(train(dataclasses.replace(_config(photos, tmp_path / "d", 1), options={"weight": 0.0})), weights_only=False)
    assert torch.equal(idle["extras"]["critic.0.weight"], torch.load(train(_config(photos, tmp_path / "e", 0)), weights_only=False)["extras"]["critic.0.weight"])


def test_train_help_lists_the_stages_the_models_declare():
    from typer.testing import CliRunner

    from xcodec.cli import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name, codec in zoo.ARCHITECTURES.items():
        for stage in codec.training_stages():
            assert f"--model {name} --stage {stage.name}" in result.output
