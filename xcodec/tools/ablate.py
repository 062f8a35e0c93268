"""Post-filters compared on real files: the post-filters of training runs (their ``last.pt``, e.g. the
ablations of ``xcodec train --stage postfilter --fresh postfilter --model-config '{"postfilter":
{...}}'``) and the shipped ones (of versions up to 10, and from 11 on when the model ships one:
``convfilter``), each applied by the decoder to the same files of the shipped model.

    python -m xcodec.tools.ablate ../shared/data/kodak --images 8 --runs runs/ablate-full runs/ablate-link

Each image is encoded once per quality (effort 1, tiles of the API's default size: the post-filter
changes no bit of the file) and its tiles decoded once (``--cache DIR`` keeps both for the next
call, which then runs the post-filters alone); the model's ``postprocess`` then runs with each
post-filter as the only one of the model, as ``api.decode`` does (the output of the filter of the
file's version is checked against ``api.decode``'s pixels), and without one: PSNR of the 8-bit
output and the file's bits per pixel, averaged over the images per quality; BD-rate (PSNR) against
the first run, or without runs the shipped filter of versions up to 10. Every run must keep the
shipped codec (the ``postfilter`` stage does).
Time: CPU seconds (``time.process_time``, best of two per tile) of the post-filter alone on the
decoded tiles, as the decoder runs it, per image of the first ``--time-images`` at quality 4, on
the caller's threads.
"""

from __future__ import annotations

import argparse
import hashlib
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
    codec = {k: v for k, v in shipped.state_dict().items() if not k.startswith(("postfilter.", "perceptual.", "convfilter."))}
    trained = model.state_dict()
    if not all(k in trained and torch.equal(trained[k], v) for k, v in codec.items()):
        raise SystemExit(f"{run_dir}: not trained on the shipped codec")
    print(f"{run_dir}: step {state['step']}, {state['elapsed'] / 60:.1f} min, {state['arch_config']['postfilter']}")
    return model.postfilter.eval()


@contextmanager
def postfilter_of(model: WaveletCodec, postfilter: PostFilter | None):
    """The shipped ``model`` (the decoder's cached instance) with ``postfilter`` as its only one, for
    every format version."""
    shipped = model.postfilter, model.convfilter
    model.postfilter, model.convfilter = postfilter, None
    try:
        yield
    finally:
        model.postfilter, model.convfilter = shipped


Tiles = list[tuple[tuple[int, int, int, int], torch.Tensor]]  # each tile's box and decoded image


def reconstruction(model: WaveletCodec, data: bytes) -> tuple[Tiles, Header]:
    """The decoder's tiles of a file before the post-filter (box: top, left, height, width), and the file's header."""
    table = container.read_table(data)
    header = table.header
    with torch.inference_mode():
        return [(box, model.decompress(payloads, *box[2:], header.quality, torch.device("cpu"), header.version))
                for box, payloads in zip(header.tile_boxes(), container.tile_streams(table.bitstream()))], header


def coded(model: WaveletCodec, image: Image.Image, name: str, quality: float,
          args: argparse.Namespace) -> tuple[bytes, Tiles, Header]:
    """The file of ``image`` at ``quality`` and its tiles before the post-filter; with ``--cache``,
    both kept there for the next call, the file as long as the model would write the same one (its
    weights, format version and the image's size), its tiles under the file's hash."""
    if args.cache is None:
        data = api.encode(image, quality, args.model, threads=args.threads)
        return data, *reconstruction(model, data)
    file = args.cache / f"{name}-q{quality:g}.xsc"
    stored = lambda data: args.cache / f"{name}-q{quality:g}-{hashlib.sha256(data).hexdigest()[:16]}.pt"  # noqa: E731
    if file.exists():
        data = file.read_bytes()
        header = container.read_table(data).header
        if stored(data).exists() and (header.model_hash, header.version, header.width, header.height) == (
                zoo.read_manifest(args.model).model_hash, model.file_version, *image.size):
            return data, torch.load(stored(data), weights_only=True), header
    data = api.encode(image, quality, args.model, threads=args.threads)
    tiles, header = reconstruction(model, data)
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.save(tiles, stored(data))
    file.write_bytes(data)
    return data, tiles, header


