"""What every xcodec model shares: variable rate by gain units, the hyper-latent and its coding.

A model subclasses ``VariableRateModel`` and provides the transforms (``g_a``, ``g_s``, ``h_a``)
and the latent's entropy model: ``forward`` for training, ``latent_symbols`` (encoder) and
``decode_latent`` (decoder) for coding, ``prepare_latent_inference`` to build its exact networks.

Variable rate (Cui et al. 2021, gain units): a learned gain vector per quality 1..8 multiplies the
latent before quantization and a learned inverse gain divides it before synthesis; fractional
qualities interpolate the log-gains linearly. Training draws a continuous quality per crop and
the matching lambda (CompressAI's MSE ladder, interpolated log-linearly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from torch import Tensor, nn

from ..container import StreamKind
from ..entropy import GaussianReader, decode_categorical, encode_categorical, encode_gaussian
from ..errors import FormatError
from .exact import ACT_BITS, to_fixed

# CompressAI's MSE lambda ladder (8-bit RGB scale) for qualities 1..8.
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
MIN_QUALITY, MAX_QUALITY = 1.0, float(len(LAMBDAS))
SCALE_MIN = 0.11

# The decoder of a latent: given scale indices (any shape), returns that many decoded symbols.
ReadSymbols = Callable[[Tensor], Tensor]


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def interpolate_quality(table: Tensor, quality: Tensor) -> Tensor:
    """Rows of ``table`` (one per integer quality) linearly interpolated at ``quality`` (B,)."""
    pos = (quality - MIN_QUALITY).clamp(0, len(table) - 1)
    lo = pos.floor().long().clamp(max=len(table) - 2)
    t = (pos - lo).to(table.dtype)
    if table.dim() > 1:
        t = t[:, None]
    return table[lo] * (1 - t) + table[lo + 1] * t


def lambda_for(quality: Tensor) -> Tensor:
    """Rate-distortion lambda for (fractional) qualities, log-linear between the ladder's steps."""
    return torch.exp(interpolate_quality(torch.log(torch.tensor(LAMBDAS, device=quality.device)), quality))


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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU kernels on one thread inside the block (restoring the caller's count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class VariableRateModel(CompressionModel):
    """Gain units and hyper-latent coding, for any transform."""

    g_a: nn.Module
    g_s: nn.Module
    h_a: nn.Module

    def __init__(self, latent_channels: int, hyper_channels: int):
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=SCALE_MIN)
        # Start gains at sqrt(lambda / lambda_mid): finer quantization for higher quality.
        log_l = torch.log(torch.tensor(LAMBDAS))
        init = (0.5 * (log_l - log_l.mean()))[:, None].repeat(1, latent_channels)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())

    @property
    def downsampling_factor(self) -> int:
        return 64

    def gains(self, quality: Tensor) -> tuple[Tensor, Tensor]:
        """Gain and inverse gain, shape (B, M, 1, 1), for qualities (B,)."""
        g = torch.exp(interpolate_quality(self.log_gain, quality))
        ig = torch.exp(interpolate_quality(self.log_inv_gain, quality))
        return g[:, :, None, None], ig[:, :, None, None]

    def hyper_forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Training: ``z`` likelihoods (noisy) and the rounded ``z_hat`` (straight-through)."""
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
        return z_likelihoods, ste_round(z - medians) + medians

    # --- inference -----------------------------------------------------------------------------

    def analysis(self, x: Tensor, quality: float) -> tuple[Tensor, Tensor]:
        """Return the gained latent ``y`` and the hyper-latent ``z`` (encoder only).

        On the CPU this runs on one thread: float32 kernels change their last bits with the thread
        count, which flips the rounding of a few latents per image and so changes the file. With
        one thread, files are byte-identical whatever thread count the caller set (and on two cores
        this is faster than a float64 analysis on both, which also kept them identical).
        """
        with one_thread() if x.device.type == "cpu" else contextlib.nullcontext():
            g, _ = self.gains(torch.tensor([quality], device=x.device))
            y = self.g_a(x) * g
            return y, self.h_a(y)

    def synthesis(self, y_hat: Tensor, quality: float) -> Tensor:
        _, ig = self.gains(torch.tensor([quality], device=y_hat.device))
        return self.g_s(y_hat * ig).clamp(0, 1)

    def compress(self, x: Tensor, quality: float) -> list[tuple[StreamKind, bytes]]:
        """Code a padded image (1, 3, H, W) in [0, 1] into a side-information and a latent stream."""
        y, z = self.analysis(x, quality)
        radius = (self.z_pmf.shape[1] - 1) // 2
        z_medians = (self.z_medians / 2**ACT_BITS).view(1, -1, 1, 1)
        z_offsets = torch.round(z.double().cpu() - z_medians).clamp(-radius, radius)
        symbols, indexes = self.latent_symbols(y.double().cpu(), self.z_fixed(z_offsets))
        return [
            (StreamKind.HYPER, encode_categorical((z_offsets[0] + radius).flatten(1).int().numpy(), self.z_pmf.numpy())),
            (StreamKind.LATENT, encode_gaussian(symbols.int().numpy(), indexes.numpy(), self.scales.numpy())),
        ]

    def decompress(self, streams: dict[StreamKind, bytes], height: int, width: int, quality: float,
                   device: torch.device) -> Tensor:
        """Decode the streams of a padded ``height`` x ``width`` image into (1, 3, H, W) in [0, 1]."""
        if StreamKind.HYPER not in streams or StreamKind.LATENT not in streams:
            raise FormatError("the .xsc file lacks a side-information or latent stream")
        h, w = height // self.downsampling_factor, width // self.downsampling_factor
        radius = (self.z_pmf.shape[1] - 1) // 2
        z_symbols = decode_categorical(streams[StreamKind.HYPER], self.z_pmf.numpy(), h * w)
        z_offsets = torch.from_numpy(z_symbols).double().view(1, -1, h, w) - radius
        reader = GaussianReader(streams[StreamKind.LATENT], self.scales.numpy())

        def read(indexes: Tensor) -> Tensor:
            return torch.from_numpy(reader.read(indexes.numpy())).double()

        y_hat = self.decode_latent(self.z_fixed(z_offsets), read)
        reader.finish()
        return self.synthesis(y_hat.float().to(device), quality)

    def z_fixed(self, z_offsets: Tensor) -> Tensor:
        """The decoded hyper-latent in fixed point (``ACT_BITS``), exact."""
        return z_offsets * 2**ACT_BITS + self.z_medians.view(1, -1, 1, 1)

    @property
    def scales(self) -> Tensor:
        return scale_table_fixed() / 2**ACT_BITS

    def prepare_inference(self, z_pmf: Tensor | None = None) -> None:
        """Freeze what the coder needs: the exact networks and the z tables.

        The fixed-point weights and medians are exact functions of the float weights, so they are
        rebuilt at load time. The z probability table is not (it goes through float32 softplus and
        sigmoid), so it is computed once at export and shipped in the checkpoint as ``z_pmf``.
        """
        self.z_medians = to_fixed(self.entropy_bottleneck._get_medians().detach().reshape(-1), ACT_BITS)
        self.z_pmf = z_pmf_table(self.entropy_bottleneck) if z_pmf is None else z_pmf.double()
        self.prepare_latent_inference()

    def estimate_bits(self, x: Tensor, quality: float) -> float:
        """The model's own rate estimate (eval-mode likelihoods), to check real files against."""
        out = self(x, torch.tensor([quality], device=x.device))
        return sum(float(-torch.log2(lik).sum()) for lik in out["likelihoods"].values())

    # --- provided by each model ----------------------------------------------------------------

    def prepare_latent_inference(self) -> None:
        raise NotImplementedError

    def latent_symbols(self, y: Tensor, z_fixed: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder: all symbols of ``y`` and their scale indices, flattened in decoding order."""
        raise NotImplementedError

    def decode_latent(self, z_fixed: Tensor, read: ReadSymbols) -> Tensor:
        """Decoder: ŷ (float64), reading symbols in the order ``latent_symbols`` produced them."""
        raise NotImplementedError
