"""The Python API that the CLI calls.

>>> from xcodec import api
>>> data = api.encode(Image.open("photo.png"), quality=4)   # bytes of an .xsc file
>>> image = api.decode(data)                                # a Pillow image
>>> data = api.encode(Image.open("scan.png"), lossless=True)  # every sample exact (max_error=N: within +-N)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from . import container
from .container import Bitstream, Header, StreamKind
from .cores import usable_cores
from .errors import FormatError, InputError
from .image import SourceImage, decode_alpha, encode_alpha, from_samples, prepare, to_pil
from .models import zoo
from .models.codec import MAX_QUALITY, MIN_QUALITY, TileCode, to_tensor
from .models.exact import ExactError
from .lossless import tables
from .lossless.codec import decode_tile, encode_tile
from .models.manifest import Layout, check_effort, check_header
from .models.threads import map_ordered, map_processes, threads as thread_budget

from .defaults import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, DEFAULT_TILE, LOSSLESS_MODELS, check_pixels, check_realism  # torch-free, for the command line
from .models.perceptual import noise_seed


TileCallback = Callable[[int, int], None]  # (tiles done, tiles in all)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


def encode(image: Image.Image | np.ndarray, quality: float = DEFAULT_QUALITY, model: str = zoo.DEFAULT_MODEL,
           device: str = "auto", drop_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
           tile: int = DEFAULT_TILE, effort: int | None = None, on_tile: TileCallback | None = None,
           strip: bool = False, realism: float | None = None, threads: int | None = None,
           metadata: dict[str, bytes | None] | None = None, lossless: bool = False,
           max_error: int | None = None) -> bytes:
    """Compress a Pillow image into the bytes of an ``.xsc`` file.

    The image is coded as independent ``tile`` x ``tile`` tiles (0: one tile), so that memory
    depends on the tile size, not on the image size: only the 8-bit image is held whole.
    ``effort`` is one of the model's encoder levels (None: its default). ``on_tile(done, total)``
    is called after each tile (progress). Transparency is kept as a lossless alpha stream unless
    ``drop_alpha``; EXIF and XMP as streams unless ``strip``. ``metadata`` (``icc_profile``, ``exif``,
    ``xmp``) replaces the image's own (``image.prepare``). ``realism`` is stored as the realism the
    decoder uses when its caller gives none (models with a perceptual head only).
    ``threads``: how many tiles are coded at once (None: the cores this process may use,
    ``cores.usable_cores``), on a CPU under Linux by as many worker processes
    (``models.threads.map_processes``), else by threads; every torch kernel runs on one thread
    (``models.threads``), and the file does not depend on the count.

    ``lossless`` codes every sample exactly (8-bit, or 16-bit grayscale), ``max_error`` (1..4) every
    sample within +-max_error, both with the ``lossless`` coder (``quality``, ``model``, ``effort``
    and ``realism`` do not apply). 16-bit RGB, which Pillow cannot hold, is coded from a (H, W, 3)
    uint16 array instead of an image (``decode_samples`` gives it back).
    """
    if lossless or max_error is not None:
        if lossless and max_error:
            raise InputError("lossless means max_error 0; give one or the other")
        if realism is not None:
            raise InputError("a lossless or near-lossless file has no realism")
        if isinstance(image, np.ndarray):
            source = from_samples(image, None if strip else metadata)
        else:
            source = prepare(image, drop_alpha=drop_alpha, strip=strip, metadata=metadata, keep_depth=True)
        return _encode_exact(source, max_error or 0, max_pixels, tile, on_tile, threads)
    if isinstance(image, np.ndarray):
        raise InputError(f"an array ({image.dtype}) is coded only as 16-bit RGB samples, with lossless=True or max_error; "
                         "give other images as Pillow images (Image.fromarray)")
    source = prepare(image, drop_alpha=drop_alpha, strip=strip, metadata=metadata)
    return _encoder(source, model, device, max_pixels, tile, effort, keep=False, on_tile=on_tile, realism=realism,
                    threads=threads)(quality)


def load_model(name: str) -> None:
    """Load model ``name`` (a learned model or a lossless coder) now, as the calls that use it keep it."""
    tables.load(name) if name in LOSSLESS_MODELS else zoo.load(name)


def warm_up(name: str) -> None:
    """Load model ``name`` and pay its first call's one-time costs now (about 0.1 s more to encode a
    Kodak image, and 0.1 s more to decode one), by coding a small image with it once on the CPU, on
    one thread: for a program that forks workers afterwards (``xcodec.preload``). A lossless coder
    that only decodes older files is loaded only."""
    load_model(name)
    image = Image.effect_noise((64, 64), 40).convert("RGB")
    if name not in LOSSLESS_MODELS:
        data = encode(image, model=name, device="cpu", threads=1)
    elif name == tables.NAME:
        data = encode(image, lossless=True, threads=1)
    else:
        return
    decode(data, device="cpu", threads=1)


def thread_count(threads: int | None) -> int:
    """The API's ``threads`` argument checked, None standing for the usable cores."""
    if threads is None:
        return usable_cores()
    if threads < 1:
        raise InputError(f"the thread count must be at least 1, got {threads}")
    return threads


