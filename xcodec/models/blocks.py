"""Transformer building blocks for the cross-scale codec. All work on NCHW feature maps.

- ``HybridAttention``: spatial attention split by frequency. A high-frequency branch attends within
  local windows (Swin-style, optionally shifted); a low-frequency branch lets every position attend
  to an average-pooled (coarse) copy of the whole map.
- ``ChannelAttention``: self-attention across channels (a C x C attention map per head), linear in
  the number of pixels.
- ``MixFFN``: mixed local-global feed-forward network: depth-wise 3x3 and 5x5 convolutions on two
  halves of the hidden channels, and a global branch (pooled context) that gates them.
- ``HybridBlock``: the three above as pre-norm residual steps, each switchable for ablations.
- ``CrossScaleAttention``: positions of one resolution attend to the aligned region of another
  resolution (coarse windows to the fine features they summarise, or fine windows to their coarse
  context), linking global context and detail.

``HybridBlock`` and its parts take a ``rows`` function (``Rows``) that computes a map from its
rows: ``whole`` at once (training, the encoder), ``threads.map_rows`` in stripes on several threads
(the decoder's post-filter and perceptual head). The global steps (the pooled keys and values, the
channel attention's C x C maps, the FFN's mean) run on the whole map, everything per position or
per window in stripes, with the same kernels on the same rows: the result is the same bits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# (fn, height, halo, align) -> the map of ``height`` rows that ``fn(top, bottom)`` computes by rows
# (dim -2), exact at rows more than ``halo`` from a cut, cuts at multiples of ``align``.
Rows = Callable[[Callable[[int, int], Tensor], int, int, int], Tensor]


def whole(fn: Callable[[int, int], Tensor], height: int, halo: int = 0, align: int = 1) -> Tensor:
    """The ``Rows`` that computes a map at once: ``fn(0, height)``."""
    return fn(0, height)


ONEDNN_MIN = 20480  # torch convolves a batch-1 float32 CPU map of more values than this with oneDNN


def blocked(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn(x)`` for a chain of convolutions (not 1x1), ReLUs and sums whose smallest input is
    ``x``: in inference on the CPU, on oneDNN's blocked tensors whenever torch would run each of
    those convolutions with oneDNN anyway. The same kernels give the same bits, without the
    reorders to and from NCHW around every call (a third of the post-filter's fine path).
    """
    if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and (len(x) > 1 or x.numel() > ONEDNN_MIN)):
        return fn(x.to_mkldnn()).to_dense()
    return fn(x)


def pad_to(x: Tensor, multiple: int, mode: str = "constant") -> Tensor:
    """Pad the bottom and right of an NCHW map to multiples of ``multiple`` (``x`` itself if they are)."""
    bottom, right = -x.shape[2] % multiple, -x.shape[3] % multiple
    return F.pad(x, (0, right, 0, bottom), mode=mode) if bottom or right else x


