"""Post-filters compared on real files: the post-filters of training runs (their ``last.pt``, e.g. the
ablations of ``xcodec train --stage postfilter --fresh postfilter --model-config '{"postfilter":
{...}}'``) and the shipped one, each applied by the decoder to the same files of the shipped model.

    python -m xcodec.tools.ablate ../shared/data/kodak --images 8 --runs runs/ablate-full runs/ablate-link

Each image (one tile: Kodak's size) is encoded once per quality (the post-filter changes no bit of
the file) and its tile decoded once; the model's ``postprocess`` then runs with each post-filter in
the shipped one's place, as ``api.decode`` does (the shipped filter's output is checked against
``api.decode``'s pixels), and without one: PSNR of the 8-bit output and the file's bits per pixel,
averaged over the images per quality; BD-rate (PSNR) against the first run. Every run must keep the
shipped codec (the ``postfilter`` stage does).
Time: CPU seconds (``time.process_time``, best of two) of the post-filter alone on the decoded
image, as the decoder runs it, per image of the first ``--time-images`` at quality 4, on the
caller's threads.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import api, container
from ..bench.bdrate import bd_rate
from ..container import Header
from ..files import list_images
from ..metrics import psnr
from ..models import zoo
from ..models.postfilter import PostFilter
from ..models.wavelet.codec import GLOBAL_TOKENS, WaveletCodec

TIMED_QUALITY = 4.0


def load_run(run_dir: Path, shipped: WaveletCodec) -> PostFilter:
    """The post-filter of a training run's last checkpoint, refused unless the run kept the shipped codec."""
    model, state = zoo.from_checkpoint(run_dir / "last.pt")
    codec = {k: v for k, v in shipped.state_dict().items() if not k.startswith(("postfilter.", "perceptual."))}
    trained = model.state_dict()
    if not all(k in trained and torch.equal(trained[k], v) for k, v in codec.items()):
        raise SystemExit(f"{run_dir}: not trained on the shipped codec")
    print(f"{run_dir}: step {state['step']}, {state['elapsed'] / 60:.1f} min, {state['arch_config']['postfilter']}")
    return model.postfilter.eval()


@contextmanager
def postfilter_of(model: WaveletCodec, postfilter: PostFilter | None):
    """The shipped ``model`` (the decoder's cached instance) with ``postfilter`` in its own's place."""
    shipped = model.postfilter
    model.postfilter = postfilter
    try:
        yield
    finally:
        model.postfilter = shipped


def reconstruction(model: WaveletCodec, data: bytes) -> tuple[torch.Tensor, Header]:
    """The decoder's image of a one-tile file before the post-filter, and the file's header."""
    table = container.read_table(data)
    header = table.header
    if header.tiles != 1:
        raise SystemExit(f"a file of {header.tiles} tiles: this compares post-filters on one-tile images")
    (payloads,) = container.tile_streams(table.bitstream())
    with torch.inference_mode():
        return model.decompress(payloads, *header.padded_size, header.quality, torch.device("cpu"), header.version), header


def filter_seconds(postfilter: PostFilter, decoded: list[torch.Tensor]) -> float:
    """Mean CPU seconds per image of ``postfilter`` on ``decoded`` (best of two), as ``postprocess`` runs it."""
    quality = torch.tensor([TIMED_QUALITY])
    seconds = []
    with torch.inference_mode():
        for x_hat in decoded:
            runs = []
            for _ in range(2):
                start = time.process_time()
                postfilter(x_hat, quality, None, GLOBAL_TOKENS).clamp(0, 1)
                runs.append(time.process_time() - start)
            seconds.append(min(runs))
    return float(np.mean(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=Path, nargs="+", help="training run folders of the wavelet model (the first: the anchor)")
    parser.add_argument("--model", default="wavelet", help="the shipped model that codes the files")
    parser.add_argument("--qualities", default="1,2,3,4,6,8")
    parser.add_argument("--images", type=int, default=0, help="the first N images of the folder (0: all)")
    parser.add_argument("--time-images", type=int, default=4, help="0: no timing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped, _ = zoo.load(args.model)
    filters = {"none": None, f"{args.model} (shipped)": shipped.postfilter,
               **{str(run): load_run(run, shipped) for run in args.runs}}
    qualities = [float(q) for q in args.qualities.split(",")]
    paths = list_images(args.folder)[: args.images or None]
    bpp, scores = np.zeros((len(paths), len(qualities))), {name: np.zeros((len(paths), len(qualities))) for name in filters}
    decoded = []
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        rgb = np.asarray(image)
        for j, quality in enumerate(qualities):
            data = api.encode(image, quality, args.model, threads=args.threads)
            bpp[i, j] = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
            x_hat, header = reconstruction(shipped, data)
            for name, postfilter in filters.items():
                with postfilter_of(shipped, postfilter), torch.inference_mode():
                    (out,) = shipped.postprocess(x_hat, header.quality, version=header.version)
                out = out[0, :, : header.height, : header.width].mul(255).round().clamp(0, 255)  # as api.decode
                out = out.byte().permute(1, 2, 0).numpy()
                if name == f"{args.model} (shipped)" and not np.array_equal(out, np.asarray(api.decode(data, threads=args.threads))):
                    raise SystemExit(f"{path.name} at quality {quality:g}: not the decoder's pixels")
                scores[name][i, j] = psnr(out, rgb)
            if quality == TIMED_QUALITY and i < args.time_images:
                decoded.append(x_hat)
        print(f"{path.name}: " + "  ".join(f"{name} {scores[name][i].mean():.3f}" for name in filters), flush=True)
    rate, anchor = bpp.mean(0), scores[str(args.runs[0])].mean(0)
    print(f"\n{len(paths)} images of {args.folder}, qualities {args.qualities}: bpp " + " ".join(f"{b:.3f}" for b in rate))
    print(f"BD-rate (PSNR) vs {args.runs[0]}; post-filter CPU s per image at quality {TIMED_QUALITY:g} "
          f"({len(decoded)} images, {args.threads} thread(s))\n")
    print("| post-filter | parameters | CPU s per image | PSNR gain, dB | BD-rate | " + " | ".join(f"q{q:g} dB" for q in qualities) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(qualities))
    for name, postfilter in filters.items():
        psnrs = scores[name].mean(0)
        gain = float((psnrs - scores["none"].mean(0)).mean())
        parameters = f"{sum(p.numel() for p in postfilter.parameters()):,}" if postfilter else "0"
        seconds = "0" if postfilter is None else f"{filter_seconds(postfilter, decoded):.3f}" if decoded else "-"
        cells = " | ".join(f"{v:.3f}" for v in psnrs)
        print(f"| {name} | {parameters} | {seconds} | {gain:+.3f} | {bd_rate(rate, anchor, rate, psnrs).format()} | {cells} |")


if __name__ == "__main__":
    main()
