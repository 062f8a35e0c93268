"""The context model: the Laplacian scale of each detail coefficient from the magnitudes decoded
before it, in float for training and integer-exact for coding, and the one walk of the coding
order that the encoder and the decoder share."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks import HybridBlock
from ..codec import MAX_QUALITY, MIN_QUALITY, TakeSymbols, checkerboard
from ..exact import ExactConvNet
from .bands import LEVELS, Band, band_key, coding_order, fit
from .rate import SCALE_BITS, laplace_bits, scale_index
from .signs import edge_contexts

# Fixed point of the exact context networks (float32): weights in 1/256, activations in 1/16.
WEIGHT_BITS, ACT_BITS = 8, 4
MAGNITUDE_CAP = 1023  # context inputs see min(|q|, cap)
FRACTION = 2**ACT_BITS  # context inputs are multiples of 1/16, so that the exact networks can run in float32
SUPPORT = 6  # context inputs shared by both passes: parent, 2 siblings, 2 earlier colours, quality


def lg(q: Tensor) -> Tensor:
    """A piecewise-linear log2(1 + |q|) of integers in 1/16 steps: 0, 1, 2, 2.5, 3, ... for 0, 1, 2, 3, 4.

    ``frexp``, products by powers of two and ``floor`` are exact, so the encoder and the decoder
    compute the same context inputs on any machine.
    """
    mantissa, exponent = torch.frexp(q.detach().abs().clamp(max=MAGNITUDE_CAP).float())  # exact in float32
    return torch.where(q == 0, 0.0, torch.floor((exponent + 2 * mantissa - 1) * FRACTION + 0.5) / FRACTION)


def quality_feature(quality: Tensor) -> Tensor:
    """The quality as a context input, in the same 1/16 steps (exact in float32 as in float64)."""
    return torch.floor(quality.double() * FRACTION + 0.5).to(quality.dtype) / FRACTION


# The largest context input, in fixed point: a capped magnitude or the highest quality.
INPUT_BOUND = max(float(lg(torch.tensor(float(MAGNITUDE_CAP)))), float(quality_feature(torch.tensor(MAX_QUALITY)))) * FRACTION


def support_channels(band: Band) -> list[int]:
    """The inputs of ``support_inputs`` that may be other than zero for ``band``: the parent, the
    earlier siblings, the same band of the earlier colours, the quality."""
    _, c, o = band
    return [0, *range(1, 1 + min(o, 2)), *range(3, 3 + min(c, 2)), 5]


def support_inputs(magnitudes: dict[Band, Tensor], band: Band, shape: tuple[int, int], quality: Tensor,
                   channels: Sequence[int] = range(SUPPORT)) -> Tensor:
    """The context of ``band`` that both passes share, (N, SUPPORT, h, w), from decoded magnitudes
    (of ``channels`` only: (N, len(channels), h, w)).

    Reads only complete bands, all decoded before ``band``: its parent one level coarser
    (upsampled), its earlier siblings and the same band of the earlier colour channels.
    ``magnitudes`` hold ``lg`` of the symbols (N, h, w), in the dtype of ``quality`` (N,).
    """
    level, c, o = band
    h, w = shape
    n = quality.shape[0]

    def plane(channel: int) -> Tensor:
        if channel == 0:
            parent = magnitudes.get((level + 1, c, o))
            if parent is not None:  # nearest-neighbour upsampling by 2
                ph, pw = parent.shape[-2:]
                return fit(parent[..., :, None, :, None].expand(n, ph, 2, pw, 2).reshape(n, 2 * ph, 2 * pw), h, w)
        elif channel < 3 and channel - 1 < o:
            return fit(magnitudes[(level, c, channel - 1)], h, w)
        elif 3 <= channel < 5 and channel - 3 < c:
            return fit(magnitudes[(level, channel - 3, o)], h, w)
        elif channel == 5:
            return quality_feature(quality).view(n, 1, 1).expand(n, h, w)
        return quality.new_zeros(n, h, w)

    return torch.stack([plane(channel) for channel in channels], 1)


def interleave(even: Tensor, odd: Tensor) -> Tensor:
    """(..., n): the rows of ``even`` (..., h0, w0) and ``odd`` (..., h1, w1) taken in turn, h1 = h0
    or h0 - 1: the raster order of a checkerboard pass from its even and its odd rows."""
    (h0, w0), (h1, w1) = even.shape[-2:], odd.shape[-2:]
    out = even.new_empty(*even.shape[:-2], h0 * w0 + h1 * w1)
    rows = out[..., : h1 * (w0 + w1)].unflatten(-1, (h1, w0 + w1))
    rows[..., :w0], rows[..., w0:] = even[..., :h1, :], odd
    out[..., h1 * (w0 + w1) :] = even[..., h1:, :].flatten(-2)
    return out


def pass_values(x: Tensor, step: int) -> Tensor:
    """(..., h, w) -> (..., n): the values of checkerboard pass ``step`` (0: the anchors, row + col
    even) in raster order, the coding order: strided copies, no gather."""
    return interleave(x[..., 0::2, step::2], x[..., 1::2, 1 - step::2])


def put_pass(x: Tensor, step: int, values: Tensor) -> None:
    """Write ``values`` (n,) in raster order at the positions of checkerboard pass ``step`` of ``x`` (h, w)."""
    even, odd = x[0::2, step::2], x[1::2, 1 - step::2]
    (h0, w0), (h1, w1) = even.shape, odd.shape
    rows = values[: h1 * (w0 + w1)].view(h1, w0 + w1)
    even[:h1], odd[:] = rows[:, :w0], rows[:, w0:]
    even[h1:] = values[h1 * (w0 + w1) :].view(h0 - h1, w0)


class BandContext(nn.Module):
    """Log-scales of one band's coefficients: a shared support feature map, the band's own anchors
    (second pass only) added through a 3x3 convolution, then a per-pass head of 1x1 convolutions.

    The heads are per position, so the coder evaluates them only where the pass codes. ``blocks``
    > 0 passes the support features through that many of the post-filter's transformer blocks
    (window attention, shifted every second block; global attention to the map pooled by 16;
    channel attention; mixed FFN): a float-only experiment with no exact twin (issue 23, where it
    lost to the convolutions alone on the same training budget: docs/training-log.md).
    """

    def __init__(self, hidden: int, blocks: int = 0):
        super().__init__()
        self.support = nn.Conv2d(SUPPORT, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*(HybridBlock(hidden, heads=2, pool=16, shift=i % 2 == 1) for i in range(blocks)))
        self.anchors = nn.Conv2d(1, hidden, 3, padding=1, bias=False)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1)) for _ in range(2)
        )

    def forward(self, support: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Training: log-scales (N, h, w) for the first and the second pass at every position."""
        features = self.blocks(self.support(support))
        return self.heads[0](features)[:, 0], self.heads[1](features + self.anchors(anchors[:, None]))[:, 0]


