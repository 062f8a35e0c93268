"""The model zoo: architectures by name, and the trained checkpoints shipped in ``weights/``.

A shipped model is two files: ``weights/NAME.safetensors`` (tensors only, so loading cannot run
code) and ``weights/NAME.json`` (the manifest: architecture, config, training budget, results and
the sha256 of the tensors file). ``XCODEC_WEIGHTS`` points elsewhere. Loading refuses a tensors file whose hash differs from the
manifest's.

A model may also ship decoder heads in files of their own, ``weights/NAME.HEAD.safetensors``
(the ``wavelet`` model's ``perceptual`` head, and ``convfilter``, the post-filter of its files from
format version 11 on), listed under ``heads`` in the manifest with their sizes (the head module's
``config``: its constructor arguments) and sha256. No coded stream depends on a head, and the 8
bytes that files store to name their weights are those of ``NAME.safetensors`` alone: adding a
head leaves every file made with the model decodable, to the same pixels when no version of the
format decodes with it yet. A head that a format version's decoder uses for its fidelity output
(``convfilter``) is not retrained in place: that version's files would decode to other pixels.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings
from collections.abc import Iterator, MutableMapping
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..defaults import DEFAULT_MODEL  # noqa: F401 (torch-free, for the command line; re-exported)
from ..errors import ModelError
from ..files import sha256, write_atomic
from . import DEPENDENCY_NOISE
from .codec import Codec
from .manifest import SHIPPED_DIR, WEIGHTS_DIR, Layout, Manifest, available, read_manifest, verified_path  # noqa: F401 (re-exported)


class Architectures(MutableMapping[str, type[Codec]]):
    """Architectures by name, each imported when first looked up: the CNN and the transformer
    import CompressAI, which costs about 3 CPU s (it imports its point-cloud datasets, SciPy and
    torch_geometric), and the default ``wavelet`` model has no use for it."""

    def __init__(self, paths: dict[str, str]):
        self._items: dict[str, str | type[Codec]] = dict(paths)  # "module:class" until imported

    def __getitem__(self, name: str) -> type[Codec]:
        item = self._items[name]
        if isinstance(item, str):
            module, cls = item.split(":")
            with warnings.catch_warnings():  # also where the caller's filters were reset (a test)
                warnings.filterwarnings("ignore", message=DEPENDENCY_NOISE)
                item = self._items[name] = getattr(importlib.import_module(module, __package__), cls)
        return item

    def __setitem__(self, name: str, codec: type[Codec]) -> None:
        self._items[name] = codec

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


ARCHITECTURES = Architectures({"hyperprior": ".hyperprior:GainHyperprior", "transformer": ".transformer:CrossScaleTransformer",
                               "wavelet": ".wavelet:WaveletCodec"})


def build(arch: str, config: dict) -> Codec:
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](**config)


def _verified_file(path: Path, digest: str) -> dict:
    return load_file(verified_path(path, digest))


def _verified_tensors(name: str, weights_dir: Path) -> tuple[dict, Manifest]:
    """The model's tensors, its heads' included, each file checked against the manifest."""
    manifest = read_manifest(name, weights_dir)
    state = _verified_file(weights_dir / f"{name}.safetensors", manifest.sha256)
    for head, entry in manifest.heads.items():
        state |= _verified_file(weights_dir / f"{name}.{head}.safetensors", entry["sha256"])
    return state, manifest


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
    model = build(manifest.arch, manifest.build_config)
    tensors = {key: state.pop(key) for key in model.inference_tensors}
    model.load_state_dict(state)
    model.prepare_inference(tensors)
    return model.eval(), manifest


def from_checkpoint(checkpoint: Path) -> tuple[Codec, dict]:
    """A training checkpoint's model (its trained float weights) and the checkpoint's whole state."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build(state["arch"], state["arch_config"])
    model.load_state_dict(state["model"])
    return model, state


def export(checkpoint: Path, name: str, info: dict, weights_dir: Path = WEIGHTS_DIR) -> Manifest:
    """Write a training checkpoint as ``weights/NAME.safetensors`` plus its manifest."""
    model, state = from_checkpoint(checkpoint)
    extra = model.export_tensors()
    tensors = {**{k: v.contiguous() for k, v in model.state_dict().items()}, **extra}
    weights_dir.mkdir(parents=True, exist_ok=True)
    tensors_path = weights_dir / f"{name}.safetensors"
    write_atomic(tensors_path, save(tensors))  # atomic, with the umask's mode (save_file gives 0600)
    earlier = state.get("earlier", {"steps": 0, "minutes": 0.0})  # training behind the run's --init weights
    info = {"steps": earlier["steps"] + state["step"], "train_minutes": round(earlier["minutes"] + state["elapsed"] / 60, 1), **info}
    manifest = {"arch": state["arch"], "config": state["arch_config"], "sha256": sha256(tensors_path),
                "layout": dataclasses.asdict(Layout.of(model)), "info": info}
    write_atomic(weights_dir / f"{name}.json", (json.dumps(manifest, indent=2) + "\n").encode())
    load.cache_clear()
    return read_manifest(name, weights_dir)


def export_head(checkpoint: Path, name: str, head: str, info: dict, weights_dir: Path = WEIGHTS_DIR,
                part: str | None = None) -> Manifest:
    """Write the ``head`` part of a checkpoint as ``weights/NAME.HEAD.safetensors`` and list it in
    the manifest; the model's own tensors file stays as it is, so do the files made with it.
    ``part``: the checkpoint's part that becomes the head, when it trained in another's place (the
    ``wavelet`` model's ``convfilter``, trained as its ``postfilter``: ``part="postfilter"``).

    The checkpoint's other tensors (the part's place's aside) must equal the shipped model's: a head
    is trained on the decoded images of exactly that codec.
    """
    model, state = from_checkpoint(checkpoint)
    shipped = load_training_weights(name, weights_dir)
    part = part or head
    prefixes = (f"{head}.", f"{part}.")
    codec = {k: v for k, v in state["model"].items() if not k.startswith(prefixes)}
    if codec.keys() != {k for k in shipped if not k.startswith(prefixes)} or any(
            not torch.equal(codec[k], shipped[k]) for k in codec):
        raise ModelError(f"{checkpoint} was not trained on the shipped {name!r} model; its {part} does not fit it")
    tensors = {f"{head}.{k.removeprefix(prefixes[1])}": v.contiguous()
               for k, v in state["model"].items() if k.startswith(prefixes[1])}
    if not tensors:
        raise ModelError(f"{checkpoint} has no {part}")
    head_path = weights_dir / f"{name}.{head}.safetensors"
    write_atomic(head_path, save(tensors))
    path = weights_dir / f"{name}.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("heads", {})[head] = {
        **getattr(model, part).config, "sha256": sha256(head_path),
        "info": {"steps": state["step"], "train_minutes": round(state["elapsed"] / 60, 1), **info}}
    write_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
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
