"""The ``wavelet`` model: invertible lifting, exact coding at any size, tiles, corrupted streams.

Most tests use a freshly initialised model (the context networks' random weights code as
correctly as trained ones, only with more bits), so they do not depend on ``weights/``; the last
ones check the shipped checkpoint when it is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_photo
from xcodec import api
from xcodec.entropy import SYMBOL_LIMIT, StreamReader, StreamWriter
from xcodec.errors import FormatError, InputError
from xcodec.models import threads, zoo
from xcodec.models.codec import checkerboard
from xcodec.models.exact import ExactConvNet
from xcodec.models.postfilter import PostFilter
from xcodec.models.wavelet import WaveletCodec
from xcodec.models.wavelet.context import (
    ACT_BITS, INPUT_BOUND, MAGNITUDE_CAP, SUPPORT, WEIGHT_BITS, BandContext, ExactBandContext, lg, pass_values, put_pass,
)
from xcodec.models.wavelet.bands import subband_shapes
from xcodec.models.wavelet.lifting import Wavelet2D, level_count
from xcodec.models.wavelet.low import low_bits, read_low, write_low
from xcodec.models.wavelet.quantise import FINEST_LIMIT, LOW_VALUE_LIMIT
from xcodec.models.wavelet.rate import SCALES, coded_bits
from xcodec.tools.bits import exact_bits

ODD_SIZES = [(1, 1), (2, 3), (7, 5), (1, 40), (33, 17), (61, 97)]


def to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def codec() -> WaveletCodec:
    torch.manual_seed(0)
    model = WaveletCodec(lifting_hidden=0).eval()
    model.prepare_inference({})
    return model


@pytest.mark.parametrize("height,width", ODD_SIZES)
def test_lifting_is_invertible_for_any_weights(height, width):
    torch.manual_seed(1)
    wavelet = Wavelet2D(levels=5, hidden=4).double()
    for p in wavelet.parameters():
        p.data.normal_(0, 0.05)  # learned residuals that are far from zero
    x = torch.rand(2, 3, height, width, dtype=torch.float64) * 255
    low, bands = wavelet(x)
    assert len(bands) == level_count(height, width, 5)
    assert torch.allclose(wavelet.inverse(low, bands), x, atol=1e-9)


def test_learned_lifting_starts_as_cdf97():
    x = torch.rand(1, 3, 45, 38, dtype=torch.float64) * 255
    fixed, learned = Wavelet2D(hidden=0).double(), Wavelet2D(hidden=8).double()
    (low_a, bands_a), (low_b, bands_b) = fixed(x), learned(x)
    assert torch.equal(low_a, low_b)
    assert all(torch.equal(a, b) for ta, tb in zip(bands_a, bands_b) for a, b in zip(ta, tb))


def test_cdf97_low_band_keeps_the_pixel_range():
    """Unit DC gain: a flat image stays flat at its value in the low band, with empty details."""
    low, bands = Wavelet2D(hidden=0).double()(torch.full((1, 1, 64, 96), 100.0, dtype=torch.float64))
    assert torch.allclose(low, torch.tensor(100.0, dtype=torch.float64))
    assert max(float(b.abs().max()) for triple in bands for b in triple) < 1e-9


@pytest.mark.parametrize("height,width", ODD_SIZES)
def test_round_trip_is_exact_at_any_size(codec, height, width):
    """The decoder gets the encoder's symbols: its pixels equal the encoder's own reconstruction."""
    x = to_tensor(make_photo(width, height, seed=height))
    with torch.inference_mode():
        low_q, planes = codec.quantise(x, torch.tensor([3.5]))
        expected = codec.dequantise(low_q, planes, torch.tensor([3.5]))
        payloads = codec.compressor(x, effort=0)(3.5).payloads
        decoded = codec.decompress(payloads, height, width, 3.5, torch.device("cpu"))
    assert decoded.shape == x.shape
    assert torch.equal(decoded, expected)


def test_quality_orders_rate_and_distortion(codec):
    x = to_tensor(make_photo(96, 64))
    sizes, errors = [], []
    with torch.inference_mode():
        for quality in (1.0, 4.0, 8.0):
            data = codec.compress(x, quality)[0]
            sizes.append(len(data))
            errors.append(float((codec.decompress([data], 64, 96, quality, torch.device("cpu")) - x).square().mean()))
    assert sizes[0] < sizes[1] < sizes[2]
    assert errors[0] > errors[1] > errors[2]


def test_coding_does_not_depend_on_thread_count(codec):
    x = to_tensor(make_photo(130, 70, seed=3))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            with torch.inference_mode():
                data = codec.compress(x, 5.25)
                results.append((data, codec.decompress(data, 70, 130, 5.25, torch.device("cpu"))))
    finally:
        torch.set_num_threads(threads)
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])


def test_float32_exact_networks_match_float64(codec):
    """Every partial sum is an integer below 2**24, so float32 gives the float64 result exactly,
    whatever the summation order (here: one position at a time against the whole map)."""
    torch.manual_seed(2)
    net = BandContext(12)
    exact = ExactBandContext(net)
    reference = ExactConvNet(net.support, WEIGHT_BITS, ACT_BITS, torch.float64)
    top = MAGNITUDE_CAP
    inputs = lg(torch.randint(-top, top + 1, (1, SUPPORT, 40, 30))) * 2**ACT_BITS
    whole = exact.support(inputs)
    assert torch.equal(whole.double(), reference(inputs))
    assert torch.equal(exact.support(inputs[..., 10:13, 7:10])[..., 1, 1], whole[..., 11, 8])


def test_attention_context_learns_in_float_and_has_no_exact_coder():
    """The transformer blocks of the context experiment (issue 23): a rate for every coefficient,
    gradients into the attention, and a refusal where the coder needs exact networks."""
    torch.manual_seed(0)
    model = WaveletCodec(levels=2, lifting_hidden=0, context_blocks=1)
    quality = torch.tensor([2.0, 6.0])
    _, planes = model.quantise(torch.rand(2, 3, 24, 20), quality)
    bits = model.context.bits(planes, quality)
    bits.sum().backward()
    assert bits.shape == (2, sum(q[0].numel() for q in planes.values())) and torch.isfinite(bits).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.context.nets["l0c0hl"].blocks.parameters())
    with pytest.raises(ValueError, match="float only"):
        model.prepare_inference({})


def test_effort_outside_the_models_levels_is_refused():
    with pytest.raises(InputError, match="effort"):
        api.encode(make_photo(16, 16), model="hyperprior", effort=1)


def test_corrupted_stream_is_refused(codec):
    x = to_tensor(make_photo(48, 40))
    with torch.inference_mode():
        data = codec.compress(x, 4.0)[0]
        for bad in (b"", data[:-1], data[:-4], data[: len(data) // 2], data + b"\x01\x00\x00\x00"):
            with pytest.raises(FormatError):
                codec.decompress([bad], 40, 48, 4.0, torch.device("cpu"))


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (5, 7), (16, 24)])
def test_low_band_codes_any_values_in_its_range(height, width):
    """Extremes of both signs, a checkerboard of them in luma, give MED's largest residuals
    (twice the limit): the walk codes them and decodes them back."""
    rng = np.random.default_rng(height * width)
    values = torch.from_numpy(rng.choice([-LOW_VALUE_LIMIT, 0, LOW_VALUE_LIMIT], size=(3, height, width)))
    values[0] = LOW_VALUE_LIMIT * (1 - 2 * ((torch.arange(height)[:, None] + torch.arange(width)) % 2))
    writer = StreamWriter()
    write_low(writer, values.double())
    reader = StreamReader(writer.finish())
    assert torch.equal(read_low(reader, (height, width)), values.double())
    reader.finish()


def test_training_rate_of_the_low_band_is_the_coders(codec):
    """The training forward's low-band rate is the coder's code length, up to the scale table's
    1% steps and the three scale indices."""
    with torch.no_grad():
        low, _ = codec.scale(codec.transform(to_tensor(make_photo(512, 384, seed=4))), torch.tensor([6.0]))
    low_q = torch.round(low)
    coded = sum(write_low(StreamWriter(), low_q[0].double()))
    assert abs(coded - float(low_bits(low_q).sum())) < 0.01 * coded + 32


# --- the shipped checkpoint --------------------------------------------------------------------

shipped = pytest.mark.skipif("wavelet" not in zoo.available(), reason="no wavelet weights installed")


@shipped
@pytest.mark.parametrize("tile", [0, 64])
def test_shipped_model_round_trips_through_the_api(tile):
    image = make_photo(150, 101, seed=7)
    data = api.encode(image, quality=6.5, model="wavelet", tile=tile, device="cpu")
    decoded = api.decode(data, device="cpu")
    assert decoded.size == image.size
    error = np.asarray(decoded, dtype=np.float64) - np.asarray(image, dtype=np.float64)
    assert 10 * np.log10(255**2 / np.mean(error**2)) > 30


@pytest.mark.parametrize("shape", ODD_SIZES + [(2, 2), (6, 4)])
def test_pass_values_are_the_checkerboard_passes_in_raster_order(shape):
    x = torch.arange(float(shape[0] * shape[1])).view(shape)
    anchors = checkerboard(*shape)
    for step, mask in enumerate((anchors, ~anchors)):
        assert torch.equal(pass_values(x[None], step)[0], x[mask])  # a mask takes them in raster order
        plane = torch.full(shape, -1.0)
        put_pass(plane, step, x[mask])
        assert torch.equal(plane[mask], x[mask]) and bool((plane[~mask] == -1).all())


@pytest.mark.parametrize("shape", ODD_SIZES + [(6, 4)])
def test_second_pass_features_are_the_whole_maps_at_its_positions(shape):
    """The anchors' 3x3 evaluated at the second pass's positions alone gives the whole map's values there."""
    torch.manual_seed(3)
    net = BandContext(12)
    exact = ExactBandContext(net)
    whole_anchors = ExactConvNet(net.anchors, WEIGHT_BITS, ACT_BITS, torch.float32)
    features = torch.randint(-300, 300, (1, 12, *shape)).float()
    anchors = lg(torch.randint(-50, 50, shape) * checkerboard(*shape)) * 2**ACT_BITS
    expected = pass_values(features + whole_anchors(anchors[None, None]), 1)
    assert torch.equal(exact.second(features, anchors), expected)


