"""Integer-exact convolution networks for everything that selects a probability.

The ANS decoder needs the *same* entropy parameters as the encoder, to the last bit: a scale that
differs by one float32 ulp can pick another probability table and derail the whole stream. Float
convolutions do not give that guarantee across thread counts, CPU kernels or GPUs, because the
order of the additions changes.

So the networks that produce entropy parameters run in fixed point: weights are integers
(``round(w * 2**WEIGHT_BITS)``), activations are integers (``round(a * 2**ACT_BITS)``), and a layer
is an integer convolution followed by a rounding shift back to ``ACT_BITS``. The integers are held
in float64, where every sum of integers below 2**53 is exact *whatever the order of the additions*,
so any BLAS, thread count or device gives identical results. Before each layer we check that the
largest possible partial sum stays below 2**53, so a pathological input fails loudly instead of
silently rounding; a network whose inputs are bounded by construction (``input_bound``) is checked
once, when it is built, for every input within the bound.

Small networks on small integer inputs can use fewer bits and float32 (exact below 2**24), which
is an order of magnitude faster on a CPU: ``ExactConvNet(net, weight_bits, act_bits, torch.float32)``.
The convolutions of such a network stay on the CPU, whose kernels sum products directly (GPU
libraries may pick transform-based algorithms that are not exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHT_BITS = 12
ACT_BITS = 10
EXACT_LIMITS = {torch.float64: 2.0**53, torch.float32: 2.0**24}


class ExactError(ValueError):
    """An input would overflow the exact integer range (never happens for real latents)."""


def to_fixed(x: Tensor, bits: int) -> Tensor:
    """Round ``x * 2**bits`` to the nearest integer, returned as float64."""
    return torch.round(x.double() * 2.0**bits)


class ExactConvNet(nn.Module):
    """A chain of (transposed) convolutions and ReLUs, evaluated in fixed point.

    Built from a float ``nn.Sequential`` of ``Conv2d``/``ConvTranspose2d``/``ReLU`` layers (a single
    convolution works too); the float weights are rounded once here. Buffers hold the integer
    weights. Input and output are integers in ``dtype`` with ``act_bits`` fractional bits.

    A layer rounds half up, back to ``act_bits``: its sum starts from the bias plus half the last
    step (``r{i}``), then it is divided by a power of two and floored, all exact. ``input_bound``:
    the largest |input| the caller ever gives; if every layer's sums stay exact for such inputs,
    ``forward`` checks nothing (``static``), and ``output_bound`` bounds the output.
    """

    def __init__(self, float_net: nn.Module, weight_bits: int = WEIGHT_BITS, act_bits: int = ACT_BITS,
                 dtype: torch.dtype = torch.float64, input_bound: float | None = None):
        super().__init__()
        self.weight_bits, self.dtype, self.limit = weight_bits, dtype, EXACT_LIMITS[dtype]
        self.half = 2.0 ** (weight_bits - 1)
        layers = list(float_net) if isinstance(float_net, nn.Sequential) else [float_net]
        self.ops: list[tuple[str, int, int, int]] = []  # (kind, stride, padding, output_padding)
        self.bounds: list[tuple[float, float]] = []  # per layer: max over outputs of sum|w|, and max|bias|
        for m in layers:
            if isinstance(m, nn.ReLU):
                self.ops.append(("relu", 0, 0, 0))
                continue
            if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or m.groups != 1 or m.dilation[0] != 1:
                raise TypeError("ExactConvNet supports only Conv2d, ConvTranspose2d (groups=1) and ReLU")
            i = sum(kind != "relu" for kind, *_ in self.ops)
            kind = "deconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
            self.ops.append((kind, m.stride[0], m.padding[0], m.output_padding[0] if kind == "deconv" else 0))
            bias = m.bias.detach() if m.bias is not None else torch.zeros(m.out_channels)
            self.register_buffer(f"w{i}", to_fixed(m.weight.detach(), weight_bits).to(dtype))
            self.register_buffer(f"b{i}", to_fixed(bias, weight_bits + act_bits).to(dtype))
            w, b = getattr(self, f"w{i}"), getattr(self, f"b{i}")
            self.register_buffer(f"r{i}", b + self.half, persistent=False)
            reduce_dims = (0, 2, 3) if kind == "deconv" else (1, 2, 3)
            self.bounds.append((float(w.abs().sum(dim=reduce_dims).max()), float(b.abs().max())))
        self.output_bound = None if input_bound is None else self._propagate(input_bound)
        self.static = self.output_bound is not None

    def _fits(self, bound: float, layer: int) -> bool:
        """Whether every partial sum of conv layer ``layer`` is exact for inputs of |value| <= ``bound``."""
        weight_sum, bias = self.bounds[layer]
        return bound * weight_sum + bias + self.half < self.limit

    def _propagate(self, bound: float) -> float | None:
        """A bound of |output| for inputs of |value| <= ``bound``; None where a layer might not be exact."""
        for layer in range(len(self.bounds)):
            if not self._fits(bound, layer):
                return None
            weight_sum, bias = self.bounds[layer]
            bound = (bound * weight_sum + bias + self.half) * 2.0**-self.weight_bits + 1
        return bound

    def forward(self, x_fixed: Tensor) -> Tensor:
        """Map fixed-point input (integers, ``act_bits``) to fixed-point output, both in ``dtype``."""
        a = x_fixed.to(self.dtype).cpu()
        i = 0
        for kind, stride, pad, out_pad in self.ops:
            if kind == "relu":
                a = a.clamp_min(0) if a is x_fixed else a.clamp_min_(0)  # in place on a fresh sum
                continue
            w, r = getattr(self, f"w{i}").cpu(), getattr(self, f"r{i}").cpu()
            if not self.static:
                # Worst-case |partial sum| = max|a| * max over outputs of sum|w|, plus the bias.
                low, high = torch.aminmax(a)
                if not self._fits(max(-float(low), float(high)), i):
                    raise ExactError("latent values out of the exact integer range")
            i += 1
            if kind == "deconv":
                acc = F.conv_transpose2d(a, w, r, stride=stride, padding=pad, output_padding=out_pad)
            elif w.shape[-2:] == (1, 1) and len(a) == 1 and stride == 1 and pad == 0:
                # per position: one matrix product, several times faster than a convolution on a CPU
                channels, height, width = a.shape[1:]
                acc = torch.addmm(r[:, None], w[:, :, 0, 0], a[0].reshape(channels, -1)).view(1, -1, height, width)
            else:
                acc = F.conv2d(a, w, r, stride=stride, padding=pad)
            # exact: a power of two and a floor of integers inside the mantissa (round half up, from ``r``)
            a = acc.mul_(2.0**-self.weight_bits).floor_()
        return a
