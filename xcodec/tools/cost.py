"""What a model architecture costs: parameters, multiply-accumulates per pixel, training-step time.

    python -m xcodec.tools.cost --arch transformer --threads 2

MACs are counted by ``torch.utils.flop_counter`` (attention included) on a 768x512 image, the size
of a Kodak photo, and divided by its pixels; the coarse attention branch grows with the image, so
larger images cost more per pixel. The step time is one Adam step on a batch of random crops
(forward, backward, update), the median of ``--steps`` after one warm-up step, with the machine's
other load whatever it is: run it on an idle machine for numbers to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..models import zoo
from ..models.codec import MAX_QUALITY, MIN_QUALITY
from ..train.loop import rd_loss


def macs_per_pixel(model: torch.nn.Module, height: int = 512, width: int = 768) -> dict[str, float]:
    """Multiply-accumulates per pixel of the analysis, the synthesis and the whole training forward."""
    x = torch.rand(1, 3, height, width)
    with torch.no_grad():
        y = model.g_a(x)
        parts = {"analysis": lambda: model.g_a(x), "synthesis": lambda: model.g_s(y),
                 "training forward": lambda: model(x, torch.tensor([4.0]))}
        result = {}
        for name, run in parts.items():
            with FlopCounterMode(display=False) as counter:
                run()
            result[name] = counter.get_total_flops() / 2 / (height * width)
    return result


def step_seconds(model: torch.nn.Module, batch: int = 8, crop: int = 128, steps: int = 5) -> float:
    """Median wall-clock seconds of a training step (after one warm-up step)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        quality = MIN_QUALITY + (MAX_QUALITY - MIN_QUALITY) * torch.rand(batch)
        loss = rd_loss(model, x, quality)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="transformer", choices=sorted(zoo.ARCHITECTURES))
    parser.add_argument("--arch-config", default="{}", help="constructor options as JSON")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = zoo.build(args.arch, json.loads(args.arch_config)).train()
    params = sum(p.numel() for p in model.parameters())
    macs = macs_per_pixel(model)
    step = step_seconds(model, steps=args.steps)
    print(f"{args.arch}: {params / 1e6:.2f} M parameters; "
          + "; ".join(f"{name} {value / 1e3:.1f} kMAC/pixel" for name, value in macs.items())
          + f"; training step (batch 8, 128 px, {torch.get_num_threads()} threads) {step:.2f} s")


if __name__ == "__main__":
    main()
