"""The interface every xcodec model implements, and the quality scale they share.

A ``Codec`` codes one padded tile at a time; the API pads the image, cuts the tiles and packs the
container, so a model knows nothing of files:

- ``stride``: tile sides are padded to a multiple of it (64 for four stride-2 stages and a
  hyperprior at 1/64; 1 for a model that codes any size).
- ``streams_per_tile``: how many byte strings ``compress`` returns for every tile; the container
  checks a file's stream table against it before anything is decoded.
- ``compress(x, quality) -> list[bytes]``: ``x`` is (1, 3, H, W) in [0, 1], H and W multiples of
  ``stride``; the payloads are opaque to the container. ``compressor(x, effort)`` gives a function
  ``(quality, realism=0.0)`` to the tile's ``TileCode`` (its payloads), for coding a tile at several
  qualities (the default calls ``compress``); ``effort`` picks one of the model's ``efforts``
  encoder levels (more work for fewer bits; the decoder is the same for all), ``default_effort``
  when the user does not say; ``realism`` is the one the file suggests (0: none), which a model
  with a perceptual head may tune its side streams for.
- ``file_version``: the ``.xsc`` format version its files are written in (3, the lowest, unless
  its coded streams or its decoder changed at a later version: ``container.STREAMS_VERSION`` and on).
- ``decompress(payloads, height, width, quality, device, version) -> Tensor``: (1, 3, H, W) in
  [0, 1], from the streams of a file of format ``version`` (by default the model's own);
  ``postprocess(x_hat, quality, realisms, seed, side, version, tile)`` then applies the model's
  post-filter, if it has one, and for each realism > 0 its perceptual head (``realistic`` models
  only), whose noise is drawn from ``seed``, as a decoder of format ``version`` does to the tile of
  index ``tile`` (raster order); once every
  tile is in the image, ``smooth_seams(rgb, tile, quality, version)`` smooths the borders between
  them (models whose files from some version on say so).
  It raises ``FormatError`` for payloads it cannot decode, with data left over or that run dry
  (the coders of ``xcodec.entropy`` check both), so that a file cannot make it work for nothing.
- Side streams (optional): what the encoder measures of the whole image for the decoder (the
  ``wavelet`` model's post-filter adapted to it, ``adapt``; its film grain, ``grain``; the gains of
  its perceptual detail, ``gains``). Each tile's ``TileCode`` carries its part (``side``); the API
  gives ``side_streams(parts, quality)`` the tiles' parts in raster order, and the streams it
  returns go into the file. The decoder reads them with ``side_info(streams, version, shapes)``
  (the tiles' sizes in raster order; ``FormatError`` if malformed) before any tile and gives
  ``postprocess`` of every tile what it returns.
- ``forward(x, quality) -> {"x_hat": Tensor, "likelihoods": {name: Tensor}}``: the training
  forward for a batch with one quality per sample; the rate is ``-log2`` of the likelihoods.
- ``training_stages()``: how the model learns (``stages.Stage``), run by ``xcodec train``; by
  default the rate-distortion loss of ``forward``.
- ``aux_loss()``, ``export_tensors()``, ``prepare_inference(tensors)`` and ``inference_tensors``
  have defaults for a model with nothing to add (no entropy bottleneck, no tables computed at
  export).

Quality is a float in [1, 8]; training draws it per crop and weighs distortion by ``lambda_for``.
Register a model with one entry in ``zoo.ARCHITECTURES``.
"""

from __future__ import annotations

import contextlib
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..container import StreamKind
from ..errors import FormatError

if TYPE_CHECKING:
    from .stages import Stage

# CompressAI's MSE lambda ladder (8-bit RGB scale) for qualities 1..8.
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
MIN_QUALITY, MAX_QUALITY = 1.0, float(len(LAMBDAS))


def interpolate_quality(table: Tensor, quality: Tensor) -> Tensor:
    """Rows of ``table`` (one per integer quality) linearly interpolated at ``quality`` (B,)."""
    pos = (quality - MIN_QUALITY).clamp(0, len(table) - 1)
    lo = pos.floor().long().clamp(max=len(table) - 2)
    t = (pos - lo).to(table.dtype)
    if table.dim() > 1:
        t = t[:, None]
    return table[lo] * (1 - t) + table[lo + 1] * t


def lambda_for(quality: Tensor) -> Tensor:
    """Rate-distortion lambda for (fractional) qualities, log-linear between the ladder's steps."""
    return torch.exp(interpolate_quality(torch.log(torch.tensor(LAMBDAS, device=quality.device)), quality))


def to_tensor(rgb: np.ndarray, stride: int = 1) -> Tensor:
    """(H, W, 3) uint8 pixels as a (1, 3, H', W') float32 tensor in [0, 1], the sides padded to
    multiples of ``stride`` by replicating the last row and column."""
    x = torch.tensor(rgb).permute(2, 0, 1)[None].float().div(255)
    return F.pad(x, (0, -x.shape[3] % stride, 0, -x.shape[2] % stride), mode="replicate")


# How the one walk of a context model, shared by the encoder and the decoder, gets the symbols of
# the positions it has reached (one call per pass): the encoder takes them from the image, the
# decoder reads them from the stream. The arguments say where the walk is (each model's own) and
# end with the scale indices of those positions; the result is their integer symbols.
TakeSymbols = Callable[..., Tensor]


