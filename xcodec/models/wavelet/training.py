"""The ``wavelet`` model's training stages, each cheap enough for two CPU cores.

Its transform is already good before any training (JPEG 2000's CDF 9/7), so it learns in stages,
each shipped and benchmarked before the next (docs/training.md):

- ``context``: the transform stays fixed; the context networks learn the code length of the
  dead-zone coefficients. No synthesis, no distortion.
- ``postfilter``: the codec stays fixed; a post-filter added to the ``--init`` model learns to
  restore decoded crops.
- ``joint``: the parts ``--parts`` names (by default all) learn the rate-distortion cost of
  effort 1's symbols, end to end.
- ``perceptual``: the codec and its post-filter stay fixed; a perceptual head added to the
  ``--init`` model learns to add detail to the post-filtered crops (LPIPS, with the dB it costs
  against the fidelity output as a penalty, and optionally a texture-statistics loss and an
  adversarial loss from a critic that trains beside it, and a loss on the energy of the detail per
  frequency band). DISTS is never trained on: it is the held-out judge.

Every loss is a mean over crops of a logarithm (of bits, of MSE, of a rate-distortion cost), so a
crop at quality 1 weighs as much as one at quality 8: BD-rate counts percentages and decibels, not
bits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...bench import lpips
from ...container import StreamKind
from ...errors import TrainingError
from ...metrics import batch_psnr
from .. import grain
from ..codec import MAX_QUALITY, MIN_QUALITY
from ..perceptual import Critic
from ..stages import Batch, Objective, Stage, parts
from .quantise import RDO_LAMBDA, step_for

# The run settings of every stage unless it says otherwise: a cosine from --lr down to --lr-end
# over the whole run, no warm-up.
SCHEDULE = {"crop": 256, "batch_size": 8, "lr": 1e-3, "lr_end": 1e-5, "decay_start": 0, "max_steps": 20_000,
            "log_every": 25, "val_minutes": 15.0}


def context_loss(batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """log2 of each crop's code length under the context networks (exactly the unit-bin Laplacian
    the coder uses), averaged: a crop at quality 1 (a few hundred bits) weighs as much as one at
    quality 8 (tens of thousands)."""
    model, x, quality = batch.model, batch.x, batch.quality
    with torch.no_grad():
        _, planes = model.quantise(x, quality)
    bits = model.context.bits(planes, quality).sum(1)
    return torch.log2(bits).mean(), {"bpp": float(bits.detach().sum() / x[:, 0].numel())}


def postfilter_loss(batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Minus the mean PSNR of the post-filtered crops, which the fixed codec decodes as effort 1
    would, without entropy coding (``WaveletCodec.decoded``); the log shows the filter's gain."""
    model, x, quality = batch.model, batch.x, batch.quality
    with torch.no_grad():
        decoded = model.decoded(x, quality)
    restored = batch_psnr(model.postfilter(decoded, quality), x)
    return -restored.mean(), {"gain_db": float((restored.detach() - batch_psnr(decoded, x)).mean())}


