"""The ``wavelet`` model's perceptual decoder head: detail synthesised on top of the fidelity output.

The MSE post-filter (``postfilter.py``) gives the fidelity image ``y``: the conditional mean of what
the file allows, blurry where the quantiser zeroed the fine bands. The perceptual head adds a
residual ``delta(y, quality, noise)`` trained for perceptual similarity (LPIPS with a fidelity
term), so that the realism knob R in [0, 1] gives ``y + R * delta``: R = 0 is the fidelity output
bit for bit, R = 1 the perceptual decoder, and values between blend the two outputs, which reaches
the points between them on the distortion-perception trade-off (Yan et al., ICML 2022). The file is
the same for every R: the encoder does not know the head exists.

The noise is what lets the head synthesise texture instead of averaging it: at decode time it is
drawn from a generator seeded by the tile's payload bytes, so a file decodes to the same pixels
every time, on any thread count.

Layout: the image is folded 2x2 into channels (12) and joined by the quality and ``NOISE`` noise
channels; residual blocks at 1/2 resolution handle local texture, a path at 1/4 resolution
(residual blocks, each followed by a ``HybridBlock``: window and pooled global attention, channel
attention, mixed FFN) gives each position the wider context that decides what texture belongs
there, upsampled back and added; ``late_blocks`` residual blocks at 1/2 resolution then combine
that context with the local features and the noise before the last convolution.
The last convolution starts at zero: an untrained head leaves the fidelity output unchanged. So
does the last layer of every block's residual branch: each block starts as the identity, so a head
grown from a smaller one (``--init`` with more blocks in ``--model-config``: its tensors copied,
the new blocks fresh) computes exactly the smaller head's output at first.

``Critic`` is the adversary of its training (stage ``perceptual``), never shipped: a conditional
PatchGAN that scores each patch of an image as a photo or a decoded one, given the fidelity output
it was decoded to (at one or more scales).
"""

from __future__ import annotations

import hashlib
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import HybridBlock, blocked, pad_to
from .codec import MAX_QUALITY, MIN_QUALITY
from .postfilter import POOL, ResidualBlock
from .threads import map_rows

NOISE = 4  # noise channels at 1/2 resolution


