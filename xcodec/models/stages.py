"""Training stages: how a model learns, declared by the model as data and run by ``xcodec train``.

A model's ``training_stages()`` lists its stages, the first being the default. A stage says:

- which constructor arguments it sets on the model it starts from (``config``; a part it adds, such
  as a post-filter, starts fresh: ``fresh`` names the parts that ``--init`` weights may lack);
- what learns and how: one ``Objective`` per optimiser, each with the parameters it updates, its
  loss on a batch of crops, and its own learning rate and clipping where it does not follow the
  run's schedule (a second objective is how an auxiliary loss, or a discriminator, is trained);
- modules that only training needs (``extras``, e.g. a discriminator): checkpointed with the run,
  never exported;
- the numbers its log shows (``logged``: the first objective's loss returns them) and what the
  validation measures (``measures`` and ``validate``);
- the run's settings it prefers (``defaults``: crop, batch size, learning-rate schedule, ...) and
  the loss settings a user may change (``options``, ``--option NAME=VALUE``).

A loss sees a ``Batch``: the model, the crops, one quality per crop, the run's generator (noise
drawn from it is restored on ``--resume``), the options, and ``shared``: what an earlier objective
of the same step computed (a critic scores the generator's output without decoding the crops
again). Crops are pixels; a stage that learns on decoded crops decodes them inside its loss, under
``torch.no_grad``, with its frozen parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..metrics import batch_psnr
from .codec import lambda_for

if TYPE_CHECKING:
    from .codec import Codec


@dataclass(frozen=True)
class Batch:
    model: Codec
    x: Tensor  # crops (N, 3, h, w) in [0, 1]
    quality: Tensor  # (N,) in [1, 8]
    generator: torch.Generator
    options: dict[str, float]
    extras: nn.ModuleDict
    shared: dict[str, Tensor] = field(default_factory=dict)  # what one objective leaves for the next of the same step


# The scalar to minimise (None: nothing to learn this step, e.g. a critic whose weight is 0), and
# the numbers the log shows (the stage's ``logged``, first objective only).
Loss = Callable[[Batch], tuple[Tensor | None, dict[str, float]]]
# Validation of one quality: the stage's ``measures`` averaged over the images (1, 3, H, W).
Validate = Callable[["Codec", list[Tensor], float], dict[str, float]]


def parts(*names: str) -> Callable[[str], bool]:
    """Parameters of the model's top-level parts ``names`` (``extras.NAME`` for a stage's extra module)."""
    return lambda parameter: parameter.split(".")[0] in names or ".".join(parameter.split(".")[:2]) in names


def everything(parameter: str) -> bool:
    return True


@dataclass(frozen=True)
class Objective:
    """One optimiser (Adam): the parameters it updates, what it minimises, and how."""

    learns: Callable[[str], bool]  # by parameter name
    loss: Loss
    lr: float | None = None  # None: the run's schedule (--lr, warm-up, decay); else this constant rate
    clip: float | None = 1.0  # gradient norm clipping


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str  # one line for ``xcodec train --help``
    objectives: tuple[Objective, ...]
    logged: tuple[str, ...]
    measures: tuple[str, ...]
    validate: Validate
    config: dict[str, Any] = field(default_factory=dict)
    fresh: tuple[str, ...] = ()
    extras: Callable[[dict[str, float]], dict[str, nn.Module]] | None = None  # of the run's options
    defaults: dict[str, Any] = field(default_factory=dict)
    options: dict[str, float] = field(default_factory=dict)


def bits_per_pixel(likelihoods: dict[str, Tensor], pixels: int) -> Tensor:
    """Per image (N,): -log2 of every likelihood, summed, per pixel."""
    return sum(-torch.log2(lik).flatten(1).sum(1) for lik in likelihoods.values()) / pixels


def rate_distortion_loss(batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Per crop lambda(q) * 255^2 * MSE + bpp, averaged over the batch (rate: the training
    forward's likelihoods; distortion: its reconstruction)."""
    out = batch.model(batch.x, batch.quality)
    bpp = bits_per_pixel(out["likelihoods"], batch.x.shape[2] * batch.x.shape[3])
    mse = (out["x_hat"] - batch.x).square().flatten(1).mean(1)
    loss = (lambda_for(batch.quality) * 255**2 * mse + bpp).mean()
    return loss, {"loss": loss.item(), "bpp": bpp.mean().item(), "psnr": batch_psnr(out["x_hat"], batch.x).mean().item()}


def auxiliary_loss(batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """CompressAI's quantile loss of the entropy bottlenecks (it depends on the weights only)."""
    return batch.model.aux_loss(), {}


def forward_estimate(model: Codec, images: list[Tensor], quality: float) -> dict[str, float]:
    """The eval forward's estimated bpp (rounded latents, no coder) and PSNR, averaged over the images."""
    bpp, psnr = [], []
    for x in images:
        out = model(x, torch.tensor([quality], device=x.device))
        bpp.append(float(bits_per_pixel(out["likelihoods"], x.shape[2] * x.shape[3])))
        psnr.append(float(batch_psnr(out["x_hat"].clamp(0, 1), x)))
    return {"bpp": sum(bpp) / len(bpp), "psnr": sum(psnr) / len(psnr)}


def is_quantile(parameter: str) -> bool:
    return parameter.endswith(".quantiles")


RATE_DISTORTION = Stage(
    name="rd",
    summary="every part learns lambda(q) * 255^2 * MSE + bpp on crops, one random quality per crop",
    # CompressAI's convention: the entropy bottlenecks' quantiles learn from the auxiliary loss only.
    objectives=(Objective(lambda name: not is_quantile(name), rate_distortion_loss),
                Objective(is_quantile, auxiliary_loss, lr=1e-3, clip=None)),
    logged=("loss", "bpp", "psnr"),
    measures=("bpp", "psnr"),
    validate=forward_estimate,
)
