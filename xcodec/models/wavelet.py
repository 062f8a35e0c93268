"""The ``wavelet`` model: learned lifting from CDF 9/7, dead-zone quantisation, a cross-scale context model.

Pipeline (one tile; any size, no padding)::

    RGB - 128 -> colour matrix (JPEG 2000 ICT at initialisation) -> L-level lifting wavelet
    -> per-band dead-zone quantiser -> integer coefficients -> ANS with context Laplacians
    decoder: the same in reverse, then an optional post-filter (``postfilter.py``) on the image

Coding order (one walk shared by encoder and decoder, ``ContextModel.walk``): the coarsest low band
first (2D-difference DPCM, one Laplacian scale per channel sent in the stream), then level by
level from coarse to fine; inside a level channel by channel (Y, Cb, Cr), inside a channel the
bands HL, LH, HH; each band in two checkerboard passes (anchors, then the rest), each pass decoded
at once. A coefficient's Laplacian scale comes from a small convolutional network (one per level,
channel and band, with a head per pass) of the magnitudes already decoded: the parent band one level coarser
(cross-scale), the sibling bands of the same level, the same band of the earlier colour channels,
the band's own anchors (second pass), and the quality. The networks run in integer-exact
arithmetic (``ExactConvNet``) on integer inputs, and the scale index is an integer function of
their output, so the decoder selects the same probabilities as the encoder on any machine.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..entropy import PRECISION, SYMBOL_LIMIT, StreamReader, StreamWriter
from .codec import Codec, checkerboard, one_thread
from .exact import ExactConvNet
from .lifting import ORIENTATIONS, Wavelet2D, level_count, synthesis_norms
from .perceptual import PerceptualHead, draw_noise
from .postfilter import PostFilter

LEVELS = 5
CHANNELS = 3
# Global quantiser step (8-bit pixel units) at quality 1 and 8, log-linear in between.
STEP_Q1, STEP_Q8 = 120.0, 6.0
DEADZONE = 0.3  # encoder rounding at effort 0: q = sign(x) floor(|x| / step + DEADZONE)
RDO_LAMBDA = 0.15  # effort 1: squared error (in steps) per bit (measured best of 0.08, 0.15, 0.25)
RECON = 0.1  # initial decoder offset: x = sign(q) (|q| + RECON) step
ICT = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))

# Fixed point of the exact context networks (float32): weights in 1/256, activations in 1/16.
WEIGHT_BITS, ACT_BITS = 8, 4
# Laplacian scales (in quantiser steps) the coder may use: SCALE_MIN * SCALE_RATIO**i. The table
# is built by repeated float64 multiplication of two literals (no libm), so it is identical on
# every machine; entry i stands for the natural log  (SCALE_LOG_MIN + i * SCALE_LOG_STEP) / 2**SCALE_BITS.
SCALE_MIN, SCALE_RATIO = 0.011108996538242306, 1.0098134643159469  # exp(-4.5), exp(10 / 1024)
SCALE_BITS, SCALE_LOG_MIN, SCALE_LOG_STEP, SCALE_COUNT = 10, -4.5 * 2**10, 10, 1200
MAGNITUDE_CAP = 1023  # context inputs see min(|q|, cap)
# Symbol ranges: the finest level's coefficients stay far inside +-511 at every quality (its steps
# are the largest), the other levels inside +-4095; the low band's DPCM residuals need more.
FINEST_LIMIT, LOW_LIMIT = 511, (1 << 15) - 1
FRACTION = 2**ACT_BITS  # context inputs are multiples of 1/16, so that the exact networks can run in float32
MAX_TRAINING_BITS = 100.0  # per coefficient, in the training forward's likelihoods
SUPPORT = 6  # context inputs shared by both passes: parent, 2 siblings, 2 earlier colours, quality


def scale_table() -> np.ndarray:
    table = np.empty(SCALE_COUNT)
    value = SCALE_MIN
    for i in range(SCALE_COUNT):
        table[i] = value
        value *= SCALE_RATIO
    return table


SCALES = scale_table()


def scale_index(log_scale_fixed: Tensor) -> Tensor:
    """Table index of fixed-point natural-log scales: an exact integer floor, clamped to the table."""
    return torch.floor((log_scale_fixed - SCALE_LOG_MIN) / SCALE_LOG_STEP).clamp(0, SCALE_COUNT - 1).long()


def step_for(quality: Tensor) -> Tensor:
    """Global quantiser step for (fractional) qualities in [1, 8]."""
    t = (quality - 1) / 7
    return torch.exp(math.log(STEP_Q1) + t * (math.log(STEP_Q8) - math.log(STEP_Q1)))


def lg(q: Tensor) -> Tensor:
    """A piecewise-linear log2(1 + |q|) of integers in 1/16 steps: 0, 1, 2, 2.5, 3, ... for 0, 1, 2, 3, 4.

    ``frexp``, products by powers of two and ``floor`` are exact, so the encoder and the decoder
    compute the same context inputs on any machine.
    """
    mantissa, exponent = torch.frexp(q.detach().abs().clamp(max=MAGNITUDE_CAP).double())
    return torch.where(q == 0, 0.0, torch.floor((exponent + 2 * mantissa - 1) * FRACTION + 0.5) / FRACTION)


def quality_feature(quality: Tensor) -> Tensor:
    """The quality as a context input, in the same 1/16 steps."""
    return torch.floor(quality.double() * FRACTION + 0.5) / FRACTION


def laplace_bits(q: Tensor, log_scale: Tensor) -> Tensor:
    """Bits of integer ``q`` under a zero-mean Laplacian quantised to unit bins: the coder's model,
    less the minimal probability constriction gives every symbol of the range."""
    b = torch.exp(log_scale.clamp(SCALE_LOG_MIN / 2**SCALE_BITS, math.log(SCALES[-1])))
    a = q.abs()
    log_zero = torch.log(-torch.expm1(-0.5 / b))
    log_other = math.log(0.5) - (a - 0.5) / b + torch.log(-torch.expm1(-1 / b))
    return -torch.where(a == 0, log_zero, log_other) / math.log(2)


def coded_bits(q: Tensor, log_scale: Tensor, limit: int) -> Tensor:
    """Bits of integer ``q`` as the coder spends them: ``laplace_bits``, with every symbol of the
    range +-``limit`` given at least constriction's minimal probability. A surprising symbol at a
    tiny scale costs 24 bits, not the Laplacian's 60 or more; the floors' total mass is taken from
    the others (about 1% of a Kodak file at quality 1, mostly zeros). The estimate of a file's size."""
    floor = 2.0**-PRECISION
    p = torch.exp2(-laplace_bits(q, log_scale)) * (1 - (2 * limit + 1) * floor)
    return -torch.log2(torch.clamp(p, min=floor))


