"""The Python API that the CLI calls.

>>> from xcodec import api
>>> data = api.encode(Image.open("photo.png"), quality=4)   # bytes of an .xsc file
>>> image = api.decode(data)                                # a Pillow image
>>> data = api.encode(Image.open("scan.png"), lossless=True)  # every sample exact (max_error=N: within +-N)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from . import container
from .container import Bitstream, Header, StreamKind
from .errors import FormatError, InputError, ModelError
from .image import SourceImage, decode_alpha, encode_alpha, prepare, to_pil
from .models import zoo
from .models.codec import MAX_QUALITY, MIN_QUALITY, to_tensor
from .models.exact import ExactError
from .lossless import tables
from .lossless.codec import decode_tile, encode_tile

from .defaults import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, DEFAULT_TILE, check_pixels  # torch-free, for the command line


TileCallback = Callable[[int, int], None]  # (tiles done, tiles in all)
# The lossless coder's walk allocates about 400 MB for a tile of 1024 x 1024 pixels (1.6 GB at 2048), so
# its tiles are limited to the default tile size, on both sides.
EXACT_MAX_TILE = DEFAULT_TILE


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


def encode(image: Image.Image, quality: float = DEFAULT_QUALITY, model: str = zoo.DEFAULT_MODEL,
           device: str = "auto", drop_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
           tile: int = DEFAULT_TILE, effort: int | None = None, on_tile: TileCallback | None = None,
           strip: bool = False, lossless: bool = False, max_error: int | None = None) -> bytes:
    """Compress a Pillow image into the bytes of an ``.xsc`` file.

    The image is coded as independent ``tile`` x ``tile`` tiles (0: one tile), so that memory
    depends on the tile size, not on the image size: only the 8-bit image is held whole.
    ``effort`` is one of the model's encoder levels (None: its default). ``on_tile(done, total)``
    is called after each tile (progress). Transparency is kept as a lossless alpha stream unless
    ``drop_alpha``; EXIF and XMP as streams unless ``strip``.

    ``lossless`` codes every sample exactly (8-bit, or 16-bit grayscale), ``max_error`` (1..4) every
    sample within +-max_error, both with the ``lossless`` coder (``quality``, ``model`` and
    ``effort`` do not apply).
    """
    if lossless or max_error is not None:
        if lossless and max_error:
            raise InputError("lossless means max_error 0; give one or the other")
        source = prepare(image, drop_alpha=drop_alpha, strip=strip, keep_depth=True)
        return _encode_exact(source, max_error or 0, max_pixels, tile, on_tile)
    source = prepare(image, drop_alpha=drop_alpha, strip=strip)
    return _encoder(source, model, device, max_pixels, tile, effort, keep=False, on_tile=on_tile)(quality)


def _metadata(source: SourceImage) -> list[tuple[StreamKind, bytes]]:
    """The metadata streams of a source (the alpha plane coded once, whatever the quality)."""
    alpha = None if source.alpha is None else encode_alpha(source.alpha)
    streams = [(StreamKind.ICC, source.icc_profile), (StreamKind.EXIF, source.exif), (StreamKind.XMP, source.xmp),
               (StreamKind.ALPHA, alpha)]
    return [(kind, data) for kind, data in streams if data]


def _encode_exact(source: SourceImage, max_error: int, max_pixels: int, tile: int,
                  on_tile: TileCallback | None) -> bytes:
    """A lossless (``max_error`` 0) or near-lossless file: planes G, R, B (or gray) in tiles."""
    if not 0 <= max_error <= container.MAX_ERROR:
        raise InputError(f"max_error must be between 0 and {container.MAX_ERROR}, got {max_error}")
    if source.gray16 is not None:
        samples, depth = source.gray16[None].astype(np.int64), 16
    else:
        planes = source.rgb[..., :1] if source.channels == 1 else source.rgb[..., [1, 0, 2]]
        samples, depth = planes.transpose(2, 0, 1).astype(np.int64), 8
    height, width = samples.shape[1:]
    check_pixels(width, height, max_pixels)
    if tile < 0:
        raise InputError(f"the tile size must be 0 (one tile) or positive, got {tile}")
    scales, manifest = tables.load()
    header = Header(tables.NAME, manifest.model_hash, 0.0, width, height, source.channels, depth,
                    tile=0 if tile >= max(height, width) else tile, max_error=max_error)
    if max(header.tile_size) > EXACT_MAX_TILE:
        raise InputError(f"lossless tiles are limited to {EXACT_MAX_TILE} pixels a side (decoders refuse larger ones); "
                         f"code this image in tiles (--tile {DEFAULT_TILE})")
    streams = []
    for done, (top, left, rows, cols) in enumerate(header.tile_boxes(), 1):
        payload = encode_tile(samples[:, top : top + rows, left : left + cols], depth, max_error, scales)
        streams.append((StreamKind.CODED, payload))
        if on_tile:
            on_tile(done, header.tiles)
    return container.pack(Bitstream(header, streams + _metadata(source)))


def _encoder(source: SourceImage, model: str, device: str, max_pixels: int, tile: int,
             effort: int | None, keep: bool, on_tile: TileCallback | None = None) -> Callable[[float], bytes]:
    """Check ``source`` once; return a function from quality to the bytes of its file.

    With ``keep``, each tile's ``compressor`` is kept between calls (the analysis runs once, for
    coding at several qualities); without, tiles are cut and analysed per call, one at a time.
    """
    height, width = source.rgb.shape[:2]
    check_pixels(width, height, max_pixels)
    net, manifest = zoo.load(model)
    dev = resolve_device(device)
    stride = net.stride
    if tile < 0 or tile % stride:
        raise InputError(f"the tile size must be 0 (one tile) or a positive multiple of {stride}, got {tile}")
    pad_bottom, pad_right = -height % stride, -width % stride
    if tile >= max(height + pad_bottom, width + pad_right):
        tile = 0  # one tile: a single representation for it
    header = Header(model, manifest.model_hash, DEFAULT_QUALITY, width, height, source.channels, 8, pad_bottom,
                    pad_right, tile, net.streams_per_tile)
    if max(header.tile_size) > container.MAX_TILE:
        raise InputError(f"tiles are limited to {container.MAX_TILE} pixels a side (decoders refuse larger ones); "
                         f"code this image in tiles (--tile {DEFAULT_TILE})")
    if effort is None:
        effort = net.default_effort
    if not 0 <= effort < net.efforts:
        raise InputError(f"model {model!r} has effort levels 0..{net.efforts - 1}, not {effort}")
    net = net.to(dev)
    metadata = _metadata(source)

    def compressors() -> Iterator[Callable[[float], list[bytes]]]:
        for top, left, tile_height, tile_width in header.tile_boxes():
            pixels = source.rgb[top : top + tile_height, left : left + tile_width]
            yield net.compressor(to_tensor(pixels, stride).to(dev), effort)

    with torch.inference_mode():
        kept = list(compressors()) if keep else None

    def encode_at(quality: float) -> bytes:
        if not MIN_QUALITY <= quality <= MAX_QUALITY:
            raise InputError(f"quality must be between {MIN_QUALITY:g} and {MAX_QUALITY:g}, got {quality:g}")
        quality = container.quantize_quality(quality)
        streams = []
        with torch.inference_mode():
            for done, compress in enumerate(kept if keep else compressors(), 1):
                payloads = compress(quality)
                if len(payloads) != net.streams_per_tile:
                    raise ValueError(f"model {model!r} gave {len(payloads)} streams for a tile, not {net.streams_per_tile}")
                streams += [(StreamKind.CODED, payload) for payload in payloads]
                if on_tile:
                    on_tile(done, header.tiles)
        return container.pack(Bitstream(replace(header, quality=quality), streams + metadata))

    return encode_at


def decode(data: bytes, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
           on_tile: TileCallback | None = None, postfilter: bool = True) -> Image.Image:
    """Decompress the bytes of an ``.xsc`` file into a Pillow image (RGB, or L for grayscale).

    Tiles are decoded one at a time into the 8-bit output, so memory depends on the tile size.
    ``on_tile(done, total)`` is called after each tile (progress). ``postfilter=False`` skips the
    model's decoder-side post-filter (``wavelet`` models that have one), which no bit of the file
    depends on.
    """
    bitstream = container.unpack(data)
    h = bitstream.header
    check_pixels(h.width, h.height, max_pixels)
    if h.max_error is not None:
        return _decode_exact(bitstream, on_tile)
    net, manifest = zoo.load(h.model)
    if manifest.model_hash != h.model_hash:
        raise ModelError(f"the file was made with other weights for model {h.model!r} than the installed ones")
    if h.streams_per_tile != net.streams_per_tile:
        raise FormatError(f"invalid .xsc header ({h.streams_per_tile} streams per tile; model {h.model!r} codes {net.streams_per_tile})")
    stride = net.stride
    if (h.pad_bottom, h.pad_right) != (-h.height % stride, -h.width % stride):
        raise FormatError("invalid .xsc header (padding does not match the image size and model)")
    if h.tile % stride:
        raise FormatError(f"invalid .xsc header (tile size {h.tile} is not a multiple of the model's stride {stride})")
    dev = resolve_device(device)
    rgb = np.empty((h.height, h.width, 3), dtype=np.uint8)
    with torch.inference_mode():
        net = net.to(dev)
        boxes = zip(h.tile_boxes(), container.tile_streams(bitstream))
        for done, ((top, left, tile_height, tile_width), payloads) in enumerate(boxes, 1):
            try:
                x_hat = net.decompress(payloads, tile_height, tile_width, h.quality, dev)
                if postfilter:
                    x_hat = net.postprocess(x_hat, h.quality)
            except ExactError:
                raise FormatError("corrupted .xsc file (side information out of range)") from None
            rows, cols = min(tile_height, h.height - top), min(tile_width, h.width - left)
            pixels = x_hat[0, :, :rows, :cols].mul(255).round().clamp(0, 255).byte().permute(1, 2, 0)
            rgb[top : top + rows, left : left + cols] = pixels.cpu().numpy()
            if on_tile:
                on_tile(done, h.tiles)
    return _image(rgb, bitstream)


def _image(samples: np.ndarray, bitstream: Bitstream) -> Image.Image:
    """The decoded image of (H, W, 3) 8-bit samples (or (H, W) 16-bit gray) with the file's metadata."""
    h = bitstream.header
    alpha = bitstream.stream(StreamKind.ALPHA)
    icc, exif, xmp = (bitstream.stream(kind) for kind in (StreamKind.ICC, StreamKind.EXIF, StreamKind.XMP))
    if h.bit_depth == 16:
        image = Image.fromarray(samples.astype(np.uint16))  # mode I;16
        image.info.update({key: value for key, value in (("icc_profile", icc), ("exif", exif), ("xmp", xmp)) if value})
        return image
    return to_pil(samples, h.channels, icc, exif, xmp, None if alpha is None else decode_alpha(alpha, h.width, h.height))