def noise_seed(payloads: list[bytes]) -> int:
    """A 63-bit seed from a tile's payloads: a file always draws the same noise."""
    digest = hashlib.sha256(b"".join(payloads)).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def draw_noise(shape: tuple[int, int, int], seed: int) -> Tensor:
    """(1, *shape) standard normal noise from a CPU generator (the same on every machine)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, *shape), generator=generator)


class PerceptualHead(nn.Module):
    """y (N, 3, H, W) in [0, 1], quality (N,), noise (N, NOISE, ceil(H/2), ceil(W/2)) -> delta."""

    def __init__(self, width: int = 32, blocks: int = 1, coarse_width: int = 64, coarse_blocks: int = 1,
                 late_blocks: int = 0):
        super().__init__()
        if coarse_blocks < 1:
            raise ValueError("the perceptual head needs at least one coarse block")
        # the sizes, as the manifest's head entry lists them (the defaults are the first shipped head's)
        self.config = {"width": width, "blocks": blocks, "coarse_width": coarse_width, "coarse_blocks": coarse_blocks,
                       "late_blocks": late_blocks}
        self.head = nn.Conv2d(12 + 1 + NOISE, width, 3, padding=1)
        self.fine = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.down = nn.Conv2d(width, coarse_width, 2, stride=2)
        self.coarse = nn.Sequential(*(block for _ in range(coarse_blocks) for block in (
            ResidualBlock(coarse_width), HybridBlock(coarse_width, heads=4, window=8, pool=POOL))))
        self.up = nn.ConvTranspose2d(coarse_width, width, 2, stride=2)
        self.late = nn.Sequential(*(ResidualBlock(width) for _ in range(late_blocks)))
        self.tail = nn.Conv2d(width, 12, 3, padding=1)
        ends = [self.tail] + [block.body[-1] for block in (*self.fine, *self.late, *self.coarse[::2])]
        ends += [layer for block in self.coarse[1::2] for layer in (block.attn.proj, block.channel_attn.proj, block.ffn.down)]
        for layer in ends:  # every residual branch and the head's output start at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def noise_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The noise one image of ``height`` x ``width`` takes: ``NOISE`` channels at 1/2 resolution."""
        return NOISE, -(-height // 2), -(-width // 2)

    def forward(self, y: Tensor, quality: Tensor, noise: Tensor, tokens: int | None = None) -> Tensor:
        """In stripes (``map_rows``) like the post-filter, the same bits for any thread count; the
        ``HybridBlock``'s global steps on the whole map, its pooled global attention at most
        ``tokens`` positions (None: pool 4)."""
        n, _, h, w = y.shape
        folded = F.pixel_unshuffle(pad_to(y, 2, "replicate"), 2)
        level = ((quality.to(y.dtype) - MIN_QUALITY) / (MAX_QUALITY - MIN_QUALITY)).view(n, 1, 1, 1)
        inputs = torch.cat([folded - 0.5, level.expand(n, 1, *folded.shape[-2:]), noise], 1)
        fh, fw = folded.shape[-2:]
        radius = 1 + 2 * len(self.fine)  # of the head and the residual blocks' 3x3 convolutions
        features = map_rows(lambda lo, hi: blocked(lambda t: self.fine(self.head(t)), inputs[..., lo:hi, :]), fh, radius)
        padded = pad_to(features, 2, "replicate")
        residual, block = self.coarse[:2]
        coarse = map_rows(lambda lo, hi: residual(self.down(padded[..., 2 * lo : 2 * hi, :])), padded.shape[-2] // 2, 2, 1, scale=2)
        coarse = block(coarse, partial(map_rows, scale=2), tokens)
        for residual, block in zip(self.coarse[2::2], self.coarse[3::2]):  # the coarse blocks after the first
            coarse = block(map_rows(partial(_stripe, residual, coarse), coarse.shape[-2], 2, 1, scale=2), partial(map_rows, scale=2), tokens)

        def joined(lo: int, hi: int) -> Tensor:
            """Rows ``lo:hi`` of delta: the features plus the upsampled context, through the late blocks and the tail."""
            merged = features[..., lo:hi, :] + self.up(coarse[..., lo // 2 : (hi + 1) // 2, :])[..., : hi - lo, :fw]
            return self.tail(blocked(self.late, merged) if len(self.late) else merged)

        # even cuts, so that a stripe's coarse rows upsample to its own rows; an even halo covers the
        # radius of the late blocks' and the tail's 3x3 convolutions
        delta = map_rows(joined, fh, 2 + 2 * len(self.late), 2)
        return F.pixel_shuffle(delta, 2)[..., :h, :w]


def _stripe(fn: nn.Module, x: Tensor, lo: int, hi: int) -> Tensor:
    """``fn`` of the rows ``lo:hi`` of ``x`` (a piece for ``map_rows``)."""
    return fn(x[..., lo:hi, :])


class Critic(nn.Module):
    """(image, fidelity) (N, 3, H, W) each in [0, 1] -> one score map per scale: a score per ~34 px
    patch of the pair (N, 1, H/4 - 2, W/4 - 2), then, with ``scales`` > 1, the same of the pair
    halved in size by a network of its own (patches of ~68 px, ...), which judges the texture's
    larger layout that the first one cannot see.

    Spectral norm on every convolution keeps it 1-Lipschitz per layer (Miyato et al. 2018), which
    is what lets a hinge-loss critic this small train stably against the head."""

    def __init__(self, width: int = 32, scales: int = 1):
        super().__init__()
        self.nets = nn.ModuleList(_patch_net(width) for _ in range(scales))

    def forward(self, image: Tensor, fidelity: Tensor) -> list[Tensor]:
        pair, scores = torch.cat([image, fidelity], 1) * 2 - 1, []
        for net in self.nets:
            scores.append(net(pair))
            pair = F.avg_pool2d(pair, 2)
        return scores


def _patch_net(width: int) -> nn.Sequential:
    """A PatchGAN: three strided 4x4 convolutions and a 4x4 score, spectrally normalised."""
    norm = nn.utils.parametrizations.spectral_norm
    channels, strides = (6, width, 2 * width, 4 * width), (2, 2, 1)
    layers: list[nn.Module] = []
    for cin, cout, stride in zip(channels, channels[1:], strides):
        layers += [norm(nn.Conv2d(cin, cout, 4, stride, 1)), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, norm(nn.Conv2d(channels[-1], 1, 4, 1, 1)))
