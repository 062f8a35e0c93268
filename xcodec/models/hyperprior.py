"""Variable-rate mean-scale hyperprior: the compact CNN baseline.

Ballé et al. 2018 / Minnen et al. 2018 (mean-scale hyperprior, no context model) with the gain
units of ``latent.Hyperprior``. The hyper-synthesis that gives the latent's means and scales
has an integer-exact twin (``exact.ExactConvNet``) for coding, so encoder and decoder agree to the
bit on any machine.
"""

from __future__ import annotations

from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from ..entropy import SYMBOL_LIMIT
from .codec import TakeSymbols, ste_round
from .exact import ACT_BITS, ExactConvNet
from .latent import HyperpriorCodec, scale_index


class GainHyperprior(HyperpriorCodec):
    """Mean-scale hyperprior with gain units; ``N`` hidden channels, ``M`` latent channels."""

    def __init__(self, N: int = 96, M: int = 160):
        super().__init__(latent_channels=M, hyper_channels=N)
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
        )
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.ReLU(inplace=True),
            conv(N, N), nn.ReLU(inplace=True), conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, N), nn.ReLU(inplace=True),
            deconv(N, N * 3 // 2), nn.ReLU(inplace=True),
            conv(N * 3 // 2, 2 * M, stride=1, kernel_size=3),
        )

    def forward(self, x: Tensor, quality: Tensor) -> dict:
        """Training forward: noisy likelihoods for the rate, rounded latents for the distortion."""
        g, ig = self.hyper.gains(quality)
        y = self.g_a(x) * g
        z_likelihoods, z_hat = self.hyper(self.h_a(y))
        means, scales = self.h_s(z_hat).chunk(2, dim=1)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        y_hat = ste_round(y - means) + means
        x_hat = self.g_s(y_hat * ig)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def prepare_latent_inference(self) -> None:
        self.exact_h_s = ExactConvNet(self.h_s)

    def _means_and_indexes(self, z_fixed: Tensor) -> tuple[Tensor, Tensor]:
        mean_fixed, scale_fixed = self.exact_h_s(z_fixed).chunk(2, dim=1)
        return mean_fixed / 2**ACT_BITS, scale_index(scale_fixed)

    def latent_symbols(self, y: Tensor, z_fixed: Tensor) -> tuple[Tensor, Tensor]:
        means, indexes = self._means_and_indexes(z_fixed)
        return (y - means).round().clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT).flatten(), indexes.flatten()

    def decode_latent(self, z_fixed: Tensor, take: TakeSymbols) -> Tensor:
        means, indexes = self._means_and_indexes(z_fixed)
        return take(indexes) + means
