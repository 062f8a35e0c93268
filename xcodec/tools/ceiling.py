"""Where a model loses quality: its transforms, or the quantization of its latents.

    python -m xcodec.tools.ceiling ../shared/data/kodak --model transformer --images 4

For each quality, the PSNR of the synthesis fed the analysis's latents *unquantized* (the
transforms' ceiling: no rate can buy more than this) beside the PSNR with the latents rounded as
in coding (the model's eval forward, as in training validation) and the estimated bpp. When the
coded PSNR sits at the ceiling while the rate still grows with quality, extra bits buy nothing: the
transforms, not the entropy model, limit the model. Both use the first ``--images`` images of the
folder, cropped to a multiple of 64 pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..models import zoo
from ..train.loop import psnr_db, validate, validation_images


@torch.no_grad()
def ceiling_psnr(model: torch.nn.Module, rgb, quality: float) -> float:
    """PSNR of ``g_s(g_a(x))`` with the quality's gains and no quantization."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255)
    gain, inverse_gain = model.hyper.gains(torch.tensor([quality]))
    x_hat = model.g_s(model.g_a(x) * gain * inverse_gain).clamp(0, 1)
    return psnr_db(float((x_hat - x).pow(2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="transformer", help="a model in weights/")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, manifest = zoo.load(args.model)
    images = validation_images(args.folder, args.images, model.stride)
    print(f"{args.model} ({manifest.info.get('steps', '?')} steps), {len(images)} images")
    print("quality  ceiling dB  coded dB  est. bpp")
    coded = validate(model, images, "cpu")
    model.eval()
    for quality, bpp, psnr in coded:
        top = sum(ceiling_psnr(model, rgb, quality) for rgb in images) / len(images)
        print(f"{quality:7g}  {top:10.2f}  {psnr:8.2f}  {bpp:8.4f}")


if __name__ == "__main__":
    main()