def _decode_exact(bitstream: Bitstream, on_tile: TileCallback | None) -> Image.Image:
    """Decode a lossless or near-lossless file (its header already checked by the container)."""
    h = bitstream.header
    scales, manifest = tables.load()
    if h.model != tables.NAME:
        raise FormatError(f"invalid .xsc header (a lossless file names model {h.model!r}, not {tables.NAME!r})")
    if manifest.model_hash != h.model_hash:
        raise ModelError(f"the file was made with other weights for model {h.model!r} than the installed ones")
    if (h.streams_per_tile, h.pad_bottom, h.pad_right) != (1, 0, 0) or (h.bit_depth == 16 and h.channels != 1):
        raise FormatError("invalid .xsc header (a lossless file has one stream per tile, no padding, and 16 bits "
                          "only in grayscale)")
    if max(h.tile_size) > EXACT_MAX_TILE:
        raise FormatError(f"the .xsc file has lossless tiles of {h.tile_size[1]}x{h.tile_size[0]} pixels; this xcodec "
                          f"decodes lossless tiles of at most {EXACT_MAX_TILE} pixels a side")
    planes = 1 if h.channels == 1 else 3
    samples = np.empty((planes, h.height, h.width), dtype=np.uint16)
    boxes = zip(h.tile_boxes(), container.tile_streams(bitstream))
    for done, ((top, left, rows, cols), (payload,)) in enumerate(boxes, 1):
        samples[:, top : top + rows, left : left + cols] = decode_tile(payload, planes, rows, cols, h.bit_depth,
                                                                        h.max_error, scales)
        if on_tile:
            on_tile(done, h.tiles)
    if h.bit_depth == 16:
        return _image(samples[0], bitstream)
    rgb = samples[[0, 0, 0] if planes == 1 else [1, 0, 2]].transpose(1, 2, 0).astype(np.uint8)
    return _image(rgb, bitstream)


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
    bitstream = container.unpack(data)
    return FileInfo(bitstream.header, [(kind, len(payload)) for kind, payload in bitstream.streams], len(data))


def encode_to_bpp(image: Image.Image, bpp: float, model: str = zoo.DEFAULT_MODEL, device: str = "auto",
                  drop_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, tile: int = DEFAULT_TILE,
                  effort: int | None = None, strip: bool = False) -> bytes:
    """Encode at the highest quality whose file stays within ``bpp`` (bisection on quality).

    File size grows with quality, so 8 halvings of [1, 8] land within 0.03 of the best quality.
    If even quality 1 is larger than the target, the quality-1 file is returned. The analysis
    transform runs once per tile; each of the 10 qualities tried costs the rest of the encoder.
    """
    source = prepare(image, drop_alpha=drop_alpha, strip=strip)
    encode_at = _encoder(source, model, device, max_pixels, tile, effort, keep=True)
    pixels = image.width * image.height
    low, high = MIN_QUALITY, MAX_QUALITY
    best = encode_at(low)
    top = encode_at(high)
    if 8 * len(top) / pixels <= bpp:
        return top
    for _ in range(8):
        mid = (low + high) / 2
        data = encode_at(mid)
        if 8 * len(data) / pixels <= bpp:
            low, best = mid, data
        else:
            high = mid
    return best
