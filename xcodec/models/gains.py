"""Detail gains chosen by the encoder for the perceptual decoder (``.xsc`` version 15).

The perceptual head adds the same kind of detail wherever the decoded image looks alike; the photo
had more in some places and less in others. The encoder, which has the photo, measures that: per
``BLOCK`` x ``BLOCK`` block of a tile it tries the head's detail scaled by each of ``GAINS`` at the
realism its user asked for (``encode --realism``), and keeps the gain whose LPIPS (AlexNet, the
spatial map of the bench's ``xcodec.bench.lpips``) is lowest there (``choose``). The decoder scales
the head's detail by the gains, interpolated bilinearly between the blocks' centres so that no block
edge shows (``field``): realism R then blends in R times the scaled detail, and realism 0 stays the
fidelity output, bit for bit. A file without the stream decodes with every gain 1, as before.

Measured first on Kodak images 5-12 at realism 1 (docs/training-log.md, "The encoder's side"):
LPIPS 11.5% lower at quality 1 with 32-pixel blocks (8.5% with 64, 6.5% with 128 on five of them),
and DISTS, which no part of the codec is chosen or trained on, 2-4% lower at every block size; on
real files of all 24 Kodak images, BD-rate against AVIF 4:4:4 at realism 1 LPIPS −33.7% (−27.2%
without the gains) and DISTS −9.9% (−6.9%; docs/results.md). LPIPS is the encoder's criterion
here, so DISTS is the judge of this choice that it was not tuned for.

Stream ``gains``: every tile's blocks in raster order (tiles in raster order, each tile's
``grid_shape`` rows of blocks), each 1 + an index into ``GAINS``, coded by ANS with the fixed
frequencies ``COUNTS`` (a Kodak image's 384 blocks took 60-172 bytes at realism 1, median 100;
136-244 at realism 0.5, whose gains are more often above 1 than the frequencies expect).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..entropy import decode_categorical, encode_categorical
from ..errors import FormatError

GAINS = (0.0, 0.5, 1.0, 1.5, 2.0)
BLOCK = 32
MIN_SIDE = 64  # smaller tiles are measured padded to this side (edge pixels repeated)
# The stream's symbols: 1 + the gain's index. Symbol 0, which no encoder writes, is what an ANS
# decoder reads from a stream that ran dry (it takes no bits at a stream's end), so a stream too short
# for its tiles is refused. The others' frequencies: how often each gain was chosen (Kodak images
# 5-12, qualities 1-2, 32-pixel blocks): 2%, 38%, 48%, 9%, 3%.
COUNTS = np.array([[0.0, 2.0, 38.0, 48.0, 9.0, 3.0]])


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of blocks of a tile (the last ones may be narrower)."""
    return -(-height // BLOCK), -(-width // BLOCK)


def choose(x: Tensor, fidelity: Tensor, detail: Tensor, realism: float) -> Tensor:
    """(rows, cols) int64 indices into ``GAINS``: per block of the tile, the gain g whose output
    ``fidelity + realism * g * detail`` (8-bit, as a decoder writes it) has the lowest LPIPS
    against the photo ``x`` there (all (1, 3, H, W) in [0, 1])."""
    from ..bench import lpips  # the bench's metric, loaded only by an encoder that chooses gains

    net = lpips.load()
    height, width = x.shape[-2:]
    pad = (0, max(MIN_SIDE - width, 0), 0, max(MIN_SIDE - height, 0))  # AlexNet's pooling needs a few pixels

    def features(image: Tensor) -> list[Tensor]:
        return net.normalised(F.pad(image.cpu() * 2 - 1, pad, mode="replicate"))

    photo, maps = features(x), []
    for gain in GAINS:
        out = (fidelity + realism * gain * detail).clamp(0, 1).mul(255).round() / 255
        maps.append(net.spatial(photo, features(out), (height + pad[3], width + pad[1]))[..., :height, :width])
    pooled = F.avg_pool2d(torch.cat(maps), BLOCK, ceil_mode=True)  # (gains, 1, rows, cols)
    return pooled[:, 0].argmin(0)


def write(grids: Sequence[Tensor]) -> bytes:
    """The ``gains`` stream of the tiles' grids (``choose``), in raster order."""
    symbols = np.concatenate([grid.reshape(-1).numpy() for grid in grids]) + 1
    return encode_categorical(symbols[None], COUNTS)


def read(data: bytes, shapes: Sequence[tuple[int, int]]) -> tuple[Tensor, ...]:
    """Each tile's grid of a ``gains`` stream, given the tiles' (height, width) in raster order;
    ``FormatError`` for a stream that does not hold exactly their blocks."""
    grids = [grid_shape(*shape) for shape in shapes]
    symbols = decode_categorical(data, COUNTS, sum(r * c for r, c in grids))[0].astype(np.int64)
    if not symbols.all():
        raise FormatError("corrupted .xsc gains stream (it ends before its tiles' blocks do)")
    symbols = torch.from_numpy(symbols - 1)
    return tuple(part.view(r, c) for part, (r, c) in zip(symbols.split([r * c for r, c in grids]), grids))


def field(grid: Tensor, height: int, width: int) -> Tensor:
    """(1, 1, height, width): the gains of a tile's ``grid`` interpolated bilinearly between the
    blocks' centres (constant beyond the outer centres)."""
    values = torch.tensor(GAINS, dtype=torch.float32)[grid][None, None]
    return F.interpolate(values, size=(height, width), mode="bilinear", align_corners=False)
