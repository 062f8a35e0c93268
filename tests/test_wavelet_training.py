"""Staged training of the wavelet model (``xcodec train --model wavelet --stage ...``): runs, resumes, exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO_ROOT, make_photo
from xcodec.errors import ModelError
from xcodec.models import zoo


def run(*args: str, weights=None) -> None:
    env = {**os.environ, "XCODEC_WEIGHTS": str(weights)} if weights else None
    subprocess.run([sys.executable, "-m", "xcodec.cli", "train", "--model", "wavelet", *args], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300, env=env)


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
    assert rows[0] == "step,minutes,lr,bpp" and [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]
    # only the context networks learn in stage (i): the transform stays CDF 9/7
    assert torch.equal(state["model"]["log_steps"], first["model"]["log_steps"])
    assert not all(torch.equal(state["model"][k], first["model"][k]) for k in state["model"] if k.startswith("context."))

    manifest = zoo.export(tmp_path / "run" / "last.pt", "wavelet", {}, tmp_path / "weights")
    assert (manifest.arch, manifest.info["steps"]) == ("wavelet", 3)
    model, _ = zoo.load("wavelet", tmp_path / "weights")
    x = torch.rand(1, 3, 20, 30)
    decoded = model.decompress(model.compress(x, 3.0), 20, 30, 3.0, torch.device("cpu"))
    assert decoded.shape == x.shape


def stage_i_model(tmp_path: Path) -> tuple[list[str], Path]:
    """The training arguments for three small photos, and the weights folder holding a one-step
    stage (i) model."""
    data = tmp_path / "photos"
    data.mkdir()
    for seed in range(3):
        make_photo(96, 80, seed=seed).save(data / f"{seed}.png")
    weights = tmp_path / "weights"
    common = ["--data", str(data), "--crop", "64", "--batch-size", "2", "--log-every", "1"]
    run(*common, "--run-dir", str(tmp_path / "i"), "--max-steps", "1")
    zoo.export(tmp_path / "i" / "last.pt", "wavelet", {}, weights)
    return common, weights


@pytest.mark.slow
def test_postfilter_then_joint_stage(tmp_path):
    """Stage (ii) adds a post-filter to the --init model and trains only it; stage (iii) trains
    everything; the result exports and decodes with its post-filter on or off."""
    common, weights = stage_i_model(tmp_path)
    base = zoo.load_training_weights("wavelet", weights)

    run(*common, "--run-dir", str(tmp_path / "ii"), "--stage", "postfilter", "--init", "wavelet",
        "--model-config", json.dumps({"postfilter": 8}), "--max-steps", "2", weights=weights)
    state = torch.load(tmp_path / "ii" / "last.pt", weights_only=False)
    assert state["arch_config"]["postfilter"] == 8
    assert all(torch.equal(state["model"][k], v) for k, v in base.items())
    assert bool(state["model"]["postfilter.tail.weight"].any())  # it left the identity
    zoo.export(tmp_path / "ii" / "last.pt", "wavelet", {}, weights)

    run(*common, "--run-dir", str(tmp_path / "iii"), "--stage", "joint", "--init", "wavelet",
        "--model-config", json.dumps({"lifting_hidden": 0}), "--max-steps", "2", weights=weights)
    joint = torch.load(tmp_path / "iii" / "last.pt", weights_only=False)
    for key in ("log_steps", "recon", "postfilter.tail.weight"):
        assert not torch.equal(joint["model"][key], state["model"][key]), key
    manifest = zoo.export(tmp_path / "iii" / "last.pt", "wavelet", {}, weights)
    assert manifest.info["steps"] == 1 + 2 + 2
    model, _ = zoo.load("wavelet", weights)
    x = torch.rand(1, 3, 20, 30)
    with torch.inference_mode():
        decoded = model.decompress(model.compress(x, 3.0), 20, 30, 3.0, torch.device("cpu"))
        assert not torch.equal(model.postprocess(decoded, 3.0)[0], decoded)


@pytest.mark.slow
def test_fresh_restarts_the_shipped_postfilter_of_any_design(tmp_path):
    """Stage (ii) from a model with a post-filter continues it; ``--fresh postfilter`` starts it
    anew (its last convolution at zero) while the codec keeps the shipped tensors; a post-filter of
    another design does not fit without ``--fresh``."""
    common, weights = stage_i_model(tmp_path)
    run(*common, "--run-dir", str(tmp_path / "ii"), "--stage", "postfilter", "--init", "wavelet",
        "--model-config", json.dumps({"postfilter": 8}), "--max-steps", "1", weights=weights)
    zoo.export(tmp_path / "ii" / "last.pt", "wavelet", {}, weights)
    shipped = zoo.load_training_weights("wavelet", weights)
    stage = ["--stage", "postfilter", "--init", "wavelet", "--max-steps", "0"]
    width = ["--model-config", json.dumps({"postfilter": 8})]  # over the stage's 32
    run(*common, *stage, *width, "--run-dir", str(tmp_path / "on"), weights=weights)
    run(*common, *stage, *width, "--run-dir", str(tmp_path / "fresh"), "--fresh", "postfilter", "--seed", "1",
        weights=weights)  # another seed: another initialisation than the shipped one's
    on, fresh = (torch.load(tmp_path / name / "last.pt", weights_only=False)["model"] for name in ("on", "fresh"))
    assert all(torch.equal(on[k], v) for k, v in shipped.items())
    assert all(torch.equal(fresh[k], v) for k, v in shipped.items() if not k.startswith("postfilter."))
    assert not torch.equal(fresh["postfilter.head.weight"], shipped["postfilter.head.weight"])
    assert shipped["postfilter.tail.weight"].any() and not fresh["postfilter.tail.weight"].any()

    ablated = ["--model-config", json.dumps({"postfilter": {"width": 8, "link": False}})]
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run(*common, *stage, *ablated, "--run-dir", str(tmp_path / "refused"), weights=weights)
    assert b"--fresh postfilter" in refused.value.stderr
    run(*common, *stage, *ablated, "--run-dir", str(tmp_path / "link"), "--fresh", "postfilter", weights=weights)
    state = torch.load(tmp_path / "link" / "last.pt", weights_only=False)
    assert state["arch_config"]["postfilter"] == {"width": 8, "link": False} and "postfilter.link.up.weight" in state["model"]
    with pytest.raises(subprocess.CalledProcessError) as unknown:
        run(*common, *stage, "--run-dir", str(tmp_path / "none"), "--fresh", "postfiltre", weights=weights)
    assert b"no part postfiltre" in unknown.value.stderr


@pytest.mark.slow
def test_perceptual_stage_trains_a_head_that_ships_beside_the_model(tmp_path):
    """Stage perceptual trains only the perceptual head; exported as a head, it leaves the model's
    tensors file, and so the files made with it, as they were; a head of another codec is refused."""
    common, weights = stage_i_model(tmp_path)
    run(*common, "--run-dir", str(tmp_path / "ii"), "--stage", "postfilter", "--init", "wavelet",
        "--model-config", json.dumps({"postfilter": 8}), "--max-steps", "1", weights=weights)
    before = zoo.export(tmp_path / "ii" / "last.pt", "wavelet", {}, weights)
    base = zoo.load_training_weights("wavelet", weights)

    run(*common, "--run-dir", str(tmp_path / "p"), "--stage", "perceptual", "--init", "wavelet",
        "--model-config", json.dumps({"perceptual": 8}), "--max-steps", "2", weights=weights)
    state = torch.load(tmp_path / "p" / "last.pt", weights_only=False)
    assert all(torch.equal(state["model"][k], v) for k, v in base.items())
    assert bool(state["model"]["perceptual.tail.weight"].any())  # it left the identity

    tensors = (weights / "wavelet.safetensors").read_bytes()
    manifest = zoo.export_head(tmp_path / "p" / "last.pt", "wavelet", "perceptual", {}, weights)
    assert (weights / "wavelet.safetensors").read_bytes() == tensors
    assert manifest.model_hash == before.model_hash
    assert manifest.heads["perceptual"]["width"] == 8 and manifest.heads["perceptual"]["info"]["steps"] == 2
    model, _ = zoo.load("wavelet", weights)
    assert model.realistic
    x = torch.rand(1, 3, 20, 30)
    with torch.inference_mode():
        decoded = model.decompress(model.compress(x, 2.0), 20, 30, 2.0, torch.device("cpu"))
        assert not torch.equal(*model.postprocess(decoded, 2.0, (1.0, 0.0), seed=1))

    # grown from the shipped head: its sizes in the checkpoint and in the manifest, its tensors back on load
    run(*common, "--run-dir", str(tmp_path / "g"), "--stage", "perceptual", "--init", "wavelet",
        "--model-config", json.dumps({"perceptual": {"late_blocks": 1}}), "--max-steps", "1", weights=weights)
    grown = torch.load(tmp_path / "g" / "last.pt", weights_only=False)
    sizes = {**model.perceptual.config, "late_blocks": 1}
    assert grown["arch_config"]["perceptual"].items() >= {"width": 8, "late_blocks": 1}.items()
    manifest = zoo.export_head(tmp_path / "g" / "last.pt", "wavelet", "perceptual", {}, weights)
    assert {k: manifest.heads["perceptual"][k] for k in sizes} == sizes and manifest.model_hash == before.model_hash
    model, _ = zoo.load("wavelet", weights)
    assert model.perceptual.config == sizes
    assert all(torch.equal(v, grown["model"][f"perceptual.{k}"]) for k, v in model.perceptual.state_dict().items())

    run(*common, "--run-dir", str(tmp_path / "ii2"), "--stage", "postfilter", "--init", "wavelet",
        "--model-config", json.dumps({"postfilter": 8}), "--max-steps", "1", "--seed", "5", weights=weights)  # another post-filter
    with pytest.raises(ModelError, match="not trained on the shipped"):
        zoo.export_head(tmp_path / "ii2" / "last.pt", "wavelet", "perceptual", {}, weights)


@pytest.mark.parametrize("scales", [1, 2])
def test_perceptual_stage_critic_judges_the_head_output_and_pulls_it_only_by_its_weight(scales):
    """The critic learns from the head's output of the same step (no second decode, no gradient
    into the head); the head feels the critic in proportion to ``adversarial``; at 0 the critic
    neither pulls nor trains. A critic of two scales has a network per scale, and both learn."""
    from torch import nn

    from xcodec.errors import TrainingError
    from xcodec.models.stages import Batch
    from xcodec.models.wavelet.training import PERCEPTUAL
    from xcodec.train.loop import merged

    manifest = zoo.read_manifest("wavelet")
    model = zoo.build("wavelet", merged(manifest.build_config, PERCEPTUAL.config))
    model.load_state_dict(zoo.load_training_weights("wavelet"))
    options = {**PERCEPTUAL.options, "critic_scales": float(scales)}
    extras = nn.ModuleDict(PERCEPTUAL.extras(options))
    assert len(extras["critic"].nets) == scales
    head_loss, critic_loss = (objective.loss for objective in PERCEPTUAL.objectives)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def step(adversarial: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's gradient, and the critic's loss of the same batch."""
        model.zero_grad(set_to_none=True)
        batch = Batch(model, x, torch.tensor([1.5, 6.0]), torch.Generator().manual_seed(1),
                      {**options, "adversarial": adversarial}, extras)
        loss, numbers = head_loss(batch)
        loss.backward()
        assert set(PERCEPTUAL.logged) <= set(numbers)
        head = model.perceptual.tail.weight.grad.clone()
        extras.zero_grad(set_to_none=True)
        critic, _ = critic_loss(batch)
        if critic is not None:
            critic.backward()
            assert model.perceptual.tail.weight.grad.equal(head)  # the critic's loss does not reach the head
            assert all(bool(next(net.parameters()).grad.any()) for net in extras["critic"].nets)
        return head, critic

    plain, critic = step(0.0)
    assert critic is None
    pulled, critic = step(1.0)
    assert critic is not None and not pulled.allclose(plain)
    assert step(0.0)[0].equal(plain)
    for bad in (0.0, 1.5):
        with pytest.raises(TrainingError, match="whole number from 1"):
            PERCEPTUAL.extras({**options, "critic_scales": bad})