def _metadata(source: SourceImage, realism: float | None = None) -> list[tuple[StreamKind, bytes]]:
    """The metadata streams of a source (the alpha plane coded once, whatever the quality)."""
    alpha = None if source.alpha is None else encode_alpha(source.alpha)
    streams = [(StreamKind.ICC, source.icc_profile), (StreamKind.EXIF, source.exif), (StreamKind.XMP, source.xmp),
               (StreamKind.ALPHA, alpha), (StreamKind.REALISM, None if realism is None else container.realism_stream(realism))]
    return [(kind, data) for kind, data in streams if data]


def _tile(tile: int, height: int, width: int, stride: int, limit: int) -> int:
    """The tile side of a file whose padded image is ``height`` x ``width`` (0: one tile), refusing a
    ``tile`` that is not a multiple of ``stride`` or gives tiles decoders refuse (below ``MIN_TILE``,
    above ``limit``)."""
    if tile < 0 or tile % stride:
        raise InputError(f"the tile size must be 0 (one tile) or a positive multiple of {stride}, got {tile}")
    if tile >= max(height, width):
        tile = 0  # one tile: a single representation for it
    if 0 < tile < container.MIN_TILE:
        raise InputError(f"tiles are at least {container.MIN_TILE} pixels a side (decoders refuse smaller ones), got {tile}")
    if (tile or max(height, width)) > limit:
        raise InputError(f"tiles are limited to {limit} pixels a side (decoders refuse larger ones); "
                         f"code this image in tiles (--tile {DEFAULT_TILE})")
    return tile


