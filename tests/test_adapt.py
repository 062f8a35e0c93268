"""Effort 2 of the ``wavelet`` model: the post-filter's tail fitted to the image and sent in the
file's ``adapt`` stream (version 8): the stream's round trip, the fit, the parser's refusals, and
files through the API (tiles, thread counts, the coded streams of effort 1)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_photo
from xcodec import api, container
from xcodec.container import Bitstream, StreamKind
from xcodec.errors import FormatError
from xcodec.models import zoo
from xcodec.models.wavelet import WaveletCodec
from xcodec.models.wavelet import adapt

SAMPLE = Image.open(api.__file__.replace("api.py", "samples/chelsea.png")).convert("RGB")
CORPUS = Path(__file__).resolve().parent / "corpus"


def to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def model() -> WaveletCodec:
    torch.manual_seed(3)
    net = WaveletCodec(lifting_hidden=0, postfilter=16).eval()
    torch.nn.init.normal_(net.postfilter.tail.weight, std=0.05)
    net.prepare_inference({})
    return net


def test_stream_gives_the_tail_plus_its_entries(model):
    rng = np.random.default_rng(0)
    entries = rng.integers(-adapt.LIMIT, adapt.LIMIT + 1, (12, 17)) * (rng.random((12, 17)) < 0.3)
    weight, bias = adapt.read(adapt.write(entries, 11), model.postfilter)
    tail = model.postfilter.tail
    update = torch.from_numpy(entries).float() / 2**11
    assert torch.equal(weight[:, :, 1, 1], tail.weight[:, :, 1, 1] + update[:, :16])
    assert torch.equal(weight[:, :, 0], tail.weight[:, :, 0])  # the other taps are the shipped ones
    assert torch.equal(bias, tail.bias + update[:, 16])


def test_malformed_streams_are_refused(model):
    data = adapt.write(np.arange(-6, 6)[:, None].repeat(17, 1), 9)
    for bad in (b"", data[:-4], data + b"\x01\x00\x00\x00", data[: len(data) // 2]):
        with pytest.raises(FormatError):
            model.side_info({StreamKind.ADAPT: bad})
    with pytest.raises(FormatError, match="the adapt stream of a model that has no use for one"):
        WaveletCodec(lifting_hidden=0).side_info({StreamKind.ADAPT: data})


def test_the_fit_and_the_adapted_tail_are_those_of_the_files_version():
    """A model with a ``convfilter`` (here narrower than its ``postfilter``) fits its files' tail to
    it, the filter of version 11, and reads an ``adapt`` stream as one of it in a file of version
    11, as one of ``postfilter`` in a file of version 10."""
    torch.manual_seed(4)
    net = WaveletCodec(lifting_hidden=0, postfilter=16, convfilter={"width": 8, "coarse_path": False}).eval()
    torch.nn.init.normal_(net.convfilter.tail.weight, std=0.05)
    net.prepare_inference({})
    assert net.filter_for() is net.filter_for(container.FILTER_VERSION) is net.convfilter
    assert net.filter_for(container.SIGNS_VERSION) is net.postfilter
    x = to_tensor(make_photo(64, 48, seed=4))
    with torch.inference_mode():
        part = net.compressor(x, 2)(2.0).side.normal
        data = net.side_streams([net.compressor(x, 2)(2.0).side], 2.0)[StreamKind.ADAPT]
        assert part.gram.shape == (9, 9)
        weight, bias = net.side_info({StreamKind.ADAPT: data}).adaptation
        assert weight.shape == net.convfilter.tail.weight.shape and not torch.equal(weight, net.convfilter.tail.weight)
        older = net.side_info({StreamKind.ADAPT: data}, container.SIGNS_VERSION).adaptation
        assert older[0].shape == net.postfilter.tail.weight.shape
        x_hat = net.decompress(net.compress(x, 2.0), 48, 64, 2.0, torch.device("cpu"))
        (older,), (newer,) = (net.postprocess(x_hat, 2.0, version=v) for v in (container.SIGNS_VERSION, None))
        assert torch.equal(older, net.postfilter(x_hat, torch.tensor([2.0])).clamp(0, 1))
        assert torch.equal(newer, net.convfilter(x_hat, torch.tensor([2.0])).clamp(0, 1))


def test_fit_lowers_the_error_of_the_postfilter(model):
    """The fitted tail is the least-squares one: the tile's post-filtered error drops; nothing is
    sent when the shipped tail is already the best one (no error left that it can remove)."""
    x = to_tensor(make_photo(64, 48, seed=4))
    quality = torch.tensor([2.0])
    with torch.inference_mode():
        x_hat = model.decompress(model.compress(x, 2.0), 48, 64, 2.0, torch.device("cpu"))
        tile = model.compressor(x, 2)(2.0)
        assert tile.payloads == model.compressor(x, 1)(2.0).payloads  # effort 2 codes as effort 1
        part = tile.side.normal
        assert adapt.fit(adapt.Normal(part.gram, torch.zeros_like(part.cross), part.pixels), 2.0) is None
        data = model.side_streams([tile.side], 2.0)[StreamKind.ADAPT]
        assert len(data) <= container.MAX_ADAPT_BYTES
        shipped = model.postfilter(x_hat, quality)
        adapted = model.postfilter(x_hat, quality, model.side_info({StreamKind.ADAPT: data}).adaptation)
    assert float((adapted - x).square().sum()) < float((shipped - x).square().sum())


def test_container_limits_the_adapt_stream_and_its_version(model):
    header = container.Header("wavelet", bytes(8), 4.0, 64, 64, version=container.STREAMS_VERSION)
    coded = [(StreamKind.CODED, b"\x00" * 4)]
    packed = container.pack(Bitstream(header, coded + [(StreamKind.ADAPT, b"\x01" * 8)]))
    assert container.unpack(packed).header.version == container.ADAPT_VERSION
    assert container.unpack(packed).stream(StreamKind.ADAPT) == b"\x01" * 8
    assert container.unpack(container.pack(Bitstream(header, coded))).header.version == container.STREAMS_VERSION
    for size in (0, container.MAX_ADAPT_BYTES + 1):
        with pytest.raises(FormatError, match="adapt stream"):
            container.unpack(container.pack(Bitstream(header, coded + [(StreamKind.ADAPT, b"\x01" * size)])))
    old = bytearray(packed[:-4])
    old[4] = container.STREAMS_VERSION  # an adapt stream in a version-7 file
    with pytest.raises(FormatError, match="ADAPT stream"):
        container.unpack(bytes(old) + struct.pack("<I", zlib.crc32(old)))


shipped = pytest.mark.skipif("wavelet" not in zoo.available(), reason="no wavelet weights installed")


@shipped
@pytest.mark.parametrize("tile", [0, 256])
def test_effort_2_round_trips_with_an_adapted_postfilter(tile):
    """A 902x600 photo at quality 7 (where tiles of 256 pay for a stream too): the encoder sends a
    tail for the image (one for all tiles), the same file on any thread count, with effort 1's coded
    streams; its decoding, the same on any thread count, is closer to the original than effort 1's."""
    image = SAMPLE.resize((902, 600), Image.LANCZOS)
    data = api.encode(image, quality=7.0, tile=tile, effort=2, device="cpu", strip=True, threads=1)
    assert api.encode(image, quality=7.0, tile=tile, effort=2, device="cpu", strip=True, threads=2) == data
    plain = api.encode(image, quality=7.0, tile=tile, effort=1, device="cpu", strip=True, threads=1)
    adapted, first = container.unpack(data), container.unpack(plain)
    # version 13 (its grain, version 12's seams, version 11's post-filter, version 10's signs' contexts,
    # version 9's bounded global attention) with or without the stream
    assert (adapted.header.version, first.header.version) == (container.FOLDED_VERSION,) * 2
    assert [s for s in adapted.streams if s[0] != StreamKind.ADAPT] == first.streams and adapted.stream(StreamKind.ADAPT)
    decoded = np.asarray(api.decode(data, device="cpu", threads=1))
    assert np.array_equal(np.asarray(api.decode(data, device="cpu", threads=2)), decoded)
    original = np.asarray(image, dtype=np.float64)
    errors = [np.mean((original - pixels) ** 2) for pixels in (decoded, np.asarray(api.decode(plain, device="cpu")))]
    assert errors[0] < errors[1]
    unfiltered = [api.decode(file, device="cpu", postfilter=False) for file in (data, plain)]
    assert np.array_equal(*map(np.asarray, unfiltered))  # the stream changes the post-filter alone


