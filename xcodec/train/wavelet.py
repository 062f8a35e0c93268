"""Training of the ``wavelet`` model in stages, each cheap enough for two CPU cores.

``--stage context`` (i): the transform stays fixed (CDF 9/7 at initialisation), so every step is
random crops, a random quality per crop, the integer coefficients and the code length the context
networks give them; the loss is the mean over crops of log2(bits), the relative rate at every
quality alike. No synthesis, no distortion.

``--stage postfilter`` (ii): the codec stays fixed and only the decoder's post-filter learns. A
step decodes crops without entropy coding (``WaveletCodec.decoded``) and the loss is the mean over
crops of 10 log10(MSE), i.e. minus the PSNR, so every quality's dB count alike, as in BD-rate.
The post-filter is added to the ``--init`` model (``--postfilter WIDTH``).

``--stage perceptual``: the codec and its post-filter stay fixed and only the perceptual head
(``models/perceptual.py``) learns, on the post-filtered decoded crops with fresh noise each step.
The loss per crop is LPIPS (AlexNet, the offline weights of ``xcodec.bench.lpips``) plus
``--fidelity`` times the dB the head loses against the fidelity output, so that colours and
structure stay put. DISTS is never trained on: it is the held-out judge.

A run lives in ``runs/NAME``: ``last.pt`` (model, optimizer, step, RNG; written atomically every
few minutes and on SIGTERM, resumed with ``--resume``), ``log.csv`` and ``val.csv`` (the first
validation images at qualities 1, 4, 8: estimated bpp in stage (i), PSNR without and with the
post-filter in stage (ii)). ``xcodec export`` turns ``last.pt`` into ``weights/wavelet.*``.

    python -m xcodec.train.wavelet --stage context --data ../shared/data/train --run-dir runs/wavelet \\
        --val ../shared/data/kodak [--init wavelet] [--resume]
    python -m xcodec.train.wavelet --stage postfilter --init wavelet --postfilter 32 --crop 128 ...
"""

from __future__ import annotations

import argparse
import csv
import signal
import time
from pathlib import Path

import numpy as np
import torch

from ..bench import lpips
from ..models import zoo
from ..models.codec import MAX_QUALITY, MIN_QUALITY, to_tensor
from ..models.wavelet import RDO_LAMBDA, step_for
from .data import CropSampler, build_pack
from .loop import VAL_QUALITIES, cosine, nice_session, save_atomic, validation_images


LOGGED = {"context": "bpp", "postfilter": "dB gain", "joint": "cost per pixel", "perceptual": "LPIPS"}  # what a stage's log shows


