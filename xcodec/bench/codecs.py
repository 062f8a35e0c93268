"""Codec adapters for the benchmark.

Every codec is one small class: a ``name`` (the curve's name in tables, plots and result files),
``settings`` (the sweep, in the codec's own units), ``encode(rgb, setting) -> bytes`` on an 8-bit
RGB array of shape HxWx3, ``decode(bytes) -> rgb``, ``version()`` (library versions and fixed
options; part of the cache key, so results are recomputed when it changes) and ``unavailable()``
(``None`` when the codec can run here, else the reason, so a missing package skips that codec with
a message instead of crashing the run). Codecs whose ``encoder()`` is the same differ only in how
they decode (xcodec with and without its post-filter): the bench encodes each image and setting
once for them.
Bits are always counted from the complete bytes that ``encode`` returns: a real file, headers
included.

To add a codec, write a class like :class:`PillowCodec` (or subclass it) and register a factory in
:data:`CONVENTIONAL`.
"""

from __future__ import annotations

import io
from importlib import metadata

import numpy as np
from PIL import Image, features

from ..container import GAINS_VERSION
from ..cores import usable_cores


class BenchCodec:
    """A codec as the benchmark runs it (see the module docstring); not ``models.codec.Codec``."""

    name: str = ""
    description: str = ""
    settings: tuple = ()
    setting_label: str = "setting"  # what the numbers in ``settings`` are
    threads: int = 1

    def unavailable(self) -> str | None:
        return None

    def version(self) -> str:
        raise NotImplementedError

    def encode(self, rgb: np.ndarray, setting) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def encoder(self) -> str:
        """Names what ``encode`` and ``extra`` do: codecs with the same encoder make the same bytes (and
        extras) of an image at a setting, so the bench encodes once for all of them."""
        return self.name

    def extra(self, rgb: np.ndarray, setting, data: bytes) -> dict:
        """Optional per-image numbers a codec adds to its rows (e.g. a model's own rate estimate)."""
        return {}


def _pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


class PillowCodec(BenchCodec):
    """A codec that Pillow (or a Pillow plugin) saves and opens: ``format`` plus fixed save options."""

    format = ""
    feature: str | None = None  # PIL.features name that must be present
    plugin: str | None = None  # PyPI package of a Pillow plugin, if one is needed
    quality_key = "quality"

    def __init__(self, settings: tuple | None = None, threads: int = 1, **options):
        if settings is not None:
            self.settings = tuple(settings)
        self.threads = threads
        self.options = {**self.default_options(), **options}

    def default_options(self) -> dict:
        return {}

    def load_plugin(self) -> None:
        """Import and register the plugin (raises ImportError when it is not installed)."""

    def unavailable(self) -> str | None:
        try:
            self.load_plugin()
        except ImportError as exc:
            return f"needs the `{self.plugin}` package (pip install {self.plugin}): {exc}"
        if self.feature and not features.check(self.feature):
            return f"this Pillow ({_pkg_version('pillow')}) was built without {self.feature} support"
        return None

    def library(self) -> str:
        return f"Pillow {_pkg_version('pillow')}" + (f" {self.feature} {features.version(self.feature)}" if self.feature else "")

    def version(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.library()}; {opts}"

    def save_options(self, setting) -> dict:
        return {self.quality_key: int(setting), **self.options}

    def encode(self, rgb: np.ndarray, setting) -> bytes:
        self.load_plugin()  # also in worker processes, which start without the plugin registered
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, self.format, **self.save_options(setting))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        self.load_plugin()
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


