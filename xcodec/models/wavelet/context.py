"""The context model: the Laplacian scale of each detail coefficient from the magnitudes decoded
before it, in float for training and integer-exact for coding, and the one walk of the coding
order that the encoder and the decoder share."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from ..codec import TakeSymbols, checkerboard
from ..exact import ExactConvNet
from .bands import LEVELS, Band, band_key, coding_order, fit
from .rate import SCALE_BITS, laplace_bits, scale_index

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
    mantissa, exponent = torch.frexp(q.detach().abs().clamp(max=MAGNITUDE_CAP).double())
    return torch.where(q == 0, 0.0, torch.floor((exponent + 2 * mantissa - 1) * FRACTION + 0.5) / FRACTION)


def quality_feature(quality: Tensor) -> Tensor:
    """The quality as a context input, in the same 1/16 steps."""
    return torch.floor(quality.double() * FRACTION + 0.5) / FRACTION


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
    is an integer far below 2**24 (``ExactConvNet`` checks it before each layer). Other
    ``act_bits`` (and float64 where sums outgrow float32) measure what the fixed point costs
    (``xcodec.tools.bits``); the coder uses the defaults.
    """

    def __init__(self, net: BandContext, act_bits: int = ACT_BITS, dtype: torch.dtype = torch.float32):
        exact = functools.partial(ExactConvNet, weight_bits=WEIGHT_BITS, act_bits=act_bits, dtype=dtype)
        self.act_bits = act_bits
        self.support, self.anchors = exact(net.support), exact(net.anchors)
        self.heads = [exact(head) for head in net.heads]

    def index(self, features: Tensor, step: int, order: Tensor) -> Tensor:
        """Scale indices of checkerboard pass ``step`` of a (1, hidden, h, w) fixed-point feature map,
        in raster order (``order``: from ``passes``)."""
        if order.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        picked = pass_grid(features, step)[..., None]  # (1, hidden, n, 1): the heads are 1x1
        return scale_index(self.heads[step](picked)[0, 0, :, 0][order].double() * 2 ** (SCALE_BITS - self.act_bits))


class ContextModel(nn.Module):
    """One ``BandContext`` per (level, channel, band)."""

    def __init__(self, levels: int = LEVELS, hidden: int = 12):
        super().__init__()
        self.levels = levels
        self.nets = nn.ModuleDict({band_key(band): BandContext(hidden) for band in coding_order(levels)})
        self.exact: dict[str, ExactBandContext] = {}

    def prepare_inference(self, act_bits: int = ACT_BITS, dtype: torch.dtype = torch.float32) -> None:
        self.exact = {key: ExactBandContext(net, act_bits, dtype) for key, net in self.nets.items()}

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
        indices from what is decoded so far, and ``take(band, pass mask, scale indices)`` supplies
        the symbols.
        """
        planes: dict[Band, Tensor] = {}
        magnitudes: dict[Band, Tensor] = {}
        q = torch.tensor([quality], dtype=torch.float64)
        for band in coding_order(len(shapes)):
            shape = shapes[band[0]][band[2]]
            net = self.exact[band_key(band)]
            plane = torch.zeros(shape, dtype=torch.float64)
            (anchors, anchor_order), (others, other_order) = passes(*shape)
            features = net.support(support_inputs(magnitudes, band, shape, q) * 2**net.act_bits)
            plane.view(-1)[anchors] = take(band, anchors, net.index(features, 0, anchor_order)).double()
            # the plane holds the anchors alone (lg(0) = 0 elsewhere)
            features += net.anchors((lg(plane) * 2**net.act_bits)[None, None])
            plane.view(-1)[others] = take(band, others, net.index(features, 1, other_order)).double()
            planes[band], magnitudes[band] = plane[None], lg(plane)[None]
        return planes

