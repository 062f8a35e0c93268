"""A Pillow plugin for ``.xsc`` files: ``import xcodec.pillow`` registers the format ``XSC``.

>>> from xcodec.pillow import register_xsc_opener
>>> register_xsc_opener()                 # what the import did; max_pixels= sets the limit below
>>> image = Image.open("photo.xsc")       # size and mode from the header; pixels on load()
>>> image.save("copy.xsc", quality=4)     # also model=, bpp=, effort=, tile=, device=, drop_alpha=, strip=, realism=
>>> image.save("exact.xsc", lossless=True)  # or max_error=N (1..4): near-lossless

The realism of the decoded pixels (0: fidelity .. 1: the perceptual decoder's detail) is the
module default ``xcodec.pillow.REALISM`` (None: the file's suggestion, else 0), or set per image
before the pixels are loaded: ``image = Image.open(path); image.realism = 1.0; image.load()``.

``save`` takes Pillow's ``exif=``, ``icc_profile=`` and ``xmp=`` keywords too, which replace the
image's own metadata as they do in Pillow's JPEG, PNG and WebP writers (the orientation of the EXIF
given is the one applied); without them the image's own metadata is kept.

Opening parses and validates the container (checksum, header, stream table, the decoding work its
size allows) without torch or a model, so ``Image.open`` and ``verify()`` are cheap; ``load()``
checks the header against the installed model (weights, layout), still without torch, and only
then runs the model.

**Pixel limit.** Decoding costs seconds per megapixel on a CPU, so ``Image.open`` applies xcodec's
own limit, ``MAX_PIXELS`` (the command line's ``--max-pixels`` default), below Pillow's
``Image.MAX_IMAGE_PIXELS``, which is sized for codecs that decode a megapixel in milliseconds. A
larger file raises ``Image.DecompressionBombError``, as Pillow does for its own formats; an app that
wants larger images raises the limit explicitly with ``register_xsc_opener(max_pixels=N)`` (None: no
limit of xcodec's own). Pillow's own check of ``MAX_IMAGE_PIXELS`` follows, as for every format.
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from . import container
from .container import StreamKind
from .defaults import DEFAULT_MAX_PIXELS
from .errors import XcodecError
from .image import read_metadata
from .models.manifest import check_file

FORMAT = "XSC"
MODES = {1: "L", 3: "RGB"}  # channels in the header; an alpha stream adds "A"
REALISM: float | None = None  # the realism of images opened from now on (None: the file's suggestion)
MAX_PIXELS: int | None = DEFAULT_MAX_PIXELS  # set by register_xsc_opener


def _accept(prefix: bytes) -> bool:
    return prefix.startswith(container.MAGIC)


def _check_size(width: int, height: int) -> None:
    """``DecompressionBombError`` above ``MAX_PIXELS`` (Pillow's own check follows, as for any format)."""
    if MAX_PIXELS is not None and width * height > MAX_PIXELS:
        raise Image.DecompressionBombError(
            f"the .xsc image is {width}x{height}, {width * height:,} pixels, above xcodec's limit of {MAX_PIXELS:,} "
            f"(xcodec.pillow.register_xsc_opener(max_pixels=N) raises it)")


class XSCImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "xcodec learned image compression"

    def _open(self) -> None:
        self._data = self.fp.read()
        try:
            table = container.read_table(self._data)
        except XcodecError as exc:
            raise SyntaxError(str(exc)) from None  # Pillow's signal for "not this format"
        self._header = header = table.header
        _check_size(header.width, header.height)
        self.info.update(read_metadata(*(table.stream(kind) for kind in (StreamKind.ICC, StreamKind.EXIF, StreamKind.XMP))))
        self.info["quality"] = header.quality
        self.info["model"] = header.model
        if header.max_error is not None:
            self.info["max_error"] = header.max_error
        if StreamKind.REALISM in table.kinds:
            self.info["realism"] = container.realism_hint(table)
        self.realism = REALISM
        self._size = header.width, header.height
        alpha = "A" if StreamKind.ALPHA in table.kinds else ""
        self._mode = "I;16" if header.bit_depth == 16 else MODES[header.channels] + alpha
        self.tile = []

    def load(self) -> Image.core.PixelAccess | None:
        if self._im is None:
            try:
                check_file(self._header)  # a file the model cannot decode is refused before torch loads
                from . import api

                # Image.open has applied the pixel limit to this size.
                decoded = api.decode(self._data, max_pixels=self.width * self.height, realism=self.realism)
            except XcodecError as exc:
                raise OSError(str(exc)) from None
            self.im = decoded.im
            self._close_fp()
        return super().load()

    def verify(self) -> None:
        """The checks ``Image.open`` made (checksum, header, stream table); nothing is decoded."""
        container.read_table(self._data)
        super().verify()

    def _close_fp(self) -> None:
        if self.fp and self._exclusive_fp:
            self.fp.close()
        self.fp = None


def _save(image: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """Encode with ``api.encode`` (``quality``, or ``lossless``/``max_error``) or ``api.encode_to_bpp`` (``bpp``);
    the other options pass through."""
    from . import api
    from .models import zoo

    options = dict(image.encoderinfo)
    quality, bpp = options.pop("quality", None), options.pop("bpp", None)
    if quality is not None and bpp is not None:
        raise ValueError("give either quality or bpp, not both")
    keys = ("model", "effort", "tile", "device", "drop_alpha", "strip", "max_pixels", "realism", "lossless", "max_error")
    kwargs = {key: options[key] for key in keys if key in options}
    if (kwargs.get("lossless") or kwargs.get("max_error") is not None) and bpp is not None:
        raise ValueError("give bpp or lossless/max_error, not both")
    kwargs.setdefault("model", zoo.DEFAULT_MODEL)
    kwargs.setdefault("max_pixels", max(1, image.width * image.height))  # the caller already holds the pixels
    kwargs["metadata"] = {key: options[key] for key in ("icc_profile", "exif", "xmp") if key in options}
    try:
        if bpp is None:
            data = api.encode(image, api.DEFAULT_QUALITY if quality is None else quality, **kwargs)
        else:
            data = api.encode_to_bpp(image, bpp, **kwargs)
    except XcodecError as exc:
        raise OSError(str(exc)) from None  # what Pillow's own writers raise for what they cannot write
    fp.write(data)


def register_xsc_opener(max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Register ``XSC`` with Pillow (``import xcodec.pillow`` does it too; again is harmless) and set
    the most pixels ``Image.open`` accepts in an ``.xsc`` file (None: no limit of xcodec's own)."""
    global MAX_PIXELS
    MAX_PIXELS = max_pixels
    Image.register_open(FORMAT, XSCImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".xsc")
    Image.register_mime(FORMAT, "image/x-xsc")


register_xsc_opener()
