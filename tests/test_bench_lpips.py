"""LPIPS-Alex in xcodec.bench.lpips against the reference implementation (the `lpips` PyPI package).

REFERENCE holds distances measured once with the reference package, lpips==0.1.4 (torch 2.14.1,
CPU, float32), installed outside the project (`pip install --no-deps --target /tmp/lpref lpips==0.1.4`):

    m = lpips.LPIPS(net="alex", pnet_rand=True)      # no torchvision download; its own v0.1 heads
    # load the AlexNet convolutions of weights/lpips-alex.safetensors into m.net.slice1[0],
    # slice2[3], slice3[6], slice4[8], slice5[10] (weight and bias), then for each pair below:
    m(to_tensor(a), to_tensor(b))                     # inputs scaled to [-1, 1]

The heads that package ships (weights/v0.1/alex.pth) were bit-identical to the converted ones.
When `lpips` is importable, test_live_reference repeats that comparison.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xcodec.bench import lpips as L
from xcodec.tools.lpips_weights import ArraysOnly

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = {  # measured with lpips==0.1.4 as described above
    "blur": 0.1717667729,
    "posterize": 0.0675933585,
    "wave-shift": 0.0381861553,
    "different-crops": 0.5606107116,
}


def pairs():
    """Deterministic image pairs (no RNG): crops of the bundled sample photo and their distortions."""
    photo = np.asarray(Image.open(ROOT / "xcodec/samples/chelsea.png").convert("RGB"))
    a = photo[40:104, 100:164]
    pad = np.pad(a.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    blur = sum(pad[i : i + a.shape[0], j : j + a.shape[1]] / 9 for i in range(3) for j in range(3))
    b = photo[120:187, 200:293]
    yy, xx = np.mgrid[0:80, 0:80]
    wave = np.stack([127 + 100 * np.sin(xx / 5 + c) * np.cos(yy / 7) for c in range(3)], -1)
    return [
        ("blur", a, np.round(blur).astype(np.uint8)),
        ("posterize", b, (b // 32 * 32 + 16).astype(np.uint8)),
        ("wave-shift", wave.astype(np.uint8), np.roll(wave, 2, axis=1).astype(np.uint8)),
        ("different-crops", photo[0:72, 0:72], photo[200:272, 300:372]),
    ]


def test_matches_reference_values():
    for name, a, b in pairs():
        assert L.lpips(a, b) == pytest.approx(REFERENCE[name], abs=1e-4), name


def test_identical_images_and_symmetry():
    _, a, b = pairs()[1]
    assert L.lpips(a, a) == 0.0
    assert L.lpips(a, b) == pytest.approx(L.lpips(b, a), abs=1e-6)


def test_weights_file_is_the_converted_one():
    path = L.default_weights_path()
    assert path.exists(), "weights/lpips-alex.safetensors is missing"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == L.WEIGHTS_SHA256


def test_unpickler_builds_arrays_only():
    good = pickle.dumps({"a": np.arange(3, dtype=np.float32)}, protocol=3)  # as in the sdist
    assert ArraysOnly(io.BytesIO(good)).load()["a"].tolist() == [0, 1, 2]

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("true",))

    with pytest.raises(pickle.UnpicklingError):
        ArraysOnly(io.BytesIO(pickle.dumps(Evil()))).load()


def test_live_reference():
    lpips_ref = pytest.importorskip("lpips")
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    weights = load_file(str(L.default_weights_path()))
    m = lpips_ref.LPIPS(net="alex", pnet_rand=True, verbose=False)
    for i in range(5):
        assert torch.equal(m.lins[i].model[-1].weight.detach(), weights[f"lins.{i}.weight"])
    for i, (s, k) in enumerate(zip(range(1, 6), (0, 3, 6, 8, 10))):
        conv = getattr(m.net, f"slice{s}")._modules[str(k)]
        conv.weight.data.copy_(weights[f"convs.{i}.weight"])
        conv.bias.data.copy_(weights[f"convs.{i}.bias"])
    with torch.inference_mode():
        for name, a, b in pairs():
            assert L.lpips(a, b) == pytest.approx(float(m(L.to_tensor(a), L.to_tensor(b)).flatten()[0]), abs=1e-5), name