@shipped
def test_a_corrupted_adapt_stream_is_refused_before_any_tile():
    """A committed file's stream, truncated by a word: a fresh encode's stream would depend on this
    CPU's float kernels (the fit), and whether a truncation is detected depends on the stream."""
    bitstream = container.unpack((CORPUS / "version-11-wavelet.xsc").read_bytes())
    kind, stream = bitstream.streams[-1]
    assert kind == StreamKind.ADAPT
    bad = replace(bitstream, streams=bitstream.streams[:-1] + [(kind, stream[:-4])])
    with pytest.raises(FormatError):
        api.decode(container.pack(bad), device="cpu")


@shipped
def test_bench_names_each_effort_apart_and_the_default_as_before():
    """`bench --effort 1,2`: the default effort keeps the curve (and cache) of a run without the
    option; effort 2 is another curve, another encoder and another version in the cache key."""
    from xcodec.bench.codecs import build_codecs

    codecs, _ = build_codecs(["xcodec"], ["wavelet"], efforts=(1, 2))
    (plain, *_), _ = build_codecs(["xcodec"], ["wavelet"])
    assert [c.name for c in codecs] == ["xcodec-wavelet", "xcodec-wavelet-e2"]
    assert (codecs[0].encoder(), codecs[0].version()) == (plain.encoder(), plain.version())
    assert codecs[1].encoder() != plain.encoder() and codecs[1].version().endswith("effort 2")