def test_perceptual_stage_with_grain_judges_the_output_with_the_grain_a_file_would_draw():
    """``--option grain=1``: a crop of a grainy flat photo is judged with the grain of its file added
    to the head's output (its flat areas' high-pass energy then the photo's); a crop without grain
    gets none, and the loss of the option at 0 is the plain one."""
    from xcodec.models import grain
    from xcodec.models.stages import Batch
    from xcodec.models.wavelet.training import PERCEPTUAL

    model = zoo.load("wavelet")[0]
    head_loss = PERCEPTUAL.objectives[0].loss
    flat = torch.full((2, 3, 64, 64), 0.5)
    flat[0] += 2.0 / 255 * torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0))  # grain of 2 grey levels
    outputs = []
    for on in (0.0, 1.0):
        batch = Batch(model, flat, torch.tensor([6.0, 6.0]), torch.Generator().manual_seed(1),
                      {**PERCEPTUAL.options, "grain": on}, {})
        with torch.no_grad():
            head_loss(batch)
        outputs.append(batch.shared["sharp"])
    plain, grained = outputs
    assert torch.equal(plain[1], grained[1])  # no grain in the photo: none drawn
    x_hat = model.decoded(flat, torch.tensor([6.0, 6.0]))
    sent = grain.read(grain.target(grain.tally(flat[:1], x_hat[:1])))
    drawn = grain.read(grain.target(grain.tally(grained[:1], x_hat[:1])))
    assert (sent > 1.8).all() and torch.allclose(drawn, sent, atol=0.25)
    assert grain.target(grain.tally(plain[:1], x_hat[:1])) is None or (
        grain.read(grain.target(grain.tally(plain[:1], x_hat[:1]))) < sent - 0.5).all()


