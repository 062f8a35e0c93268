"""The training loop, top to bottom: data, model, optimizers, the rate-distortion step, checkpoints.

One variable-rate model learns every quality at once: each crop in a batch gets its own random
quality in [1, 8] (continuous), and with it its own lambda and gain vector.

A run lives in a folder (``runs/NAME``): ``last.pt`` (model, optimizers, step, RNG: ``--resume``
continues exactly), ``log.csv`` (training loss, bpp, PSNR per log interval), ``val.csv`` (the
model's estimated bpp and PSNR on validation images at qualities 1, 4, 8). Checkpoints are written
atomically every few minutes and on SIGTERM/Ctrl-C, so a killed run loses at most that much.
``--init NAME`` starts a new run from the shipped ``weights/NAME`` (fresh optimizer): this is how a
later session continues from committed weights.

Distributed: launched by ``torchrun``, each process trains on its own crops and
DistributedDataParallel averages the gradients (gloo on CPU, nccl on GPU); rank 0 writes.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..models import zoo
from ..models.codec import MAX_QUALITY, MIN_QUALITY, lambda_for, to_tensor
from ..files import list_images, write_atomic
from .data import CropSampler, build_pack

console = Console(stderr=True)
VAL_QUALITIES = (1.0, 4.0, 8.0)


@dataclass
class TrainConfig:
    data: Path
    run_dir: Path
    arch: str = zoo.DEFAULT_MODEL  # shipped models are named after their architecture
    arch_config: dict = field(default_factory=dict)
    init: str | None = None  # a model in weights/ to start from
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-4
    warmup_steps: int = 200
    decay_start: int | None = None  # from this step on, the lr follows a cosine down to lr_end at max_steps
    lr_end: float = 1e-5
    max_steps: int = 1_000_000
    max_minutes: float = math.inf
    checkpoint_minutes: float = 5.0
    log_every: int = 50
    val_dir: Path | None = None
    val_images: int = 4
    val_minutes: float = 20.0
    seed: int = 0
    threads: int = 0  # 0: torch's default
    device: str = "cpu"


def cosine(lr: float, lr_end: float, t: float) -> float:
    """A cosine from ``lr`` at ``t = 0`` down to ``lr_end`` at ``t = 1`` (and after)."""
    return lr_end + (lr - lr_end) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, constant, then a cosine from ``decay_start`` to ``max_steps``."""
    if cfg.decay_start is None or step < cfg.decay_start:
        return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
    return cosine(cfg.lr, cfg.lr_end, (step - cfg.decay_start) / max(1, cfg.max_steps - cfg.decay_start))


def rd_loss(model: torch.nn.Module, x: torch.Tensor, quality: torch.Tensor) -> dict:
    """Per-sample lambda * 255^2 * MSE + bpp, averaged over the batch."""
    out = model(x, quality)
    pixels = x.shape[2] * x.shape[3]
    bpp = sum(-torch.log2(lik).flatten(1).sum(1) for lik in out["likelihoods"].values()) / pixels
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    loss = (lambda_for(quality) * 255**2 * mse + bpp).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean()}


@torch.no_grad()
def psnr_db(mse: float) -> float:
    """PSNR of a mean squared error on the [0, 1] scale (capped at 100 dB for a perfect match)."""
    return 10 * math.log10(1 / max(mse, 1e-10))


@torch.no_grad()
def validate(model: torch.nn.Module, images: list[np.ndarray], device: str) -> list[tuple[float, float, float]]:
    """(quality, estimated bpp, PSNR) averaged over ``images``, with eval-mode (rounded) latents."""
    model.eval()
    rows = []
    for q in VAL_QUALITIES:
        bpps, psnrs = [], []
        for rgb in images:
            x = to_tensor(rgb).to(device)
            out = model(x, torch.tensor([q], device=device))
            bits = sum(float(-torch.log2(lik).sum()) for lik in out["likelihoods"].values())
            bpps.append(bits / (x.shape[2] * x.shape[3]))
            mse = float((out["x_hat"].clamp(0, 1) - x).pow(2).mean())
            psnrs.append(psnr_db(mse))
        rows.append((q, float(np.mean(bpps)), float(np.mean(psnrs))))
    model.train()
    return rows


