"""Where the bits of a ``wavelet`` file go: each level, channel and band's share of the real file,
and what the exact context networks cost against their float originals.

    python -m xcodec.tools.bits ../shared/data/kodak --qualities 1,4,8 --act-bits 8

Each image is coded as one tile at the default effort, as ``xcodec encode`` codes a Kodak photo:
the file's size comes from ``api.encode`` (container included), each part's bits from the
encoder's own code length (``coded_bits``, what ANS spends within a few words), and the
remainder (container, ANS words) is the overhead. Shares are of the bits of all the images
together. On the symbols the coder chose, the tool also counts the detail bands' bits under the
shipped exact networks' Laplacians (each sign a bit, as before format version 10 coded the second
passes' signs with contexts), under the float context networks (``ContextModel.log_scales``:
float weights and activations, scales not rounded to the table) and under exact networks with
other fixed-point activations (``--act-bits``; float64, where 8 fractional bits outgrow float32's
exact range), and what the signs cost at a bit each against an adaptive code with a context along
the band's edges (``sign_bits``, an estimate: version 10's files code the second passes' so).
Those are code lengths, not files: the symbols stay those of the shipped networks.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import api
from ..files import list_images
from ..models import zoo
from ..models.codec import checkerboard, to_tensor
from ..models.wavelet.bands import Band
from ..models.wavelet.codec import Part, WaveletCodec
from ..models.wavelet.context import ContextModel, pass_values
from ..models.wavelet.lifting import level_count
from ..models.wavelet.bands import subband_shapes
from ..models.wavelet.quantise import symbol_limit
from ..models.wavelet.rate import SCALES, coded_bits

CHANNEL_NAMES = ("Y", "Cb", "Cr")


def float_bits(context: ContextModel, planes: dict[Band, torch.Tensor], quality: float) -> float:
    """Code length of the detail symbols ``planes`` under the float context networks."""
    scales = context.log_scales(planes, torch.tensor([quality], dtype=torch.float64))
    return sum(float(coded_bits(q, scales[band].double(), symbol_limit(band[0])).sum()) for band, q in planes.items())


def exact_bits(context: ContextModel, planes: dict[Band, torch.Tensor], shapes: list, quality: float) -> float:
    """Code length of the detail symbols ``planes`` under ``context``'s exact networks (its walk, replayed)."""
    total = 0.0

    def replay(band: Band, step: int, index: torch.Tensor, contexts: torch.Tensor | None) -> torch.Tensor:
        nonlocal total
        symbols = pass_values(planes[band][0], step)
        total += float(coded_bits(symbols, torch.from_numpy(np.log(SCALES[index.numpy()])), symbol_limit(band[0])).sum())
        return symbols

    context.walk(shapes, quality, replay)
    return total


def kt_bits(negative: int, positive: int) -> float:
    """Code length of a binary sequence with these counts under the Krichevsky-Trofimov estimator
    (an adaptive code that learns the probability as it goes; independent of the order)."""
    n = negative + positive
    return -(math.lgamma(negative + 0.5) + math.lgamma(positive + 0.5) - math.lgamma(n + 1) - math.log(math.pi)) / math.log(2)


def sign_bits(planes: dict[Band, torch.Tensor]) -> tuple[int, float]:
    """The detail symbols' signs: how many (a bit each in the file: the Laplacian is symmetric), and
    their code length under an adaptive binary code whose context the decoder would have: for the
    second pass, the sum of the signs of the anchors along the band's edges (HL: above and below;
    LH: left and right; HH: all four), for the anchors none; one set of contexts per level (levels
    3 and up together), orientation and luma or chroma, learned within the image."""
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for (level, c, o), plane in planes.items():
        s = np.sign(plane[0].numpy()).astype(np.int64)
        pad = np.pad(s, 1)
        vertical, horizontal = pad[:-2, 1:-1] + pad[2:, 1:-1], pad[1:-1, :-2] + pad[1:-1, 2:]
        along = (vertical, horizontal, vertical + horizontal)[o].clip(-2, 2)
        context = np.where(checkerboard(*s.shape).numpy(), 3, along)
        for value in np.unique(context[s != 0]):
            chosen = s[(s != 0) & (context == value)]
            count = counts[(min(level, 3), o, c > 0, int(value))]
            count[0] += int((chosen < 0).sum())
            count[1] += int((chosen > 0).sum())
    return sum(map(sum, counts.values())), sum(kt_bits(*count) for count in counts.values())


def with_act_bits(context: ContextModel, act_bits: int) -> ContextModel:
    """A copy of ``context`` whose exact networks keep ``act_bits`` fractional bits (in float64)."""
    variant = copy.copy(context)
    variant.prepare_inference(act_bits, torch.float64)
    return variant