def ste(x: Tensor, offset: float) -> Tensor:
    """Dead-zone rounding sign(x) floor(|x| + offset) forward, identity gradient backward."""
    return x + (torch.sign(x) * torch.floor(x.abs() + offset) - x).detach()


def symbol_limit(level: int) -> int:
    return FINEST_LIMIT if level == 0 else SYMBOL_LIMIT


def dead_zone(ratio: Tensor, limit: int) -> Tensor:
    """Effort 0's symbols: dead-zone rounding (straight-through), clamped to the range +-``limit``."""
    return ste(ratio, DEADZONE).clamp(-limit, limit)


def rdo_symbols(ratio: Tensor, log_scale: Tensor, recon: Tensor | float, limit: int) -> Tensor:
    """Rate-distortion optimised quantisation of one pass: per coefficient, the nearest level, the
    one below it or zero, whichever minimises error**2 + RDO_LAMBDA * bits.

    Inside a pass the Laplacian scales are already fixed (they depend on earlier passes only), so
    the choices are independent and exact; their effect on later contexts is not counted.
    ``ratio`` is in quantiser steps, where a step's squared error costs the same in every band.
    """
    magnitude = ratio.abs()
    top = torch.floor(magnitude - recon + 0.5).clamp(0, limit)
    candidates = torch.stack([top, (top - 1).clamp_min(0), torch.zeros_like(top)])
    error = torch.where(candidates > 0, magnitude - candidates - recon, magnitude)
    cost = error.square() + RDO_LAMBDA * laplace_bits(candidates, log_scale)
    # the first of the cheapest, as argmin over the three would pick (which runs 10x slower on a CPU)
    lower = cost[1] < cost[0]
    best = torch.where(lower, candidates[1], candidates[0])
    best = torch.where(cost[2] < torch.where(lower, cost[1], cost[0]), candidates[2], best)
    return torch.sign(ratio) * best