def validation_images(folder: Path | None, count: int, stride: int) -> list[np.ndarray]:
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


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train until ``max_steps`` or ``max_minutes``; a SIGTERM or Ctrl-C still saves a checkpoint."""
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
    model = zoo.build(cfg.arch, cfg.arch_config)
    step, elapsed = 0, 0.0
    earlier = {"steps": 0, "minutes": 0.0}  # the training behind --init weights, for the manifest
    if cfg.init:
        model.load_state_dict(zoo.load_training_weights(cfg.init))
        info = zoo.read_manifest(cfg.init).info
        earlier = {"steps": info.get("steps", 0), "minutes": info.get("train_minutes", 0.0)}
    model.to(cfg.device)
    # CompressAI's convention: entropy bottlenecks' quantiles learn from the auxiliary loss only.
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3) if aux_params else None

    generators = [generator.get_state()]  # every rank's crop RNG, as of the last collective checkpoint
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)  # RNG states stay on the CPU
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if aux_optimizer:
            aux_optimizer.load_state_dict(state["aux_optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        earlier = state.get("earlier", earlier)
        generators = state["generators"]
        if rank < len(generators):  # a rank the saving run did not have keeps its own seed
            generator.set_state(generators[rank])
        torch.set_rng_state(state["torch_rng"])
        if main:
            console.print(f"resumed {checkpoint_path} at step {step} ({elapsed / 60:.1f} min trained)")

    trained = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    sampler = CropSampler(pack_path, cfg.crop, generator)
    val_images = validation_images(cfg.val_dir, cfg.val_images, model.stride) if main else []

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
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "aux_optimizer": aux_optimizer and aux_optimizer.state_dict(), "step": step, "elapsed": elapsed,
                    "earlier": earlier,
                    "generators": generators, "torch_rng": torch.get_rng_state(),
                    "arch": cfg.arch, "arch_config": cfg.arch_config,
                    "train_config": {k: str(v) for k, v in asdict(cfg).items()},
                },
                checkpoint_path,
            )

    log_file, log = _csv(cfg.run_dir / "log.csv", ["step", "minutes", "lr", "loss", "bpp", "psnr"]) if main else (None, None)
    val_file, val_log = _csv(cfg.run_dir / "val.csv", ["step", "minutes", "quality", "bpp", "psnr"]) if main else (None, None)
    session_start = last_checkpoint = last_val = time.monotonic()
    totals = torch.zeros(3)
    model.train()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console,
                        disable=not (main and console.is_terminal))
    task = progress.add_task(f"training {cfg.arch}", total=cfg.max_steps, completed=step, status="")

    def agreed(flag: bool) -> bool:
        """True on every rank if it is true on any: decisions taken from a rank's own clock must be
        shared, or one rank enters a collective (a checkpoint) while another trains on and both hang."""
        if not distributed:
            return flag
        value = torch.tensor(float(flag))
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value)

    def out_of_time() -> bool:
        return agreed((time.monotonic() - session_start) / 60 >= cfg.max_minutes)

    finished = False
    try:
        with progress:
            while step < cfg.max_steps and not out_of_time():
                t0 = time.monotonic()
                lr = learning_rate(cfg, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = sampler.batch(cfg.batch_size).to(cfg.device)
                quality = MIN_QUALITY + (MAX_QUALITY - MIN_QUALITY) * torch.rand(cfg.batch_size, generator=generator)
                terms = rd_loss(trained, x, quality.to(cfg.device))
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(main_params, 1.0)
                optimizer.step()
                if aux_optimizer:
                    aux_optimizer.zero_grad(set_to_none=True)
                    model.aux_loss().backward()  # depends on the (synchronised) weights only: same on every rank
                    aux_optimizer.step()

                step += 1
                elapsed += time.monotonic() - t0
                totals += torch.tensor([terms["loss"].item(), terms["bpp"].item(), terms["mse"].item()])
                progress.update(task, completed=step)
                if step % cfg.log_every == 0:
                    if main:
                        loss, bpp, mse = (totals / cfg.log_every).tolist()
                        psnr = psnr_db(mse)
                        log.writerow([step, f"{elapsed / 60:.2f}", f"{lr:.2e}", f"{loss:.4f}", f"{bpp:.4f}", f"{psnr:.2f}"])
                        log_file.flush()
                        status = f"loss {loss:.4f}  bpp {bpp:.3f}  psnr {psnr:.2f}"
                        progress.update(task, status=status)
                        if progress.disable:  # no live display (a log file): one line per interval
                            console.print(f"step {step:>7}  {elapsed / 60:7.1f} min  {status}")
                    totals.zero_()
                if val_images and time.monotonic() - last_val > cfg.val_minutes * 60:
                    for q, bpp, psnr in validate(model, val_images, cfg.device):
                        val_log.writerow([step, f"{elapsed / 60:.2f}", q, f"{bpp:.4f}", f"{psnr:.2f}"])
                        console.print(f"validation q{q:g}: {bpp:.4f} bpp  {psnr:.2f} dB")
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
