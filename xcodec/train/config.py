"""A training run's settings: what the user gives, the stage's preferences, the loop's defaults,
and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TrainingError
from ..models import zoo
from ..models.stages import Stage

# The run settings a stage does not choose (``Stage.defaults``) and the user does not give.
DEFAULTS = {"batch_size": 8, "crop": 128, "lr": 1e-4, "lr_end": 1e-5, "warmup_steps": 200, "decay_start": None,
            "max_steps": 1_000_000, "log_every": 50, "val_minutes": 20.0}


@dataclass
class TrainConfig:
    data: Path
    run_dir: Path
    model: str = zoo.DEFAULT_MODEL  # an architecture; shipped models are named after theirs
    stage: str | None = None  # None: the model's first stage
    model_config: dict = field(default_factory=dict)  # constructor arguments, over --init's and the stage's
    init: str | None = None  # a model in weights/ to start from
    parts: tuple[str, ...] | None = None  # the parts the stage's first objective trains; None: the stage's
    fresh: tuple[str, ...] = ()  # parts of the --init model that start anew (fresh initialisation)
    options: dict[str, float] = field(default_factory=dict)  # the stage's loss settings
    # None below: the stage's default, else DEFAULTS
    batch_size: int | None = None
    crop: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    decay_start: int | None = None  # from this step on, the lr follows a cosine down to lr_end at max_steps
    lr_end: float | None = None
    max_steps: int | None = None
    log_every: int | None = None
    val_minutes: float | None = None
    max_minutes: float = math.inf
    checkpoint_minutes: float = 5.0
    val_dir: Path | None = None
    val_images: int = 4
    seed: int = 0
    threads: int = 0  # 0: torch's default
    device: str = "cpu"


def find_stage(model: str, name: str | None) -> Stage:
    """The stage ``name`` of architecture ``model`` (its first when None)."""
    if model not in zoo.ARCHITECTURES:
        raise TrainingError(f"unknown architecture {model!r} (known: {', '.join(zoo.ARCHITECTURES)})")
    stages = zoo.ARCHITECTURES[model].training_stages()
    for stage in stages:
        if name in (None, stage.name):
            return stage
    raise TrainingError(f"{model} has no stage {name!r} (its stages: {', '.join(s.name for s in stages)})")


def settle(cfg: TrainConfig, stage: Stage) -> TrainConfig:
    """``cfg`` with every unset setting taken from the stage, then from ``DEFAULTS``."""
    unknown = set(cfg.options) - set(stage.options)
    if unknown:
        raise TrainingError(f"stage {stage.name} has no option {', '.join(sorted(unknown))} "
                         f"(its options: {', '.join(stage.options) or 'none'})")
    chosen = {**DEFAULTS, **stage.defaults}
    unset = {key: chosen[key] for key in DEFAULTS if getattr(cfg, key) is None}
    return dataclasses.replace(cfg, stage=stage.name, options={**stage.options, **cfg.options}, **unset)


def cosine(lr: float, lr_end: float, t: float) -> float:
    """A cosine from ``lr`` at ``t = 0`` down to ``lr_end`` at ``t = 1`` (and after)."""
    return lr_end + (lr - lr_end) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, constant, then a cosine from ``decay_start`` to ``max_steps``."""
    if cfg.decay_start is None or step < cfg.decay_start:
        return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
    return cosine(cfg.lr, cfg.lr_end, (step - cfg.decay_start) / max(1, cfg.max_steps - cfg.decay_start))