def fit(plane: Tensor, h: int, w: int) -> Tensor:
    """Crop or zero-pad the last two dimensions to (h, w) (bands of one level differ by at most 1)."""
    plane = plane[..., :h, :w]
    return nn.functional.pad(plane, (0, w - plane.shape[-1], 0, h - plane.shape[-2]))


# A band in the walk: (level, channel, orientation); level 0 is the finest.
Band = tuple[int, int, int]


def coding_order(levels: int) -> list[Band]:
    return [(level, c, o) for level in reversed(range(levels)) for c in range(CHANNELS) for o in range(3)]


def support_inputs(magnitudes: dict[Band, Tensor], band: Band, shape: tuple[int, int], quality: Tensor) -> Tensor:
    """The context of ``band`` that both passes share, (N, SUPPORT, h, w), from decoded magnitudes.

    Reads only complete bands, all decoded before ``band``: its parent one level coarser
    (upsampled), its earlier siblings and the same band of the earlier colour channels.
    ``magnitudes`` hold ``lg`` of the symbols (N, h, w); ``quality`` is (N,).
    """
    level, c, o = band
    h, w = shape
    n = quality.shape[0]
    zeros = quality.new_zeros(n, h, w, dtype=torch.float64)
    parent = magnitudes.get((level + 1, c, o))
    parent = zeros if parent is None else fit(parent.repeat_interleave(2, -2).repeat_interleave(2, -1), h, w)
    siblings = [fit(magnitudes[(level, c, s)], h, w) if s < o else zeros for s in range(2)]
    colours = [fit(magnitudes[(level, s, o)], h, w) if s < c else zeros for s in range(2)]
    return torch.stack([parent, *siblings, *colours, quality_feature(quality).view(n, 1, 1).expand(n, h, w)], 1)


def band_key(band: Band) -> str:
    level, c, o = band
    return f"l{level}c{c}{ORIENTATIONS[o]}"


# What the walk does with a pass: given the band, the flat positions of the pass's coefficients in
# raster order and their scale indices, return their symbols (the encoder takes them from the
# image, the decoder reads them).
TakeSymbols = Callable[[Band, Tensor, Tensor], Tensor]


def pass_grid(x: Tensor, step: int) -> Tensor:
    """(..., h, w) -> (..., n): the coefficients of checkerboard pass ``step`` (0: the anchors),
    those of the even rows, then those of the odd rows: strided slices, 5x faster than a gather."""
    return torch.cat([x[..., 0::2, step::2].flatten(-2), x[..., 1::2, 1 - step::2].flatten(-2)], -1)


@functools.cache
def passes(h: int, w: int) -> tuple[tuple[Tensor, Tensor], ...]:
    """Per pass of an (h, w) band: the flat positions of its coefficients in raster order (the
    coding order), and where each of them is in ``pass_grid``'s order."""
    return tuple(pass_grid(torch.arange(h * w).view(h, w), step).sort() for step in range(2))


class BandContext(nn.Module):
    """Log-scales of one band's coefficients: a shared support feature map, the band's own anchors
    (second pass only) added through a 3x3 convolution, then a per-pass head of 1x1 convolutions.

    The heads are per position, so the coder evaluates them only where the pass codes.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.support = nn.Conv2d(SUPPORT, hidden, 3, padding=1)
        self.anchors = nn.Conv2d(1, hidden, 3, padding=1, bias=False)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1)) for _ in range(2)
        )

    def forward(self, support: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Training: log-scales (N, h, w) for the first and the second pass at every position."""
        features = self.support(support)
        return self.heads[0](features)[:, 0], self.heads[1](features + self.anchors(anchors[:, None]))[:, 0]


class ExactBandContext:
    """Integer-exact twin of ``BandContext`` in float32: fixed-point in, scale indices out.

    Inputs are multiples of 1/16 below 12 and weights are rounded to 1/256, so every partial sum
    is an integer far below 2**24 (``ExactConvNet`` checks it before each layer).
    """

    def __init__(self, net: BandContext):
        exact = functools.partial(ExactConvNet, weight_bits=WEIGHT_BITS, act_bits=ACT_BITS, dtype=torch.float32)
        self.support, self.anchors = exact(net.support), exact(net.anchors)
        self.heads = [exact(head) for head in net.heads]

    def index(self, features: Tensor, step: int, order: Tensor) -> Tensor:
        """Scale indices of checkerboard pass ``step`` of a (1, hidden, h, w) fixed-point feature map,
        in raster order (``order``: from ``passes``)."""
        if order.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        picked = pass_grid(features, step)[..., None]  # (1, hidden, n, 1): the heads are 1x1
        return scale_index(self.heads[step](picked)[0, 0, :, 0][order].double() * 2 ** (SCALE_BITS - ACT_BITS))