def test_a_head_grown_from_the_shipped_one_starts_with_its_output(tmp_path):
    """--init with more blocks in --model-config: the shipped head's tensors, its other sizes kept,
    and new blocks that start as the identity, so the grown head gives the shipped head's output
    bit for bit; a size that does not fit the shipped tensors is refused."""
    from xcodec.errors import TrainingError
    from xcodec.train.config import TrainConfig, find_stage
    from xcodec.train.loop import starting_model

    shipped = zoo.load("wavelet")[0].perceptual
    grow = {key: shipped.config[key] + 1 for key in ("blocks", "coarse_blocks", "late_blocks")}
    cfg = TrainConfig(tmp_path, tmp_path, "wavelet", "perceptual", {"perceptual": grow}, init="wavelet")
    model, config, _ = starting_model(cfg, find_stage("wavelet", "perceptual"))
    assert model.perceptual.config == {**shipped.config, **grow} and config["perceptual"].items() >= grow.items()
    assert len(model.perceptual.late) == grow["late_blocks"] and len(model.perceptual.coarse) == 2 * grow["coarse_blocks"]
    for key, value in shipped.state_dict().items():
        assert torch.equal(model.perceptual.state_dict()[key], value), key
    y = torch.rand(1, 3, 150, 230, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(1, *shipped.noise_shape(150, 230), generator=torch.Generator().manual_seed(3))
    quality = torch.tensor([2.5])
    assert bool(shipped(y, quality, noise).any())
    assert torch.equal(model.perceptual(y, quality, noise), shipped(y, quality, noise))

    wider = TrainConfig(tmp_path, tmp_path, "wavelet", "perceptual", {"perceptual": {"width": 48}}, init="wavelet")
    with pytest.raises(TrainingError, match="does not fit"):
        starting_model(wider, find_stage("wavelet", "perceptual"))


def test_a_postfilter_less_its_coarse_path_starts_from_the_shipped_convolutions(tmp_path):
    """--init with a part switched off in --model-config: the shipped filter's other tensors carry
    over and the removed part's are dropped; a redesign that needs new tensors is still refused."""
    from xcodec.errors import TrainingError
    from xcodec.train.config import TrainConfig, find_stage
    from xcodec.train.loop import starting_model

    shipped = zoo.load_training_weights("wavelet")
    convs = TrainConfig(tmp_path, tmp_path, "wavelet", "postfilter", {"postfilter": {"coarse_path": False}}, init="wavelet")
    model = starting_model(convs, find_stage("wavelet", "postfilter"))[0]
    kept = model.state_dict()
    assert model.postfilter.coarse is None and any(k.startswith("postfilter.coarse.") for k in shipped)
    assert all(torch.equal(kept[k], v) for k, v in shipped.items() if k in kept)
    assert {k for k in shipped if k not in kept} == {k for k in shipped if k.startswith(("postfilter.down.", "postfilter.coarse.", "postfilter.link."))}

    linked = TrainConfig(tmp_path, tmp_path, "wavelet", "postfilter", {"postfilter": {"link": False}}, init="wavelet")
    with pytest.raises(TrainingError, match="--fresh postfilter"):
        starting_model(linked, find_stage("wavelet", "postfilter"))


def test_perceptual_stage_log_lpips_weighs_each_crop_by_its_own_scale():
    """``log_lpips`` 1 makes the distances the means of log LPIPS and log texture distance over the
    crops (a crop at quality 8 weighs as much as one at quality 1); 0 keeps the plain means.
    ``texture`` weighs the texture distance, which is zero only for the same statistics, and
    ``spectrum`` the spectrum distance (a log ratio already, never scaled)."""
    from xcodec.bench import lpips
    from xcodec.models.stages import Batch
    from xcodec.models.wavelet.training import PERCEPTUAL, perceptual_loss, spectrum_distance, texture_distance
    from xcodec.train.loop import merged

    manifest = zoo.read_manifest("wavelet")
    model = zoo.build("wavelet", merged(manifest.build_config, PERCEPTUAL.config))
    model.load_state_dict(zoo.load_training_weights("wavelet"))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    net = lpips.load()

    def loss(log_lpips: float, texture: float, spectrum: float = 0.0) -> tuple[float, torch.Tensor, torch.Tensor]:
        batch = Batch(model, x, torch.tensor([1.0, 8.0]), torch.Generator().manual_seed(1),
                      {**PERCEPTUAL.options, "fidelity": 0.0, "log_lpips": log_lpips, "texture": texture,
                       "spectrum": spectrum}, {})
        with torch.no_grad():
            value, numbers = perceptual_loss(batch)
            sharp, photo = net.normalised(batch.shared["sharp"] * 2 - 1), net.normalised(x * 2 - 1)
        assert numbers["texture"] == pytest.approx(float(texture_distance(sharp, photo).mean()), rel=1e-5)
        spectra.append(spectrum_distance(batch.shared["sharp"], x))
        assert numbers["spectrum"] == pytest.approx(float(spectra[-1].mean()), rel=1e-5)
        return float(value), net(batch.shared["sharp"] * 2 - 1, x * 2 - 1).flatten(), texture_distance(sharp, photo)

    spectra = []
    plain, distance, texture = loss(0.0, 0.0)
    logged, same, _ = loss(1.0, 0.0)
    assert torch.equal(distance, same) and bool((texture > 0).all())
    assert plain == pytest.approx(float(distance.mean()), rel=1e-5)
    assert logged == pytest.approx(float(distance.log().mean()), rel=1e-5)
    assert loss(0.0, 0.5)[0] == pytest.approx(float((distance + 0.5 * texture).mean()), rel=1e-5)
    assert loss(1.0, 0.5)[0] == pytest.approx(float((distance.log() + 0.5 * texture.log()).mean()), rel=1e-5)
    assert loss(1.0, 0.0, 2.0)[0] == pytest.approx(float((distance.log() + 2 * spectra[0]).mean()), rel=1e-5)
    assert bool((spectra[0] > 0).all()) and not spectrum_distance(x, x).any()
    photo = net.normalised(x * 2 - 1)
    assert not texture_distance(photo, photo).any()


def test_band_energies_measure_a_band_s_power_per_pixel_and_blur_takes_the_high_bands():
    from xcodec.models.wavelet.training import SPECTRUM_BANDS, band_energies, spectrum_distance

    noise = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 0.3
    energies = band_energies(noise)
    assert energies.shape == (2, len(SPECTRUM_BANDS) - 1)
    assert torch.allclose(energies, torch.full_like(energies, 0.09 / 3), rtol=0.15)  # white: the luma's variance in every band
    blurred = F.avg_pool2d(noise, 3, stride=1, padding=1)
    ratios = band_energies(blurred) / energies
    assert bool((ratios[:, -1] < ratios[:, 0]).all()) and bool((spectrum_distance(blurred, noise) > 0).all())


def test_a_postfilter_trained_in_its_place_ships_as_the_convfilter_head(tmp_path):
    """A convolutions-only post-filter, fine-tuned as the model's ``postfilter`` (the stage
    postfilter with ``coarse_path`` off), exports as the ``convfilter`` head (``--part postfilter``):
    the model's tensors file, and so the files made with it, stay; the loaded model has both
    filters, the shipped ``postfilter`` as it was; a checkpoint of another codec is refused."""
    import shutil

    weights = tmp_path / "weights"
    weights.mkdir()
    for path in zoo.WEIGHTS_DIR.glob("wavelet.*"):
        shutil.copy(path, weights)
    manifest = json.loads((weights / "wavelet.json").read_text())
    manifest.get("heads", {}).pop("convfilter", None)  # the model before it had one
    (weights / "wavelet.json").write_text(json.dumps(manifest))
    (weights / "wavelet.convfilter.safetensors").unlink(missing_ok=True)
    shipped, before = zoo.load("wavelet", weights)
    assert shipped.convfilter is None
    config = {**before.build_config, "postfilter": {"coarse_path": False}}  # as --init wavelet gives the stage
    model = zoo.build("wavelet", config)
    model.load_state_dict(zoo.load_training_weights("wavelet", weights), strict=False)
    with torch.no_grad():
        model.postfilter.tail.bias.add_(0.01)  # "trained"
    state = {"arch": "wavelet", "arch_config": config, "model": model.state_dict(), "step": 3, "elapsed": 60.0}
    torch.save(state, tmp_path / "last.pt")
    tensors = (weights / "wavelet.safetensors").read_bytes()
    manifest = zoo.export_head(tmp_path / "last.pt", "wavelet", "convfilter", {}, weights, part="postfilter")
    assert (weights / "wavelet.safetensors").read_bytes() == tensors and manifest.model_hash == before.model_hash
    assert {k: v for k, v in manifest.heads["convfilter"].items() if k not in ("sha256", "info")} == {
        "width": 32, "blocks": 4, "coarse_path": False}
    loaded, _ = zoo.load("wavelet", weights)
    for key, value in model.postfilter.state_dict().items():
        assert torch.equal(loaded.convfilter.state_dict()[key], value), key
    for key, value in shipped.postfilter.state_dict().items():
        assert torch.equal(loaded.postfilter.state_dict()[key], value), key
    state["model"] = {**state["model"], "recon": state["model"]["recon"] + 0.01}
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not trained on the shipped"):
        zoo.export_head(tmp_path / "other.pt", "wavelet", "convfilter", {}, weights, part="postfilter")


def test_quality_power_draws_the_perceptual_crops_toward_the_low_qualities():
    """``--option quality_power=p`` redraws the uniform qualities as 1 + 7 u^p: 1 leaves them as drawn,
    2 keeps the ends and the order and puts about two thirds below quality 4; 0 or less is refused."""
    from xcodec.errors import TrainingError
    from xcodec.models.wavelet.training import skewed

    drawn = 1 + 7 * torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    assert skewed(drawn, 1.0) is drawn
    low = skewed(drawn, 2.0)
    assert skewed(torch.tensor([1.0, 8.0]), 2.0).tolist() == [1.0, 8.0]
    assert bool((low <= drawn).all()) and bool((skewed(drawn.sort().values, 2.0).diff() >= 0).all())
    assert 0.63 < float((low < 4).float().mean()) < 0.68  # sqrt(3/7) = 0.655
    for bad in (0.0, -1.0):
        with pytest.raises(TrainingError, match="quality_power is above 0"):
            skewed(drawn, bad)
