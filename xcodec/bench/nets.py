"""The converted weights of the learned metrics (LPIPS, DISTS): where they are, and that they are the right ones."""

from __future__ import annotations

import os
from pathlib import Path

from ..files import sha256


def weights_folder(filenames: list[str], env: str | None = None) -> Path:
    """The folder ``$env`` if set, else the models' folder (``XCODEC_WEIGHTS``) if it has all of
    ``filenames``, else the shipped one."""
    if env and os.environ.get(env):
        return Path(os.environ[env])
    from ..models import zoo

    return zoo.WEIGHTS_DIR if all((zoo.WEIGHTS_DIR / name).exists() for name in filenames) else zoo.SHIPPED_DIR


def weights_path(env: str, filename: str) -> Path:
    """The file ``$env`` if set, else ``filename`` in ``weights_folder``."""
    return Path(os.environ[env]) if os.environ.get(env) else weights_folder([filename]) / filename


def load_checked(path: Path, digest: str, name: str, convert: str) -> dict:
    """The tensors of ``path`` (safetensors) once its sha256 is ``digest``; ``convert`` is the command that makes it."""
    from safetensors.torch import load_file

    if not path.exists():
        raise FileNotFoundError(f"{name} weights {path} are missing; convert them with `{convert}` (see docs/benchmarks.md)")
    found = sha256(path)
    if found != digest:
        raise ValueError(f"{path} has sha256 {found[:16]}..., not the converted {name} weights ({digest[:16]}...)")
    return load_file(str(path))
