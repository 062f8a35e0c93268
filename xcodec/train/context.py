"""Stage (i) of the ``wavelet`` model: train its context model alone, by likelihood.

The transform stays fixed (CDF 9/7 at initialisation), so every step is: random crops, a random
quality per crop, the integer coefficients, and the code length the context networks give them;
the loss is the mean over crops of log2(bits), the relative rate at every quality alike. This is cheap next to rate-distortion training (no synthesis, no
distortion), which is why it comes first on two CPU cores.

A run lives in ``runs/NAME``: ``last.pt`` (model, optimizer, step, RNG; written atomically every
few minutes and on SIGTERM, resumed with ``--resume``), ``log.csv`` and ``val.csv`` (estimated
bpp of the first validation images at qualities 1, 4, 8). ``xcodec export`` turns ``last.pt``
into ``weights/wavelet.*`` like any other run.

    python -m xcodec.train.context --data ../shared/data/train --run-dir runs/wavelet \\
        --val ../shared/data/kodak [--init wavelet] [--resume]
"""

from __future__ import annotations

import argparse
import csv
import signal
import time
from pathlib import Path

import numpy as np
import torch

from ..models import zoo
from ..models.codec import MAX_QUALITY, MIN_QUALITY, to_tensor
from .data import CropSampler, build_pack
from .loop import VAL_QUALITIES, cosine, nice_session, save_atomic, validation_images


def val_bpp(model, images: list[torch.Tensor]) -> list[float]:
    """Estimated bpp (ideal code length) per quality, averaged over ``images``."""
    model.eval()
    out = []
    with torch.no_grad():
        for quality in VAL_QUALITIES:
            out.append(float(np.mean([model.estimate_bits(x, quality) / x[0, 0].numel() for x in images])))
    model.train()
    return out


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    nice_session()
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    pack = run / "pack.npz"
    if not pack.exists():
        build_pack(Path(args.data), pack, args.crop)
    generator = torch.Generator().manual_seed(args.seed)
    sampler = CropSampler(pack, args.crop, generator)
    config = {"levels": 5, "lifting_hidden": 0}  # stage (i): the fixed CDF 9/7 transform
    model = zoo.build("wavelet", config)
    earlier = {"steps": 0, "minutes": 0.0}
    if args.init:
        model.load_state_dict(zoo.load_training_weights(args.init))
        info = zoo.read_manifest(args.init).info
        earlier = {"steps": info.get("steps", 0), "minutes": info.get("train_minutes", 0.0)}
    optimizer = torch.optim.Adam(model.context.parameters(), lr=args.lr)
    step, elapsed = 0, 0.0
    last = run / "last.pt"
    if args.resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, earlier = state["step"], state["elapsed"], state["earlier"]
        generator.set_state(state["rng"])
    val_images = [to_tensor(rgb, 1) for rgb in validation_images(Path(args.val) if args.val else None, args.val_images, 1)]

    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def checkpoint() -> None:
        state = {"arch": "wavelet", "arch_config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "elapsed": elapsed, "earlier": earlier, "rng": generator.get_state()}
        save_atomic(state, last)

    log = open(run / "log.csv", "a", newline="")
    writer = csv.writer(log)
    start, last_save, last_val = time.time() - elapsed, time.time(), time.time()
    losses = []
    while step < args.max_steps and not stop:
        lr = cosine(args.lr, args.lr_end, step / args.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = sampler.batch(args.batch_size)
        quality = MIN_QUALITY + (MAX_QUALITY - MIN_QUALITY) * torch.rand(args.batch_size, generator=generator)
        with torch.no_grad():
            _, planes = model.quantise(x, quality)
        bits = model.context.bits(planes, quality).sum(1)
        # Relative rate: log2 of each crop's bits, so that a crop at quality 1 (a few hundred bits)
        # weighs as much as one at quality 8 (tens of thousands): BD-rate counts percentages.
        optimizer.zero_grad()
        torch.log2(bits).mean().backward()
        loss = bits.sum() / x[:, 0].numel()
        torch.nn.utils.clip_grad_norm_(model.context.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed = time.time() - start
        losses.append(float(loss.detach()))
        if step % args.log_every == 0:
            writer.writerow([step, round(elapsed / 60, 2), f"{lr:.2e}", round(float(np.mean(losses)), 5)])
            log.flush()
            print(f"step {step} {elapsed / 60:.1f} min bpp {np.mean(losses):.4f}", flush=True)
            losses = []
        if val_images and time.time() - last_val > args.val_minutes * 60:
            with open(run / "val.csv", "a", newline="") as f:
                csv.writer(f).writerow([step, *(round(b, 4) for b in val_bpp(model, val_images))])
            last_val = time.time()
        if time.time() - last_save > args.checkpoint_minutes * 60:
            checkpoint()
            last_save = time.time()
    checkpoint()
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--val")
    parser.add_argument("--val-images", type=int, default=4)
    parser.add_argument("--val-minutes", type=float, default=15)
    parser.add_argument("--init")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-end", type=float, default=1e-5)
    parser.add_argument("--max-steps", type=int, default=20000)
    parser.add_argument("--checkpoint-minutes", type=float, default=5)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
