"""The cross-scale transformer codec.

Transforms: convolutions for local structure and for down/up-sampling, ``HybridBlock``s (hybrid
spatial attention, channel attention, mixed FFN) for long-range structure, and
``CrossScaleAttention`` between neighbouring resolutions: in the analysis each coarse map attends to
the finer map it was computed from; in the synthesis each finer map attends to its coarse parent.

Entropy model: a hyperprior plus a spatial-channel context model. The latent is split into
``slices`` channel groups, coded group after group; within a group, in two checkerboard passes
(anchors, then the rest, each pass decoding half of the positions in parallel). A group is
conditioned on the hyperprior and on the previous ``window`` groups only (a sliding window over
earlier chunks), plus, for the second pass, its own anchors. After each group a latent residual
prediction (LRP) network refines the group's reconstruction. All these networks are plain
convolutions and ReLUs with integer-exact twins, so the decoder's probabilities match the encoder's
to the bit.
"""

from __future__ import annotations

import torch
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from ..entropy import SYMBOL_LIMIT
from .blocks import CrossScaleAttention, HybridBlock
from .codec import TakeSymbols, checkerboard, ste_round
from .exact import ACT_BITS, ExactConvNet
from .latent import HyperpriorCodec, scale_index


class SliceParameters(nn.Module):
    """Means and scales of one channel group from its support and (second pass) its anchors."""

    def __init__(self, support: int, group: int, hidden: int):
        super().__init__()
        self.support = nn.Conv2d(support, hidden, 1)
        self.context = nn.Conv2d(group, hidden, 5, padding=2, bias=False)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 2 * group, 1))

    def forward(self, support: Tensor, anchors: Tensor | None) -> Tensor:
        h = self.support(support)
        return self.head(h if anchors is None else h + self.context(anchors))


class ExactSliceParameters(nn.Module):
    """Integer-exact twin of ``SliceParameters``: fixed-point in, fixed-point out."""

    def __init__(self, net: SliceParameters):
        super().__init__()
        self.support, self.context, self.head = ExactConvNet(net.support), ExactConvNet(net.context), ExactConvNet(net.head)

    def forward(self, support: Tensor, anchors: Tensor | None) -> Tensor:
        h = self.support(support)
        return self.head(h if anchors is None else h + self.context(anchors))


class AnalysisTransform(nn.Module):
    """1/2 (CNN), then 1/4, 1/8, 1/16 with transformer blocks; each coarse map attends to the finer one."""

    def __init__(self, dims: tuple[int, int, int], M: int, block):
        super().__init__()
        c1, c2, c3 = dims
        self.down1, self.gdn1 = conv(3, c1), GDN(c1)
        self.down2, self.block2 = conv(c1, c2), block(c2, 8, False)
        self.down3, self.cross3, self.block3 = conv(c2, c3), CrossScaleAttention(c3, c2, 2.0), block(c3, 8, True)
        self.down4, self.cross4, self.block4 = conv(c3, M), CrossScaleAttention(M, c3, 2.0, window=4), block(M, 4, False)

    def forward(self, x: Tensor) -> Tensor:
        f2 = self.block2(self.down2(self.gdn1(self.down1(x))))
        f3 = self.block3(self.cross3(self.down3(f2), f2))
        return self.block4(self.cross4(self.down4(f3), f3))


class SynthesisTransform(nn.Module):
    """The mirror of ``AnalysisTransform``; each finer map attends to its coarse parent."""

    def __init__(self, dims: tuple[int, int, int], M: int, block):
        super().__init__()
        c1, c2, c3 = dims
        self.block4 = block(M, 4, False)
        self.up3, self.cross3, self.block3 = deconv(M, c3), CrossScaleAttention(c3, M, 0.5), block(c3, 8, True)
        self.up2, self.cross2, self.block2 = deconv(c3, c2), CrossScaleAttention(c2, c3, 0.5), block(c2, 8, False)
        self.up1, self.igdn1, self.up0 = deconv(c2, c1), GDN(c1, inverse=True), deconv(c1, 3)

    def forward(self, y: Tensor) -> Tensor:
        f4 = self.block4(y)
        f3 = self.block3(self.cross3(self.up3(f4), f4))
        f2 = self.block2(self.cross2(self.up2(f3), f3))
        return self.up0(self.igdn1(self.up1(f2)))


