"""Where a latent model loses quality: its transforms, or the quantization of its latents.

    python -m xcodec.tools.ceiling ../shared/data/kodak --model transformer --images 4

For each quality, the PSNR of the synthesis fed the analysis's latents *unquantized* (the
transforms' ceiling: no rate can buy more than this) beside the PSNR with the latents rounded as
in coding (the model's eval forward, as in training validation) and the estimated bpp. When the
coded PSNR sits at the ceiling while the rate still grows with quality, extra bits buy nothing: the
transforms, not the entropy model, limit the model. Both use the first ``--images`` images of the
folder, cropped to a multiple of the model's stride.

It needs an analysis and a synthesis transform with quality gains (``g_a``, ``g_s``, ``hyper``):
the ``hyperprior`` and ``transformer`` families. The ``wavelet`` model's lifting transform is
invertible, so it has no such ceiling: its losses are all quantisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from ..metrics import batch_psnr
from ..models import zoo
from ..models.codec import to_tensor
from ..models.stages import forward_estimate
from ..train.loop import VAL_QUALITIES, validation_images

PROBED = ("g_a", "g_s", "hyper")


@torch.no_grad()
def ceiling_psnr(model: torch.nn.Module, x: Tensor, quality: float) -> float:
    """PSNR of ``g_s(g_a(x))`` with the quality's gains and no quantization."""
    gain, inverse_gain = model.hyper.gains(torch.tensor([quality]))
    return float(batch_psnr(model.g_s(model.g_a(x) * gain * inverse_gain).clamp(0, 1), x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="transformer", help="a model in weights/")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, manifest = zoo.load(args.model)
    lacking = [part for part in PROBED if not hasattr(model, part)]
    if lacking:
        parser.exit(2, f"{args.model} ({manifest.arch}) has no {', '.join(lacking)}: the ceiling probes the latent "
                       "transforms of the hyperprior and transformer families\n")
    images = [to_tensor(rgb) for rgb in validation_images(args.folder, args.images, model.stride)]
    print(f"{args.model} ({manifest.info.get('steps', '?')} steps), {len(images)} images")
    print("quality  ceiling dB  coded dB  est. bpp")
    with torch.no_grad():
        for quality in VAL_QUALITIES:
            coded = forward_estimate(model, images, quality)
            top = sum(ceiling_psnr(model, x, quality) for x in images) / len(images)
            print(f"{quality:7g}  {top:10.2f}  {coded['psnr']:8.2f}  {coded['bpp']:8.4f}")


if __name__ == "__main__":
    main()