class JPEG(PillowCodec):
    """libjpeg-turbo through Pillow, optimized Huffman tables, 4:2:0 chroma."""

    name, description, format, feature = "jpeg", "JPEG 4:2:0 (libjpeg-turbo, optimized Huffman)", "JPEG", "jpg"
    settings = (3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
    setting_label = "quality"

    def default_options(self):
        return {"subsampling": "4:2:0", "optimize": True}

    def library(self):
        turbo = features.version("libjpeg_turbo")
        return f"Pillow {_pkg_version('pillow')} " + (f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}")


class JPEG444(JPEG):
    name, description = "jpeg444", "JPEG 4:4:4 (libjpeg-turbo, optimized Huffman)"
    settings = (3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90)

    def default_options(self):
        return {"subsampling": "4:4:4", "optimize": True}


class WebP(PillowCodec):
    """libwebp lossy (always 4:2:0), slowest and best method."""

    name, description, format, feature = "webp", "WebP lossy (libwebp, method 6)", "WEBP", "webp"
    settings = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
    setting_label = "quality"

    def default_options(self):
        return {"method": 6}


class AVIF(PillowCodec):
    """libavif (AV1 intra) through Pillow's AVIF plugin, full-range YUV."""

    name, description, format, feature = "avif", "AVIF 4:4:4 (libavif, speed 6)", "AVIF", "avif"
    settings = (5, 15, 25, 35, 45, 55, 65, 75, 85, 92)
    setting_label = "quality"

    def default_options(self):
        return {"subsampling": "4:4:4", "speed": 6}

    def save_options(self, setting):
        return {**super().save_options(setting), "max_threads": self.threads}


class AVIFBest(AVIF):
    """AVIF 4:4:4 at its best for PSNR: the slowest speed and libaom's PSNR tuning (the next anchor)."""

    name, description = "avif-best", "AVIF 4:4:4 (libavif, speed 0, tune=psnr)"

    def default_options(self):
        return {"subsampling": "4:4:4", "speed": 0, "advanced": {"tune": "psnr"}}


class AVIF420(AVIF):
    name, description = "avif420", "AVIF 4:2:0 (libavif, speed 6)"

    def default_options(self):
        return {"subsampling": "4:2:0", "speed": 6}


class JPEG2000(PillowCodec):
    """OpenJPEG through Pillow: a raw J2K codestream, 9/7 wavelet, colour transform, one layer at a target rate."""

    name, description, format, feature = "jp2", "JPEG 2000 (OpenJPEG, 9/7, MCT, rate target)", "JPEG2000", "jpg_2000"
    settings = (0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)
    setting_label = "target bpp"

    def default_options(self):
        return {"irreversible": True, "mct": 1, "no_jp2": True, "quality_mode": "rates"}

    def save_options(self, setting):
        # "rates" are compression ratios against the raw 24 bits per pixel
        return {**self.options, "quality_layers": [24.0 / float(setting)]}


class JPEGXL(PillowCodec):
    """libjxl through the ``pillow-jxl-plugin`` package, VarDCT, effort 7."""

    name, description, format = "jxl", "JPEG XL (libjxl via pillow-jxl-plugin, effort 7)", "JXL"
    plugin = "pillow-jxl-plugin"
    settings = (0, 5, 10, 20, 30, 45, 60, 70, 80, 88, 94)
    setting_label = "quality"

    def load_plugin(self):
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)

    def default_options(self):
        return {"effort": 7, "use_container": False}

    def save_options(self, setting):
        return {**super().save_options(setting), "num_threads": self.threads}

    def library(self):
        return f"Pillow {_pkg_version('pillow')} pillow-jxl-plugin {_pkg_version('pillow-jxl-plugin')}"


class HEIC(PillowCodec):
    """HEVC intra in a HEIF file (libheif + x265 through ``pillow-heif``), 4:4:4 chroma."""

    name, description, format = "heic", "HEIC 4:4:4 (libheif + x265 via pillow-heif)", "HEIF"
    plugin = "pillow-heif"
    settings = (5, 12, 20, 28, 35, 42, 48, 54, 60, 65)
    setting_label = "quality"

    def load_plugin(self):
        import pillow_heif

        pillow_heif.register_heif_opener()

    def default_options(self):
        return {"chroma": 444}

    def save_options(self, setting):
        # x265's thread pool size (its output does not depend on it); a fresh dict: pillow-heif changes it
        return {**super().save_options(setting), "enc_params": {"x265:pools": str(self.threads)}}

    def library(self):
        import pillow_heif

        info = pillow_heif.libheif_info()
        return f"pillow-heif {_pkg_version('pillow-heif')} libheif {info.get('libheif')} {info.get('HEIF')}"

    def unavailable(self):
        reason = super().unavailable()
        if reason is None:
            import pillow_heif

            if not pillow_heif.libheif_info().get("HEIF"):
                return "pillow-heif has no HEVC encoder here"
        return reason


