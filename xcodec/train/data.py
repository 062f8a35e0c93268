"""Training data: a compact in-memory pack of photos and random crops from it.

Decoding 1,500 JPEGs every epoch would cost more CPU than the model on 2 cores, so the photos are
decoded once, downscaled (large photos by an integer factor, which also hides JPEG artefacts) and
kept as uint8 arrays in a single ``.npz`` pack that later runs, and GPU runs, reuse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import list_images, write_atomic

PACK_SHORT_SIDE = 384  # photos whose short side is at least twice this are downscaled


def _load_for_training(path: Path, crop: int) -> np.ndarray | None:
    with Image.open(path) as im:
        im = im.convert("RGB")
        factor = max(1, min(im.size) // PACK_SHORT_SIDE)
        if factor > 1:
            im = im.resize((im.width // factor, im.height // factor), Image.Resampling.LANCZOS)
        if min(im.size) < crop:
            return None
        return np.asarray(im, dtype=np.uint8)


def build_pack(folder: Path, pack_path: Path, crop: int) -> None:
    """Decode every photo under ``folder`` that can give a ``crop`` px crop into one ``.npz`` file."""
    arrays = [a for a in (_load_for_training(p, crop) for p in list_images(folder)) if a is not None]
    if not arrays:
        raise FileNotFoundError(f"no usable training images under {folder}")
    pack_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(pack_path, lambda f: np.savez(f, *arrays))


class CropSampler:
    """Random ``size`` x ``size`` crops with random flips from a pack, as float batches in [0, 1]."""

    def __init__(self, pack_path: Path, size: int, generator: torch.Generator):
        with np.load(pack_path) as pack:
            self.images = [pack[k] for k in pack.files]
        self.size = size
        self.generator = generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def batch(self, n: int) -> torch.Tensor:
        crops = []
        for _ in range(n):
            img = self.images[self._randint(len(self.images))]
            top = self._randint(img.shape[0] - self.size + 1)
            left = self._randint(img.shape[1] - self.size + 1)
            crop = img[top : top + self.size, left : left + self.size]
            if self._randint(2):
                crop = crop[:, ::-1]
            crops.append(np.ascontiguousarray(crop))
        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        return batch.float().div_(255.0)