@shipped
def test_shipped_networks_stay_in_the_exact_range():
    """Every layer's sums are exact for the largest context inputs (capped magnitudes, quality 8),
    checked when the networks are built: the walk checks nothing."""
    model, _ = zoo.load("wavelet")
    for net in model.context.exact.values():
        assert all(layer.static for layer in (net.support, net.anchors, *net.heads))
        worst = torch.full((1, len(net.channels), 3, 3), INPUT_BOUND)
        features = net.support(worst)
        net.index(pass_values(features, 0), 0)
        net.index(net.second(features, torch.full((3, 3), INPUT_BOUND)), 1)


@shipped
def test_shipped_model_files_match_its_estimate():
    model, _ = zoo.load("wavelet")
    image = make_photo(256, 192, seed=5)
    x = to_tensor(image)
    for quality in (1.0, 8.0):
        size = len(model.compress(x, quality)[0]) * 8
        assert abs(size / model.estimate_bits(x, quality) - 1) < 0.01


@shipped
def test_rdo_quantisation_trades_error_for_bits():
    """Effort 1 codes fewer bits than plain dead-zone rounding at about the same error."""
    codec, _ = zoo.load("wavelet")
    x = to_tensor(make_photo(128, 96, seed=4))
    with torch.inference_mode():
        coded = [codec.compressor(x, effort)(4.0).payloads[0] for effort in (0, 1)]
        errors = [float((codec.decompress([data], 96, 128, 4.0, torch.device("cpu")) - x).square().mean()) for data in coded]
    assert len(coded[1]) < len(coded[0])
    assert errors[1] < 1.2 * errors[0]


