"""A Pillow plugin for ``.xsc`` files: ``import xcodec.pillow`` registers the format ``XSC``.

>>> import xcodec.pillow
>>> image = Image.open("photo.xsc")       # size and mode from the header; pixels on load()
>>> image.save("copy.xsc", quality=4)     # also model=, bpp=, effort=, tile=, device=, drop_alpha=, strip=
>>> image.save("exact.xsc", lossless=True)  # or max_error=N (1..4): near-lossless

Opening parses and validates the container (checksum, header, stream table) without torch or a
model, so ``Image.open`` and ``verify()`` are cheap; the model runs when the pixels are needed.
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from . import container
from .container import StreamKind
from .errors import XcodecError

FORMAT = "XSC"
MODES = {1: "L", 3: "RGB"}  # channels in the header; an alpha stream adds "A"


def _accept(prefix: bytes) -> bool:
    return prefix.startswith(container.MAGIC)


class XSCImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "xcodec learned image compression"

    def _open(self) -> None:
        self._data = self.fp.read()
        try:
            bitstream = container.unpack(self._data)
        except XcodecError as exc:
            raise SyntaxError(str(exc)) from None  # Pillow's signal for "not this format"
        header = bitstream.header
        for key, kind in (("icc_profile", StreamKind.ICC), ("exif", StreamKind.EXIF), ("xmp", StreamKind.XMP)):
            if bitstream.stream(kind):
                self.info[key] = bitstream.stream(kind)
        self.info["quality"] = header.quality
        self.info["model"] = header.model
        if header.max_error is not None:
            self.info["max_error"] = header.max_error
        self._size = header.width, header.height
        alpha = "A" if bitstream.stream(StreamKind.ALPHA) is not None else ""
        self._mode = "I;16" if header.bit_depth == 16 else MODES[header.channels] + alpha
        self.tile = []

    def load(self) -> Image.core.PixelAccess | None:
        if self._im is None:
            from . import api  # torch: only once the pixels are wanted

            try:
                # Image.open has applied Pillow's own limit (MAX_IMAGE_PIXELS) to this size.
                decoded = api.decode(self._data, max_pixels=self.width * self.height)
            except XcodecError as exc:
                raise OSError(str(exc)) from None
            self.im = decoded.im
            self._close_fp()
        return super().load()

    def verify(self) -> None:
        """The checks ``Image.open`` made (checksum, header, stream table); nothing is decoded."""
        container.unpack(self._data)
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
    keys = ("model", "effort", "tile", "device", "drop_alpha", "strip", "max_pixels", "lossless", "max_error")
    kwargs = {key: options[key] for key in keys if key in options}
    if (kwargs.get("lossless") or kwargs.get("max_error") is not None) and bpp is not None:
        raise ValueError("give bpp or lossless/max_error, not both")
    kwargs.setdefault("model", zoo.DEFAULT_MODEL)
    kwargs.setdefault("max_pixels", max(1, image.width * image.height))  # the caller already holds the pixels
    try:
        if bpp is None:
            data = api.encode(image, api.DEFAULT_QUALITY if quality is None else quality, **kwargs)
        else:
            data = api.encode_to_bpp(image, bpp, **kwargs)
    except XcodecError as exc:
        raise OSError(str(exc)) from None  # what Pillow's own writers raise for what they cannot write
    fp.write(data)


Image.register_open(FORMAT, XSCImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".xsc")
Image.register_mime(FORMAT, "image/x-xsc")