class ContextModel(nn.Module):
    """One ``BandContext`` per (level, channel, band)."""

    def __init__(self, levels: int = LEVELS, hidden: int = 12):
        super().__init__()
        self.levels = levels
        self.nets = nn.ModuleDict({band_key(band): BandContext(hidden) for band in coding_order(levels)})
        self.exact: dict[str, ExactBandContext] = {}

    def prepare_inference(self) -> None:
        self.exact = {key: ExactBandContext(net) for key, net in self.nets.items()}

    def log_scales(self, planes: dict[Band, Tensor], quality: Tensor) -> dict[Band, Tensor]:
        """Training: the float networks' Laplacian log-scales {band: (N, h, w)} of complete planes,
        each coefficient from its own pass's head; gradients do not flow through the context inputs."""
        magnitudes = {band: lg(q) for band, q in planes.items()}
        scales = {}
        for band, q in planes.items():
            anchors = checkerboard(*q.shape[-2:], q.device)
            support = support_inputs(magnitudes, band, q.shape[-2:], quality).float()
            first, second = self.nets[band_key(band)](support, (magnitudes[band] * anchors).float())
            scales[band] = torch.where(anchors, first, second)
        return scales

    def bits(self, planes: dict[Band, Tensor], quality: Tensor) -> Tensor:
        """Training: the code length of every detail coefficient, (N, count), both passes;
        gradients flow into the networks and into the symbols' values (straight-through rounding)."""
        scales = self.log_scales(planes, quality)
        return torch.cat([laplace_bits(q, scales[band]).flatten(1) for band, q in planes.items()], 1)

    def walk(self, shapes: list[list[tuple[int, int]]], quality: float, take: TakeSymbols) -> dict[Band, Tensor]:
        """The one walk of the coding order, shared by the encoder and the decoder.

        ``shapes[level][o]`` is each band's size. For each pass, the exact networks give the scale
        indices from what is decoded so far, and ``take`` supplies the symbols.
        """
        planes: dict[Band, Tensor] = {}
        magnitudes: dict[Band, Tensor] = {}
        q = torch.tensor([quality], dtype=torch.float64)
        for band in coding_order(len(shapes)):
            shape = shapes[band[0]][band[2]]
            net = self.exact[band_key(band)]
            plane = torch.zeros(shape, dtype=torch.float64)
            (anchors, anchor_order), (others, other_order) = passes(*shape)
            features = net.support(support_inputs(magnitudes, band, shape, q) * 2**ACT_BITS)
            plane.view(-1)[anchors] = take(band, anchors, net.index(features, 0, anchor_order)).double()
            # the plane holds the anchors alone (lg(0) = 0 elsewhere)
            features += net.anchors((lg(plane) * 2**ACT_BITS)[None, None])
            plane.view(-1)[others] = take(band, others, net.index(features, 1, other_order)).double()
            planes[band], magnitudes[band] = plane[None], lg(plane)[None]
        return planes


