"""The latent models' shared parts: the hyperprior component, and the codec skeleton of the CNN and the transformer.

``Hyperprior`` holds what a variable-rate hyperprior model needs beside its transforms:

- gain units (Cui et al. 2021): a learned gain vector per quality 1..8 multiplies the latent
  before quantization and a learned inverse gain divides it before synthesis; fractional qualities
  interpolate the log-gains linearly;
- the hyper-latent *z*: CompressAI's ``EntropyBottleneck`` (factorized prior, its auxiliary
  quantile loss) for training, and for coding per-channel tables (``z_pmf``, computed once at
  export) with fixed-point medians, so that encoder and decoder agree to the bit.

``HyperpriorCodec`` composes it into a ``Codec`` with two streams per tile (*z*, then the latent
*y* coded with Gaussians whose parameters come from *z*). A model subclasses it with its
transforms (``g_a``, ``g_s``, ``h_a``), its training ``forward`` and the order in which its
latent is coded (``latent_symbols``, ``decode_latent``, ``prepare_latent_inference``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from torch import Tensor, nn

from ..entropy import GaussianReader, decode_categorical, encode_categorical, encode_gaussian
from .codec import LAMBDAS, Codec, TakeSymbols, TileCode, interpolate_quality, one_thread, ste_round
from .exact import ACT_BITS, to_fixed

SCALE_MIN = 0.11


def scale_table_fixed() -> Tensor:
    """The Gaussian scales the coder may use, in fixed point (``ACT_BITS``), about 1% apart.

    The coder rounds each scale up to the next entry. Coarser tables cost rate: with entries 12%
    apart the files of the ``hyperprior`` model were 1.5-3.5% larger than the ideal code length of
    the exact parameters, with 1% they are within 0.2%. The table has 837 entries.

    Built by integer arithmetic rather than ``exp``/``linspace``, whose last bit may differ between
    math libraries: these integers, and the float64 scales ``table / 2**ACT_BITS``, are the same on
    every machine.
    """
    table = [round(SCALE_MIN * 2**ACT_BITS)]
    while table[-1] < 256 * 2**ACT_BITS:
        table.append(table[-1] + max(1, table[-1] // 100))
    return torch.tensor(table, dtype=torch.float64)


def scale_index(scale_fixed: Tensor) -> Tensor:
    """Index of the first table scale >= each fixed-point scale (an exact integer comparison)."""
    table = scale_table_fixed()
    return torch.searchsorted(table, scale_fixed.contiguous()).clamp_max(len(table) - 1)


def z_pmf_table(eb: EntropyBottleneck, max_radius: int = 127) -> Tensor:
    """Per-channel probabilities of the integer offsets -R..R around each channel's median.

    R covers the factorized prior's learned quantiles (capped at ``max_radius``); values outside
    are clamped by the encoder.
    """
    with torch.no_grad():
        q = eb.quantiles.detach()[:, 0, :]
        medians = q[:, 1]
        radius = int(torch.ceil(torch.maximum(medians - q[:, 0], q[:, 2] - medians)).max().clamp(1, max_radius))
        offsets = torch.arange(-radius, radius + 1, dtype=q.dtype)
        pmf, _, _ = eb._likelihood((medians[:, None] + offsets[None, :])[:, None, :], stop_gradient=True)
    return pmf[:, 0, :].double().clamp_min(0)


class Hyperprior(nn.Module):
    """Gain units for ``latent_channels``, and a hyper-latent of ``hyper_channels``."""

    def __init__(self, latent_channels: int, hyper_channels: int):
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)
        # Start gains at sqrt(lambda / lambda_mid): finer quantization for higher quality.
        log_l = torch.log(torch.tensor(LAMBDAS))
        init = (0.5 * (log_l - log_l.mean()))[:, None].repeat(1, latent_channels)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())

    def gains(self, quality: Tensor) -> tuple[Tensor, Tensor]:
        """Gain and inverse gain, shape (B, M, 1, 1), for qualities (B,)."""
        g = torch.exp(interpolate_quality(self.log_gain, quality))
        ig = torch.exp(interpolate_quality(self.log_inv_gain, quality))
        return g[:, :, None, None], ig[:, :, None, None]

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Training: ``z`` likelihoods (noisy) and the rounded ``z_hat`` (straight-through)."""
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
        return z_likelihoods, ste_round(z - medians) + medians

    # --- exact coding --------------------------------------------------------------------------

    @property
    def radius(self) -> int:
        return (self.z_pmf.shape[1] - 1) // 2

    def encode(self, z: Tensor) -> tuple[bytes, Tensor]:
        """The stream of ``z`` (1, C, h, w), and the decoder's view of it (``z_fixed``)."""
        medians = (self.z_medians / 2**ACT_BITS).view(1, -1, 1, 1)
        offsets = torch.round(z.double().cpu() - medians).clamp(-self.radius, self.radius)
        data = encode_categorical((offsets[0] + self.radius).flatten(1).int().numpy(), self.z_pmf.numpy())
        return data, self.z_fixed(offsets)

    def decode(self, data: bytes, height: int, width: int) -> Tensor:
        """``z_fixed`` from the stream of a ``height`` x ``width`` hyper-latent."""
        symbols = decode_categorical(data, self.z_pmf.numpy(), height * width)
        return self.z_fixed(torch.from_numpy(symbols).double().view(1, -1, height, width) - self.radius)

    def z_fixed(self, offsets: Tensor) -> Tensor:
        """The decoded hyper-latent in fixed point (``ACT_BITS``), exact."""
        return offsets * 2**ACT_BITS + self.z_medians.view(1, -1, 1, 1)

    def export_tensors(self) -> dict[str, Tensor]:
        self.entropy_bottleneck._update_quantiles()  # exact quantiles by bisection, not the aux loss
        return {"z_pmf": z_pmf_table(self.entropy_bottleneck)}

    def prepare_inference(self, z_pmf: Tensor) -> None:
        """The fixed-point medians are an exact function of the float weights, so they are rebuilt
        here; the table ``z_pmf`` is not (it goes through float32 softplus and sigmoid), so it was
        computed once at export and shipped."""
        self.z_medians = to_fixed(self.entropy_bottleneck._get_medians().detach().reshape(-1), ACT_BITS)
        self.z_pmf = z_pmf.double()


