"""The installed models' manifests, read without torch, and the checks they allow before a model loads.

A manifest (``weights/NAME.json``) names the architecture, its config, the sha256 of the tensors
file and the architecture's ``layout``: what its ``Codec`` class declares about files
(stride, streams per tile, encoder efforts), written by ``zoo.export``. With it the command line and
the Pillow plugin refuse, in milliseconds and before torch loads, a file that the model cannot
decode (``check_header``) or an effort it lacks (``check_effort``); ``api.decode`` makes the same
checks with the loaded model's own layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..container import Header, valid_model_name
from ..defaults import LOSSLESS_MODELS
from ..errors import FormatError, InputError, ModelError
from ..files import sha256

_PACKAGED = Path(__file__).resolve().parents[1] / "weights"  # xcodec/weights in an installed wheel
SHIPPED_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parents[1] / "weights"  # else the checkout's weights/
WEIGHTS_DIR = Path(os.environ.get("XCODEC_WEIGHTS") or SHIPPED_DIR)


@dataclass(frozen=True)
class Layout:
    """What an architecture's ``Codec`` class declares about its files and encoder levels."""

    stride: int
    streams_per_tile: int
    efforts: int
    default_effort: int

    @classmethod
    def of(cls, codec: Any) -> Layout:
        """The layout of a ``Codec`` class or instance."""
        return cls(codec.stride, codec.streams_per_tile, codec.efforts, codec.default_effort)


@dataclass(frozen=True)
class Manifest:
    name: str
    arch: str
    config: dict
    sha256: str
    info: dict
    layout: Layout | None = None  # None in manifests exported before layouts were recorded
    # decoder head -> {its sizes (the head's arguments: "width", ...), "sha256": str, "info": dict}
    heads: dict = field(default_factory=dict)

    @property
    def model_hash(self) -> bytes:
        """The 8 bytes a bitstream stores to name the exact weights it needs (the heads aside)."""
        return bytes.fromhex(self.sha256)[:8]

    @property
    def build_config(self) -> dict:
        """The architecture's arguments, the shipped heads' included: each head's sizes, a dict (a
        head listed by its width alone, as the first ones were, gets its other sizes' defaults)."""
        return {**self.config, **{head: {k: v for k, v in entry.items() if k not in ("sha256", "info")}
                                  for head, entry in self.heads.items()}}


def available(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """The installed models (not the lossless coder's tables, which ``xcodec.lossless.tables`` loads)."""
    return sorted(p.stem for p in weights_dir.glob("*.json") if p.stem not in LOSSLESS_MODELS)


def read_manifest(name: str, weights_dir: Path = WEIGHTS_DIR) -> Manifest:
    """The manifest of an installed model; a name is an identifier, never a path."""
    path = weights_dir / f"{name}.json"
    if not valid_model_name(name) or not path.exists():
        known = ", ".join(available(weights_dir)) or "none"
        raise ModelError(f"unknown model {name!r} (installed in {weights_dir}: {known})")
    data = json.loads(path.read_text())
    layout = Layout(**data["layout"]) if "layout" in data else None
    return Manifest(name, data["arch"], data["config"], data["sha256"], data.get("info", {}), layout, data.get("heads", {}))


def verified_path(path: Path, digest: str) -> Path:
    """``path``, once its sha256 is known to be the manifest's ``digest``."""
    if not path.exists():
        raise ModelError(f"weights file {path} is missing")
    if sha256(path) != digest:
        raise ModelError(f"{path} does not match the sha256 in its manifest; refusing to load it")
    return path


def check_effort(name: str, layout: Layout, effort: int | None) -> int:
    """The encoder level to use: ``effort``, or the model's default when None; refuse one it lacks."""
    if effort is None:
        return layout.default_effort
    if not 0 <= effort < layout.efforts:
        raise InputError(f"model {name!r} has effort levels 0..{layout.efforts - 1}, not {effort}")
    return effort


def check_header(h: Header, manifest: Manifest, layout: Layout | None) -> None:
    """Refuse a file's header that the model of ``manifest`` and ``layout`` cannot decode: other
    weights, or streams per tile, padding or a tile size that are not the model's (None: not known yet)."""
    if manifest.model_hash != h.model_hash:
        raise ModelError(f"the file was made with other weights for model {h.model!r} than the installed ones")
    if layout is None:
        return
    if h.streams_per_tile != layout.streams_per_tile:
        raise FormatError(f"invalid .xsc header ({h.streams_per_tile} streams per tile; model {h.model!r} codes {layout.streams_per_tile})")
    if (h.pad_bottom, h.pad_right) != (-h.height % layout.stride, -h.width % layout.stride):
        raise FormatError("invalid .xsc header (padding does not match the image size and model)")
    if h.tile % layout.stride:
        raise FormatError(f"invalid .xsc header (tile size {h.tile} is not a multiple of the model's stride {layout.stride})")


def check_file(header: Header) -> Manifest:
    """``check_header`` against the installed model the header names, before it loads (torch-free);
    a manifest without a layout leaves those checks to ``api.decode``."""
    manifest = read_manifest(header.model)
    check_header(header, manifest, manifest.layout)
    return manifest


def find_model(name: str, effort: int | None = None) -> Manifest:
    """The manifest of an installed model, refusing an ``effort`` it lacks (where the manifest has the layout)."""
    manifest = read_manifest(name)
    if manifest.layout is not None:
        check_effort(name, manifest.layout, effort)
    return manifest