def joint_loss(batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """log of each crop's rate-distortion cost J = bits + SSE / (RDO_LAMBDA step**2) (8-bit units):
    the trade-off the encoder's RDO makes at that quality's global step, so that learning the band
    steps does not move the quality scale. The bits are every coefficient's, the low band's too."""
    model, x, quality = batch.model, batch.x, batch.quality
    out = model(x, quality)
    bits = -torch.log2(out["likelihoods"]["coefficients"]).sum(1)
    sse = ((out["x_hat"] - x) * 255).square().flatten(1).sum(1)
    cost = bits + sse / (RDO_LAMBDA * step_for(quality) ** 2)
    return torch.log(cost).mean(), {"cost": float(cost.detach().sum() / x[:, 0].numel())}


def coded_bpp(model, images: list[Tensor], quality: float) -> float:
    """The code length of the exact coder at the default effort (the current weights' networks)."""
    model.prepare_inference({})
    return float(np.mean([model.estimate_bits(x, quality) / x[0, 0].numel() for x in images]))


def decoded_psnr(model, images: list[Tensor], quality: float) -> dict[str, float]:
    """PSNR of effort 1's reconstruction (``decoded``) before and after the post-filter that learns
    (``postfilter``, whichever format version decodes with it)."""
    q = torch.tensor([quality], device=images[0].device)
    scores = []
    for x in images:
        x_hat = model.decoded(x, q)
        filtered = x_hat if model.postfilter is None else model.postfilter(x_hat, q).clamp(0, 1)
        scores.append((float(batch_psnr(x_hat, x)), float(batch_psnr(filtered, x))))
    decoded, filtered = np.mean(scores, 0)
    return {"psnr_decoded": float(decoded), "psnr": float(filtered)}


def texture_distance(f0: list[Tensor], f1: list[Tensor]) -> Tensor:
    """Per image, how far apart two images' texture statistics lie: the mean, over LPIPS's five
    layers and their channels, of the differences of each channel's spatial mean and standard
    deviation (the features unit-normalized as LPIPS compares them). LPIPS matches features place
    by place, so where the fidelity output lost a texture it prefers a smooth guess to texture
    synthesised a little off; these statistics (the first two moments of a texture model in the
    manner of Gatys et al.) ask for the texture's strength wherever it lies. DISTS, the held-out
    judge, compares moments of the same kind on another network (VGG16)."""
    total = 0
    for a, b in zip(f0, f1):
        total = total + ((a.mean((2, 3)) - b.mean((2, 3))).abs() + (a.std((2, 3)) - b.std((2, 3))).abs()).mean(1)
    return total / len(f0)


SPECTRUM_BANDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75)  # edges of the radial frequency bands, cycles per pixel
NOISE_FLOOR = 1 / 255**2  # a band's mean power (per pixel, [0, 1] units) below 8-bit rounding's order


def band_energies(x: Tensor) -> Tensor:
    """(B, bands): the mean power of each image's luma (the channels' mean) in each radial band of
    ``SPECTRUM_BANDS``, per pixel: a band of white noise of variance v measures v."""
    luma = x.mean(1)
    power = torch.fft.fft2(luma - luma.mean((1, 2), keepdim=True)).abs().square() / luma[0].numel()
    radius = torch.hypot(torch.fft.fftfreq(luma.shape[1], device=x.device)[:, None],
                         torch.fft.fftfreq(luma.shape[2], device=x.device)[None])
    masks = torch.stack([(radius >= low) & (radius < high) for low, high in zip(SPECTRUM_BANDS, SPECTRUM_BANDS[1:])])
    return (power[:, None] * masks).sum((2, 3)) / masks.sum((1, 2)).clamp(min=1)