def checkerboard(h: int, w: int, device=None) -> Tensor:
    """(h, w) bool mask of the anchors, (row + col) even: the first of two checkerboard passes."""
    return (torch.arange(h, device=device)[:, None] + torch.arange(w, device=device)[None, :]) % 2 == 0


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """On the CPU, run torch's kernels on one thread inside the block (restoring the caller's count).

    Float32 kernels change their last bits with the thread count (their sums are split by thread);
    on one thread a transform gives the same result whatever thread count the caller set.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TileCode(NamedTuple):
    """One tile through ``compressor``: its payloads and what ``side_streams`` needs of it (None: nothing)."""

    payloads: list[bytes]
    side: object = None


class Codec(nn.Module, metaclass=ABCMeta):
    """A learned image codec; see the module docstring for the contract."""

    stride: ClassVar[int]
    streams_per_tile: ClassVar[int]
    file_version: ClassVar[int] = 3
    # Names of the tensors that ``export_tensors`` adds to the shipped weights file.
    inference_tensors: ClassVar[tuple[str, ...]] = ()
    # Encoder effort levels 0 .. efforts - 1, and the one used when the caller names none.
    efforts: ClassVar[int] = 1
    default_effort: ClassVar[int] = 0

    @abstractmethod
    def forward(self, x: Tensor, quality: Tensor) -> dict:
        """Training forward: ``{"x_hat": (B, 3, H, W), "likelihoods": {name: Tensor}}``."""

    @abstractmethod
    def compress(self, x: Tensor, quality: float) -> list[bytes]:
        """Code one padded tile (1, 3, H, W) in [0, 1] into ``streams_per_tile`` payloads."""

    @abstractmethod
    def decompress(self, payloads: list[bytes], height: int, width: int, quality: float,
                   device: torch.device, version: int | None = None) -> Tensor:
        """Decode the payloads of one ``height`` x ``width`` tile of a file of format ``version``
        (None: ``file_version``) into (1, 3, H, W) in [0, 1]."""

    @classmethod
    def training_stages(cls) -> tuple[Stage, ...]:
        """How the model learns, the first stage being the default (``xcodec train --stage``).

        By default one stage: every part learns the rate-distortion loss of ``forward``.
        """
        from .stages import RATE_DISTORTION  # stages.py builds on this module

        return (RATE_DISTORTION,)

    @property
    def realistic(self) -> bool:
        """Whether ``postprocess`` takes a realism above 0 (the model has a perceptual head)."""
        return False

    def postprocess(self, x_hat: Tensor, quality: float, realisms: Sequence[float] = (0.0,), seed: int = 0,
                    side: object | None = None, version: int | None = None, tile: int = 0) -> list[Tensor]:
        """The decoder-side post-filter of one decoded tile (identity for a model without one), at each of ``realisms``.

        It changes no bit of the file; ``api.decode(postfilter=False)`` skips it. A realism in
        [0, 1] blends in the perceptual head's detail (0: the fidelity output); ``seed`` seeds its
        noise. The post-filter and the head run once, whatever the number of realisms.
        ``side``: the file's side information (``side_info``), None for a file without.
        ``version``: the file's format version (None: ``file_version``), as for ``decompress``;
        ``tile``: the tile's index in raster order (side streams may hold a part per tile).
        """
        return [x_hat] * len(realisms)

    def smooth_seams(self, rgb: np.ndarray, tile: int, quality: float, version: int | None = None) -> None:
        """Smooth the borders between the decoded ``tile`` x ``tile`` tiles of ``rgb`` ((H, W, 3) uint8,
        the whole image after ``postprocess``), in place, as a decoder of format ``version`` (None:
        ``file_version``) does; nothing for a model without (the default)."""

    def side_streams(self, parts: list, quality: float) -> dict[StreamKind, bytes]:
        """The file's side streams (``container.SIDE`` kinds) from its tiles' ``TileCode.side`` parts,
        in raster order; none by default."""
        return {}

    def side_info(self, streams: dict[StreamKind, bytes], version: int | None = None,
                  shapes: Sequence[tuple[int, int]] = ()) -> object:
        """What ``postprocess`` needs of a file's side ``streams`` (those it has), read before any
        tile, as a decoder of format ``version`` (None: ``file_version``) reads them, for tiles of
        ``shapes`` ((height, width) in raster order); ``FormatError`` for one this model cannot use
        (by default, any)."""
        for kind in streams:
            raise FormatError(f"invalid .xsc file (the {kind.name.lower()} stream of a model that has no use for one)")
        return None

    def compressor(self, x: Tensor, effort: int = 0) -> Callable[..., TileCode]:
        """``compress`` of one tile at several qualities (``api.encode_to_bpp`` tries about ten):
        ``compressor(x, effort)(quality, realism=0.0)``.

        A model whose analysis transform is the same at every quality overrides this to run it
        once; a model with several ``efforts`` overrides it to use ``effort``; a model with side
        streams, to measure what they need of the tile (for the ``realism`` a file suggests, given
        per call: ``encode_to_bpp`` searches without it and spends it on the quality it keeps).
        """
        return lambda quality, realism=0.0: TileCode(self.compress(x, quality))

    def estimate_bits(self, x: Tensor, quality: float) -> float:
        """The model's own rate estimate (eval-mode likelihoods), to check real files against."""
        out = self(x, torch.tensor([quality], device=x.device))
        return sum(float(-torch.log2(lik).sum()) for lik in out["likelihoods"].values())

    def aux_loss(self) -> Tensor:
        """The entropy bottlenecks' quantile loss (CompressAI's, ``latent.HyperpriorCodec``); zero
        for a model without one."""
        return torch.zeros(())

    def export_tensors(self) -> dict[str, Tensor]:
        """Tensors computed from the trained weights once, at export, and shipped beside them.

        Called on a trained model before its ``state_dict`` is saved (it may finalise parameters,
        such as an entropy bottleneck's quantiles). Keys are ``inference_tensors``.
        """
        return {}

    def prepare_inference(self, tensors: dict[str, Tensor]) -> None:
        """Build what coding needs (exact networks, tables) from the weights and ``tensors``."""