def _encode_exact(source: SourceImage, max_error: int, max_pixels: int, tile: int,
                  on_tile: TileCallback | None, threads: int | None) -> bytes:
    """A lossless (``max_error`` 0) or near-lossless file: planes G, R, B (or gray) in tiles."""
    if not 0 <= max_error <= container.MAX_ERROR:
        raise InputError(f"max_error must be between 0 and {container.MAX_ERROR}, got {max_error}")
    if source.deep is not None:
        deep = source.deep[None] if source.deep.ndim == 2 else source.deep[..., [1, 0, 2]].transpose(2, 0, 1)
        samples, depth = deep.astype(np.int64), 16
    else:
        planes = source.rgb[..., :1] if source.channels == 1 else source.rgb[..., [1, 0, 2]]
        samples, depth = planes.transpose(2, 0, 1).astype(np.int64), 8
    height, width = samples.shape[1:]
    check_pixels(width, height, max_pixels)
    tile = _tile(tile, height, width, 1, container.EXACT_MAX_TILE)
    coder, manifest = tables.load(tables.NAME)
    count = thread_count(threads)

    def code(box: tuple[int, int, int, int]) -> bytes:
        top, left, rows, cols = box
        return encode_tile(samples[:, top : top + rows, left : left + cols], depth, max_error, coder, tables.NAME)

    while True:
        header = Header(tables.NAME, manifest.model_hash, 0.0, width, height, source.channels, depth, tile=tile,
                        max_error=max_error)
        payloads = []
        with thread_budget(count):
            for done, payload in enumerate(map_ordered(code, list(header.tile_boxes())), 1):
                payloads.append(payload)
                if on_tile:
                    on_tile(done, header.tiles)
        side = tile or max(height, width)
        if container.work_fits(header, sum(map(len, payloads))) or side <= container.MIN_TILE:
            break
        # A near-flat image codes to fewer bytes than decoders accept for its pixels (the work
        # bound); halved tiles each carry their own predictor coefficients, which brings it in.
        tile = max(side // 2, container.MIN_TILE)
    streams = [(StreamKind.CODED, payload) for payload in payloads]
    return container.pack(Bitstream(header, streams + _metadata(source)))


def _encoder(source: SourceImage, model: str, device: str, max_pixels: int, tile: int,
             effort: int | None, keep: bool, on_tile: TileCallback | None = None,
             realism: float | None = None, threads: int | None = None) -> Callable[..., bytes]:
    """Check ``source`` once; return a function from quality to the bytes of its file
    (``encode_at(quality, gains=True)``: ``gains=False`` leaves out the detail gains that a
    ``realism`` above 0 asks for, the one part of the file chosen per quality at that realism).

    With ``keep``, each tile's ``compressor`` is kept between calls (the analysis runs once, on
    ``threads`` threads, for coding at several qualities); without, tiles are cut and analysed per
    call. Tiles are coded by ``threads`` workers, at most two per worker in flight: on a CPU,
    processes forked for each call (``map_processes``: they inherit the image and the kept
    compressors, and send back the streams), else threads. The tiles' side parts (``TileCode.side``,
    pickled back) give the file's side streams (``side_streams``: ``adapt``, ``grain``, ``gains``).
    """
    height, width = source.rgb.shape[:2]
    check_pixels(width, height, max_pixels)
    net, manifest = zoo.load(model)
    dev = resolve_device(device)
    stride = net.stride
    pad_bottom, pad_right = -height % stride, -width % stride
    tile = _tile(tile, height + pad_bottom, width + pad_right, stride, container.MAX_TILE)
    header = Header(model, manifest.model_hash, DEFAULT_QUALITY, width, height, source.channels, 8, pad_bottom,
                    pad_right, tile, net.streams_per_tile)
    header.version = net.file_version
    effort = check_effort(model, Layout.of(net), effort)
    if realism is not None:
        check_model_realism(net, model, check_realism(realism))
    net = net.to(dev)
    count = thread_count(threads)
    boxes = list(header.tile_boxes())
    metadata = _metadata(source, realism)

    def pixels(box: tuple[int, int, int, int]) -> torch.Tensor:
        top, left, tile_height, tile_width = box
        return to_tensor(source.rgb[top : top + tile_height, left : left + tile_width], stride).to(dev)

    def analyse(box: tuple[int, int, int, int]) -> Callable[..., TileCode]:
        return net.compressor(pixels(box), effort)

    with torch.inference_mode(), thread_budget(count):  # the analysis alone: torch's kernels, which free the GIL
        kept = list(map_ordered(analyse, boxes)) if keep else None
    tiles_of = map_processes if dev.type == "cpu" else map_ordered  # the walks' Python parts hold the GIL

    def encode_at(quality: float, gains: bool = True) -> bytes:
        if not MIN_QUALITY <= quality <= MAX_QUALITY:
            raise InputError(f"quality must be between {MIN_QUALITY:g} and {MAX_QUALITY:g}, got {quality:g}")
        quality = container.quantize_quality(quality)
        streams, parts = [], []

        def code(index: int) -> TileCode:
            return (kept[index] if keep else analyse(boxes[index]))(quality, (realism or 0.0) if gains else 0.0)

        with torch.inference_mode(), thread_budget(count):
            for done, (payloads, part) in enumerate(tiles_of(code, range(len(boxes))), 1):
                if len(payloads) != net.streams_per_tile:
                    raise ValueError(f"model {model!r} gave {len(payloads)} streams for a tile, not {net.streams_per_tile}")
                streams += [(StreamKind.CODED, payload) for payload in payloads]
                parts.append(part)
                if on_tile:
                    on_tile(done, header.tiles)
            side = list(net.side_streams(parts, quality).items())
        return container.pack(Bitstream(replace(header, quality=quality), streams + metadata + side))

    return encode_at


def check_model_realism(net, model: str, realism: float) -> None:
    if realism > 0 and not net.realistic:
        raise InputError(f"model {model!r} has no perceptual decoder: realism must be 0, got {realism}")


def decode(data: bytes, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
           on_tile: TileCallback | None = None, postfilter: bool = True, realism: float | None = None,
           threads: int | None = None) -> Image.Image:
    """Decompress the bytes of an ``.xsc`` file into a Pillow image (RGB, or L for grayscale).

    Tiles are decoded into the 8-bit output by ``threads`` threads (None: the cores this process
    may use), at most two per thread at a time, so memory depends on the tile size; on a CPU under
    Linux, by as many worker processes (``models.threads.map_processes``); a single tile uses the
    threads for its post-filter's stripes. The pixels do not depend on the count.
    ``on_tile(done, total)`` is called after each tile (progress). ``postfilter=False`` skips the
    model's decoder-side post-filter (``wavelet`` models that have one) and its smoothing of the
    borders between tiles, which no bit of the file depends on. ``realism`` in [0, 1] goes from
    that fidelity output (0) to the perceptual decoder's (1), for models with a perceptual head;
    None takes the file's suggestion, else 0.
    Its noise is seeded by each tile's bytes: a file and a realism always give the same pixels.
    """
    return decode_realisms(data, (realism,), device, max_pixels, on_tile, postfilter, threads)[0]


def decode_realisms(data: bytes, realisms: Sequence[float | None], device: str = "auto",
                    max_pixels: int = DEFAULT_MAX_PIXELS, on_tile: TileCallback | None = None,
                    postfilter: bool = True, threads: int | None = None) -> list[Image.Image]:
    """``decode`` at each of ``realisms`` from one decode: the tiles are read and post-filtered
    once, and the perceptual head's detail ``delta``, computed once, is added to that fidelity
    output ``y`` at each realism R (``y + R * delta``). Each image is the one ``decode`` gives at R."""
    table = container.read_table(data)
    h = table.header
    check_pixels(h.width, h.height, max_pixels)
    if h.max_error is not None:
        if any(realisms):
            raise InputError("a lossless or near-lossless file has no perceptual decoder: realism must be 0")
        samples, bitstream, alpha = _decode_exact(table, on_tile, threads)
        if h.bit_depth == 16 and h.channels == 3:
            warnings.warn("a 16-bit RGB file decodes to 8-bit RGB here (Pillow has no 16-bit RGB); "
                          "decode_samples gives its 16 bits", stacklevel=2)
            samples = (samples.astype(np.uint32) * 255 + 32767) // 65535
            image = to_pil(samples.astype(np.uint8), 3, *_metadata_streams(bitstream), None)
        else:
            image = _image(samples, bitstream, alpha)
        return [image] + [image.copy() for _ in realisms[1:]]
    if None in realisms:  # the file's suggestion applies to the post-filtered output only
        hint = (container.realism_hint(table) or 0.0) if postfilter else 0.0
        realisms = [hint if realism is None else realism for realism in realisms]
    highest = max(check_realism(realism) for realism in realisms)
    if highest > 0 and not postfilter:
        raise InputError("a realism above 0 needs the post-filter (it adds detail to the post-filtered image)")
    net, manifest = zoo.load(h.model)
    check_header(h, manifest, Layout.of(net))
    check_model_realism(net, h.model, highest)
    bitstream = table.bitstream()  # the payloads, once the header is known to be the model's
    dev = resolve_device(device)
    count = thread_count(threads)
    alpha = bitstream.stream(StreamKind.ALPHA)
    alpha = None if alpha is None else decode_alpha(alpha, h.width, h.height)  # lossless and small: refused before the tiles
    rgbs = [np.empty((h.height, h.width, 3), dtype=np.uint8) for _ in realisms]
    net = net.to(dev)
    boxes = list(h.tile_boxes())
    side = net.side_info({kind: data for kind in container.SIDE if (data := bitstream.stream(kind)) is not None},
                         h.version, [box[2:] for box in boxes])  # checked before the tiles, used by the post-processing

    def tile(item: tuple[int, tuple[int, int, int, int], list[bytes]]) -> list[np.ndarray]:
        index, (top, left, tile_height, tile_width), payloads = item
        try:
            x_hat = net.decompress(payloads, tile_height, tile_width, h.quality, dev, h.version)
            outputs = (net.postprocess(x_hat, h.quality, realisms, noise_seed(payloads), side, h.version, index)
                       if postfilter else [x_hat] * len(realisms))
        except ExactError:
            raise FormatError("corrupted .xsc file (side information out of range)") from None
        rows, cols = min(tile_height, h.height - top), min(tile_width, h.width - left)
        return [x[0, :, :rows, :cols].mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy() for x in outputs]

    items = list(zip(range(len(boxes)), boxes, container.tile_streams(bitstream)))
    tiles_of = map_processes if dev.type == "cpu" else map_ordered  # the walks' ANS decoding holds the GIL
    with torch.inference_mode(), thread_budget(count):
        for done, ((_, (top, left, _, _), _), tiles) in enumerate(zip(items, tiles_of(tile, items)), 1):
            for rgb, pixels in zip(rgbs, tiles):
                rgb[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
            if on_tile:
                on_tile(done, h.tiles)
    if postfilter:
        for rgb in rgbs:
            net.smooth_seams(rgb, h.tile, h.quality, h.version)
    return [_image(rgb, bitstream, alpha) for rgb in rgbs]


def _metadata_streams(bitstream: Bitstream) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The file's ICC profile, EXIF and XMP streams (None where it has none)."""
    return tuple(bitstream.stream(kind) for kind in (StreamKind.ICC, StreamKind.EXIF, StreamKind.XMP))


def decode_samples(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, threads: int | None = None
                   ) -> tuple[np.ndarray, dict[str, bytes]]:
    """The exact samples of a lossless or near-lossless file: (H, W) for grayscale, (H, W, 3) RGB,
    uint8 or uint16 as the file's bit depth (no alpha), and its metadata (``icc_profile``, ``exif``,
    ``xmp``, where present). The one way to get 16-bit RGB back."""
    table = container.read_table(data)
    check_pixels(table.header.width, table.header.height, max_pixels)
    if table.header.max_error is None:
        raise InputError("decode_samples reads lossless and near-lossless files; decode reads this one")
    samples, bitstream, _ = _decode_exact(table, None, threads)
    if table.header.channels == 1 and samples.ndim == 3:
        samples = samples[..., 0]
    names = ("icc_profile", "exif", "xmp")
    return samples, {name: value for name, value in zip(names, _metadata_streams(bitstream)) if value}


def _image(samples: np.ndarray, bitstream: Bitstream, alpha: np.ndarray | None) -> Image.Image:
    """The decoded image of (H, W, 3) 8-bit samples (or (H, W) 16-bit gray) with the file's metadata."""
    icc, exif, xmp = _metadata_streams(bitstream)
    if bitstream.header.bit_depth == 16:
        image = Image.fromarray(samples.astype(np.uint16))  # mode I;16
        image.info.update({key: value for key, value in (("icc_profile", icc), ("exif", exif), ("xmp", xmp)) if value})
        return image
    return to_pil(samples, bitstream.header.channels, icc, exif, xmp, alpha)


def _decode_exact(table: container.Table, on_tile: TileCallback | None, threads: int | None
                  ) -> tuple[np.ndarray, Bitstream, Image.Image | None]:
    """Decode a lossless or near-lossless file (its header already checked by the container): its
    samples ((H, W) gray or (H, W, 3) RGB, uint8 or uint16), bitstream and alpha plane."""
    h = table.header
    coder, manifest = tables.load(h.model)
    check_header(h, manifest, None)
    bitstream = table.bitstream()
    count = thread_count(threads)
    alpha = bitstream.stream(StreamKind.ALPHA)
    alpha = None if alpha is None else decode_alpha(alpha, h.width, h.height)
    planes = 1 if h.channels == 1 else 3
    samples = np.empty((planes, h.height, h.width), dtype=np.uint16)
    items = list(zip(h.tile_boxes(), container.tile_streams(bitstream)))

    def tile(item: tuple[tuple[int, int, int, int], list[bytes]]) -> np.ndarray:
        (_, _, rows, cols), (payload,) = item
        return decode_tile(payload, planes, rows, cols, h.bit_depth, h.max_error, coder, h.model)

    with thread_budget(count):
        for done, (((top, left, rows, cols), _), pixels) in enumerate(zip(items, map_ordered(tile, items)), 1):
            samples[:, top : top + rows, left : left + cols] = pixels
            if on_tile:
                on_tile(done, h.tiles)
    if planes == 1:
        return (samples[0] if h.bit_depth == 16 else samples[[0, 0, 0]].transpose(1, 2, 0).astype(np.uint8)), bitstream, alpha
    rgb = samples[[1, 0, 2]].transpose(1, 2, 0)
    return (rgb if h.bit_depth == 16 else rgb.astype(np.uint8)), bitstream, alpha


@dataclass
class FileInfo:
    header: Header
    streams: list[tuple[StreamKind, int]]
    size: int

    @property
    def bpp(self) -> float:
        return 8 * self.size / (self.header.width * self.header.height)


def info(data: bytes) -> FileInfo:
    """Header fields and stream sizes of an ``.xsc`` file (no decoding)."""
    table = container.read_table(data)
    return FileInfo(table.header, [(StreamKind(kind), length) for kind, length in zip(table.kinds, table.lengths)], len(data))


def encode_to_bpp(image: Image.Image, bpp: float, model: str = zoo.DEFAULT_MODEL, device: str = "auto",
                  drop_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, tile: int = DEFAULT_TILE,
                  effort: int | None = None, strip: bool = False, realism: float | None = None,
                  threads: int | None = None, metadata: dict[str, bytes | None] | None = None) -> bytes:
    """Encode at the highest quality whose file stays within ``bpp`` (bisection on quality).

    File size grows with quality, so 8 halvings of [1, 8] land within 0.03 of the best quality.
    If even quality 1 is larger than the target, the quality-1 file is returned. The analysis
    transform runs once per tile; each of the 10 qualities tried costs the rest of the encoder.
    With a ``realism`` above 0 the search leaves out the detail gains (``models.gains``: about 1.4 s
    per Kodak image at every quality) and chooses them for the quality found; where their bytes
    take the file over the target, it searches again for a budget smaller by those bytes.
    """
    source = prepare(image, drop_alpha=drop_alpha, strip=strip, metadata=metadata)
    encode_at = _encoder(source, model, device, max_pixels, tile, effort, keep=True, realism=realism, threads=threads)
    limit = bpp * image.width * image.height / 8
    searched: dict[float, bytes] = {}

    def without_gains(quality: float) -> bytes:
        if quality not in searched:
            searched[quality] = encode_at(quality, gains=False)
        return searched[quality]

    def highest(budget: float) -> float:
        if len(without_gains(MAX_QUALITY)) <= budget:
            return MAX_QUALITY
        low, high = MIN_QUALITY, MAX_QUALITY
        for _ in range(8):
            mid = (low + high) / 2
            low, high = (mid, high) if len(without_gains(mid)) <= budget else (low, mid)
        return low

    quality = highest(limit)
    if not realism:
        return without_gains(quality)
    data = encode_at(quality)
    while len(data) > limit and quality > MIN_QUALITY:  # each round keeps a smaller file without gains: it ends
        quality = highest(limit - (len(data) - len(without_gains(quality))))
        data = encode_at(quality)
    return data
