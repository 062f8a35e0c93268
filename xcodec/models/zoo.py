"""The model zoo: architectures by name, and the trained checkpoints shipped in ``weights/``.

A shipped model is two files: ``weights/NAME.safetensors`` (tensors only, so loading cannot run
code) and ``weights/NAME.json`` (the manifest: architecture, config, training budget, results and
the sha256 of the tensors file). ``XCODEC_WEIGHTS`` points elsewhere. Loading refuses a tensors file whose hash differs from the
manifest's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..container import valid_model_name
from ..defaults import LOSSLESS_MODEL
from ..errors import ModelError
from ..files import sha256, write_atomic
from .codec import Codec
from .hyperprior import GainHyperprior
from .transformer import CrossScaleTransformer
from .wavelet import WaveletCodec

ARCHITECTURES: dict[str, type[Codec]] = {"hyperprior": GainHyperprior, "transformer": CrossScaleTransformer,
                                         "wavelet": WaveletCodec}
_PACKAGED = Path(__file__).resolve().parents[1] / "weights"  # xcodec/weights in an installed wheel
SHIPPED_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parents[1] / "weights"  # else the checkout's weights/
WEIGHTS_DIR = Path(os.environ.get("XCODEC_WEIGHTS") or SHIPPED_DIR)
DEFAULT_MODEL = "wavelet"


@dataclass(frozen=True)
class Manifest:
    name: str
    arch: str
    config: dict
    sha256: str
    info: dict

    @property
    def model_hash(self) -> bytes:
        """The 8 bytes a bitstream stores to name the exact weights it needs."""
        return bytes.fromhex(self.sha256)[:8]


def build(arch: str, config: dict) -> Codec:
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](**config)


def available(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """The installed models (not the lossless coder's table, which ``xcodec.lossless.tables`` loads)."""
    return sorted(p.stem for p in weights_dir.glob("*.json") if p.stem != LOSSLESS_MODEL)


def read_manifest(name: str, weights_dir: Path = WEIGHTS_DIR) -> Manifest:
    """The manifest of an installed model; a name is an identifier, never a path."""
    path = weights_dir / f"{name}.json"
    if not valid_model_name(name) or not path.exists():
        known = ", ".join(available(weights_dir)) or "none"
        raise ModelError(f"unknown model {name!r} (installed in {weights_dir}: {known})")
    data = json.loads(path.read_text())
    return Manifest(name, data["arch"], data["config"], data["sha256"], data.get("info", {}))


def verified_file(name: str, weights_dir: Path = WEIGHTS_DIR) -> tuple[Path, Manifest]:
    """The tensors file of an installed model and its manifest, once its hash is checked."""
    manifest = read_manifest(name, weights_dir)
    tensors_path = weights_dir / f"{name}.safetensors"
    if not tensors_path.exists():
        raise ModelError(f"weights file {tensors_path} is missing")
    if sha256(tensors_path) != manifest.sha256:
        raise ModelError(f"{tensors_path} does not match the sha256 in its manifest; refusing to load it")
    return tensors_path, manifest


def _verified_tensors(name: str, weights_dir: Path) -> tuple[dict, Manifest]:
    tensors_path, manifest = verified_file(name, weights_dir)
    return load_file(tensors_path), manifest


def load_training_weights(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The float weights of a shipped model, to start training from (``xcodec train --init``)."""
    state, manifest = _verified_tensors(name, weights_dir)
    for key in ARCHITECTURES[manifest.arch].inference_tensors:
        del state[key]
    return state


@cache
def load(name: str, weights_dir: Path = WEIGHTS_DIR) -> tuple[Codec, Manifest]:
    """Load a shipped model for inference (CPU, eval mode), verifying its hash."""
    state, manifest = _verified_tensors(name, weights_dir)
    model = build(manifest.arch, manifest.config)
    tensors = {key: state.pop(key) for key in model.inference_tensors}
    model.load_state_dict(state)
    model.prepare_inference(tensors)
    return model.eval(), manifest


def export(checkpoint: Path, name: str, info: dict, weights_dir: Path = WEIGHTS_DIR) -> Manifest:
    """Write a training checkpoint as ``weights/NAME.safetensors`` plus its manifest."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build(state["arch"], state["arch_config"])
    model.load_state_dict(state["model"])
    extra = model.export_tensors()
    tensors = {**{k: v.contiguous() for k, v in model.state_dict().items()}, **extra}
    weights_dir.mkdir(parents=True, exist_ok=True)
    tensors_path = weights_dir / f"{name}.safetensors"
    write_atomic(tensors_path, save(tensors))  # atomic, with the umask's mode (save_file gives 0600)
    earlier = state.get("earlier", {"steps": 0, "minutes": 0.0})  # training behind the run's --init weights
    info = {"steps": earlier["steps"] + state["step"], "train_minutes": round(earlier["minutes"] + state["elapsed"] / 60, 1), **info}
    manifest = {"arch": state["arch"], "config": state["arch_config"], "sha256": sha256(tensors_path), "info": info}
    write_atomic(weights_dir / f"{name}.json", (json.dumps(manifest, indent=2) + "\n").encode())
    load.cache_clear()
    return read_manifest(name, weights_dir)


def record_results(name: str, dataset: str, results: dict, weights_dir: Path = WEIGHTS_DIR) -> None:
    """Store a benchmark's per-quality bpp and PSNR (CompressAI results format) in the manifest.

    Only the manifest changes; the tensors file, and so the sha256 that bitstreams refer to, stays.
    """
    path = weights_dir / f"{name}.json"
    manifest = json.loads(path.read_text())
    r = results["results"]
    measured = {"images": results["meta"]["images"], "quality": r["quality"], "bpp": r["bpp"], "psnr": r["psnr-rgb"],
                "source": results["description"]}
    manifest["info"].setdefault("results", {})[dataset] = measured
    write_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