def pool_for(height: int, width: int, pool: int, tokens: int | None = None) -> int:
    """The pool of a global attention over a ``height`` x ``width`` map: ``pool``, grown until the
    pooled map has at most ``tokens`` positions (None: ``pool``). The attention costs the map's
    positions times the pooled ones: bounded, it grows with the positions alone."""
    while tokens and -(-height // pool) * -(-width // pool) > tokens:
        pool += 1
    return pool


def windows(x: Tensor, size: int, heads: int) -> Tensor:
    """(B, C, H, W) -> (B * windows, heads, size * size, C / heads); H and W multiples of size."""
    B, C, H, W = x.shape
    x = x.view(B, heads, C // heads, H // size, size, W // size, size)
    return x.permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, heads, size * size, C // heads)


def unwindows(t: Tensor, B: int, H: int, W: int, size: int) -> Tensor:
    """Inverse of ``windows``."""
    heads, d = t.shape[1], t.shape[3]
    t = t.view(B, H // size, W // size, heads, size, size, d)
    return t.permute(0, 3, 6, 1, 4, 2, 5).reshape(B, heads * d, H, W)


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, C, H, W) -> (B, heads, H * W, C / heads)."""
    B, C, H, W = x.shape
    return x.view(B, heads, C // heads, H * W).transpose(2, 3)


class HybridAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4, window: int = 8, pool: int = 4, shift: bool = False,
                 local: bool = True, coarse: bool = True):
        super().__init__()
        if not (local or coarse):
            raise ValueError("HybridAttention needs at least one branch")
        branches = int(local) + int(coarse)
        self.window, self.pool, self.shift = window, pool, shift
        self.local_dim = dim // branches if local else 0
        self.coarse_dim = dim - self.local_dim
        self.local_heads = max(1, heads // branches) if local else 0
        self.coarse_heads = max(1, heads - self.local_heads) if coarse else 0
        if local:
            self.local_qkv = nn.Conv2d(dim, 3 * self.local_dim, 1)
        if coarse:
            self.coarse_q = nn.Conv2d(dim, self.coarse_dim, 1)
            self.coarse_kv = nn.Conv2d(dim, 2 * self.coarse_dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _local(self, x: Tensor, w: int) -> Tensor:
        B, _, H, W = x.shape
        offset = w // 2 if self.shift else 0
        xp = pad_to(x, w)
        if offset:
            xp = torch.roll(xp, (-offset, -offset), dims=(2, 3))
        q, k, v = self.local_qkv(xp).chunk(3, dim=1)
        Hp, Wp = xp.shape[2:]
        out = F.scaled_dot_product_attention(*(windows(t, w, self.local_heads) for t in (q, k, v)))
        out = unwindows(out, B, Hp, Wp, w)
        if offset:
            out = torch.roll(out, (offset, offset), dims=(2, 3))
        return out[:, :, :H, :W]

    def _pooled(self, x: Tensor, tokens: int | None) -> tuple[Tensor, Tensor]:
        """The coarse branch's keys and values, from the whole map pooled to at most ``tokens``
        positions (``pool_for``; None: by ``pool``)."""
        H, W = x.shape[2:]
        pool = pool_for(H, W, self.pool, tokens)
        pooled = F.avg_pool2d(x, pool, ceil_mode=True) if min(H, W) > pool else x
        k, v = (_heads(t, self.coarse_heads) for t in self.coarse_kv(pooled).chunk(2, dim=1))
        return k, v

    def _coarse(self, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, _, H, W = x.shape
        q = _heads(self.coarse_q(x), self.coarse_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(2, 3).reshape(B, self.coarse_dim, H, W)

    def forward(self, x: Tensor, rows: Rows = whole, tokens: int | None = None) -> Tensor:
        """Each query row attends to its own windows and to all of the pooled map (at most
        ``tokens`` positions): stripes of whole windows are exact (not with ``shift``, whose
        windows wrap around)."""
        H, W = x.shape[2:]
        w = min(self.window, H, W)
        if self.shift and rows is not whole:
            raise ValueError("shifted windows cannot be computed in stripes")
        kv = self._pooled(x, tokens) if self.coarse_dim else ()

        def part(top: int, bottom: int) -> Tensor:
            stripe = x[..., top:bottom, :]
            parts = ([self._local(stripe, w)] if self.local_dim else []) + ([self._coarse(stripe, *kv)] if kv else [])
            return self.proj(torch.cat(parts, dim=1))

        return rows(part, H, 0, w)


class ChannelAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, rows: Rows = whole) -> Tensor:
        B, C, H, W = x.shape
        qkv = rows(lambda top, bottom: self.qkv(x[..., top:bottom, :]), H, 0, 1)
        q, k, v = (t.reshape(B, self.heads, C // self.heads, H * W) for t in qkv.chunk(3, dim=1))
        attn = ((F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(2, 3)) * self.temperature).softmax(dim=-1)
        return rows(lambda top, bottom: self.proj((attn @ v[..., top * W : bottom * W]).reshape(B, C, bottom - top, W)), H, 0, 1)


class MixFFN(nn.Module):
    def __init__(self, dim: int, expansion: int = 2, mixed: bool = True):
        super().__init__()
        hidden = dim * expansion
        self.mixed = mixed
        self.up = nn.Conv2d(dim, hidden, 1)
        if mixed:
            half = hidden // 2
            self.dw3 = nn.Conv2d(half, half, 3, padding=1, groups=half)
            self.dw5 = nn.Conv2d(hidden - half, hidden - half, 5, padding=2, groups=hidden - half)
            self.gate = nn.Linear(hidden, hidden)
        self.down = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor, rows: Rows = whole) -> Tensor:
        """The convolutions by ``rows``; the GELU on the whole map (a kernel's vector loop and its
        scalar tail may differ in the last bit, so its input keeps the whole map's length)."""
        if not self.mixed:  # an ablation: whole
            return self.down(F.gelu(self.up(x)))
        H = x.shape[2]

        def mix(top: int, bottom: int) -> Tensor:
            a, b = self.up(x[..., top:bottom, :]).split([self.dw3.in_channels, self.dw5.in_channels], dim=1)
            return torch.cat([self.dw3(a), self.dw5(b)], dim=1)

        h = rows(mix, H, 2, 1)  # exact two rows from a cut: the radius of the 5x5
        h = F.gelu(h * torch.sigmoid(self.gate(h.mean(dim=(2, 3))))[:, :, None, None])
        return rows(lambda top, bottom: self.down(h[..., top:bottom, :]), H, 0, 1)


class HybridBlock(nn.Module):
    """Hybrid spatial attention, channel attention and mixed FFN, each pre-norm and residual."""

    def __init__(self, dim: int, heads: int = 4, window: int = 8, pool: int = 4, shift: bool = False,
                 local: bool = True, coarse: bool = True, channel: bool = True, mixed_ffn: bool = True):
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim), HybridAttention(dim, heads, window, pool, shift, local, coarse)
        self.channel = channel
        if channel:
            self.norm2, self.channel_attn = LayerNorm2d(dim), ChannelAttention(dim, heads)
        self.norm3, self.ffn = LayerNorm2d(dim), MixFFN(dim, mixed=mixed_ffn)

    def forward(self, x: Tensor, rows: Rows = whole, tokens: int | None = None) -> Tensor:
        """``tokens``: the bound of the global attention's pooled map (``HybridAttention``)."""
        x = x + self.attn(self.norm1(x), rows, tokens)
        if self.channel:
            x = x + self.channel_attn(self.norm2(x), rows)
        return x + self.ffn(self.norm3(x), rows)


class CrossScaleAttention(nn.Module):
    """Each ``window`` x ``window`` window of ``x`` attends to the aligned region of ``context``.

    ``context`` has ``ratio`` times the resolution of ``x`` (ratio 2: a finer map, each window sees
    the 2w x 2w fine region it summarises; ratio 1/2 is expressed by ``ratio=0.5``: each window sees
    its coarse w/2 x w/2 parent region). Pre-norm, residual.
    """

    def __init__(self, dim: int, context_dim: int, ratio: float, heads: int = 4, window: int = 8):
        super().__init__()
        self.ratio, self.heads, self.window = ratio, heads, window
        self.norm_q, self.norm_kv = LayerNorm2d(dim), LayerNorm2d(context_dim)
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(context_dim, 2 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        B, C, H, W = x.shape
        w = min(self.window, H, W)
        if self.ratio < 1:  # the context window must be a whole number of coarse pixels
            w = max(w, round(1 / self.ratio))
        wc = max(1, round(w * self.ratio))
        q = pad_to(self.q(self.norm_q(x)), w)
        k, v = self.kv(self.norm_kv(context)).chunk(2, dim=1)
        Hp, Wp = q.shape[2:]
        k, v = (F.pad(t, (0, Wp // w * wc - t.shape[3], 0, Hp // w * wc - t.shape[2])) for t in (k, v))
        out = F.scaled_dot_product_attention(windows(q, w, self.heads), windows(k, wc, self.heads), windows(v, wc, self.heads))
        return x + self.proj(unwindows(out, B, Hp, Wp, w)[:, :, :H, :W])
