"""The ``wavelet`` model's post-filter: a decoder-side network that restores the reconstructed image.

It sees only what the decoder has (the decoded RGB image and the quality), so it changes no bit
of the file and can be switched off at decode time. The image is folded 2x2 into channels
(pixel unshuffle) so that every convolution runs on a quarter of the positions; a convolutional
path at 1/2 resolution removes local ringing and blocking of the wavelet's quantisation, and a
coarse path at 1/4 (a ``HybridBlock``: window attention, pooled global attention, channel
attention, mixed FFN) gathers wider context that the fine path reads back through
``CrossScaleAttention``. The last convolution starts at zero: an untrained filter is the identity.

Every part can be switched off, for the ablations of docs/training-log.md (``WaveletCodec``'s
``postfilter`` as a dict of ``PostFilter``'s arguments): the ``HybridBlock``'s window attention
(``local``), pooled global attention (``coarse``), channel attention (``channel``) and mixed FFN
(``mixed_ffn``, else a plain one); ``link`` off, the coarse map reaches the fine features through a
2x2 transposed convolution added to them (``UpsampledLink``) instead of the attention; without the
``coarse_path``, the fine path's features go straight to the last convolution (convolutions only).
The defaults are the filter of format versions up to 10; from version 11 the decoder runs the
convolutions-only one (``WaveletCodec.convfilter``), fine-tuned from its convolutions, at less than
half the CPU time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import CrossScaleAttention, HybridBlock, blocked, pad_to
from .codec import MAX_QUALITY, MIN_QUALITY
from .threads import map_rows


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


POOL = 4  # the pool of both decoder heads' global attentions (before ``GLOBAL_TOKENS`` bounds it)
WINDOW = 8  # the coarse path's and the link's attention windows, and the stripes' alignment


class UpsampledLink(nn.Module):
    """The cross-scale link without attention (an ablation): the fine features plus the coarse map
    upsampled by a 2x2 transposed convolution, as the perceptual head joins its two paths."""

    def __init__(self, width: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return x + self.up(context)[..., : x.shape[-2], : x.shape[-1]]


class PostFilter(nn.Module):
    """x_hat (N, 3, H, W) in [0, 1] and quality (N,) -> the restored image, any H and W."""

    def __init__(self, width: int = 32, blocks: int = 4, local: bool = True, coarse: bool = True, channel: bool = True,
                 mixed_ffn: bool = True, link: bool = True, coarse_path: bool = True):
        super().__init__()
        # the design, as a manifest's head entry lists it (the coarse path's switches only with it)
        self.config = {"width": width, "blocks": blocks, "coarse_path": coarse_path} | (
            {"local": local, "coarse": coarse, "channel": channel, "mixed_ffn": mixed_ffn, "link": link} if coarse_path else {})
        self.head = nn.Conv2d(12 + 1, width, 3, padding=1)  # 2x2-folded RGB and the quality
        self.fine = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.down = self.coarse = self.link = None
        if coarse_path:
            self.down = nn.Conv2d(width, width, 2, stride=2)
            self.coarse = HybridBlock(width, 4, WINDOW, POOL, local=local, coarse=coarse, channel=channel, mixed_ffn=mixed_ffn)
            self.link = CrossScaleAttention(width, width, ratio=0.5, heads=4, window=WINDOW) if link else UpsampledLink(width)
        self.tail = nn.Conv2d(width, 12, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: Tensor, quality: Tensor, tail: tuple[Tensor, Tensor] | None = None,
                tokens: int | None = None) -> Tensor:
        """Everything runs in stripes (``map_rows``), on several threads inside ``threads(n)``, with
        the same result for any thread count; the coarse path's global steps on the whole map.
        ``tail``: the last convolution's weight and bias in place of its own (a file's adapted ones).
        ``tokens``: the most positions of the coarse path's pooled global attention (None: pool 4)."""
        last = self.tail if tail is None else partial(F.conv2d, weight=tail[0], bias=tail[1], padding=1)
        restored = self.restore(x, quality, last, tokens)
        return x + F.pixel_shuffle(restored, 2)[..., : x.shape[-2], : x.shape[-1]]

    def features(self, x: Tensor, quality: Tensor, tokens: int | None = None) -> Tensor:
        """The last convolution's input (N, width, H/2, W/2, the halves rounded up), which the
        encoder fits a file's adapted tail to."""
        return self.restore(x, quality, nn.Identity(), tokens)

    def restore(self, x: Tensor, quality: Tensor, last: Callable[[Tensor], Tensor], tokens: int | None = None) -> Tensor:
        """``last`` of the features at 1/2 resolution: the network less its final residual step."""
        n = x.shape[0]
        folded = F.pixel_unshuffle(pad_to(x, 2, "replicate"), 2)
        level = ((quality.to(x.dtype) - MIN_QUALITY) / (MAX_QUALITY - MIN_QUALITY)).view(n, 1, 1, 1)
        inputs = torch.cat([folded - 0.5, level.expand(n, 1, *folded.shape[-2:])], 1)
        rows, window = folded.shape[-2], WINDOW
        stripe = rows if folded.shape[-1] < window else None  # narrower than a window: whole (its windows shrink)
        radius = 1 + 2 * len(self.fine)  # of the head and the residual blocks' 3x3 convolutions
        if self.coarse is None:  # convolutions only: one pass, the tail's 3x3 in the halo
            return map_rows(lambda lo, hi: last(blocked(lambda t: self.fine(self.head(t)), inputs[..., lo:hi, :])),
                            rows, radius + 1, 1, stripe)
        features = map_rows(lambda lo, hi: blocked(lambda t: self.fine(self.head(t)), inputs[..., lo:hi, :]), rows, radius, window, stripe)
        padded = pad_to(features, 2, "replicate")
        coarse = map_rows(lambda lo, hi: self.down(padded[..., 2 * lo : 2 * hi, :]), padded.shape[-2] // 2, 0, 1, scale=2)
        coarse = self.coarse(coarse, partial(map_rows, scale=2), tokens)
        # the link's windows see the aligned coarse rows; one window of halo covers the tail's 3x3
        return map_rows(lambda lo, hi: last(self.link(features[..., lo:hi, :], coarse[..., lo // 2 : (hi + 1) // 2, :])),
                        rows, window, window, stripe)
