"""The rate-distortion cost of coding an image as independent tiles.

    python -m xcodec.tools.tiling ../shared/data/kodak --tiles 0,256 --qualities 1,4,8

Encodes and decodes every image of a folder with each tile size (0: one tile) on the CPU and prints
mean bpp and PSNR per quality and tile size, and the change against the first tile size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from .. import api
from ..files import list_images
from ..metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tiles", default="0,256")
    parser.add_argument("--qualities", default="1,4,8")
    args = parser.parse_args()
    paths = list_images(args.folder)
    tiles = [int(t) for t in args.tiles.split(",")]
    print(f"{len(paths)} images from {args.folder}\n")
    print("| quality | tile | bpp | PSNR dB | bpp change | PSNR change dB |")
    print("|---|---|---|---|---|---|")
    for quality in (float(q) for q in args.qualities.split(",")):
        means = []
        for tile in tiles:
            bpp, db = [], []
            for path in paths:
                with Image.open(path) as image:
                    original = image.convert("RGB")
                data = api.encode(original, quality, device="cpu", tile=tile)
                bpp.append(8 * len(data) / (original.width * original.height))
                db.append(psnr(np.asarray(original), np.asarray(api.decode(data, device="cpu").convert("RGB"))))
            means.append((np.mean(bpp), np.mean(db)))
            (b0, d0), (b, d) = means[0], means[-1]
            print(f"| {quality:g} | {tile or 'one'} | {b:.4f} | {d:.2f} | {100 * (b / b0 - 1):+.1f}% | {d - d0:+.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
