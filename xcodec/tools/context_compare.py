"""Context networks compared on the same symbols: the code length that the float networks of
training runs (their ``last.pt``) and of a shipped ``wavelet`` model give the detail symbols of
effort 0 (dead-zone rounding, which no context model chooses), with the shipped exact networks'
code length of the same symbols for reference.

    python -m xcodec.tools.context_compare ../shared/data/kodak --images 6 --runs runs/ctx-conv runs/ctx-attn

Every run must keep the shipped model's transform and steps (the ``context`` stage does: CDF 9/7,
the initial steps), so that the symbols are the same. Time: CPU seconds (``time.process_time``) of
a float forward of every band's networks (both passes at every position) per image and quality,
on the caller's threads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import list_images
from ..models import zoo
from ..models.codec import to_tensor
from ..models.wavelet.bands import subband_shapes
from ..models.wavelet.codec import WaveletCodec
from ..models.wavelet.lifting import level_count
from .bits import exact_bits, float_bits


def load_run(run_dir: Path) -> WaveletCodec:
    """The model of a training run's last checkpoint (float networks only)."""
    model, state = zoo.from_checkpoint(run_dir / "last.pt")
    print(f"{run_dir}: step {state['step']}, {state['elapsed'] / 60:.1f} min of training")
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="training run folders of the wavelet model")
    parser.add_argument("--model", default="wavelet", help="the shipped model whose transform codes the symbols")
    parser.add_argument("--qualities", default="1,4,8")
    parser.add_argument("--images", type=int, default=0, help="the first N images of the folder (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped, _ = zoo.load(args.model)
    contexts = {f"{args.model} (float)": shipped.context, **{str(run): load_run(run).context for run in args.runs}}
    qualities = [float(q) for q in args.qualities.split(",")]
    bits = {name: np.zeros(len(qualities)) for name in [f"{args.model} (exact)", *contexts]}
    seconds = dict.fromkeys(contexts, 0.0)
    paths = list_images(args.folder)[: args.images or None]
    for path in paths:
        x = to_tensor(np.asarray(Image.open(path).convert("RGB")))
        shapes = subband_shapes(*x.shape[-2:], level_count(*x.shape[-2:], shipped.levels))
        code = shipped.coder(x, 0, count_bits=True)
        for i, q in enumerate(qualities):
            planes = code(q).planes
            with torch.inference_mode():
                bits[f"{args.model} (exact)"][i] += exact_bits(shipped.context, planes, shapes, q)
                for name, context in contexts.items():
                    start = time.process_time()
                    bits[name][i] += float_bits(context, planes, q)
                    seconds[name] += time.process_time() - start
    pixels = sum(np.prod(Image.open(p).size) for p in paths)
    base = bits[str(args.runs[0])] if args.runs else bits[f"{args.model} (float)"]
    print(f"\n{len(paths)} images of {args.folder}: detail bits per pixel of effort 0's symbols (vs the first run)\n")
    print("| context networks | parameters | CPU s per image and quality | " + " | ".join(f"q{q:g}" for q in qualities) + " |")
    print("|---|---:|---:|" + "---:|" * len(qualities))
    for name, values in bits.items():
        context = contexts.get(name, shipped.context)
        cells = [f"{v / pixels:.4f} ({100 * (v / b - 1):+.2f}%)" for v, b in zip(values, base)]
        cost = f"{seconds[name] / len(paths) / len(qualities):.2f}" if name in seconds else ""
        print(f"| {name} | {sum(p.numel() for p in context.parameters()):,} | {cost} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
