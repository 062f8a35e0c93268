"""The film grain of version 13: what the encoder measures (``grain.tally``, ``grain.target``), what the
decoder draws (``grain.missing``), the ``grain`` stream in the container, and files through the API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcodec import api, container
from xcodec.container import Bitstream, StreamKind
from xcodec.errors import FormatError
from xcodec.models import grain, zoo
from xcodec.models.wavelet import WaveletCodec

from .conftest import make_photo


def grey(noise: float, seed: int = 0, size: int = 96) -> torch.Tensor:
    """(1, 3, size, size) mid-grey with white noise of ``noise`` grey levels."""
    generator = torch.Generator().manual_seed(seed)
    return 0.5 + noise / 255 * torch.randn((1, 3, size, size), generator=generator)


def measured(x: torch.Tensor) -> torch.Tensor:
    """The sigma that the encoder would send for ``x`` decoded as flat grey, in grey levels."""
    return grain.read(grain.target(grain.tally(x, torch.full_like(x, 0.5))))


def test_the_encoder_sends_the_grain_of_the_photos_flat_areas():
    assert torch.allclose(measured(grey(2.0)), torch.full((3,), 2.0, dtype=torch.float64), atol=0.1)
    assert torch.allclose(measured(grey(5.0)), torch.full((3,), 5.0, dtype=torch.float64), atol=0.2)
    assert grain.target(grain.tally(grey(0.0), grey(0.0))) is None  # no grain: no stream
    edges = torch.zeros(1, 3, 96, 96)
    edges[..., ::2] = 1  # nothing flat in the decoded tile: nothing measured
    assert grain.tally(grey(2.0), edges).pixels == 0
    assert grain.target(grain.tally(grey(2.0), edges)) is None


def test_the_tiles_tallies_add_up():
    halves = grey(3.0)[..., :48], grey(1.0)[..., 48:]
    left, right = (grain.tally(x, torch.full_like(x, 0.5)) for x in halves)
    total = left + right
    assert total.pixels == 96 * 96
    assert torch.allclose(grain.read(grain.target(total)), torch.full((3,), 5**0.5, dtype=torch.float64), atol=0.1)


def test_the_decoder_makes_up_what_its_output_lacks():
    """White noise that brings a flat output's high-pass energy to the grain's; none where the output
    has it already, or where the decoded tile has no flat area."""
    flat, sigma = torch.full((1, 3, 96, 96), 0.5), torch.tensor([2.0, 3.0, 0.0], dtype=torch.float64)
    noise = torch.randn((1, 3, 96, 96), generator=torch.Generator().manual_seed(1))
    drawn = grain.missing(flat, flat, sigma, noise)
    assert torch.allclose(measured(flat + drawn), sigma, atol=0.15)
    assert torch.equal(drawn[:, 2], torch.zeros_like(drawn[:, 2]))
    assert torch.equal(grain.missing(grey(4.0), flat, sigma, noise), torch.zeros_like(noise))
    edges = torch.zeros_like(flat)
    edges[..., ::2] = 1
    assert torch.equal(grain.missing(flat, edges, sigma, noise), torch.zeros_like(noise))
    half = flat.clone()
    half[..., 48:] = edges[..., 48:]  # the right half of the decoded tile busy: its grain is left out
    drawn = grain.missing(flat, half, sigma, noise)
    assert torch.equal(drawn[..., 50:], torch.zeros_like(drawn[..., 50:])) and bool(drawn[:, :2, :, :44].all())


def test_the_container_reads_a_grain_stream_of_three_bytes_from_version_13():
    header = container.Header("wavelet", bytes(8), 4.0, 64, 64, version=container.GRAIN_VERSION)
    coded = [(StreamKind.CODED, b"\x00" * 4)]
    packed = container.pack(Bitstream(header, coded + [(StreamKind.GRAIN, b"\x10\x20\x30")]))
    assert container.unpack(packed).header.version == container.GRAIN_VERSION
    assert grain.read(container.unpack(packed).stream(StreamKind.GRAIN)).tolist() == [1.0, 2.0, 3.0]
    for size in (0, 2, 4):
        with pytest.raises(FormatError, match="grain stream"):
            container.unpack(container.pack(Bitstream(header, coded + [(StreamKind.GRAIN, b"\x10" * size)])))
    older = container.pack(Bitstream(container.Header("wavelet", bytes(8), 4.0, 64, 64, version=container.SEAMS_VERSION),
                                     coded + [(StreamKind.GRAIN, b"\x10\x20\x30")]))
    with pytest.raises(FormatError, match="GRAIN stream, which this xcodec does not read in version 12"):
        container.unpack(older)


def test_a_model_without_a_perceptual_head_refuses_a_grain_stream():
    with pytest.raises(FormatError, match="the grain stream of a model that has no use for one"):
        WaveletCodec(lifting_hidden=0, postfilter=16).side_info({StreamKind.GRAIN: b"\x10\x10\x10"})


def test_the_encoders_decoded_tile_is_the_decoders():
    """The encoder measures the grain on the tile it dequantises from the symbols it chose, without
    decoding the stream: the decoder's tile, bit for bit."""
    net, _ = zoo.load(zoo.DEFAULT_MODEL)
    x = torch.from_numpy(np.array(make_photo(80, 64, seed=6))).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        tile = net.compressor(x, 1)(3.0)
        x_hat = net.decompress(tile.payloads, 64, 80, 3.0, torch.device("cpu"))
        decoded = grain.tally(x, x_hat)
    assert tile.side.grain.pixels == decoded.pixels > 0
    assert torch.equal(tile.side.grain.energy, decoded.energy)


@pytest.fixture(scope="module")
def grainy() -> bytes:
    return api.encode(make_photo(96, 72, seed=3), quality=6, device="cpu")  # mild noise of 3 grey levels


def without_grain(data: bytes) -> bytes:
    bitstream = container.unpack(data)
    return container.pack(Bitstream(bitstream.header, [(k, v) for k, v in bitstream.streams if k != StreamKind.GRAIN]))


def test_a_file_carries_the_grain_that_realism_draws_and_realism_0_ignores(grainy):
    bitstream = container.unpack(grainy)
    assert bitstream.header.version == container.FOLDED_VERSION
    sigma = grain.read(bitstream.stream(StreamKind.GRAIN))
    assert (sigma > 1).all()
    plain = without_grain(grainy)
    pixels = [[np.asarray(image).astype(int) for image in api.decode_realisms(data, (0.0, 1.0), device="cpu")]
              for data in (grainy, plain)]
    assert np.array_equal(pixels[0][0], pixels[1][0])  # realism 0: the fidelity output, grain or not
    assert np.abs(pixels[0][1] - pixels[1][1]).mean() > 0.3  # realism 1: the grain drawn
    assert np.array_equal(pixels[0][1], np.asarray(api.decode(grainy, device="cpu", realism=1.0)))  # the same each time