def spectrum_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per image, the mean over frequency bands of the absolute log ratio of two images' detail
    energies (``band_energies`` above the noise floor). The head keeps less of the photo's energy
    than it should: at quality 1 on Kodak, 38-73% between 0.1 and 0.5 cycles per pixel (the
    fidelity output 23-59%), as LPIPS, which matches features place by place, prefers leaving out
    detail to drawing it a little off; a decoder of perfect realism keeps it all. (As a loss at
    weight 1 it drew noise: DISTS and LPIPS worse, docs/training-log.md, tenth run.)"""
    return (torch.log(band_energies(a) + NOISE_FLOOR) - torch.log(band_energies(b) + NOISE_FLOOR)).abs().mean(1)


def perceptual_loss(batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """LPIPS of the perceptual output (fresh noise per crop), plus ``fidelity`` times the dB it
    loses against the fidelity output (so that colours and structure stay put), plus ``texture``
    times its ``texture_distance`` to the photo, plus ``spectrum`` times its ``spectrum_distance``
    to the photo, plus ``adversarial`` times the critic's hinge loss for the head (-score: the
    critic should take the output for a photo). With ``grain`` 1 the output is judged with the grain
    that a version-13 file of the crop would have the decoder draw (``grained``).

    With ``log_lpips`` 1 the distances (LPIPS and the texture's) are their logarithms: a crop at
    quality 8 (LPIPS about 0.004) then weighs as much as one at quality 1 (about 0.3), instead of
    the low qualities' large values steering the head alone. ``quality_power`` p draws the crops'
    qualities as 1 + 7 u^p (u uniform) instead of uniformly: p 2 puts two thirds of them below
    quality 4, where a BD-rate on LPIPS or DISTS (over the distance itself) spends most of its range."""
    model, x, options = batch.model, batch.x, batch.options
    quality = skewed(batch.quality, options["quality_power"])
    net = lpips.load(device=str(x.device))
    with torch.no_grad():
        x_hat = model.decoded(x, quality)
        fidelity = model.filter_for()(x_hat, quality).clamp(0, 1)  # of the files it writes
        photo = net.normalised(x * 2 - 1)
    noise = torch.randn(len(x), *model.perceptual.noise_shape(*x.shape[-2:]), generator=batch.generator)
    sharp = (fidelity + model.perceptual(fidelity, quality, noise.to(x.device))).clamp(0, 1)
    if options["grain"]:
        sharp = (sharp + grained(x, x_hat, sharp.detach(), batch.generator)).clamp(0, 1)
    batch.shared.update(fidelity=fidelity, sharp=sharp.detach())  # the critic's crops, at these qualities
    features = net.normalised(sharp * 2 - 1)
    distance, texture = net.distance(features, photo), texture_distance(features, photo)
    lost_db = batch_psnr(fidelity, x) - batch_psnr(sharp, x)
    scale = torch.log if options["log_lpips"] else (lambda t: t)
    loss = scale(distance) + options["fidelity"] * lost_db
    if options["texture"]:
        loss = loss + options["texture"] * scale(texture)
    spectrum = spectrum_distance(sharp, x)
    if options["spectrum"]:
        loss = loss + options["spectrum"] * spectrum
    if options["adversarial"]:
        scores = batch.extras["critic"](sharp, fidelity)
        loss = loss - options["adversarial"] * sum(score.flatten(1).mean(1) for score in scores) / len(scores)
    return loss.mean(), {"lpips": float(distance.detach().mean()), "texture": float(texture.detach().mean()),
                         "spectrum": float(spectrum.detach().mean()), "lost_db": float(lost_db.detach().mean())}


def skewed(quality: Tensor, power: float) -> Tensor:
    """Qualities drawn uniformly from [1, 8], redrawn as 1 + 7 u^power (``power`` 1: unchanged)."""
    if power <= 0:
        raise TrainingError(f"--option quality_power is above 0, not {power:g}")
    if power == 1:
        return quality
    span = MAX_QUALITY - MIN_QUALITY
    return MIN_QUALITY + span * ((quality - MIN_QUALITY) / span) ** power


def grained(x: Tensor, x_hat: Tensor, sharp: Tensor, generator: torch.Generator) -> Tensor:
    """The grain a decoder draws on each crop's realism-1 output ``sharp`` (``grain.missing``) when
    its file carries the photo's (``grain.tally``, ``grain.target``): the head learns beside it."""
    drawn = torch.zeros_like(sharp)
    for i in range(len(x)):
        sent = grain.target(grain.tally(x[i : i + 1], x_hat[i : i + 1]))
        if sent is not None:
            noise = torch.randn(sharp[i : i + 1].shape, generator=generator).to(x.device)
            drawn[i : i + 1] = grain.missing(sharp[i : i + 1], x_hat[i : i + 1], grain.read(sent), noise)
    return drawn


def critic_loss(batch: Batch) -> tuple[Tensor | None, dict[str, float]]:
    """Hinge loss of the critic: photos above +1, the head's outputs (from ``perceptual_loss`` of the
    same step) below -1, each given the fidelity output, averaged over the critic's scales. At
    ``adversarial`` 0 nobody listens to it, so it does not train."""
    if not batch.options["adversarial"]:
        return None, {}
    critic, fidelity = batch.extras["critic"], batch.shared["fidelity"]
    real, fake = critic(batch.x, fidelity), critic(batch.shared["sharp"], fidelity)
    loss = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)
    return loss, {}


def critic_scales(options: dict[str, float]) -> int:
    """The critic's number of scales: ``critic_scales``, a loss option (a float), a whole number from 1."""
    scales = options["critic_scales"]
    if scales < 1 or scales != int(scales):
        raise TrainingError(f"--option critic_scales is a whole number from 1, not {scales:g}")
    return int(scales)