@shipped
def test_training_rate_is_the_coders_for_effort_1():
    """The training forward's symbols (``symbols``) cost what effort 1's cost under the coder's
    Laplacians, within 2%, at a low and a middle quality: one RDO round under the dead-zone
    symbols' scales overstated them by 6-7% at quality 1 (more nonzero symbols than the coder
    keeps). (A file of version 10 codes the second passes' signs with their contexts, which the
    training rate does not model: a bit each.)"""
    model, _ = zoo.load("wavelet")
    x = to_tensor(make_photo(256, 192, seed=4))
    shapes = subband_shapes(192, 256, level_count(192, 256, model.levels))
    for quality in (1.0, 4.0):
        q = torch.tensor([quality])
        coded = model.coder(x, 1, count_bits=True)(quality)
        with torch.no_grad():
            _, ratios = model.scale(model.transform(x), q)
            trained = float(model.context.bits(model.symbols(ratios, q), q).sum())
            detail = exact_bits(model.context, coded.planes, shapes, quality)
        assert abs(trained / detail - 1) < 0.02, (quality, trained, detail)


@shipped
def test_cli_encodes_with_wavelet_at_each_effort_and_by_bpp(run_cli, tmp_path):
    make_photo(90, 70, seed=9).save(tmp_path / "photo.png")
    sizes = {}
    for effort in ("0", "1", "2"):
        enc = run_cli("encode", "photo.png", "-m", "wavelet", "-q", "2.75", "--effort", effort, "-o", f"e{effort}.xsc")
        assert enc.returncode == 0, enc.stderr.decode()
        sizes[effort] = (tmp_path / f"e{effort}.xsc").stat().st_size
        dec = run_cli("decode", f"e{effort}.xsc", "-o", f"e{effort}.png")
        assert dec.returncode == 0, dec.stderr.decode()
    assert sizes["0"] != sizes["1"]
    enc = run_cli("encode", "photo.png", "-m", "wavelet", "--bpp", "1.0", "-o", "bpp.xsc")
    assert enc.returncode == 0, enc.stderr.decode()
    assert 8 * (tmp_path / "bpp.xsc").stat().st_size / (90 * 70) <= 1.0
    bad = run_cli("encode", "photo.png", "-m", "hyperprior", "--effort", "1", "-o", "bad.xsc")
    assert bad.returncode == 1 and b"effort" in bad.stderr