CONVENTIONAL: dict[str, type[PillowCodec]] = {
    c.name: c for c in (JPEG, JPEG444, WebP, AVIF, AVIFBest, AVIF420, JPEG2000, JPEGXL, HEIC)
}
ALL_CODECS = ("xcodec", *CONVENTIONAL)


class XcodecCodec(BenchCodec):
    """A shipped xcodec model; settings are qualities. Bits are counted from the real ``.xsc`` bytes."""

    setting_label = "quality"

    def __init__(self, model: str | None = None, qualities: tuple[float, ...] | None = None, device: str = "auto",
                 threads: int = 1, estimate: bool = True, postfilter: bool = True, realism: float = 0.0,
                 effort: int | None = None):
        from ..models import zoo

        self.model = model or zoo.DEFAULT_MODEL
        self.settings = tuple(qualities) if qualities else tuple(float(q) for q in range(1, 9))
        self.device, self.threads, self.estimate, self.postfilter = device, threads, estimate, postfilter
        self.realism, self.effort = realism, effort  # effort None: the model's default
        self.name = (f"xcodec-{self.model}" + ("" if effort is None else f"-e{effort}") + ("" if postfilter else "-unfiltered")
                     + (f"-r{realism:g}" if realism else ""))
        self.description = (f"xcodec model {self.model!r} (.xsc files" + ("" if effort is None else f", effort {effort}")
                            + (f", encoded for realism {realism:g}" if realism else "") + ")"
                            + ("" if postfilter else ", decoded without its post-filter")
                            + (f", decoded at realism {realism:g}" if realism else ""))

    def unavailable(self) -> str | None:
        from ..errors import XcodecError
        from ..models import zoo

        try:
            zoo.read_manifest(self.model)
        except XcodecError as exc:
            return str(exc)
        return None

    def version(self) -> str:
        from .. import __version__
        from ..models import zoo

        manifest = zoo.read_manifest(self.model)
        arch = zoo.ARCHITECTURES[manifest.arch]  # the same weights code (and decode) differently in another format
        version = f"xcodec {__version__}; model {self.model} sha256 {manifest.sha256}; .xsc version {arch.file_version}"
        if "convfilter" in manifest.heads:  # the post-filter of the files' version
            version += f"; convfilter head sha256 {manifest.heads['convfilter']['sha256']}"
        if self.effort is not None:  # another encoder, and another format version at some efforts
            version += f"; effort {self.effort}"
        if self.realism:  # the decoded pixels depend on the head's weights too, and the files on its detail's gains
            version += (f"; perceptual head sha256 {manifest.heads.get('perceptual', {}).get('sha256')}"
                        f"; detail gains (.xsc version {GAINS_VERSION})")
        return version

    def encoder(self) -> str:
        """One encoder per model, effort, device, estimate and realism: the post-filter is the
        decoder's, and a realism curve's files are encoded for its realism (``api.encode(realism=)``:
        the gains of the perceptual head's detail, chosen by the encoder)."""
        return (f"xcodec {self.model}" + ("" if self.effort is None else f" effort {self.effort}") + f" on {self.device}"
                + ("" if self.estimate else ", no estimate") + (f", for realism {self.realism:g}" if self.realism else ""))

    def encode(self, rgb: np.ndarray, quality: float) -> bytes:
        from .. import api

        return api.encode(Image.fromarray(rgb), quality, model=self.model, device=self.device, threads=self.threads,
                          effort=self.effort, realism=self.realism or None)

    def decode(self, data: bytes) -> np.ndarray:
        from .. import api

        image = api.decode(data, device=self.device, postfilter=self.postfilter, realism=self.realism, threads=self.threads)
        return np.asarray(image.convert("RGB"))

    @staticmethod
    def payload_bytes(data: bytes) -> int:
        """Bytes of the entropy-coded streams, without the container around them."""
        from .. import api
        from ..container import StreamKind

        return sum(size for kind, size in api.info(data).streams if kind != StreamKind.ICC)

    def estimated_bits(self, rgb: np.ndarray, quality: float) -> float:
        """The model's own rate estimate for the padded image (what the file size is checked against)."""
        import torch

        from .. import api
        from ..models import zoo
        from ..models.codec import to_tensor

        net, _ = zoo.load(self.model)
        dev = api.resolve_device(self.device)
        x = to_tensor(rgb, net.stride)
        with torch.inference_mode():
            return float(net.to(dev).estimate_bits(x.to(dev), quality))

    def extra(self, rgb: np.ndarray, setting, data: bytes) -> dict:
        """The model's estimated bpp plus the container's own bytes, to show the coder delivers the
        estimate: in the fidelity curve's rows only, since a realism curve's files are its files (the
        estimate's walk costs as much as a decode)."""
        if not self.estimate or self.realism:
            return {}
        container_bits = 8 * (len(data) - self.payload_bytes(data))
        pixels = rgb.shape[0] * rgb.shape[1]
        return {"estimated_bpp": (self.estimated_bits(rgb, setting) + container_bits) / pixels}