def realism_scores(model, images: list[Tensor], quality: float) -> dict[str, float]:
    """PSNR and LPIPS of the decoded images at realism 0 (the fidelity output) and 1, with the grain
    that their version-13 files would carry."""
    net = lpips.load(device=str(images[0].device))
    q = torch.tensor([quality], device=images[0].device)
    scores = []
    for x in images:
        x_hat = model.decoded(x, q)
        sent = grain.target(grain.tally(x, x_hat))
        side = None if sent is None else model.side_info({StreamKind.GRAIN: sent})
        fidelity, sharp = model.postprocess(x_hat, quality, (0.0, 1.0), side=side)
        scores.append([float(f(y, x)) for y in (fidelity, sharp) for f in (batch_psnr, lambda a, b: net(a * 2 - 1, b * 2 - 1))])
    return dict(zip(("psnr", "lpips", "psnr_r1", "lpips_r1"), np.mean(scores, 0).tolist()))


CONTEXT = Stage(
    name="context",
    summary="the context networks learn the code length of the fixed CDF 9/7 transform's coefficients",
    objectives=(Objective(parts("context"), context_loss),),
    logged=("bpp",),
    measures=("bpp",),
    validate=lambda model, images, q: {"bpp": coded_bpp(model, images, q)},
    config={"lifting_hidden": 0},
    defaults=SCHEDULE,
)

POSTFILTER = Stage(
    name="postfilter",
    summary="a post-filter added to the --init model learns to restore its decoded crops (the codec stays fixed)",
    objectives=(Objective(parts("postfilter"), postfilter_loss),),
    logged=("gain_db",),
    measures=("psnr_decoded", "psnr"),
    validate=decoded_psnr,
    config={"postfilter": 32},  # its width
    fresh=("postfilter",),
    defaults={**SCHEDULE, "crop": 128, "lr": 3e-4, "max_steps": 8000},
)

JOINT = Stage(
    name="joint",
    summary="end-to-end fine-tuning of the rate-distortion cost of effort 1's symbols (--parts: which parts learn)",
    objectives=(Objective(parts("colour", "wavelet", "log_steps", "recon", "context", "postfilter"), joint_loss),),
    logged=("cost",),
    measures=("bpp", "psnr"),
    validate=lambda model, images, q: {"bpp": coded_bpp(model, images, q), "psnr": decoded_psnr(model, images, q)["psnr"]},
    config={"lifting_hidden": 8},  # learned lifting residuals, zero at first: the --init transform is the start
    fresh=("wavelet",),
    defaults=SCHEDULE,
)

PERCEPTUAL = Stage(
    name="perceptual",
    summary="a perceptual head added to the --init model learns LPIPS on its post-filtered decoded crops (the codec stays fixed)",
    objectives=(Objective(parts("perceptual"), perceptual_loss),
                Objective(parts("extras.critic"), critic_loss, lr=1e-4, clip=None)),
    logged=("lpips", "texture", "spectrum", "lost_db"),
    measures=("psnr", "lpips", "psnr_r1", "lpips_r1"),
    validate=realism_scores,
    config={"perceptual": {}},  # a head: its sizes are --init's if it has one, else the defaults; --model-config's over both
    fresh=("perceptual",),
    extras=lambda options: {"critic": Critic(scales=critic_scales(options))},
    defaults={**SCHEDULE, "crop": 128, "batch_size": 6, "lr": 3e-4, "max_steps": 1800},
    # LPIPS units (log units with log_lpips 1) per dB lost against the fidelity output, per unit
    # of the texture distance (of its logarithm), of the spectrum distance and of the critic's score;
    # the critic's number of scales; 1 to train the head beside the file's grain (``grained``);
    # the exponent of the qualities' draw
    options={"fidelity": 0.005, "texture": 0.0, "spectrum": 0.0, "adversarial": 0.0, "log_lpips": 0.0,
             "critic_scales": 1.0, "grain": 0.0, "quality_power": 1.0},
)

STAGES = (CONTEXT, POSTFILTER, JOINT, PERCEPTUAL)