@pytest.mark.parametrize("height,width", ODD_SIZES)
def test_untrained_postfilter_is_the_identity_at_any_size(height, width):
    x = torch.rand(2, 3, height, width)
    assert torch.equal(PostFilter(16, 1)(x, torch.tensor([1.0, 8.0])), x)


@pytest.mark.parametrize("height,width", [(7, 5), (33, 17), (61, 97)])
def test_postfilter_keeps_the_size_and_sees_the_quality(height, width):
    torch.manual_seed(1)
    net = PostFilter(16, 1)
    torch.nn.init.normal_(net.tail.weight, std=0.1)
    x = torch.rand(1, 3, height, width)
    low, high = net(x, torch.tensor([1.0])), net(x, torch.tensor([8.0]))
    assert low.shape == x.shape
    assert not torch.equal(low, high)


# The post-filter's ablations (docs/training-log.md): each switch, and the parameters it removes.
SWITCHES = {"local": ("coarse.attn.local_qkv",), "coarse": ("coarse.attn.coarse_q", "coarse.attn.coarse_kv"),
            "channel": ("coarse.channel_attn",), "mixed_ffn": ("coarse.ffn.dw3", "coarse.ffn.gate"),
            "link": ("link.q", "link.kv"), "coarse_path": ("down", "coarse", "link")}


