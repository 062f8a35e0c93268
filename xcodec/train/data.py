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

# The structure set: photos of buildings, signs and graphics-like content that no training pack
# holds, so that they measure the model on structure it has not seen (docs/training.md#held-out-photos).
# Paths relative to the training folder (../shared/data/train), matched on a path's end, so a pack
# built from one of its subfolders leaves them out too.
HELD_OUT = (
    "sun-hays80/abbey_sun_asztnlqhlrvirneh.jpg",
    "sun-hays80/aqueduct_sun_ancegghzusmmvzjn.jpg",
    "sun-hays80/building_facade_sun_bpaohzcfkhzodryb.jpg",
    "sun-hays80/candy_store_sun_aoqcvifuszwpcvcj.jpg",
    "sun-hays80/cathedral_indoor_sun_aehpzycvadvphcuu.jpg",
    "sun-hays80/cockpit_sun_czprfwxqccwwxhmb.jpg",
    "sun-hays80/fastfood_restaurant_sun_aubvtrshvuxssmgr.jpg",
    "sun-hays80/lift_bridge_sun_bogybasqeljvmuuy.jpg",
    "sun-hays80/phone_booth_sun_aadtmifyuvqcfkcr.jpg",
    "sun-hays80/skyscraper_sun_bmqtqkyurjjefkjj.jpg",
    "sun-hays80/street_sun_bkgpqbvgorkjqzgp.jpg",
    "sun-hays80/subway_platform_sun_bjvfosnqkelfmhwy.jpg",
    "sun-hays80/warehouse_sun_bggemsvcykyfkkyl.jpg",
    "wallpapers/plasma-workspace-wallpapers__Grey_2560x1600.jpg",
)


def held_out(path: Path) -> bool:
    """Whether ``path`` is one of the ``HELD_OUT`` photos."""
    posix = path.as_posix()
    return any(posix == name or posix.endswith("/" + name) for name in HELD_OUT)


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
    """Decode every photo under ``folder`` that can give a ``crop`` px crop, less the ``HELD_OUT``
    ones, into one ``.npz`` file."""
    paths = [p for p in list_images(folder) if not held_out(p)]
    arrays = [a for a in (_load_for_training(p, crop) for p in paths) if a is not None]
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