class HyperpriorCodec(CompressionModel, Codec):
    """A latent *y* at 1/16 of the tile, coded with Gaussians conditioned on a ``Hyperprior``
    (CompressAI's ``CompressionModel``: the entropy bottleneck's auxiliary loss and buffers)."""

    stride = 64
    streams_per_tile = 2  # z, then y
    inference_tensors = ("z_pmf",)

    g_a: nn.Module
    g_s: nn.Module
    h_a: nn.Module

    def __init__(self, latent_channels: int, hyper_channels: int):
        super().__init__()
        self.hyper = Hyperprior(latent_channels, hyper_channels)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=SCALE_MIN)
        self.register_load_state_dict_pre_hook(_nest_hyperprior_keys)

    def analysis(self, x: Tensor, quality: float) -> tuple[Tensor, Tensor]:
        """The gained latent ``y`` and the hyper-latent ``z`` (encoder only)."""
        return self._latents(self._transform(x), quality)

    def _transform(self, x: Tensor) -> Tensor:
        """``g_a(x)``, the same for every quality.

        On the CPU this runs on one thread (``one_thread``), as ``_latents`` does: the rounding of a
        few latents per image would otherwise change with the thread count, and so would the file.
        On two cores this is also faster than a float64 analysis on both, which kept files identical.
        """
        with one_thread(x.device):
            return self.g_a(x)

    def _latents(self, transformed: Tensor, quality: float) -> tuple[Tensor, Tensor]:
        with one_thread(transformed.device):
            g, _ = self.hyper.gains(torch.tensor([quality], device=transformed.device))
            y = transformed * g
            return y, self.h_a(y)

    def synthesis(self, y_hat: Tensor, quality: float) -> Tensor:
        """The decoded tile; on the CPU on one thread, so that its pixels do not depend on the thread
        count (kodim01 at quality 4: 18 of 1.18 M samples differed by one level between 1 and 2 threads)."""
        with one_thread(y_hat.device):
            _, ig = self.hyper.gains(torch.tensor([quality], device=y_hat.device))
            return self.g_s(y_hat * ig).clamp(0, 1)

    def compress(self, x: Tensor, quality: float) -> list[bytes]:
        return self.compressor(x)(quality).payloads

    def compressor(self, x: Tensor, effort: int = 0) -> Callable[..., TileCode]:
        """The analysis transform runs once; only the gains, ``h_a`` and the coding per quality."""
        transformed = self._transform(x)

        def compress(quality: float, realism: float = 0.0) -> TileCode:
            y, z = self._latents(transformed, quality)
            z_data, z_fixed = self.hyper.encode(z)
            symbols, indexes = self.latent_symbols(y.double().cpu(), z_fixed)
            return TileCode([z_data, encode_gaussian(symbols.int().numpy(), indexes.numpy(), scales())])

        return compress

    def decompress(self, payloads: list[bytes], height: int, width: int, quality: float,
                   device: torch.device, version: int | None = None) -> Tensor:
        z_data, y_data = payloads
        z_fixed = self.hyper.decode(z_data, height // self.stride, width // self.stride)
        reader = GaussianReader(y_data, scales())
        y_hat = self.decode_latent(z_fixed, lambda indexes: torch.from_numpy(reader.read(indexes.numpy())).double())
        reader.finish()
        return self.synthesis(y_hat.float().to(device), quality)

    def export_tensors(self) -> dict[str, Tensor]:
        return self.hyper.export_tensors()

    def prepare_inference(self, tensors: dict[str, Tensor]) -> None:
        self.hyper.prepare_inference(tensors["z_pmf"])
        self.prepare_latent_inference()

    # --- provided by each model ----------------------------------------------------------------

    def prepare_latent_inference(self) -> None:
        """Build the exact (integer) twins of the networks that give the latent's parameters."""
        raise NotImplementedError

    def latent_symbols(self, y: Tensor, z_fixed: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder: all symbols of ``y`` and their scale indices, flattened in decoding order."""
        raise NotImplementedError

    def decode_latent(self, z_fixed: Tensor, take: TakeSymbols) -> Tensor:
        """Decoder: ŷ (float64), reading symbols in the order ``latent_symbols`` produced them."""
        raise NotImplementedError


def _nest_hyperprior_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load the shipped ``hyperprior`` and ``transformer`` weights, which hold the component's tensors
    at the model's level (``log_gain`` for ``hyper.log_gain``), so that those files, and the
    bitstreams that name their hash, stay valid."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix) :]
        if name in ("log_gain", "log_inv_gain") or name.startswith("entropy_bottleneck."):
            state_dict[f"{prefix}hyper.{name}"] = state_dict.pop(key)


def scales() -> np.ndarray:
    """The scale table as float64 standard deviations (numpy), for the coder."""
    return (scale_table_fixed() / 2**ACT_BITS).numpy()
