"""Fit the lossless coder's table (Laplacian scales per context bin, token histograms) on training photos.

    python -m xcodec.lossless.fit ../shared/data/train --images 24   # writes weights/lossless-3.*
    python -m xcodec.lossless.fit ../shared/data/train --images 24 --start lossless-2   # its first fit

The training photos are JPEGs; each is downscaled by 2 (box filter), which hides most of the JPEG
artefacts, and cut to at most 512 x 512 pixels. The encoder's walk runs on every image with a
recording coder; each bin's scale is the maximum-likelihood one of the discretised Laplacian over a
fine log-spaced grid (the generation encoders write, ``tables.NAME``). Each token context's prior
histogram is its tokens' counts in those walks, plus a discretised Laplacian of the context's
scale and centre worth ``LAPLACE_WEIGHT`` tokens (which is all that contexts the photos never
reach, such as 16-bit scales, get), in ``PRIOR_TOTAL`` units. The walk adapts both online, starting
from the installed table's scales (``--start``: another generation's, for a generation's first fit):
a refit on the same photos changes it little.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save

from ..files import sha256, write_atomic
from ..models.manifest import WEIGHTS_DIR
from .codec import fit
from . import tables
from .tables import NAME
from .tokens import PRIOR_TOTAL, SCALE_EDGES, Histograms
from .walk import BINS, DESIGNS, Batch, Grid, Quantiser, padded, walk

GRID = np.exp(np.linspace(np.log(0.05), np.log(400.0), 400))
CROP = 512
LAPLACE_WEIGHT = 64  # tokens' worth of a Laplacian in each context's prior
ALPHABET = DESIGNS[NAME].alphabet


def training_images(root: Path, count: int) -> list[np.ndarray]:
    """Every k-th photo under ``root`` (sorted), halved and cropped: (3, H, W) samples in G, R, B order."""
    paths = sorted(root.rglob("*.jpg"))
    chosen = paths[:: max(1, len(paths) // count)][:count]
    images = []
    for path in chosen:
        image = Image.open(path).convert("RGB")
        image = image.reduce(2)
        rgb = np.asarray(image, dtype=np.int64)[:CROP, :CROP]
        images.append(rgb.transpose(2, 0, 1)[[1, 0, 2]])
    return images


def residuals(samples: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Context bins and residuals (sample minus the centre of its Laplacian) of a lossless walk,
    and its token counts per token context (flattened ``ALPHABET.counts_shape``); ``scales``: the
    walk's prior."""
    planes, height, width = samples.shape
    grid, quantiser = Grid(height, width, planes, DESIGNS[NAME]), Quantiser(8, 0)
    original = samples.reshape(-1).take(grid.order)
    shape = ALPHABET.counts_shape
    histograms = Histograms(np.zeros(shape, dtype=np.int64), planes, quantiser.limit, ALPHABET)
    offset = ALPHABET.tokens - histograms.tokens  # from the 8-bit alphabet to the table's
    bins, res, counts = [], [], np.zeros(int(np.prod(shape)), dtype=np.int64)
    size = shape[-1]

    def record(batch: Batch) -> np.ndarray:
        x = original[batch.span]
        bins.append(batch.bins)
        res.append(x - batch.prediction - batch.mean)
        contexts = histograms.contexts(batch.plane, batch.mean, batch.scale)
        symbols = histograms.symbols(x - batch.prediction, batch.mean)[0] + offset
        counts[:] += np.bincount(contexts * size + symbols, minlength=counts.size)
        return x

    image = padded(samples, grid, 8)
    walk(grid, quantiser, fit(image, grid, 8)[0], scales, record, image)
    return np.concatenate(bins), np.concatenate(res), counts


def laplace_bits(r: np.ndarray, scale: float) -> float:
    """Code length in bits of residuals ``r`` under a discretised Laplacian (centre 0)."""
    upper, lower = r + 0.5, r - 0.5
    cdf = lambda v: np.where(v < 0, 0.5 * np.exp(np.minimum(v, 0) / scale), 1 - 0.5 * np.exp(-np.maximum(v, 0) / scale))  # noqa: E731
    return float(-np.log2(np.maximum(cdf(upper) - cdf(lower), 2.0**-24)).sum())


def fit_scales(contexts: np.ndarray, res: np.ndarray, count: int = BINS) -> np.ndarray:
    """The maximum-likelihood scale of the residuals of each context bin, made non-decreasing."""
    scales = np.empty(count)
    for k in range(count):
        r = res[contexts == k]
        if r.size < 100:  # an empty bin (the largest activities): extrapolate geometrically
            scales[k] = scales[k - 1] * scales[k - 1] / scales[k - 2]
            continue
        sample = r[:: max(1, r.size // 200_000)]
        scales[k] = GRID[int(np.argmin([laplace_bits(sample, s) for s in GRID]))]
    return np.maximum.accumulate(scales)  # sparse top bins can dip; activity never means a narrower law


def laplace_counts() -> np.ndarray:
    """Per token context, the token probabilities of a discretised Laplacian of the context's scale
    (its bucket's lower edge; 1/64 for the first) and centre (1/8 or 3/8 of a step), ``ALPHABET.counts_shape``."""
    values = np.arange(-(1 << 16) + 1, 1 << 16)
    token, _, _ = ALPHABET.split(np.abs(values))
    symbols = ALPHABET.tokens - 1 + np.sign(values) * token
    shape = ALPHABET.counts_shape
    table = np.zeros(shape)
    for bucket, scale in enumerate(np.concatenate([[1 / 64], SCALE_EDGES])):
        for level, centre in enumerate((0.125, 0.375)):
            cdf = lambda v: np.where(v < 0, 0.5 * np.exp(np.minimum(v, 0) / scale), 1 - 0.5 * np.exp(-np.maximum(v, 0) / scale))  # noqa: E731
            pmf = cdf(values - centre + 0.5) - cdf(values - centre - 0.5)
            table[:, bucket, level] = np.bincount(symbols, pmf, shape[-1])
    return table / table.sum(-1, keepdims=True)


def prior_counts(counts: np.ndarray) -> np.ndarray:
    """The shipped prior: each context's token counts plus its Laplacian, in PRIOR_TOTAL units."""
    mixed = counts.reshape(ALPHABET.counts_shape) + LAPLACE_WEIGHT * laplace_counts()
    return np.round(PRIOR_TOTAL * mixed / mixed.sum(-1, keepdims=True)).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--start", default=NAME, help="the generation whose installed scales the walks start from")
    args = parser.parse_args()
    images = training_images(args.root, args.images)
    start = tables.load(args.start)[0].scales
    walks = [residuals(image, start) for image in images]
    scales = fit_scales(np.concatenate([b for b, _, _ in walks]), np.concatenate([r for _, r, _ in walks]))
    counts = prior_counts(sum(c for _, _, c in walks))
    path = args.out / f"{NAME}.safetensors"
    write_atomic(path, save({"scales": scales, "counts": counts}))
    pixels = sum(image[0].size for image in images)
    info = {"note": f"scale table and token histograms fitted by python -m xcodec.lossless.fit on {len(images)} training photos "
                    f"({pixels} pixels, each halved and cropped to {CROP})"}
    manifest = {"arch": NAME, "config": {"bins": BINS}, "sha256": sha256(path), "info": info}
    write_atomic(args.out / f"{NAME}.json", (json.dumps(manifest, indent=2) + "\n").encode())
    print(np.array2string(scales, precision=3))


if __name__ == "__main__":
    main()