def measure(model: WaveletCodec, name: str, paths: list[Path], qualities: list[float], act_bits: list[int]) -> dict:
    """Per quality: the file bits, each part's bits, and the detail bands' bits under each variant."""
    variants = {bits: with_act_bits(model.context, bits) for bits in act_bits}
    totals = {q: {"file": 0.0, "pixels": 0, "signs": 0, "sign context": 0.0, "parts": defaultdict(float), "detail": defaultdict(float)} for q in qualities}
    for path in paths:
        image = Image.open(path).convert("RGB")
        x = to_tensor(np.asarray(image))
        height, width = x.shape[-2:]
        shapes = subband_shapes(height, width, level_count(height, width, model.levels))
        code = model.coder(x, model.default_effort, count_bits=True)
        for q in qualities:
            t = totals[q]
            t["file"] += 8 * len(api.encode(image, quality=q, model=name, device="cpu", strip=True))
            t["pixels"] += height * width
            coded = code(q)
            for part, bits in coded.bits.items():
                t["parts"][part] += bits
            with torch.inference_mode():
                t["detail"]["exact"] += exact_bits(model.context, coded.planes, shapes, q)
                t["detail"]["float"] += float_bits(model.context, coded.planes, q)
                for bits, variant in variants.items():
                    t["detail"][f"act {bits}"] += exact_bits(variant, coded.planes, shapes, q)
            signs, bits = sign_bits(coded.planes)
            t["signs"] += signs
            t["sign context"] += bits
    return totals


def share_table(totals: dict, key, label: str) -> list[str]:
    """Markdown rows: each group of parts (``key(part)``) as a percentage of the file, per quality."""
    qualities = list(totals)
    groups = sorted({key(part) for q in qualities for part in totals[q]["parts"]}, key=lambda g: (-g[0], *g[1:]))
    rows = [f"| {label} | " + " | ".join(f"q{q:g}" for q in qualities) + " |", "|---|" + "---:|" * len(qualities)]
    for group in groups:
        cells = []
        for q in qualities:
            bits = sum(b for part, b in totals[q]["parts"].items() if key(part) == group)
            cells.append(f"{100 * bits / totals[q]['file']:.1f}%")
        rows.append(f"| {describe(group)} | " + " | ".join(cells) + " |")
    return rows


def describe(group: tuple) -> str:
    level, rest = group[0], group[1:]
    names = [CHANNEL_NAMES[r] if isinstance(r, int) else r.upper() for r in rest]
    return " ".join([f"level {level}", *names])


def summary(totals: dict, act_bits: list[int]) -> list[str]:
    qualities = list(totals)
    rows = ["| | " + " | ".join(f"q{q:g}" for q in qualities) + " |", "|---|" + "---:|" * len(qualities)]

    def row(label: str, value) -> None:
        rows.append(f"| {label} | " + " | ".join(value(totals[q]) for q in qualities) + " |")

    row("file, bpp", lambda t: f"{t['file'] / t['pixels']:.4f}")
    row("container and ANS words", lambda t: f"{100 * (t['file'] - sum(t['parts'].values())) / t['file']:.2f}%")
    row("low band (all channels)", lambda t: f"{100 * sum(b for p, b in t['parts'].items() if p[2] == 'll') / t['file']:.1f}%")
    row("detail bands, exact context", lambda t: f"{100 * sum(b for p, b in t['parts'].items() if p[2] != 'll') / t['file']:.1f}%")
    for variant in ["float", *(f"act {bits}" for bits in act_bits)]:
        label = "float context networks" if variant == "float" else f"exact, {variant.split()[1]}-bit activations"
        row(f"detail bits, a bit per sign: {label} vs exact", lambda t, v=variant: f"{100 * (t['detail'][v] / t['detail']['exact'] - 1):+.2f}%")
    row("signs of the detail symbols (a bit each)", lambda t: f"{100 * t['signs'] / t['file']:.1f}%")
    row("file: signs under a context along the edges (estimate)", lambda t: f"{100 * (t['sign context'] - t['signs']) / t['file']:+.2f}%")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="wavelet", help="an installed model of the wavelet architecture")
    parser.add_argument("--qualities", default="1,4,8")
    parser.add_argument("--images", type=int, default=0, help="the first N images of the folder (0: all)")
    parser.add_argument("--act-bits", default="", help="fractional activation bits to try in the exact networks, e.g. 6,8")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, manifest = zoo.load(args.model)
    if not isinstance(model, WaveletCodec):
        parser.exit(2, f"{args.model} is a {manifest.arch} model: this tool reads the wavelet model's bands\n")
    paths = list_images(args.folder)[: args.images or None]
    qualities = [float(q) for q in args.qualities.split(",")]
    act_bits = [int(b) for b in args.act_bits.split(",") if b]
    totals = measure(model, args.model, paths, qualities, act_bits)
    print(f"{args.model}: {len(paths)} images of {args.folder}, effort {model.default_effort}; shares of the files' bits\n")
    print("\n".join(summary(totals, act_bits)) + "\n")
    print("\n".join(share_table(totals, lambda p: (p[0], p[1]), "level, channel")) + "\n")
    print("\n".join(share_table(totals, lambda p: (p[0], p[2]), "level, band")))


if __name__ == "__main__":
    main()