def parse_settings(text: str) -> tuple:
    values = []
    for part in text.split(","):
        part = part.strip()
        if part:
            value = float(part)
            values.append(int(value) if value.is_integer() and "." not in part else value)
    return tuple(values)


def build_codecs(names: list[str], models: list[str] | None = None, settings: dict[str, tuple] | None = None,
                 device: str = "auto", threads: int = 1, postfilter: bool = True,
                 realisms: tuple[float, ...] = (0.0,), efforts: tuple[int | None, ...] = (None,)
                 ) -> tuple[list[BenchCodec], list[str]]:
    """Codecs by name (``xcodec`` expands to every model in weights/, or ``models``, once per effort in
    ``efforts`` (None or the model's default: the curve without an effort in its name) and realism in
    ``realisms``; ``postfilter`` False decodes them without their post-filters).

    Returns the runnable codecs and one message per codec that was skipped, with the reason.
    """
    from ..models import zoo

    settings = settings or {}
    codecs: list[BenchCodec] = []
    skipped: list[str] = []
    for name in names:
        if name == "xcodec":
            chosen = models or zoo.available()
            if not chosen:
                skipped.append(f"xcodec: no models installed in {zoo.WEIGHTS_DIR}")
            for model in chosen:
                qualities = settings.get(f"xcodec-{model}") or settings.get("xcodec")
                layout = zoo.read_manifest(model).layout
                default = layout.default_effort if layout else None
                codecs += [XcodecCodec(model, qualities, device, threads, postfilter=postfilter, realism=realism,
                                       effort=None if effort == default else effort)
                           for effort in dict.fromkeys(efforts) for realism in realisms]
        elif name in CONVENTIONAL:
            codecs.append(CONVENTIONAL[name](settings.get(name), threads=threads))
        else:
            raise ValueError(f"unknown codec {name!r} (known: {', '.join(ALL_CODECS)})")
    runnable = []
    for codec in codecs:
        reason = codec.unavailable()
        if reason:
            skipped.append(f"{codec.name}: skipped, {reason}")
        else:
            runnable.append(codec)
    return runnable, skipped


def default_threads(jobs: int) -> int:
    return max(1, usable_cores() // max(1, jobs))