def random_weights(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return net.eval()


def test_postfilter_from_a_dict_of_defaults_is_the_shipped_design():
    """``postfilter`` as a width and as a dict of the defaults build the same module: the same
    tensors from the same seed, and so the same output."""
    nets = []
    for config in (16, {"width": 16, **dict.fromkeys(SWITCHES, True)}):
        torch.manual_seed(4)
        nets.append(WaveletCodec(lifting_hidden=0, postfilter=config).postfilter)
    one, other = (net.state_dict() for net in nets)
    assert one.keys() == other.keys() and all(torch.equal(one[k], other[k]) for k in one)


@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("height,width", [(1, 40), (61, 97), (300, 90)])
def test_each_postfilter_part_switches_off(monkeypatch, switch, height, width):
    """A part switched off has no parameters; the filter still keeps the size, starts as the
    identity, learns, and gives the same bits in stripes, on any thread count, as on the whole map."""
    net = PostFilter(16, 1, **{switch: False})
    names = list(net.state_dict())
    assert not any(name.startswith(prefix) for name in names for prefix in SWITCHES[switch]), names
    x, quality = torch.rand(1, 3, height, width), torch.tensor([3.0])
    assert torch.equal(net(x, quality), x)
    random_weights(net, 7).train()
    net(x, quality).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    outputs = []
    for rows, count in ((10**6, 1), (40, 1), (40, 2)):  # as the decoder runs it: inside ``threads``
        monkeypatch.setattr(threads, "STRIPE_ROWS", rows)
        with torch.inference_mode(), threads.threads(count):
            outputs.append(net.eval()(x, quality))
    assert outputs[0].shape == x.shape and all(torch.equal(outputs[0], out) for out in outputs[1:])


def test_training_reconstruction_is_close_to_the_files(codec):
    """``decoded`` (the post-filter's training input) approximates the effort-1 decoder's image:
    its RDO uses the float scales of its previous round's symbols, the coder the exact ones of its own."""
    x = to_tensor(make_photo(128, 96, seed=3))
    with torch.inference_mode():
        for quality in (1.0, 4.0, 8.0):
            filed = codec.decompress(codec.compressor(x, effort=1)(quality).payloads, 96, 128, quality, torch.device("cpu"))
            approx = codec.decoded(x, torch.tensor([quality]))
            psnr = [float(-10 * torch.log10((y - x).square().mean())) for y in (filed, approx)]
            assert abs(psnr[0] - psnr[1]) < 0.3, (quality, psnr)


def test_decoding_with_and_without_the_postfilter(torch_threads):
    """The post-filter runs after the exact decoding: switched off, the pixels are the decoder's;
    on, they are the filter's output on them (one thread: the same for any thread count)."""
    torch.manual_seed(2)
    model = WaveletCodec(lifting_hidden=0, postfilter=16).eval()
    torch.nn.init.normal_(model.postfilter.tail.weight, std=0.05)
    model.prepare_inference({})
    x = to_tensor(make_photo(40, 30, seed=8))
    with torch.inference_mode():
        plain = model.decompress(model.compress(x, 3.0), 30, 40, 3.0, torch.device("cpu"))
        (filtered,) = model.postprocess(plain, 3.0)
        torch.set_num_threads(1)
        (again,) = model.postprocess(plain, 3.0)
    assert not torch.equal(plain, filtered)
    assert torch.equal(filtered, again)
    assert float(filtered.min()) >= 0 and float(filtered.max()) <= 1


@shipped
def test_cli_decodes_with_and_without_the_postfilter(run_cli, tmp_path):
    """The shipped model has a post-filter; --no-postfilter gives the decoder's own pixels, which
    equal ``decompress``, and the default gives the filtered ones."""
    make_photo(90, 70, seed=11).save(tmp_path / "photo.png")
    assert run_cli("encode", "photo.png", "-q", "2", "-o", "photo.xsc").returncode == 0
    for args, name in ((("--no-postfilter",), "plain.png"), ((), "filtered.png")):
        dec = run_cli("decode", "photo.xsc", *args, "-o", name)
        assert dec.returncode == 0, dec.stderr.decode()
    plain, filtered = (np.asarray(Image.open(tmp_path / name)) for name in ("plain.png", "filtered.png"))
    model, _ = zoo.load("wavelet")
    assert model.postfilter is not None
    data = (tmp_path / "photo.xsc").read_bytes()
    assert np.array_equal(np.asarray(api.decode(data, postfilter=False)), plain)
    assert np.array_equal(np.asarray(api.decode(data)), filtered)
    assert not np.array_equal(plain, filtered)


@pytest.mark.parametrize("symbol,scale_index,limit", [(5, 0, FINEST_LIMIT), (0, 0, SYMBOL_LIMIT), (3, 600, FINEST_LIMIT)])
def test_estimate_counts_what_the_coder_spends(symbol, scale_index, limit):
    """A surprising symbol at a tiny scale costs the coder 24 bits (its minimal probability), not
    the Laplacian's 60 or more; ``coded_bits`` follows the coder, at any scale."""
    count = 4000
    writer = StreamWriter()
    writer.laplace(np.full(count, symbol), np.full(count, SCALES[scale_index]), limit)
    spent = len(writer.finish()) * 8
    estimate = float(coded_bits(torch.full((count,), float(symbol)), torch.full((count,), float(np.log(SCALES[scale_index]))), limit).sum())
    assert abs(spent - estimate) <= max(0.005 * estimate, 64)  # the stream is whole 32-bit words