class CrossScaleTransformer(HyperpriorCodec):
    """Hybrid CNN + transformer codec with cross-scale attention and a spatial-channel context model.

    ``block_options`` switch parts of ``HybridBlock`` off for ablations (local, coarse, channel,
    mixed_ffn).
    """

    def __init__(self, dims: tuple[int, int, int] = (64, 96, 128), M: int = 160, N: int = 96,
                 slices: int = 5, window: int = 3, heads: int = 4, hyper_features: int = 192,
                 context_hidden: int = 96, **block_options):
        super().__init__(latent_channels=M, hyper_channels=N)
        if M % slices:
            raise ValueError("M must be a multiple of slices")
        self.slices, self.group, self.window = slices, M // slices, window

        def block(dim: int, win: int, shift: bool) -> HybridBlock:
            return HybridBlock(dim, heads, win, pool=4, shift=shift, **block_options)

        self.g_a = AnalysisTransform(tuple(dims), M, block)
        self.g_s = SynthesisTransform(tuple(dims), M, block)
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.ReLU(inplace=True),
            conv(N, N), nn.ReLU(inplace=True), conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, N), nn.ReLU(inplace=True), deconv(N, hyper_features), nn.ReLU(inplace=True),
            conv(hyper_features, hyper_features, stride=1, kernel_size=3),
        )
        support = hyper_features + window * self.group
        self.slice_params = nn.ModuleList(SliceParameters(support, self.group, context_hidden) for _ in range(slices))
        self.lrp = nn.ModuleList(
            nn.Sequential(nn.Conv2d(support + self.group, context_hidden, 1), nn.ReLU(), nn.Conv2d(context_hidden, self.group, 1))
            for _ in range(slices)
        )

    def _support(self, hyper: Tensor, done: list[Tensor]) -> Tensor:
        """Hyper features plus the last ``window`` decoded groups (zeros before the first)."""
        previous = done[-self.window :] if self.window else []
        pad = [torch.zeros_like(hyper[:, : self.group])] * (self.window - len(previous))
        return torch.cat([hyper, *pad, *previous], dim=1)

    def forward(self, x: Tensor, quality: Tensor) -> dict:
        """Training forward: noisy likelihoods for the rate, rounded latents for the distortion."""
        g, ig = self.hyper.gains(quality)
        y = self.g_a(x) * g
        z_likelihoods, z_hat = self.hyper(self.h_a(y))
        hyper = self.h_s(z_hat)
        anchor = checkerboard(*y.shape[2:], device=y.device).float()[None, None]
        done, likelihoods = [], []
        for s, y_s in enumerate(y.chunk(self.slices, dim=1)):
            support = self._support(hyper, done)
            p_anchor = self.slice_params[s](support, None)
            mean_anchor = p_anchor.chunk(2, dim=1)[0]
            anchors_hat = (ste_round(y_s - mean_anchor) + mean_anchor) * anchor
            params = p_anchor * anchor + self.slice_params[s](support, anchors_hat) * (1 - anchor)
            means, scales = params.chunk(2, dim=1)
            _, likelihood = self.gaussian_conditional(y_s, scales, means=means)
            likelihoods.append(likelihood)
            y_hat = ste_round(y_s - means) + means
            done.append(y_hat + self.lrp[s](torch.cat([support, y_hat], dim=1)).clamp(-0.5, 0.5))
        x_hat = self.g_s(torch.cat(done, dim=1) * ig)
        return {"x_hat": x_hat, "likelihoods": {"y": torch.cat(likelihoods, dim=1), "z": z_likelihoods}}

    # --- exact coding --------------------------------------------------------------------------

    def prepare_latent_inference(self) -> None:
        self.exact_h_s = ExactConvNet(self.h_s)
        self.exact_slice_params = nn.ModuleList(ExactSliceParameters(net) for net in self.slice_params)
        self.exact_lrp = nn.ModuleList(ExactConvNet(net) for net in self.lrp)

    def _code(self, z_fixed: Tensor, take: TakeSymbols) -> Tensor:
        """Walk the groups and checkerboard passes in decoding order, in fixed point; return ŷ (float64).

        ``take(group, positions mask, fixed-point means, scale indices)`` gives each pass's symbols."""
        hyper = self.exact_h_s(z_fixed)
        h, w = hyper.shape[2:]
        anchor = checkerboard(h, w)[None, None]
        half = 2 ** (ACT_BITS - 1)
        done = []
        for s in range(self.slices):
            support = self._support(hyper, done)
            y_hat = torch.zeros(1, self.group, h, w, dtype=torch.float64)
            for mask, context in ((anchor, None), (~anchor, True)):
                params = self.exact_slice_params[s](support, y_hat if context else None)
                mean_fixed, scale_fixed = params.chunk(2, dim=1)
                positions = mask.expand_as(mean_fixed)
                symbols = take(s, positions, mean_fixed, scale_index(scale_fixed[positions]))
                y_hat[positions] = symbols * 2**ACT_BITS + mean_fixed[positions]
            residual = self.exact_lrp[s](torch.cat([support, y_hat], dim=1)).clamp(-half, half)
            done.append(y_hat + residual)
        return torch.cat(done, dim=1) / 2**ACT_BITS

    def latent_symbols(self, y: Tensor, z_fixed: Tensor) -> tuple[Tensor, Tensor]:
        groups = y.chunk(self.slices, dim=1)
        symbols, indexes = [], []

        def encode_pass(s: int, positions: Tensor, mean_fixed: Tensor, index: Tensor) -> Tensor:
            values = torch.round(groups[s][positions] - mean_fixed[positions] / 2**ACT_BITS).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT)
            symbols.append(values)
            indexes.append(index)
            return values

        self._code(z_fixed, encode_pass)
        return torch.cat(symbols), torch.cat(indexes)

    def decode_latent(self, z_fixed: Tensor, take: TakeSymbols) -> Tensor:
        return self._code(z_fixed, lambda s, positions, mean_fixed, index: take(index))