class WaveletCodec(Codec):
    """Colour transform, learned lifting wavelet, dead-zone quantiser and the context model."""

    stride = 1
    streams_per_tile = 1
    efforts = 2
    default_effort = 1

    def __init__(self, levels: int = LEVELS, lifting_hidden: int = 8, context_hidden: int = 12, postfilter: int = 0,
                 perceptual: int = 0):
        super().__init__()
        self.levels = levels
        # ``postfilter``, ``perceptual``: the widths of the decoder-side heads, 0 for none.
        self.postfilter = PostFilter(postfilter) if postfilter else None
        self.perceptual = PerceptualHead(perceptual) if perceptual else None
        self.colour = nn.Parameter(torch.tensor(ICT))
        self.wavelet = Wavelet2D(levels, lifting_hidden)
        self.context = ContextModel(levels, context_hidden)
        low, high = synthesis_norms(levels)
        column_norms = torch.linalg.inv(torch.tensor(ICT, dtype=torch.float64)).norm(dim=0)
        band_norms = torch.tensor([[high[i] * low[i], low[i] * high[i], high[i] ** 2] for i in range(levels)])
        # log of each detail band's step relative to the global step: (level, orientation, channel)
        init = -torch.log(band_norms.double()[:, :, None] * column_norms[None, None, :])
        self.log_steps = nn.Parameter(init.float())
        self.register_buffer("low_norms", torch.tensor((1.0, *low)) ** 2, persistent=False)
        self.register_buffer("column_norms", column_norms.float(), persistent=False)
        self.recon = nn.Parameter(torch.full((levels, 3, CHANNELS), RECON))

    # --- transform and quantiser -------------------------------------------------------------------

    def analysis(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """Image (N, 3, H, W) in [0, 1] -> low band and detail bands (pixel units)."""
        ycc = torch.einsum("ij,njhw->nihw", self.colour, x * 255 - 128)
        return self.wavelet(ycc)

    def synthesis(self, low: Tensor, bands: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        ycc = self.wavelet.inverse(low, bands)
        return (torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.colour), ycc) + 128) / 255

    def steps(self, quality: Tensor, levels: int) -> tuple[Tensor, Tensor]:
        """Quantiser steps (N, 3) of the low band and (N, levels, 3, 3) of the detail bands."""
        step = step_for(quality.float())[:, None]
        low = step / (self.low_norms[levels] * self.column_norms)[None]
        detail = step[:, :, None, None] * torch.exp(self.log_steps[:levels])[None]
        return low, detail

    # --- coding ------------------------------------------------------------------------------------

    def analyse(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """``analysis`` on one CPU thread: the coefficients, and so the file, do not depend on the
        caller's thread count."""
        with one_thread(x.device):
            return self.analysis(x)

    def scale(self, coefficients: tuple[Tensor, list], quality: Tensor) -> tuple[Tensor, dict[Band, Tensor]]:
        """The low band and the detail planes {band: (N, h, w)} in units of their quantiser steps."""
        low, bands = coefficients
        low_step, steps = self.steps(quality, len(bands))
        planes = {}
        for level, triple in enumerate(bands):
            for o, band in enumerate(triple):
                ratio = band / steps[:, level, o, :, None, None]
                for c in range(CHANNELS):
                    planes[(level, c, o)] = ratio[:, c]
        return low / low_step[:, :, None, None], planes

    def quantise(self, x: Tensor, quality: Tensor) -> tuple[Tensor, dict[Band, Tensor]]:
        """Integer low band (N, 3, h, w) and detail planes {band: (N, h, w)} at qualities (N,)."""
        low, planes = self.scale(self.analyse(x), quality)
        planes = {band: dead_zone(ratio, symbol_limit(band[0])) for band, ratio in planes.items()}
        return torch.round(low).clamp(-LOW_LIMIT, LOW_LIMIT), planes

    def dequantise(self, low_q: Tensor, planes: dict[Band, Tensor], quality: Tensor) -> Tensor:
        """The decoder's image (N, 3, H, W) in [0, 1] from integer coefficients at qualities (N,)."""
        levels = len({band[0] for band in planes})
        low_step, steps = self.steps(quality, levels)
        low = low_q.float().to(quality.device) * low_step[:, :, None, None]
        bands = []
        for level in range(levels):
            triple = []
            for o in range(3):
                q = torch.stack([planes[(level, c, o)].float().to(quality.device) for c in range(CHANNELS)], 1)
                offset = self.recon[level, o][None, :, None, None]
                # q + sign(q) offset: sign(q) (|q| + offset), with the identity gradient in q
                triple.append((q + torch.sign(q.detach()) * offset) * steps[:, level, o, :, None, None])
            bands.append(tuple(triple))
        with one_thread(quality.device):
            return self.synthesis(low, bands).clamp(0, 1)

    def symbols(self, ratios: dict[Band, Tensor], quality: Tensor) -> dict[Band, Tensor]:
        """Training: the symbols effort 1 would choose, with straight-through gradients.

        They are ``rdo_symbols`` under the float context's scales of the dead-zone symbols; the
        coder's scales follow its own choices pass by pass, so this is close to, not exactly, what
        a file holds.
        """
        with torch.no_grad():
            dead = {band: dead_zone(r, symbol_limit(band[0])) for band, r in ratios.items()}
            scales = self.context.log_scales(dead, quality)
            chosen = {(level, c, o): rdo_symbols(r, scales[(level, c, o)], self.recon[level, o, c], symbol_limit(level))
                      for (level, c, o), r in ratios.items()}
        return {band: r + (chosen[band] - r).detach() for band, r in ratios.items()}

    def decoded(self, x: Tensor, quality: Tensor) -> Tensor:
        """Training data for the post-filter: what the decoder reconstructs at effort 1 (``symbols``),
        without entropy coding, for a batch with one quality per crop."""
        low, ratios = self.scale(self.analysis(x), quality)
        return self.dequantise(torch.round(low).clamp(-LOW_LIMIT, LOW_LIMIT), self.symbols(ratios, quality), quality)

    def compress(self, x: Tensor, quality: float) -> list[bytes]:
        return self.compressor(x, self.default_effort)(quality)

    def compressor(self, x: Tensor, effort: int = 0) -> Callable[[float], list[bytes]]:
        """Code one tile (1, 3, H, W) in [0, 1] into one ANS stream; the analysis runs once.

        ``effort`` 0 rounds with the dead zone; 1 chooses each coefficient by rate-distortion
        optimisation against the context model (``rdo_symbols``). The decoder is the same.
        """
        code = self._coder(x, effort)
        return lambda quality: [code(quality)[0].finish()]

    def _coder(self, x: Tensor, effort: int) -> Callable[[float], tuple[StreamWriter, float]]:
        """The encoder's walk: a function from quality to the filled stream writer and the code
        length (bits, ``coded_bits``) of the symbols it holds under the exact probabilities."""
        with torch.inference_mode():
            coefficients = self.analyse(x)
        height, width = x.shape[-2:]
        shapes = subband_shapes(height, width, level_count(height, width, self.levels))

        @torch.inference_mode()
        def code(quality: float) -> tuple[StreamWriter, float]:
            low, ratios = self.scale(coefficients, torch.tensor([quality], device=x.device))
            ratios = {band: ratio[0].double().cpu() for band, ratio in ratios.items()}
            writer = StreamWriter()
            bits = write_low(writer, torch.round(low[0]).clamp(-LOW_LIMIT, LOW_LIMIT).double().cpu())

            def take(band: Band, positions: Tensor, index: Tensor) -> Tensor:
                nonlocal bits
                ratio, limit = ratios[band].reshape(-1)[positions], symbol_limit(band[0])
                scales = SCALES[index.numpy()]
                log_scale = torch.from_numpy(np.log(scales))
                if effort == 0:
                    symbols = dead_zone(ratio, limit)
                else:
                    symbols = rdo_symbols(ratio, log_scale, float(self.recon[band[0], band[2], band[1]]), limit)
                writer.laplace(symbols.numpy(), scales, limit)
                bits += float(coded_bits(symbols, log_scale, limit).sum())
                return symbols

            self.context.walk(shapes, quality, take)
            return writer, bits

        return code

    def decompress(self, payloads: list[bytes], height: int, width: int, quality: float, device) -> Tensor:
        """Decode one tile's stream into (1, 3, height, width) in [0, 1]."""
        levels = level_count(height, width, self.levels)
        shapes = subband_shapes(height, width, levels)
        reader = StreamReader(payloads[0])

        def read(band: Band, positions: Tensor, index: Tensor) -> Tensor:
            return torch.from_numpy(reader.laplace(SCALES[index.numpy()], symbol_limit(band[0])).astype(np.float64))

        low_q = read_low(reader, low_shape(height, width, levels))
        planes = self.context.walk(shapes, quality, read)
        reader.finish()
        return self.dequantise(low_q[None], planes, torch.tensor([quality], device=device))

    @property
    def realistic(self) -> bool:
        return self.perceptual is not None and self.postfilter is not None

    def postprocess(self, x_hat: Tensor, quality: float, realism: float = 0.0, seed: int = 0) -> Tensor:
        if self.postfilter is None:
            return x_hat
        q = torch.tensor([quality], device=x_hat.device)
        with one_thread(x_hat.device):
            y = self.postfilter(x_hat, q).clamp(0, 1)
            if realism == 0:
                return y
            noise = draw_noise(self.perceptual.noise_shape(*y.shape[-2:]), seed).to(y.device)
            return (y + realism * self.perceptual(y, q, noise)).clamp(0, 1)

    def prepare_inference(self, tensors: dict[str, Tensor]) -> None:
        self.context.prepare_inference()

    def forward(self, x: Tensor, quality: Tensor) -> dict:
        """Training: the decoder's image of effort 1's symbols (``symbols``, straight-through),
        post-filtered when the model has a post-filter, and the likelihoods of every coefficient:
        the detail bands under the context model, the low band under its DPCM Laplacian (5-15% of
        a Kodak file at quality 1)."""
        low, ratios = self.scale(self.analysis(x), quality)
        low = ste(low, 0.5)
        planes = self.symbols(ratios, quality)
        bits = torch.cat([self.context.bits(planes, quality), low_bits(low)], 1)
        # capped so that the likelihood stays a float32 normal number (2**-149 is its smallest
        # subnormal): an outlier of 150+ bits would otherwise give an infinite rate and a NaN step
        likelihoods = torch.exp2(-bits.clamp(max=MAX_TRAINING_BITS))
        x_hat = self.dequantise(low, planes, quality)
        if self.postfilter is not None:
            x_hat = self.postfilter(x_hat, quality)
        return {"x_hat": x_hat, "likelihoods": {"coefficients": likelihoods}}

    def estimate_bits(self, x: Tensor, quality: float) -> float:
        """Code length (``coded_bits``) of what the default effort codes, under the coder's own
        probabilities (so a file's size checks the ANS coder and the container, not the float networks)."""
        return self._coder(x, self.default_effort)(quality)[1]


# --- shapes ----------------------------------------------------------------------------------------

def subband_shapes(height: int, width: int, levels: int) -> list[list[tuple[int, int]]]:
    """Sizes of (HL, LH, HH) per level, finest first, for an image of this size."""
    shapes = []
    for _ in range(levels):
        low_h, low_w = -(-height // 2), -(-width // 2)
        high_h, high_w = height // 2, width // 2
        shapes.append([(low_h, high_w), (high_h, low_w), (high_h, high_w)])
        height, width = low_h, low_w
    return shapes


def low_shape(height: int, width: int, levels: int) -> tuple[int, int]:
    for _ in range(levels):
        height, width = -(-height // 2), -(-width // 2)
    return height, width


# --- the low band: 2D-difference DPCM ----------------------------------------------------------------

def low_residuals(low_q: Tensor) -> Tensor:
    """r = q - (left + up - up-left): the planar predictor; the decoder inverts it by two cumsums."""
    padded = nn.functional.pad(low_q, (1, 0, 1, 0))
    return padded.diff(dim=-1).diff(dim=-2)


def low_scale_index(residuals: Tensor) -> int:
    """Encoder's choice of the Laplacian scale of one channel's residuals (maximum likelihood)."""
    b = max(float(residuals.abs().mean()), SCALES[0])
    return int(np.clip(np.searchsorted(SCALES, b), 0, SCALE_COUNT - 1))


def low_bits(low_q: Tensor) -> Tensor:
    """Training: the code length (N, count) of low bands (N, 3, h, w) under the DPCM Laplacian, at
    each channel's maximum-likelihood scale (the coder rounds it to the table)."""
    residuals = low_residuals(low_q)
    scale = residuals.detach().abs().mean((-2, -1), keepdim=True).clamp_min(SCALES[0])
    return laplace_bits(residuals, torch.log(scale)).flatten(1)


def write_low(writer: StreamWriter, low_q: Tensor) -> float:
    """Code the low band's residuals; returns their code length in bits (``coded_bits``)."""
    residuals = low_residuals(low_q)
    bits = math.log2(SCALE_COUNT) * CHANNELS
    for c in range(CHANNELS):
        index = low_scale_index(residuals[c])
        writer.uniform(index, SCALE_COUNT)
        writer.laplace(residuals[c].numpy(), np.full(residuals[c].numel(), SCALES[index]), LOW_LIMIT)
        bits += float(coded_bits(residuals[c], torch.tensor(math.log(SCALES[index])), LOW_LIMIT).sum())
    return bits


def read_low(reader: StreamReader, shape: tuple[int, int]) -> Tensor:
    channels = []
    for _ in range(CHANNELS):
        scales = np.full(shape[0] * shape[1], SCALES[reader.uniform(SCALE_COUNT)])
        residuals = torch.from_numpy(reader.laplace(scales, LOW_LIMIT).astype(np.float64)).view(shape)
        channels.append(residuals.cumsum(-1).cumsum(-2))
    return torch.stack(channels)
