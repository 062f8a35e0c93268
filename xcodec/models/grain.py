"""Film grain sent in the file and drawn by the perceptual decoder (``.xsc`` version 13).

The quantiser's dead zone zeroes the fine, low-energy noise of a photo's flat areas (sky, walls,
skin): its film grain or sensor noise. No decoder can guess how much there was, so the perceptual
head leaves those areas smooth, and a measure of texture statistics such as DISTS counts it as lost
(docs/training-log.md, grain). As AV1's film grain synthesis does, the encoder measures the grain
and sends its strength; the decoder draws white noise of the strength that its own output lacks.

Both sides look at the flat areas only (``flat_mask``): where the decoded image before the
post-filter, ``x_hat``, has a luma (the channels' mean) whose standard deviation over 5 x 5 pixels
is under ``FLAT_STD`` grey levels, and for the encoder, where the photo's is under ``PHOTO_STD``
too. There the lost energy is grain, not structure (matching all the lost high-pass energy draws
noise over edges and textures). The encoder sends, per RGB channel, ``sigma`` = the standard
deviation of white noise that has the photo's 3 x 3 high-pass energy there (``target``, from its
tiles' ``Tally``), computing ``x_hat`` from the symbols it chose: the decoder's, bit for bit. The
decoder measures the same energy of its output at realism 1 in the flat areas of ``x_hat`` and
adds white noise of the standard deviation that makes up the difference (``missing``) there to
the perceptual head's detail, so that realism R blends in R times both.

Stream ``grain`` (three bytes): sigma of R, G and B, each in 1/``STEP`` grey levels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

FLAT_STD = 2.0  # grey levels: a flat area's luma standard deviation over WINDOW x WINDOW pixels
PHOTO_STD = 3.0  # grey levels: the encoder's bound on the photo's own (grain: about sigma)
WINDOW = 5
STEP = 16  # the stream's unit: 1/16 grey level
GAIN = 8 / 9  # the 3 x 3 high-pass's gain on white noise: 1 - 1/9 at the centre, -1/9 at 8 taps


def _box(x: Tensor, size: int) -> Tensor:
    """The mean over ``size`` x ``size`` pixels around each pixel, the edge pixels repeated beyond
    the borders (any tile, one pixel wide included)."""
    pad = size // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size, stride=1)


def flat_mask(x: Tensor, bound: float = FLAT_STD) -> Tensor:
    """(1, 1, H, W) bool: the pixels of a tile (1, 3, H, W) in [0, 1] whose luma has a standard
    deviation under ``bound`` grey levels over ``WINDOW`` x ``WINDOW`` pixels."""
    luma = x.mean(1, keepdim=True) * 255
    variance = _box(luma.square(), WINDOW) - _box(luma, WINDOW).square()
    return variance.clamp(min=0) < bound**2


def _energy(x: Tensor, mask: Tensor) -> Tensor:
    """(3,): the summed squared 3 x 3 high-pass of each channel of ``x`` (1, 3, H, W) in [0, 1], in
    grey levels, over the ``mask``'s pixels (float64)."""
    x = x.double()
    detail = (x - _box(x, 3)) * 255
    return (detail.square() * mask).sum((0, 2, 3))


class Tally(NamedTuple):
    """The photo's high-pass energy (3,) in the flat areas of a tile and their pixel count."""

    energy: Tensor
    pixels: int

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.energy + other.energy, self.pixels + other.pixels)


def tally(x: Tensor, x_hat: Tensor) -> Tally:
    """The encoder's measure of one tile: photo ``x`` and its decoded ``x_hat`` (1, 3, H, W), over
    the pixels flat in both (``PHOTO_STD`` in the photo): where ``x_hat`` alone is flat, the photo
    may have texture that the quantiser flattened, which is not grain (at quality 2 on Kodak, that
    measured sigma of 4 grey levels and more, and the grain drawn from it raised LPIPS)."""
    mask = flat_mask(x_hat) & flat_mask(x, PHOTO_STD)
    return Tally(_energy(x, mask).cpu(), int(mask.sum()))


def target(total: Tally) -> bytes | None:
    """The ``grain`` stream of an image's summed tallies, or None when it has no flat area or no grain."""
    if not total.pixels:
        return None
    sigma = torch.sqrt(total.energy / total.pixels / GAIN)
    levels = torch.round(sigma * STEP).clamp(max=255).to(torch.uint8)
    return bytes(levels.tolist()) if levels.any() else None


def read(data: bytes) -> Tensor:
    """(3,) sigma in grey levels of a ``grain`` stream (three bytes, as the container checks)."""
    return torch.tensor(list(data), dtype=torch.float64) / STEP


def missing(out: Tensor, x_hat: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """The grain that ``out`` (1, 3, H, W), a tile decoded at realism 1, lacks in the flat areas of
    ``x_hat``: white noise (``noise``, standard normal of its shape) there, that brings its
    high-pass energy up to that of grain of ``sigma`` (3,) grey levels; zero elsewhere.

    Elsewhere the decoded texture and the head's detail stand for the photo's: on Kodak the same
    noise drawn over the whole tile cost 0.9 dB at quality 8 against 0.2, for 1.3 points more of
    DISTS and 4 less of LPIPS, and on a CLIC photo with sensor noise it made both worse from
    quality 6 on (docs/training-log.md)."""
    mask = flat_mask(x_hat)
    pixels = int(mask.sum())
    if not pixels:
        return torch.zeros_like(out)
    lacking = (sigma.to(out.device).square() - _energy(out, mask) / pixels / GAIN).clamp(min=0).sqrt()
    return lacking.float().view(1, 3, 1, 1) / 255 * noise * mask