def filtered(model: WaveletCodec, tiles: Tiles, header: Header) -> np.ndarray:
    """The 8-bit image of ``model``'s post-filter on each tile, as ``api.decode`` puts it together."""
    image = np.empty((header.height, header.width, 3), np.uint8)
    for (top, left, height, width), x_hat in tiles:
        with torch.inference_mode():
            (out,) = model.postprocess(x_hat, header.quality, version=header.version)
        rows, cols = min(height, header.height - top), min(width, header.width - left)
        out = out[0, :, :rows, :cols].mul(255).round().clamp(0, 255)
        image[top : top + rows, left : left + cols] = out.byte().permute(1, 2, 0).numpy()
    return image


def filter_seconds(postfilter: PostFilter, decoded: list[Tiles]) -> float:
    """Mean CPU seconds per image of ``postfilter`` on the tiles of ``decoded`` (best of two per
    tile), as ``postprocess`` runs it."""
    quality = torch.tensor([TIMED_QUALITY])
    seconds = []
    with torch.inference_mode():
        for tiles in decoded:
            total = 0.0
            for _, x_hat in tiles:
                runs = []
                for _ in range(2):
                    start = time.process_time()
                    postfilter(x_hat, quality, None, GLOBAL_TOKENS).clamp(0, 1)
                    runs.append(time.process_time() - start)
                total += min(runs)
            seconds.append(total)
    return float(np.mean(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="training run folders of the wavelet model (the first: the anchor)")
    parser.add_argument("--model", default="wavelet", help="the shipped model that codes the files")
    parser.add_argument("--qualities", default="1,2,3,4,6,8")
    parser.add_argument("--images", type=int, default=0, help="the first N images of the folder (0: all)")
    parser.add_argument("--time-images", type=int, default=4, help="0: no timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="keep the files and their decoded tiles here for the next call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped, _ = zoo.load(args.model)
    shipped_filters = {f"{args.model} (versions <= 10)": shipped.postfilter}
    if shipped.convfilter is not None:
        shipped_filters[f"{args.model} (version {container.FILTER_VERSION})"] = shipped.convfilter
    filters = {"none": None, **shipped_filters, **{str(run): load_run(run, shipped) for run in args.runs}}
    qualities = [float(q) for q in args.qualities.split(",")]
    cache = args.cache and args.cache.resolve()  # its files are images too (the Pillow plugin): not those of the folder
    paths = [path for path in list_images(args.folder) if not cache or cache not in path.resolve().parents][: args.images or None]
    bpp, scores = np.zeros((len(paths), len(qualities))), {name: np.zeros((len(paths), len(qualities))) for name in filters}
    decoded = []
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        rgb = np.asarray(image)
        for j, quality in enumerate(qualities):
            data, tiles, header = coded(shipped, image, path.stem, quality, args)
            bpp[i, j] = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
            for name, postfilter in filters.items():
                with postfilter_of(shipped, postfilter):
                    out = filtered(shipped, tiles, header)
                if filters[name] is shipped.filter_for(header.version) and not np.array_equal(
                        out, np.asarray(api.decode(data, threads=args.threads))):
                    raise SystemExit(f"{path.name} at quality {quality:g}: not the decoder's pixels")
                scores[name][i, j] = psnr(out, rgb)
            if quality == TIMED_QUALITY and i < args.time_images:
                decoded.append(tiles)
        print(f"{path.name}: " + "  ".join(f"{name} {scores[name][i].mean():.3f}" for name in filters), flush=True)
    first = str(args.runs[0]) if args.runs else next(iter(shipped_filters))
    rate, anchor = bpp.mean(0), scores[first].mean(0)
    print(f"\n{len(paths)} images of {args.folder}, qualities {args.qualities}: bpp " + " ".join(f"{b:.3f}" for b in rate))
    print(f"BD-rate (PSNR) vs {first}; post-filter CPU s per image at quality {TIMED_QUALITY:g} "
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