class ExactBandContext:
    """Integer-exact twin of ``BandContext`` in float32: fixed-point in, scale indices out.

    Inputs are multiples of 1/16 below 12 and weights are rounded to 1/256, so every partial sum
    is an integer far below 2**24 (``ExactConvNet`` checks it, for inputs up to ``INPUT_BOUND``,
    when it builds each network). The support network reads the inputs of ``channels`` alone
    (``support_channels``: those that may be other than zero; zeros add nothing to a sum). Other
    ``act_bits`` (and float64 where sums outgrow float32) measure what the fixed point costs
    (``xcodec.tools.bits``); the coder uses the defaults.
    """

    def __init__(self, net: BandContext, channels: Sequence[int] = range(SUPPORT), act_bits: int = ACT_BITS,
                 dtype: torch.dtype = torch.float32):
        if len(net.blocks):
            raise ValueError("the context networks' transformer blocks run in float only: they have no exact twin")
        exact = functools.partial(ExactConvNet, weight_bits=WEIGHT_BITS, act_bits=act_bits, dtype=dtype,
                                  input_bound=INPUT_BOUND * 2.0 ** (act_bits - ACT_BITS))
        self.channels, self.act_bits = list(channels), act_bits
        support = nn.Conv2d(len(self.channels), net.support.out_channels, 3, padding=1)
        support.weight.data, support.bias.data = net.support.weight.detach()[:, self.channels], net.support.bias.detach()
        # the anchors' 3x3 at the second pass's positions only: stride 2 over the padded plane
        anchors = nn.Conv2d(1, net.anchors.out_channels, 3, stride=2, bias=False)
        anchors.weight.data = net.anchors.weight.detach()
        self.support, self.anchors = exact(support), exact(anchors)
        bounds = (self.support.output_bound, self.anchors.output_bound)
        features = None if None in bounds else sum(bounds)  # both passes' heads: at most the two summed
        self.heads = [exact(head, input_bound=features) for head in net.heads]

    def second(self, features: Tensor, anchors: Tensor) -> Tensor:
        """The second pass's features, (1, hidden, n) in raster order: the support's (1, hidden, h, w)
        plus the anchors' 3x3 of ``anchors`` (h, w) (fixed point, zero off the anchors)."""
        h, w = anchors.shape
        padded = F.pad(anchors, (1, 2, 1, 2))[None, None]  # zeros past the borders, and room for the strides
        # even rows, odd columns; odd rows, even columns (the 3x3 windows' corners at stride 2)
        even = self.anchors(padded[..., :, 1:])[..., : -(-h // 2), : w // 2]
        odd = self.anchors(padded[..., 1:, :])[..., : h // 2, : -(-w // 2)]
        return interleave(even.add_(features[..., 0::2, 1::2]), odd.add_(features[..., 1::2, 0::2]))

    def index(self, features: Tensor, step: int) -> Tensor:
        """Scale indices of checkerboard pass ``step`` from its (1, hidden, n) fixed-point features."""
        if features.shape[-1] == 0:
            return torch.zeros(0, dtype=torch.long)
        return scale_index(self.heads[step](features[..., None])[0, 0, :, 0].double() * 2 ** (SCALE_BITS - self.act_bits))


class ContextModel(nn.Module):
    """One ``BandContext`` per (level, channel, band)."""

    def __init__(self, levels: int = LEVELS, hidden: int = 12, blocks: int = 0):
        super().__init__()
        self.levels = levels
        self.nets = nn.ModuleDict({band_key(band): BandContext(hidden, blocks) for band in coding_order(levels)})
        self.exact: dict[str, ExactBandContext] = {}

    def prepare_inference(self, act_bits: int = ACT_BITS, dtype: torch.dtype = torch.float32) -> None:
        self.exact = {band_key(band): ExactBandContext(self.nets[band_key(band)], support_channels(band), act_bits, dtype)
                      for band in coding_order(self.levels)}

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
        indices from what is decoded so far, and ``take(band, pass, scale indices, contexts)``
        supplies the symbols of the pass (0: the anchors; in raster order, ``pass_values``); the
        contexts are None for the anchors, the second pass's sign contexts (``edge_contexts``) for
        the others. Planes and magnitudes are float32, exact for these integers and 1/16 steps.
        """
        if not MIN_QUALITY <= quality <= MAX_QUALITY:  # the exact networks' bounds hold for these
            raise ValueError(f"quality must be between {MIN_QUALITY:g} and {MAX_QUALITY:g}, got {quality:g}")
        planes: dict[Band, Tensor] = {}
        magnitudes: dict[Band, Tensor] = {}
        q = torch.tensor([quality])
        for band in coding_order(len(shapes)):
            shape = shapes[band[0]][band[2]]
            net = self.exact[band_key(band)]
            plane, magnitude = torch.zeros(shape), torch.zeros(shape)
            unit = 2**net.act_bits  # the fixed point's 1
            features = net.support(support_inputs(magnitudes, band, shape, q, net.channels) * unit)
            symbols = take(band, 0, net.index(pass_values(features, 0), 0), None).float()
            put_pass(plane, 0, symbols)
            put_pass(magnitude, 0, lg(symbols))  # the anchors alone: lg(0) = 0 elsewhere
            contexts = pass_values(edge_contexts(plane, band[2]), 1)
            symbols = take(band, 1, net.index(net.second(features, magnitude * unit), 1), contexts).float()
            put_pass(plane, 1, symbols)
            put_pass(magnitude, 1, lg(symbols))
            planes[band], magnitudes[band] = plane[None], magnitude[None]
        return planes
