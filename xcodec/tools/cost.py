"""What a model architecture costs: parameters, multiply-accumulates per pixel, training-step time.

    python -m xcodec.tools.cost --model transformer --threads 2

MACs are counted by ``torch.utils.flop_counter`` (attention included) on a 768x512 image, the size
of a Kodak photo, and divided by its pixels: of the encoder (``compress``: its torch work, not the
entropy coder's), the decoder (``decompress``) and the training forward, for a freshly built model
of any family. The coarse attention branch grows with the image, so larger images cost more per
pixel. The step time is one step of the model's first training stage (``--stage`` picks another)
on a batch of random crops (forward, backward, update), the median of ``--steps`` after one warm-up
step, with the machine's other load whatever it is: run it on an idle machine for numbers to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import zoo
from ..models.codec import MAX_QUALITY, MIN_QUALITY, Codec
from ..models.stages import Batch, Stage


def macs_per_pixel(model: Codec, height: int = 512, width: int = 768) -> dict[str, float]:
    """Multiply-accumulates per pixel of the encoder, the decoder and the training forward."""
    x = torch.rand(1, 3, height, width)
    model.eval()
    model.prepare_inference(model.export_tensors())
    with torch.no_grad():
        payloads = model.compress(x, 4.0)
        parts = {"encoder": lambda: model.compress(x, 4.0),
                 "decoder": lambda: model.decompress(payloads, height, width, 4.0, torch.device("cpu")),
                 "training forward": lambda: model(x, torch.tensor([4.0]))}
        result = {}
        for name, run in parts.items():
            with FlopCounterMode(display=False) as counter:
                run()
            result[name] = counter.get_total_flops() / 2 / (height * width)
    return result


def step_seconds(model: Codec, stage: Stage, batch: int = 8, crop: int = 128, steps: int = 5) -> float:
    """Median wall-clock seconds of a step of ``stage``'s first objective (after one warm-up step)."""
    model.train()
    objective = stage.objectives[0]
    params = [p for name, p in model.named_parameters() if objective.learns(name)]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    x = torch.rand(batch, 3, crop, crop)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        quality = MIN_QUALITY + (MAX_QUALITY - MIN_QUALITY) * torch.rand(batch, generator=generator)
        loss, _ = objective.loss(Batch(model, x, quality, generator, stage.options, nn.ModuleDict()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="transformer", choices=sorted(zoo.ARCHITECTURES), help="an architecture")
    parser.add_argument("--model-config", default="{}", help="constructor arguments as JSON")
    parser.add_argument("--stage", help="the training stage whose step is timed (default: the model's first)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stages = {stage.name: stage for stage in zoo.ARCHITECTURES[args.model].training_stages()}
    stage = stages.get(args.stage or next(iter(stages)))
    if stage is None:
        parser.error(f"{args.model} has no stage {args.stage!r} (its stages: {', '.join(stages)})")
    model = zoo.build(args.model, {**stage.config, **json.loads(args.model_config)})
    params = sum(p.numel() for p in model.parameters())
    step = step_seconds(model, stage, steps=args.steps)
    macs = macs_per_pixel(model)
    print(f"{args.model}: {params / 1e6:.2f} M parameters; "
          + "; ".join(f"{name} {value / 1e3:.1f} kMAC/pixel" for name, value in macs.items())
          + f"; training step of stage {stage.name} (batch 8, 128 px, {torch.get_num_threads()} threads) {step:.2f} s")


if __name__ == "__main__":
    main()