def validate(model, images: list[torch.Tensor], stage: str) -> list[float]:
    """Per quality, averaged over ``images``: the estimated bpp (code length of the exact coder)
    in stages context and joint, the PSNR of the decoded image (stage postfilter) and of the
    post-filtered one (all but context); stage perceptual adds the LPIPS of the fidelity output and
    the PSNR and LPIPS at realism 1."""
    model.eval()
    model.prepare_inference({})  # the exact context networks of the current weights
    out = []
    with torch.no_grad():
        for quality in VAL_QUALITIES:
            if stage in ("context", "joint"):
                out.append(float(np.mean([model.estimate_bits(x, quality) / x[0, 0].numel() for x in images])))
            if stage == "context":
                continue
            decoded = [model.decoded(x, torch.tensor([quality])) for x in images]
            if stage == "postfilter":
                out.append(float(np.mean([psnr(d, x) for d, x in zip(decoded, images)])))
            fidelity = [model.postprocess(d, quality) for d in decoded]
            out.append(float(np.mean([psnr(y, x) for y, x in zip(fidelity, images)])))
            if stage == "perceptual":
                net = lpips.load()
                sharp = [model.postprocess(d, quality, realism=1.0) for d in decoded]
                out.append(float(np.mean([net(y * 2 - 1, x * 2 - 1) for y, x in zip(fidelity, images)])))
                out.append(float(np.mean([psnr(y, x) for y, x in zip(sharp, images)])))
                out.append(float(np.mean([net(y * 2 - 1, x * 2 - 1) for y, x in zip(sharp, images)])))
    model.train()
    return out


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per image of a batch (N, 3, H, W) in [0, 1]."""
    mse = (x_hat - x).square().flatten(1).mean(1).clamp_min(1e-10)  # a flat crop can decode exactly
    return -10 * torch.log10(mse)


def stage_loss(model, stage: str, x: torch.Tensor, quality: torch.Tensor, generator: torch.Generator,
               fidelity_weight: float) -> tuple[torch.Tensor, float]:
    """The loss to minimise and the number to log (``LOGGED``): bpp in stage (i), the PSNR gain (dB)
    in stage (ii), the rate-distortion cost per pixel in stage (iii), LPIPS in stage perceptual."""
    if stage == "context":
        with torch.no_grad():
            _, planes = model.quantise(x, quality)
        bits = model.context.bits(planes, quality).sum(1)
        # Relative rate: log2 of each crop's bits, so that a crop at quality 1 (a few hundred bits)
        # weighs as much as one at quality 8 (tens of thousands): BD-rate counts percentages.
        return torch.log2(bits).mean(), float(bits.sum() / x[:, 0].numel())
    if stage == "postfilter":
        with torch.no_grad():
            decoded = model.decoded(x, quality)
        restored = psnr(model.postfilter(decoded, quality), x)
        return -restored.mean(), float((restored.detach() - psnr(decoded, x)).mean())
    if stage == "perceptual":
        with torch.no_grad():
            fidelity = model.postfilter(model.decoded(x, quality), quality).clamp(0, 1)
        noise = torch.randn(len(x), *model.perceptual.noise_shape(*x.shape[-2:]), generator=generator)
        sharp = (fidelity + model.perceptual(fidelity, quality, noise)).clamp(0, 1)
        distance = lpips.load()(sharp * 2 - 1, x * 2 - 1)
        lost_db = psnr(fidelity, x) - psnr(sharp, x)
        return (distance + fidelity_weight * lost_db).mean(), float(distance.detach().mean())
    # joint: each crop's rate-distortion cost J = bits + SSE / (RDO_LAMBDA step**2) in 8-bit units,
    # the trade-off the encoder's RDO makes at that quality's global step (so the learned band
    # steps do not move the quality scale); log J weighs the crops' relative costs alike.
    out = model(x, quality)
    bits = -torch.log2(out["likelihoods"]["coefficients"]).sum(1)
    sse = ((out["x_hat"] - x) * 255).square().flatten(1).sum(1)
    cost = bits + sse / (RDO_LAMBDA * step_for(quality) ** 2)
    return torch.log(cost).mean(), float(cost.detach().sum() / x[:, 0].numel())


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
    config = {"levels": 5, "lifting_hidden": 0}  # stages (i) and (ii): the fixed CDF 9/7 transform
    earlier = {"steps": 0, "minutes": 0.0}
    if args.init:
        config = zoo.read_manifest(args.init).build_config
    if args.stage == "postfilter":
        config["postfilter"] = args.postfilter
    if args.stage == "joint":
        config["lifting_hidden"] = args.lifting_hidden
    if args.stage == "perceptual":
        config["perceptual"] = args.perceptual
    model = zoo.build("wavelet", config)
    if args.init:
        # parts this stage adds to the --init model start fresh (the post-filter, the lifting residuals)
        missing, unexpected = model.load_state_dict(zoo.load_training_weights(args.init), strict=False)
        if unexpected or any(not key.startswith(("postfilter.", "wavelet.", "perceptual.")) for key in missing):
            raise SystemExit(f"--init {args.init} does not fit this stage (missing {missing}, unexpected {unexpected})")
        info = zoo.read_manifest(args.init).info
        earlier = {"steps": info.get("steps", 0), "minutes": info.get("train_minutes", 0.0)}
    parts = {"context": ["context"], "postfilter": ["postfilter"], "perceptual": ["perceptual"],
             "joint": args.parts.split(",")}[args.stage]
    trained = [p for name, p in model.named_parameters() if name.split(".")[0] in parts]
    if not trained:
        raise SystemExit(f"--parts {args.parts} names no parameters of the model")
    optimizer = torch.optim.Adam(trained, lr=args.lr)
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
        loss, logged = stage_loss(model, args.stage, x, quality, generator, args.fidelity)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        elapsed = time.time() - start
        losses.append(logged)
        if step % args.log_every == 0:
            writer.writerow([step, round(elapsed / 60, 2), f"{lr:.2e}", round(float(np.mean(losses)), 5)])
            log.flush()
            print(f"step {step} {elapsed / 60:.1f} min {LOGGED[args.stage]} {np.mean(losses):.4f}", flush=True)
            losses = []
        if val_images and time.time() - last_val > args.val_minutes * 60:
            with open(run / "val.csv", "a", newline="") as f:
                csv.writer(f).writerow([step, *(round(v, 4) for v in validate(model, val_images, args.stage))])
            last_val = time.time()
        if time.time() - last_save > args.checkpoint_minutes * 60:
            checkpoint()
            last_save = time.time()
    checkpoint()
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("context", "postfilter", "joint", "perceptual"), default="context")
    parser.add_argument("--postfilter", type=int, default=32, help="stage postfilter: its width")
    parser.add_argument("--perceptual", type=int, default=32, help="stage perceptual: the head's width")
    parser.add_argument("--fidelity", type=float, default=0.025,
                        help="stage perceptual: weight of the dB lost against the fidelity output")
    parser.add_argument("--lifting-hidden", type=int, default=8, help="stage joint: width of the lifting residuals")
    parser.add_argument("--parts", default="colour,wavelet,log_steps,recon,context,postfilter",
                        help="stage joint: the parts that learn, comma-separated")
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
