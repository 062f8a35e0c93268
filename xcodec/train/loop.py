"""The training loop, top to bottom: config, model, optimisers, the step, logs, checkpoints.

It runs one stage (``models/stages.py``) of one model: the stage says what learns, the losses, the
log's columns, the validation and its preferred settings; the loop knows nothing else about the
model. One variable-rate model learns every quality at once: each crop in a batch gets its own
random quality in [1, 8] (continuous).

A run lives in a folder (``runs/NAME``): ``last.pt`` (model, the stage's extra modules,
optimisers, step, every rank's RNG: ``--resume`` continues exactly), ``log.csv`` (the stage's
``logged`` numbers averaged over each log interval) and ``val.csv`` (the stage's ``measures`` on
the first validation images at qualities 1, 4, 8), both with a header row. Checkpoints are written
atomically every few minutes and on SIGTERM/Ctrl-C, so a killed run loses at most that much.
``--init NAME`` starts a new run from the shipped ``weights/NAME`` (fresh optimisers); the parts the
stage adds start fresh, and so do the blocks that ``--model-config`` adds to a shipped head
(``{"perceptual": {"late_blocks": 2}}``: the shipped head's tensors, grown by blocks that start as
the identity). A part the shipped model has continues from its weights unless ``--fresh`` names it
(``--fresh postfilter``: a post-filter trained from scratch, of the shipped design or another); a
part that ``--model-config`` redesigns by switching parts of it off keeps the tensors it still has
and drops the others (``{"postfilter": {"coarse_path": false}}``: the shipped filter's
convolutions, fine-tuned alone).

Distributed: launched by ``torchrun``, each process trains on its own crops and the gradients of
every objective are averaged across processes before each update (gloo on CPU, nccl on GPU);
rank 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ..errors import TrainingError
from ..files import list_images, write_atomic
from ..models import zoo
from ..models.codec import MAX_QUALITY, MIN_QUALITY, Codec, to_tensor
from ..models.stages import Batch, Stage, parts
from .config import TrainConfig, find_stage, learning_rate, settle
from .data import CropSampler, build_pack

console = Console(stderr=True)
VAL_QUALITIES = (1.0, 4.0, 8.0)


def merged(*configs: dict) -> dict:
    """Constructor arguments, each of ``configs`` over the ones before; a dict (a head's sizes) over a
    dict merges key by key, so that ``{"perceptual": {"late_blocks": 2}}`` keeps --init's other sizes."""
    result: dict = {}
    for config in configs:
        for key, value in config.items():
            both = isinstance(value, dict) and isinstance(result.get(key), dict)
            result[key] = {**result[key], **value} if both else value
    return result


def starting_model(cfg: TrainConfig, stage: Stage) -> tuple[Codec, dict, dict]:
    """The model a new run starts from, its constructor arguments, and the training behind it."""
    config, earlier = {}, {"steps": 0, "minutes": 0.0}
    if cfg.init:
        manifest = zoo.read_manifest(cfg.init)
        if manifest.arch != cfg.model:
            raise TrainingError(f"--init {cfg.init} is a {manifest.arch} model, not {cfg.model}")
        config = manifest.build_config
        earlier = {"steps": manifest.info.get("steps", 0), "minutes": manifest.info.get("train_minutes", 0.0)}
    config = merged(config, stage.config, cfg.model_config)
    model = zoo.build(cfg.model, config)
    absent = set(cfg.fresh) - {key.split(".")[0] for key in model.state_dict()}
    if absent:
        raise TrainingError(f"--fresh: the model has no part {', '.join(sorted(absent))}")
    if cfg.init:
        anew = parts(*cfg.fresh)
        weights = {key: value for key, value in zoo.load_training_weights(cfg.init).items() if not anew(key)}
        hint = f" (--fresh {','.join(stage.fresh)} starts it anew)" if stage.fresh and not cfg.fresh else ""
        try:
            missing, unexpected = model.load_state_dict(weights, strict=False)
        except RuntimeError as e:  # a tensor of another shape
            raise TrainingError(f"--init {cfg.init} does not fit stage {stage.name} with {config}{hint}: {e}") from e
        # a part that --model-config redesigns by removing parts of it (a post-filter less its coarse
        # path) drops their tensors; one that also needs new tensors still needs --fresh
        redesigned = parts(*cfg.model_config)
        dropped = [key for key in unexpected if redesigned(key)]
        if dropped and not any(redesigned(key) for key in missing):
            unexpected = [key for key in unexpected if not redesigned(key)]
            console.print(f"--init {cfg.init}: {len(dropped)} tensors dropped, which the redesigned "
                          f"{', '.join(sorted({key.split('.')[0] for key in dropped}))} lacks")
        if unexpected or any(key.split(".")[0] not in (*stage.fresh, *cfg.fresh) for key in missing):
            raise TrainingError(f"--init {cfg.init} does not fit stage {stage.name} with {config}{hint} "
                             f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    return model, config, earlier


@torch.no_grad()
def validate(model: Codec, stage: Stage, images: list[torch.Tensor]) -> list[dict[str, float]]:
    """The stage's measures at each of ``VAL_QUALITIES``, averaged over ``images`` (1, 3, H, W), in
    eval mode (the model's mode is restored)."""
    training = model.training
    model.eval()
    try:
        return [{"quality": q, **stage.validate(model, images, q)} for q in VAL_QUALITIES]
    finally:
        model.train(training)


def validation_images(folder: Path | None, count: int, stride: int) -> list[np.ndarray]:
    """The first ``count`` images of ``folder``, cropped to multiples of ``stride``."""
    if folder is None:
        return []
    images = []
    for path in list_images(folder)[:count]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[0] // stride * stride, rgb.shape[1] // stride * stride
        images.append(np.array(rgb[:h, :w]))  # a writable copy
    return images


def save_atomic(obj: dict, path: Path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _csv(path: Path, header: list[str]):
    """Open a CSV log for appending rows of ``header``'s columns. A log that ``--resume`` finds with
    other columns (written by an earlier version of the stage) is first rewritten under
    ``header``, its rows' numbers kept by column name (a column ``header`` lacks goes last, empty
    in the new rows; a new column is empty in the old rows)."""
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows, columns = list(reader), reader.fieldnames or []
        if columns != header:  # atomically: a kill meanwhile leaves the old log as it was
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, [*header, *(c for c in columns if c not in header)], restval="")
            writer.writeheader()
            writer.writerows(rows)
            write_atomic(path, text.getvalue().encode())
    new = not path.exists()
    f = path.open("a", newline="")
    writer = csv.writer(f)
    if new:
        writer.writerow(header)
    return f, writer


def nice_session() -> None:
    """Give this process's own session (autogroup) the process's nice value.

    Under Linux autogroup scheduling, nice ranks processes only within their session; sessions
    share the CPU equally. A ``nice -n 19`` run in a session of its own (torchrun starts each worker
    in one, and so does ``setsid``) would still take half the CPU from an interactive session.
    Only a session leader does this, so a run started inside a user's shell session never
    renices that shell.
    """
    autogroup = Path("/proc/self/autogroup")
    if not autogroup.exists():  # no autogroup scheduling (another OS, or a kernel without it)
        return
    nice = os.nice(0)
    if nice > 0 and os.getsid(0) == os.getpid():
        try:
            autogroup.write_text(str(nice))
        except OSError:  # not allowed here: nice then ranks processes within the session only
            pass


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients across processes, in one collective."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, chunk in zip(params, flat.split([p.numel() for p in params])):
        p.grad = chunk.view_as(p)


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train until ``max_steps`` or ``max_minutes``; a SIGTERM or Ctrl-C still saves a checkpoint."""
    stage = find_stage(cfg.model, cfg.stage)
    cfg = settle(cfg, stage)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    nice_session()
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
        rank = dist.get_rank()
        if cfg.device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    main = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = cfg.run_dir / "last.pt"
    pack_path = cfg.run_dir / "pack.npz"
    if main and not pack_path.exists():
        console.print(f"building training pack from {cfg.data} ...")
        build_pack(cfg.data, pack_path, cfg.crop)
    if distributed:
        dist.barrier()

    generator = torch.Generator().manual_seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    state = None
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)  # RNG states stay on the CPU
        if "optimizers" not in state:
            raise TrainingError(f"{checkpoint_path} was written by an older xcodec; export it and start a new run with --init")
        if (state["arch"], state["stage"]) != (cfg.model, stage.name):
            raise TrainingError(f"{checkpoint_path} is stage {state['stage']} of {state['arch']}, not {stage.name} of {cfg.model}")
        config, earlier = state["arch_config"], state["earlier"]
        model = zoo.build(cfg.model, config)
    else:
        model, config, earlier = starting_model(cfg, stage)
    extras = nn.ModuleDict(stage.extras(cfg.options) if stage.extras else {})
    model.to(cfg.device)
    extras.to(cfg.device)

    named = [*model.named_parameters(), *(("extras." + n, p) for n, p in extras.named_parameters())]
    objectives = list(stage.objectives)
    if cfg.parts:
        objectives[0] = dataclasses.replace(objectives[0], learns=parts(*cfg.parts))
    trainers = []  # (objective, its parameters, its optimiser)
    for i, objective in enumerate(objectives):
        params = [p for n, p in named if objective.learns(n)]
        if not params and i == 0:
            raise TrainingError(f"stage {stage.name}: the parts to train ({', '.join(cfg.parts or ())}) hold no parameters")
        if params:
            trainers.append((objective, params, torch.optim.Adam(params, lr=objective.lr or cfg.lr)))
    learning = {id(p) for _, params, _ in trainers for p in params}
    for _, p in named:
        p.requires_grad_(id(p) in learning)  # frozen parts build no graph

    step, elapsed = 0, 0.0
    generators = [generator.get_state()]  # every rank's crop RNG, as of the last collective checkpoint
    if state is not None:
        model.load_state_dict(state["model"])
        extras.load_state_dict(state["extras"])
        for (_, _, optimizer), saved in zip(trainers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        step, elapsed = state["step"], state["elapsed"]
        generators = state["generators"]
        if rank < len(generators):  # a rank the saving run did not have keeps its own seed
            generator.set_state(generators[rank])
        torch.set_rng_state(state["torch_rng"])
        if main:
            console.print(f"resumed {checkpoint_path} at step {step} ({elapsed / 60:.1f} min trained)")

    sampler = CropSampler(pack_path, cfg.crop, generator)
    val_images = [to_tensor(rgb).to(cfg.device) for rgb in validation_images(cfg.val_dir, cfg.val_images, model.stride)] if main else []

    def checkpoint(collective: bool) -> None:
        """Save (rank 0). ``collective``: all ranks call this at the same step, so gather their RNGs."""
        nonlocal generators
        if distributed and collective:
            generators = [None] * dist.get_world_size()
            dist.all_gather_object(generators, generator.get_state())
        else:
            generators[0] = generator.get_state()  # rank 0's, which saves; the others' as last gathered
        if main:
            save_atomic(
                {
                    "arch": cfg.model, "arch_config": config, "stage": stage.name, "model": model.state_dict(),
                    "extras": extras.state_dict(), "optimizers": [o.state_dict() for _, _, o in trainers],
                    "step": step, "elapsed": elapsed, "earlier": earlier,
                    "generators": generators, "torch_rng": torch.get_rng_state(),
                    "train_config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
                },
                checkpoint_path,
            )

    log_file, log = _csv(cfg.run_dir / "log.csv", ["step", "minutes", "lr", *stage.logged]) if main else (None, None)
    val_file, val_log = _csv(cfg.run_dir / "val.csv", ["step", "minutes", "quality", *stage.measures]) if main else (None, None)
    last_checkpoint = last_val = session_start = time.monotonic()
    totals = dict.fromkeys(stage.logged, 0.0)
    model.train()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console,
                        disable=not (main and console.is_terminal))
    task = progress.add_task(f"{cfg.model} {stage.name}", total=cfg.max_steps, completed=step, status="")

    def agreed(flag: bool) -> bool:
        """True on every rank if it is true on any: decisions taken from a rank's own clock must be
        shared, or one rank enters a collective (a checkpoint) while another trains on and both hang."""
        if not distributed:
            return flag
        value = torch.tensor(float(flag))
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value)

    finished = False
    try:
        with progress:
            while step < cfg.max_steps and not agreed((time.monotonic() - session_start) / 60 >= cfg.max_minutes):
                t0 = time.monotonic()
                lr = learning_rate(cfg, step)
                x = sampler.batch(cfg.batch_size).to(cfg.device)
                quality = MIN_QUALITY + (MAX_QUALITY - MIN_QUALITY) * torch.rand(cfg.batch_size, generator=generator)
                batch = Batch(model, x, quality.to(cfg.device), generator, cfg.options, extras)
                for i, (objective, params, optimizer) in enumerate(trainers):
                    for group in optimizer.param_groups:
                        group["lr"] = lr if objective.lr is None else objective.lr
                    loss, numbers = objective.loss(batch)
                    if i == 0:
                        for name in totals:
                            totals[name] += numbers[name]
                    if loss is None:  # nothing to learn this step
                        continue
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if distributed:
                        average_gradients(params)
                    if objective.clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, objective.clip)
                    optimizer.step()

                step += 1
                elapsed += time.monotonic() - t0
                progress.update(task, completed=step)
                if step % cfg.log_every == 0:
                    if main:
                        means = {name: total / cfg.log_every for name, total in totals.items()}
                        log.writerow([step, f"{elapsed / 60:.2f}", f"{lr:.2e}", *(f"{v:.4f}" for v in means.values())])
                        log_file.flush()
                        status = "  ".join(f"{name} {value:.4f}" for name, value in means.items())
                        progress.update(task, status=status)
                        if progress.disable:  # no live display (a log file): one line per interval
                            console.print(f"step {step:>7}  {elapsed / 60:7.1f} min  {status}")
                    totals = dict.fromkeys(totals, 0.0)
                if val_images and time.monotonic() - last_val > cfg.val_minutes * 60:
                    for row in validate(model, stage, val_images):
                        val_log.writerow([step, f"{elapsed / 60:.2f}", row["quality"], *(f"{row[m]:.4f}" for m in stage.measures)])
                        console.print(f"validation q{row['quality']:g}: " + "  ".join(f"{m} {row[m]:.4f}" for m in stage.measures))
                    val_file.flush()
                    last_val = time.monotonic()
                if agreed(time.monotonic() - last_checkpoint > cfg.checkpoint_minutes * 60):
                    checkpoint(collective=True)
                    last_checkpoint = time.monotonic()
        finished = True
    finally:  # also on SIGTERM or Ctrl-C, when ranks may be anywhere: then no collective
        checkpoint(collective=finished)
        for f in (log_file, val_file):
            if f:
                f.close()
        if distributed:
            dist.destroy_process_group()
    return checkpoint_path
