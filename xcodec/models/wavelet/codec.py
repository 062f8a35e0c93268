"""``WaveletCodec``: the colour transform, the lifting wavelet, the quantisers, the context model
and the low band composed into one model, with its training forward and its coder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ...container import DECODER_VERSION, FILTER_VERSION, FOLDED_VERSION, SEAMS_VERSION, SIGNS_VERSION, StreamKind
from ...entropy import StreamReader, StreamWriter
from .. import gains, grain
from ..codec import Codec, TileCode, one_thread
from ..perceptual import PerceptualHead, draw_noise, noise_seed
from ..postfilter import PostFilter
from ..seams import smooth_seams
from ..stages import Stage
from . import adapt
from .bands import CHANNELS, LEVELS, Band, low_shape, subband_shapes
from .context import ContextModel, pass_values
from .lifting import ORIENTATIONS, Wavelet2D, level_count, synthesis_norms
from .low import LOW_CONTEXT_VERSION, low_bits, read_flat_low, read_low, write_low
from .quantise import LOW_VALUE_LIMIT, RECON, dead_zone, rdo_symbols, ste, step_for, symbol_limit
from .rate import SCALES, coded_bits
from .signs import SignCounts, read_pass, read_second, write_pass
from .training import STAGES

ICT = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
MAX_TRAINING_BITS = 100.0  # per coefficient, in the training forward's likelihoods
# Rounds of the training forward's RDO (``symbols``), each under the scales of the last one's
# symbols. One round (under the dead-zone symbols' scales) keeps about 5% more nonzero symbols than
# the coder at quality 1 and overstates the detail bits by 6.6-7.1% (kodim01, kodim04; 1.1-2.7% at
# quality 4); three rounds leave +0.2 to +0.9% (docs/training-log.md).
RDO_ROUNDS = 3
# From version 9 on: the post-filter's and the perceptual head's global attentions pool their keys
# to at most this many positions (``blocks.pool_for``): a Kodak image's 1,536 at pool 4, so that its
# pixels stay those of version 7, while a 1024-pixel tile's 4,096 cost 42% of its decode (docs/results.md).
GLOBAL_TOKENS = 1536

# A part of the stream: (level, channel, orientation), "hl", "lh", "hh" or, at level L, "ll" (the low band).
Part = tuple[int, int, str]


class Coded(NamedTuple):
    """One tile through the encoder's walk: the stream, each part's code length (``coded_bits``,
    the low band's scale indices included), and the low band's and the detail planes' symbols."""

    writer: StreamWriter
    bits: dict[Part, float]
    low: Tensor
    planes: dict[Band, Tensor]


class TileSide(NamedTuple):
    """What the side streams need of a tile (``side_streams``): the post-filter's least-squares
    problem at effort 2 (else None), the photo's grain in its flat areas (models with a
    perceptual head, else None), and the gains of the head's detail (``gains.choose``) when the
    file suggests a realism (else None)."""

    normal: adapt.Normal | None
    grain: grain.Tally | None
    gains: Tensor | None = None


class Side(NamedTuple):
    """A file's side streams as ``postprocess`` uses them: the adapted post-filter tail, the
    grain's strength (``grain.read``) and each tile's detail gains (``gains.read``), each None where
    the file has none."""

    adaptation: tuple[Tensor, Tensor] | None = None
    grain: Tensor | None = None
    gains: tuple[Tensor, ...] | None = None


class WaveletCodec(Codec):
    """Colour transform, learned lifting wavelet, dead-zone quantiser and the context model."""

    stride = 1
    streams_per_tile = 1
    file_version = FOLDED_VERSION
    efforts = 3
    default_effort = 1

    def __init__(self, levels: int = LEVELS, lifting_hidden: int = 8, context_hidden: int = 12, postfilter: int | dict = 0,
                 perceptual: int | dict = 0, context_blocks: int = 0, convfilter: dict | None = None):
        super().__init__()
        self.levels = levels
        # The decoder-side heads, 0 for none. ``postfilter``: its width (the shipped design), or the
        # ``PostFilter``'s arguments (its parts switched off for an ablation); ``perceptual``: the
        # ``PerceptualHead``'s arguments ({} for its defaults), or its width alone (older checkpoints);
        # ``convfilter``: the ``PostFilter``'s arguments of the filter that files from version 11 on
        # decode with (``filter_for``), trained in ``postfilter``'s place (``xcodec export --head
        # convfilter --part postfilter``), None for none.
        self.postfilter = PostFilter(**postfilter) if isinstance(postfilter, dict) else (
            PostFilter(postfilter) if postfilter else None)
        self.convfilter = PostFilter(**convfilter) if convfilter is not None else None
        self.perceptual = PerceptualHead(**perceptual) if isinstance(perceptual, dict) else (
            PerceptualHead(perceptual) if perceptual else None)
        self.colour = nn.Parameter(torch.tensor(ICT))
        self.wavelet = Wavelet2D(levels, lifting_hidden)
        self.context = ContextModel(levels, context_hidden, context_blocks)
        low, high = synthesis_norms(levels)
        column_norms = torch.linalg.inv(torch.tensor(ICT, dtype=torch.float64)).norm(dim=0)
        band_norms = torch.tensor([[high[i] * low[i], low[i] * high[i], high[i] ** 2] for i in range(levels)])
        # log of each detail band's step relative to the global step: (level, orientation, channel)
        init = -torch.log(band_norms.double()[:, :, None] * column_norms[None, None, :])
        self.log_steps = nn.Parameter(init.float())
        self.register_buffer("low_norms", torch.tensor((1.0, *low)) ** 2, persistent=False)
        self.register_buffer("column_norms", column_norms.float(), persistent=False)
        self.recon = nn.Parameter(torch.full((levels, 3, CHANNELS), RECON))

    @classmethod
    def training_stages(cls) -> tuple[Stage, ...]:
        return STAGES

    # --- transform and quantiser -------------------------------------------------------------------

    def transform(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """Image (N, 3, H, W) in [0, 1] -> low band and detail bands (pixel units)."""
        ycc = torch.einsum("ij,njhw->nihw", self.colour, x * 255 - 128)
        return self.wavelet(ycc)

    def inverse_transform(self, low: Tensor, bands: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        ycc = self.wavelet.inverse(low, bands)
        return (torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.colour), ycc) + 128) / 255

    def steps(self, quality: Tensor, levels: int) -> tuple[Tensor, Tensor]:
        """Quantiser steps (N, 3) of the low band and (N, levels, 3, 3) of the detail bands."""
        step = step_for(quality.float())[:, None]
        low = step / (self.low_norms[levels] * self.column_norms)[None]
        detail = step[:, :, None, None] * torch.exp(self.log_steps[:levels])[None]
        return low, detail

    # --- coding ------------------------------------------------------------------------------------

    def analysis(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """The coder's ``transform``, on one CPU thread: the coefficients, and so the file, do not
        depend on the caller's thread count."""
        with one_thread(x.device):
            return self.transform(x)

    def scale(self, coefficients: tuple[Tensor, list], quality: Tensor) -> tuple[Tensor, dict[Band, Tensor]]:
        """The low band and the detail planes {band: (N, h, w)} in units of their quantiser steps."""
        low, bands = coefficients
        low_step, steps = self.steps(quality, len(bands))
        planes = {}
        for level, triple in enumerate(bands):
            for o, band in enumerate(triple):
                ratio = band / steps[:, level, o, :, None, None]
                for c in range(CHANNELS):
                    planes[(level, c, o)] = ratio[:, c]
        return low / low_step[:, :, None, None], planes

    def quantise(self, x: Tensor, quality: Tensor) -> tuple[Tensor, dict[Band, Tensor]]:
        """Integer low band (N, 3, h, w) and detail planes {band: (N, h, w)} at qualities (N,)."""
        low, planes = self.scale(self.analysis(x), quality)
        planes = {band: dead_zone(ratio, symbol_limit(band[0])) for band, ratio in planes.items()}
        return torch.round(low).clamp(-LOW_VALUE_LIMIT, LOW_VALUE_LIMIT), planes

    def dequantise(self, low_q: Tensor, planes: dict[Band, Tensor], quality: Tensor) -> Tensor:
        """The decoder's image (N, 3, H, W) in [0, 1] from integer coefficients at qualities (N,)."""
        levels = len({band[0] for band in planes})
        low_step, steps = self.steps(quality, levels)
        low = low_q.float().to(quality.device) * low_step[:, :, None, None]
        bands = []
        for level in range(levels):
            triple = []
            for o in range(3):
                q = torch.stack([planes[(level, c, o)].float().to(quality.device) for c in range(CHANNELS)], 1)
                offset = self.recon[level, o][None, :, None, None]
                # q + sign(q) offset: sign(q) (|q| + offset), with the identity gradient in q
                triple.append((q + torch.sign(q.detach()) * offset) * steps[:, level, o, :, None, None])
            bands.append(tuple(triple))
        with one_thread(quality.device):
            return self.inverse_transform(low, bands).clamp(0, 1)

    def symbols(self, ratios: dict[Band, Tensor], quality: Tensor) -> dict[Band, Tensor]:
        """Training: the symbols effort 1 would choose, with straight-through gradients.

        The coder's scales follow its own choices pass by pass; here ``rdo_symbols`` chooses under
        the float context's scales of the previous round's symbols, ``RDO_ROUNDS`` times from the
        dead-zone symbols: close to, not exactly, what a file holds.
        """
        with torch.no_grad():
            chosen = {band: dead_zone(r, symbol_limit(band[0])) for band, r in ratios.items()}
            for _ in range(RDO_ROUNDS):
                scales = self.context.log_scales(chosen, quality)
                chosen = {(level, c, o): rdo_symbols(r, scales[(level, c, o)], self.recon[level, o, c], symbol_limit(level))
                          for (level, c, o), r in ratios.items()}
        return {band: r + (chosen[band] - r).detach() for band, r in ratios.items()}

    def decoded(self, x: Tensor, quality: Tensor) -> Tensor:
        """Training data for the post-filter: what the decoder reconstructs at effort 1 (``symbols``),
        without entropy coding, for a batch with one quality per crop."""
        low, ratios = self.scale(self.transform(x), quality)
        return self.dequantise(torch.round(low).clamp(-LOW_VALUE_LIMIT, LOW_VALUE_LIMIT), self.symbols(ratios, quality), quality)

    def compress(self, x: Tensor, quality: float) -> list[bytes]:
        return self.compressor(x, self.default_effort)(quality).payloads

    def compressor(self, x: Tensor, effort: int = 0) -> Callable[..., TileCode]:
        """Code one tile (1, 3, H, W) in [0, 1] into one ANS stream; the analysis runs once.

        ``effort`` 0 rounds with the dead zone; 1 chooses each coefficient by rate-distortion
        optimisation against the context model (``rdo_symbols``); 2 codes as 1 and measures the
        post-filter's least-squares problem on the decoded tile, for the file's ``adapt`` stream
        (``adapt``). A model with a perceptual head measures the photo's grain on it, for the
        ``grain`` stream (``grain``), and for a file that suggests a ``realism`` above 0 (given per
        call, ``compressor(x, effort)(quality, realism)``), chooses the gains of the head's detail at
        that realism, for the ``gains`` stream (``gains``). The decoder is the same.
        """
        code = self.coder(x, min(effort, 1), count_bits=False)
        adapting = effort >= 2 and self.filter_for() is not None

        def tile(quality: float, realism: float = 0.0) -> TileCode:
            coded = code(quality)
            payloads = [coded.writer.finish()]
            if not (adapting or self.realistic):
                return TileCode(payloads)
            q = torch.tensor([quality], device=x.device)
            with torch.inference_mode(), one_thread(x.device):
                x_hat = self.dequantise(coded.low[None], coded.planes, q)  # the decoder's, bit for bit
                normal = adapt.normal(self.filter_for(), x, x_hat, q, GLOBAL_TOKENS) if adapting else None
                chosen = self.detail_gains(x, x_hat, q, noise_seed(payloads), realism) if self.realistic and realism else None
                return TileCode(payloads, TileSide(normal, grain.tally(x, x_hat) if self.realistic else None, chosen))

        return tile

    def coder(self, x: Tensor, effort: int, count_bits: bool) -> Callable[[float], Coded]:
        """The encoder's walk: a function from quality to the filled stream writer, the code length
        (bits, ``coded_bits``) of each band's symbols under the exact probabilities, and the symbols;
        without ``count_bits``, the code lengths of the low band's alone (counting the others costs
        a third of the walk, and ``compress`` has no use for it)."""
        with torch.inference_mode():
            coefficients = self.analysis(x)
        height, width = x.shape[-2:]
        levels = level_count(height, width, self.levels)
        shapes = subband_shapes(height, width, levels)

        @torch.inference_mode()
        def code(quality: float) -> Coded:
            low, ratios = self.scale(coefficients, torch.tensor([quality], device=x.device))
            ratios = {band: ratio[0].double().cpu() for band, ratio in ratios.items()}
            writer = StreamWriter()
            low_q = torch.round(low[0]).clamp(-LOW_VALUE_LIMIT, LOW_VALUE_LIMIT).double().cpu()
            bits = {(levels, c, "ll"): b for c, b in enumerate(write_low(writer, low_q))}
            signs = SignCounts(quality)

            def take(band: Band, step: int, index: Tensor, contexts: Tensor | None) -> Tensor:
                ratio, limit = pass_values(ratios[band], step), symbol_limit(band[0])
                scales = SCALES[index.numpy()]
                log_scale = torch.from_numpy(np.log(scales))
                if effort == 0:
                    symbols = dead_zone(ratio, limit)
                else:
                    symbols = rdo_symbols(ratio, log_scale, float(self.recon[band[0], band[2], band[1]]), limit)
                saved = write_pass(writer, symbols.long().numpy(), index.numpy(), None if contexts is None else contexts.numpy(),
                                   limit, band, signs)
                if count_bits:
                    part = (band[0], band[1], ORIENTATIONS[band[2]])
                    bits[part] = bits.get(part, 0.0) + float(coded_bits(symbols, log_scale, limit).sum()) - saved
                return symbols

            planes = self.context.walk(shapes, quality, take)
            return Coded(writer, bits, low_q, planes)

        return code

    def decompress(self, payloads: list[bytes], height: int, width: int, quality: float, device,
                   version: int | None = None) -> Tensor:
        """Decode one tile's stream into (1, 3, height, width) in [0, 1]; a file of a version before
        ``LOW_CONTEXT_VERSION`` has the low band of one scale per channel, one before
        ``SIGNS_VERSION`` the second passes' signs in their Laplacians, one before ``FOLDED_VERSION``
        the anchors and the second passes' symbols of context 0 under their Laplacians."""
        levels = level_count(height, width, self.levels)
        shapes = subband_shapes(height, width, levels)
        reader = StreamReader(payloads[0])
        version = version or self.file_version
        signs = SignCounts(quality)

        def read(band: Band, step: int, index: Tensor, contexts: Tensor | None) -> Tensor:
            limit = symbol_limit(band[0])
            if version >= FOLDED_VERSION:
                return torch.from_numpy(read_pass(reader, index.numpy(), None if contexts is None else contexts.numpy(), limit,
                                                  band, signs).astype(np.float32))
            if contexts is None or version < SIGNS_VERSION:
                return torch.from_numpy(reader.laplace(SCALES[index.numpy()], limit).astype(np.float32))
            return torch.from_numpy(read_second(reader, index.numpy(), contexts.numpy(), limit, band, signs).astype(np.float32))

        read_band = read_low if version >= LOW_CONTEXT_VERSION else read_flat_low
        low_q = read_band(reader, low_shape(height, width, levels))
        planes = self.context.walk(shapes, quality, read)
        reader.finish()
        return self.dequantise(low_q[None], planes, torch.tensor([quality], device=device))

    @property
    def realistic(self) -> bool:
        return self.perceptual is not None and self.postfilter is not None

    def filter_for(self, version: int | None = None) -> PostFilter | None:
        """The post-filter of a file of format ``version`` (None: ``file_version``): from version 11
        (``FILTER_VERSION``) on the convolutions-only ``convfilter`` when the model has one, else,
        and before, ``postfilter``."""
        if (version or self.file_version) >= FILTER_VERSION and self.convfilter is not None:
            return self.convfilter
        return self.postfilter

    def postprocess(self, x_hat: Tensor, quality: float, realisms: Sequence[float] = (0.0,), seed: int = 0,
                    side: Side | None = None, version: int | None = None, tile: int = 0) -> list[Tensor]:
        """The fidelity output ``y`` (the version's post-filter's, ``filter_for``, with the file's
        adapted tail when it has one), and ``y + R * delta`` for each realism R > 0, the head's detail
        ``delta`` (scaled by the tile's gains, ``gains.field``, when the file has a gains stream) with
        the grain it lacks (``grain.missing``, its noise seeded by ``seed`` ^ 1) when the file has a
        grain stream; from version 9 (``GLOBAL_TOKENS``) on, the global attentions bounded."""
        postfilter, side = self.filter_for(version), side or Side()
        if postfilter is None:
            return [x_hat] * len(realisms)
        q = torch.tensor([quality], device=x_hat.device)
        tokens = GLOBAL_TOKENS if (version or self.file_version) >= DECODER_VERSION else None
        with one_thread(x_hat.device):
            fidelity = postfilter(x_hat, q, side.adaptation, tokens).clamp(0, 1)
            if not any(realisms):
                return [fidelity] * len(realisms)
            noise = draw_noise(self.perceptual.noise_shape(*fidelity.shape[-2:]), seed).to(fidelity.device)
            delta = self.perceptual(fidelity, q, noise, tokens)
            if side.gains is not None:
                delta = delta * gains.field(side.gains[tile], *delta.shape[-2:]).to(delta.device)
            if side.grain is not None:
                grain_noise = draw_noise(tuple(fidelity.shape[1:]), seed ^ 1).to(fidelity.device)
                delta = delta + grain.missing((fidelity + delta).clamp(0, 1), x_hat, side.grain, grain_noise)
            return [(fidelity + realism * delta).clamp(0, 1) if realism else fidelity for realism in realisms]

    def detail_gains(self, x: Tensor, x_hat: Tensor, quality: Tensor, seed: int, realism: float) -> Tensor:
        """The encoder's ``gains.choose`` for a tile: photo ``x``, its decoded ``x_hat`` (the decoder's,
        bit for bit) and its noise ``seed``, the head's detail as the decoder draws it (before the
        file's grain, which depends on every tile, and without the adapted tail of effort 2, which
        is fitted after them)."""
        fidelity = self.filter_for()(x_hat, quality, None, GLOBAL_TOKENS).clamp(0, 1)
        noise = draw_noise(self.perceptual.noise_shape(*fidelity.shape[-2:]), seed).to(fidelity.device)
        return gains.choose(x, fidelity, self.perceptual(fidelity, quality, noise, GLOBAL_TOKENS), realism)

    def smooth_seams(self, rgb: np.ndarray, tile: int, quality: float, version: int | None = None) -> None:
        """From version 12 (``SEAMS_VERSION``) on, ``seams.smooth_seams`` with half the quality's
        quantiser step as its threshold: the steps that the tiles' own quantisation explains."""
        if (version or self.file_version) >= SEAMS_VERSION:
            smooth_seams(rgb, tile, float(step_for(torch.tensor(quality))) / 2)

    # --- side streams: the post-filter adapted to the image (``adapt``), the grain (``grain``), the ---
    # --- detail gains (``gains``) -------------------------------------------------------------------

    def side_streams(self, parts: list[TileSide | None], quality: float) -> dict[StreamKind, bytes]:
        streams = {}
        normals = [part.normal for part in parts if part is not None and part.normal is not None]
        tallies = [part.grain for part in parts if part is not None and part.grain is not None]
        grids = [part.gains for part in parts if part is not None and part.gains is not None]
        adapted = adapt.fit(sum(normals[1:], normals[0]), quality) if normals else None
        grained = grain.target(sum(tallies[1:], tallies[0])) if tallies else None
        gained = gains.write(grids) if grids and len(grids) == len(parts) else None
        for kind, data in ((StreamKind.ADAPT, adapted), (StreamKind.GRAIN, grained), (StreamKind.GAINS, gained)):
            if data:
                streams[kind] = data
        return streams

    def side_info(self, streams: dict[StreamKind, bytes], version: int | None = None,
                  shapes: Sequence[tuple[int, int]] = ()) -> Side:
        postfilter = self.filter_for(version)
        unusable = {kind: data for kind, data in streams.items()
                    if (kind == StreamKind.ADAPT and postfilter is None)
                    or (kind in (StreamKind.GRAIN, StreamKind.GAINS) and not self.realistic)}
        super().side_info(unusable, version)  # refuses them
        adapted, grained, gained = (streams.get(kind) for kind in (StreamKind.ADAPT, StreamKind.GRAIN, StreamKind.GAINS))
        return Side(None if adapted is None else adapt.read(adapted, postfilter),
                    None if grained is None else grain.read(grained),
                    None if gained is None else gains.read(gained, shapes))

    def prepare_inference(self, tensors: dict[str, Tensor]) -> None:
        self.context.prepare_inference()

    def forward(self, x: Tensor, quality: Tensor) -> dict:
        """Training: the decoder's image of effort 1's symbols (``symbols``, straight-through),
        post-filtered when the model has a post-filter, and the likelihoods of every coefficient:
        the detail bands under the context model, the low band under its context Laplacians (6.8% of
        a Kodak file at quality 1: docs/training-log.md)."""
        low, ratios = self.scale(self.transform(x), quality)
        low = ste(low, 0.5)
        planes = self.symbols(ratios, quality)
        bits = torch.cat([self.context.bits(planes, quality), low_bits(low)], 1)
        # capped so that the likelihood stays a float32 normal number (2**-149 is its smallest
        # subnormal): an outlier of 150+ bits would otherwise give an infinite rate and a NaN step
        likelihoods = torch.exp2(-bits.clamp(max=MAX_TRAINING_BITS))
        x_hat = self.dequantise(low, planes, quality)
        if self.postfilter is not None:
            x_hat = self.postfilter(x_hat, quality)
        return {"x_hat": x_hat, "likelihoods": {"coefficients": likelihoods}}

    def estimate_bits(self, x: Tensor, quality: float) -> float:
        """Code length (``coded_bits``) of what the default effort codes, under the coder's own
        probabilities (so a file's size checks the ANS coder and the container, not the float networks)."""
        return sum(self.coder(x, self.default_effort, count_bits=True)(quality).bits.values())
