"""Integer-exact networks, and bit-exact entropy parameters/symbols for the installed model."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from torch import nn

import xcodec.entropy as entropy_module
from xcodec import api, container
from xcodec.entropy import SYMBOL_LIMIT
from xcodec.models import zoo
from xcodec.models.codec import to_tensor
from xcodec.models.exact import ACT_BITS, EXACT_LIMITS, WEIGHT_BITS, ExactConvNet, ExactError, to_fixed
from xcodec.models.latent import HyperpriorCodec, scales

from tests.conftest import make_photo

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


# --- a small random network ---------------------------------------------------------------------


def hyper_like_net(seed: int = 0, cin: int = 6) -> nn.Sequential:
    """Shaped like a hyper-synthesis: two upsampling deconvolutions, ReLUs, a 3x3 convolution."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.ConvTranspose2d(cin, 10, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(10, 12, 5, stride=2, padding=2, output_padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(12, 8, 3, stride=1, padding=1),
    )
    with torch.no_grad():
        for m in net:
            if hasattr(m, "bias"):
                m.bias.uniform_(-0.5, 0.5)
    return net


def analysis_like_net(seed: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 6, 5, stride=2, padding=2))


def fixed_input(shape, seed: int = 0, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    return x, to_fixed(x, ACT_BITS)


@pytest.fixture(params=["hyper", "analysis"])
def nets(request):
    float_net = hyper_like_net() if request.param == "hyper" else analysis_like_net()
    cin = 6 if request.param == "hyper" else 3
    size = (9, 7) if request.param == "hyper" else (21, 18)
    return float_net, ExactConvNet(float_net), (cin, *size)


def test_thread_count_does_not_change_a_bit(nets, torch_threads):
    _, exact, shape = nets
    _, x = fixed_input((4, *shape))
    torch.set_num_threads(1)
    one = exact(x)
    torch.set_num_threads(2)
    two = exact(x)
    assert one.dtype == torch.float64
    assert torch.equal(one, two)


def test_batching_and_permutation_do_not_change_a_bit(nets):
    _, exact, shape = nets
    _, x = fixed_input((5, *shape), seed=1)
    whole = exact(x)
    singles = torch.cat([exact(x[i : i + 1]) for i in range(5)])
    assert torch.equal(whole, singles)
    perm = torch.tensor([3, 0, 4, 2, 1])
    assert torch.equal(exact(x[perm]), whole[perm])
    assert torch.equal(exact(x.contiguous(memory_format=torch.channels_last)), whole)
    assert torch.equal(exact(torch.cat([x[:2], x[2:]])), whole)


def test_output_is_integral_and_close_to_the_float_network(nets):
    float_net, exact, shape = nets
    x, x_fixed = fixed_input((2, *shape), seed=2)
    out = exact(x_fixed)
    assert torch.equal(out, torch.round(out))
    with torch.no_grad():
        ref = float_net.double()(x)
    assert out.shape == ref.shape
    assert ref.norm() > 1.0  # a meaningful comparison, not two near-zero maps
    rel = (out / 2**ACT_BITS - ref).norm() / ref.norm()
    assert rel < 1e-2, float(rel)


def test_float32_input_gives_the_same_result(nets):
    _, exact, shape = nets
    _, x_fixed = fixed_input((1, *shape), seed=3, scale=1.0)
    assert torch.equal(exact(x_fixed.float()), exact(x_fixed))


# Pure-integer reference: what the fixed-point network is specified to compute.


def _int_conv2d(a: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    cin, h, wd = a.shape
    cout, _, k, _ = w.shape
    a = np.pad(a, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((cout, ho, wo), dtype=np.int64)
    for i in range(ho):
        for j in range(wo):
            patch = a[:, i * stride : i * stride + k, j * stride : j * stride + k]
            out[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return out + b[:, None, None]


def _int_deconv2d(a: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, out_pad: int) -> np.ndarray:
    cin, h, wd = a.shape
    _, cout, k, _ = w.shape
    ho, wo = (h - 1) * stride - 2 * pad + k + out_pad, (wd - 1) * stride - 2 * pad + k + out_pad
    full = np.zeros((cout, (h - 1) * stride + k + out_pad, (wd - 1) * stride + k + out_pad), dtype=np.int64)
    for i in range(h):
        for j in range(wd):
            full[:, i * stride : i * stride + k, j * stride : j * stride + k] += np.tensordot(a[:, i, j], w, axes=(0, 0))
    return full[:, pad : pad + ho, pad : pad + wo] + b[:, None, None]


def test_matches_a_pure_integer_reference():
    float_net = hyper_like_net(seed=5, cin=3)
    exact = ExactConvNet(float_net)
    _, x_fixed = fixed_input((1, 3, 3, 4), seed=5, scale=3.0)
    a = x_fixed[0].numpy().astype(np.int64)
    convs = [m for m in float_net if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for i, m in enumerate(convs):
        w = np.round(m.weight.detach().double().numpy() * 2**WEIGHT_BITS).astype(np.int64)
        b = np.round(m.bias.detach().double().numpy() * 2 ** (WEIGHT_BITS + ACT_BITS)).astype(np.int64)
        if isinstance(m, nn.ConvTranspose2d):
            acc = _int_deconv2d(a, w, b, m.stride[0], m.padding[0], m.output_padding[0])
        else:
            acc = _int_conv2d(a, w, b, m.stride[0], m.padding[0])
        a = (acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS  # round half up (arithmetic shift floors)
        if i < len(convs) - 1:
            a = np.maximum(a, 0)
    out = exact(x_fixed)[0].numpy()
    assert out.shape == a.shape
    assert np.array_equal(out.astype(np.int64), a)


def test_rounding_is_half_up_exactly():
    conv = nn.Conv2d(1, 1, 1, bias=True)
    with torch.no_grad():
        conv.weight.fill_(0.5)  # 2048 in fixed point: a product of 2048 * odd lands exactly on .5
        conv.bias.zero_()
    exact = ExactConvNet(nn.Sequential(conv))
    x = torch.tensor([-3.0, -1.0, 1.0, 3.0, 5.0], dtype=torch.float64).view(1, 1, 1, 5)
    assert exact(x).view(-1).tolist() == [-1.0, 0.0, 1.0, 2.0, 3.0]  # floor(v / 2 + 1/2)


def test_an_input_beyond_the_exact_range_raises():
    exact = ExactConvNet(hyper_like_net())
    _, x = fixed_input((1, 6, 4, 4), seed=4)
    x = x.clone()
    x[0, 0, 0, 0] = 2.0**50  # times the weights' absolute sum (> 2**3 in fixed point) exceeds 2**53
    with pytest.raises(ExactError):
        exact(x)
    assert issubclass(ExactError, ValueError)
    x[0, 0, 0, 0] = EXACT_LIMITS[torch.float64]
    with pytest.raises(ExactError):
        exact(x)


def test_moderately_large_inputs_stay_exact(torch_threads):
    exact = ExactConvNet(hyper_like_net())
    _, x = fixed_input((1, 6, 4, 4), seed=6, scale=2.0**18)  # |x| ~ 2**29 in fixed point, still in range
    torch.set_num_threads(1)
    one = exact(x)
    torch.set_num_threads(2)
    assert torch.equal(one, exact(x))


@pytest.mark.parametrize("layer", [nn.Sigmoid(), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, dilation=2),
                                   nn.BatchNorm2d(4)])
def test_unsupported_layers_are_refused(layer):
    with pytest.raises(TypeError):
        ExactConvNet(nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), layer))


@CUDA
def test_cuda_input_gives_the_same_bits(nets):
    _, exact, shape = nets
    _, x = fixed_input((2, *shape), seed=7)
    assert torch.equal(exact.cuda()(x.cuda()).cpu(), exact.cpu()(x))


# --- the installed model ------------------------------------------------------------------------


HYPERPRIOR_MODELS = [name for name in zoo.available()
                     if issubclass(zoo.ARCHITECTURES[zoo.read_manifest(name).arch], HyperpriorCodec)]


@pytest.fixture(scope="module", params=HYPERPRIOR_MODELS)
def model(request):
    """Every shipped hyperprior model in turn (the wavelet model's exactness: tests/test_wavelet.py)."""
    return zoo.load(request.param)


def exact_submodules(net) -> list[ExactConvNet]:
    return [m for m in net.modules() if isinstance(m, ExactConvNet)]


def entropy_parameters(net, z_offsets: torch.Tensor):
    """Means and scale indices of the latent from integer z offsets, whatever the method is called."""
    if hasattr(net, "_entropy_parameters"):
        return net._entropy_parameters(z_offsets)
    if hasattr(net, "_means_and_indexes"):
        return net._means_and_indexes(net.hyper.z_fixed(z_offsets))
    pytest.skip("the installed model's architecture exposes no entropy-parameter function")


def _in_channels(exact: ExactConvNet) -> int:
    w0 = exact.w0
    first = next(kind for kind, *_ in getattr(exact, "ops", getattr(exact, "specs", [])) if kind != "relu")
    return w0.shape[0] if first == "deconv" else w0.shape[1]


def test_model_has_exact_networks(model):
    net, manifest = model
    assert exact_submodules(net), "entropy parameters must come from an ExactConvNet"
    assert len(manifest.model_hash) == 8


def test_model_exact_networks_ignore_thread_count(model, torch_threads):
    net, _ = model
    rng = np.random.default_rng(9)
    for exact in exact_submodules(net):
        shape = (2, _in_channels(exact), 3, 5)
        x = torch.from_numpy(rng.integers(-20 * 2**ACT_BITS, 20 * 2**ACT_BITS, size=shape)).double()
        torch.set_num_threads(1)
        one = exact(x)
        torch.set_num_threads(2)
        assert torch.equal(one, exact(x))


def test_model_analysis_ignores_thread_count(model, torch_threads):
    # float32 kernels split their sums by thread count: their last bits differ between 1 and 2
    # threads even on 64x64 pixels, and on Kodak that flips a latent's rounding in some images
    net, _ = model
    x = to_tensor(np.asarray(make_photo(64, 64)))
    with torch.no_grad():
        torch.set_num_threads(1)
        y1, z1 = net.analysis(x, 8.0)
        torch.set_num_threads(2)
        y2, z2 = net.analysis(x, 8.0)
    assert torch.equal(y1, y2) and torch.equal(z1, z2)


def test_model_entropy_parameters_ignore_thread_count_and_batching(model, torch_threads):
    net, _ = model
    channels = net.hyper.z_pmf.shape[0]
    radius = net.hyper.radius
    rng = np.random.default_rng(10)
    offsets = rng.integers(-4, 5, size=(2, channels, 3, 5))
    offsets[0, :, 0, 0] = rng.integers(-radius, radius + 1, size=channels)  # extremes of the table
    z_offsets = torch.from_numpy(offsets).double()
    torch.set_num_threads(1)
    means1, idx1 = entropy_parameters(net, z_offsets)
    torch.set_num_threads(2)
    means2, idx2 = entropy_parameters(net, z_offsets)
    assert torch.equal(means1, means2)
    assert torch.equal(idx1, idx2)
    means_b, idx_b = entropy_parameters(net, z_offsets[1:])
    assert torch.equal(means_b, means1[1:]) and torch.equal(idx_b, idx1[1:])
    assert torch.equal(means1 * 2**ACT_BITS, torch.round(means1 * 2**ACT_BITS))  # fixed-point values
    assert int(idx1.min()) >= 0 and int(idx1.max()) < len(scales())


class CoderSpy:
    """Records the symbols and scale indices that reach the entropy coder, on both sides.

    The encoder's symbols are what it passes to ``encode_gaussian``/``encode_categorical``; the
    decoder's are what the ANS decoder returns. Patched wherever xcodec imported those names.
    """

    def __init__(self, monkeypatch):
        self.enc_symbols, self.enc_indexes, self.enc_z = [], [], []
        self.dec_symbols, self.dec_indexes, self.dec_z = [], [], []
        self._inside = False
        self._patch(monkeypatch, "encode_gaussian", self._encode_gaussian)
        self._patch(monkeypatch, "encode_categorical", self._encode_categorical)
        self._patch(monkeypatch, "decode_categorical", self._decode_categorical)
        self._patch(monkeypatch, "decode_gaussian", self._decode_gaussian)
        if hasattr(entropy_module, "GaussianReader"):
            original_read = entropy_module.GaussianReader.read
            spy = self

            def read(reader, scale_index):
                out = original_read(reader, scale_index)
                if not spy._inside:
                    spy.dec_symbols.append(np.array(out).reshape(-1))
                    spy.dec_indexes.append(np.array(scale_index).reshape(-1))
                return out

            monkeypatch.setattr(entropy_module.GaussianReader, "read", read)

    def _patch(self, monkeypatch, name, wrapper):
        original = getattr(entropy_module, name)
        setattr(self, "_orig_" + name, original)
        for module_name, module in list(sys.modules.items()):
            if (module_name == "xcodec" or module_name.startswith("xcodec.")) and getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, wrapper)

    def _encode_gaussian(self, symbols, scale_index, scales):
        self.enc_symbols.append(np.clip(np.array(symbols).reshape(-1), -SYMBOL_LIMIT, SYMBOL_LIMIT))
        self.enc_indexes.append(np.array(scale_index).reshape(-1))
        return self._orig_encode_gaussian(symbols, scale_index, scales)

    def _decode_gaussian(self, data, scale_index, scales):
        self._inside = True
        try:
            out = self._orig_decode_gaussian(data, scale_index, scales)
        finally:
            self._inside = False
        self.dec_symbols.append(np.array(out).reshape(-1))
        self.dec_indexes.append(np.array(scale_index).reshape(-1))
        return out

    def _encode_categorical(self, symbols, pmfs):
        self.enc_z.append(np.clip(np.array(symbols), 0, pmfs.shape[1] - 1))
        return self._orig_encode_categorical(symbols, pmfs)

    def _decode_categorical(self, data, pmfs, count):
        out = self._orig_decode_categorical(data, pmfs, count)
        self.dec_z.append(np.array(out))
        return out

    def reset_decoder(self):
        self.dec_symbols, self.dec_indexes, self.dec_z = [], [], []

    def assert_decoder_matches_encoder(self):
        assert self.enc_symbols and self.dec_symbols, "the coder was not reached"
        assert np.array_equal(np.concatenate(self.dec_indexes), np.concatenate(self.enc_indexes))
        assert np.array_equal(np.concatenate(self.dec_symbols), np.concatenate(self.enc_symbols))
        assert len(self.dec_z) == len(self.enc_z)
        for dec, enc in zip(self.dec_z, self.enc_z):
            assert np.array_equal(dec, enc)


@pytest.fixture(scope="module")
def big_photo():
    return make_photo(200, 136, seed=3)  # several z positions, and padding on both sides


def _decode_with(net, manifest, data: bytes, monkeypatch):
    """api.decode, but with ``net`` standing in for the installed model."""
    with monkeypatch.context() as m:
        m.setattr(zoo, "load", lambda name, *args, **kwargs: (net, manifest))
        return api.decode(data, device="cpu")


def test_symbols_survive_threads_and_float64_synthesis(model, big_photo, monkeypatch, torch_threads):
    net, manifest = model
    spy = CoderSpy(monkeypatch)
    torch.set_num_threads(2)
    data = api.encode(big_photo, quality=7.5, model=manifest.name, device="cpu")
    assert len(spy.enc_symbols) >= 1
    assert sum(s.size for s in spy.enc_symbols) > 0

    torch.set_num_threads(1)
    reference = api.decode(data, device="cpu")
    spy.assert_decoder_matches_encoder()

    spy.reset_decoder()
    torch.set_num_threads(2)
    net64 = copy.deepcopy(net).double()
    perturbed = _decode_with(net64, manifest, data, monkeypatch)
    spy.assert_decoder_matches_encoder()
    assert perturbed.size == reference.size == big_photo.size
    # Same symbols: float32 and float64 synthesis can differ only by rounding of the last level.
    diff = np.abs(np.asarray(perturbed, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert diff.max() <= 2


def test_streams_decode_to_the_symbols_after_a_container_round_trip(model, big_photo, monkeypatch):
    net, manifest = model
    spy = CoderSpy(monkeypatch)
    data = api.encode(big_photo, quality=2.0, model=manifest.name, device="cpu")
    bitstream = container.unpack(data)
    (payloads,) = container.tile_streams(bitstream)
    h = bitstream.header
    with torch.inference_mode():
        net.to("cpu").decompress(payloads, h.height + h.pad_bottom, h.width + h.pad_right,
                                 h.quality, torch.device("cpu"))
    spy.assert_decoder_matches_encoder()


@CUDA
def test_cuda_encode_decodes_on_cpu_and_back(model, big_photo, monkeypatch):
    net, manifest = model
    spy = CoderSpy(monkeypatch)
    data = api.encode(big_photo, quality=5.0, model=manifest.name, device="cuda")
    api.decode(data, device="cpu")
    spy.assert_decoder_matches_encoder()
    spy.reset_decoder()
    api.decode(data, device="cuda")
    spy.assert_decoder_matches_encoder()
    net.to("cpu")
