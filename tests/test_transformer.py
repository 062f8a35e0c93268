"""The cross-scale transformer: shapes, ablation switches, and bit-exact coding of its context model."""

from __future__ import annotations

import pytest
import torch

from xcodec.entropy import GaussianReader, encode_gaussian
from xcodec.models.latent import scales
from xcodec.models.transformer import CrossScaleTransformer

SMALL = dict(dims=(16, 24, 32), M=40, N=24, slices=5, window=2, heads=2, hyper_features=32, context_hidden=16)


def small_model(**options) -> CrossScaleTransformer:
    torch.manual_seed(0)
    return CrossScaleTransformer(**SMALL, **options)


@pytest.mark.parametrize("options", [{}, {"local": False}, {"coarse": False}, {"channel": False}, {"mixed_ffn": False}])
def test_forward_shapes_and_ablations(options):
    model = small_model(**options)
    x = torch.rand(2, 3, 64, 128)
    out = model(x, torch.tensor([1.0, 7.5]))
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, 40, 4, 8)
    assert out["likelihoods"]["z"].shape == (2, 24, 1, 2)
    loss = out["x_hat"].mean() + sum(-torch.log2(v).sum() for v in out["likelihoods"].values())
    loss.backward()
    assert model.g_a.block2.attn.proj.weight.grad is not None


def _prepared(model: CrossScaleTransformer) -> CrossScaleTransformer:
    model.eval()
    model.prepare_inference(model.export_tensors())
    return model


def _encoder_symbols(model, x, quality):
    with torch.inference_mode():
        y, z = model.analysis(x, quality)
        _, z_fixed = model.hyper.encode(z)
        symbols, indexes = model.latent_symbols(y.double(), z_fixed)
    return z_fixed, symbols, indexes


def test_context_model_decodes_the_encoders_symbols_exactly():
    model = _prepared(small_model())
    x = torch.rand(1, 3, 128, 192)
    z_fixed, symbols, indexes = _encoder_symbols(model, x, 5.0)
    data = encode_gaussian(symbols.int().numpy(), indexes.numpy(), scales())
    decoded = []
    for threads in (1, 2):  # the decoder's thread count must not matter
        torch.set_num_threads(threads)
        reader = GaussianReader(data, scales())
        got = []

        def read(index):
            values = torch.from_numpy(reader.read(index.numpy())).double()
            got.append(values)
            return values

        with torch.inference_mode():
            model.decode_latent(z_fixed, read)
        decoded.append(torch.cat(got))
    assert torch.equal(decoded[0], symbols)
    assert torch.equal(decoded[1], symbols)
    assert symbols.numel() == 40 * 8 * 12


def test_compress_decompress_round_trip():
    model = _prepared(small_model())
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        payloads = model.compress(x, 3.0)
        assert len(payloads) == model.streams_per_tile
        x_hat = model.decompress(payloads, 64, 64, 3.0, torch.device("cpu"))
        reference = model(x, torch.tensor([3.0]))["x_hat"].clamp(0, 1)
    assert x_hat.shape == x.shape
    # The exact entropy path rounds the context networks to fixed point: close to the float model.
    assert (x_hat - reference).abs().mean() < 0.05
