"""A toy codec written against the ``Codec`` interface alone, through the zoo, the API, the container
and the command line, none of which is changed for it: the interface is all a new model needs.

The toy codes the mean of every 8x8 block, uniformly quantized (finer at higher quality), with a
categorical table that it computes at export and ships as an inference tensor.
"""

from __future__ import annotations

import constriction
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.conftest import make_photo
from xcodec import api, container
from xcodec.errors import FormatError
from xcodec.models import manifest as manifests
from xcodec.models import zoo
from xcodec.models.codec import Codec, ste_round


class ToyCodec(Codec):
    stride = 8
    streams_per_tile = 1
    inference_tensors = ("pmf",)

    def __init__(self, max_levels: int = 64):
        super().__init__()
        self.max_levels = max_levels
        self.brightness = nn.Parameter(torch.ones(()))  # something to ship

    def levels(self, quality: float) -> int:
        return round(self.max_levels * quality / 8)

    def forward(self, x: Tensor, quality: Tensor) -> dict:
        steps = (self.max_levels * quality / 8 - 1)[:, None, None, None]
        means = F.avg_pool2d(x * self.brightness, 8)
        x_hat = F.interpolate(ste_round(means * steps) / steps, scale_factor=8, mode="nearest")
        return {"x_hat": x_hat, "likelihoods": {"means": torch.full_like(means, 1 / self.max_levels)}}

    def export_tensors(self) -> dict[str, Tensor]:
        return {"pmf": torch.full((self.max_levels,), 1 / self.max_levels, dtype=torch.float64)}

    def prepare_inference(self, tensors: dict[str, Tensor]) -> None:
        self.model = constriction.stream.model.Categorical(tensors["pmf"].numpy(), perfect=False)

    def compress(self, x: Tensor, quality: float) -> list[bytes]:
        top = self.levels(quality) - 1
        symbols = torch.round(F.avg_pool2d(x.cpu() * self.brightness, 8).clamp(0, 1) * top).int()
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols.flatten().numpy(), self.model)
        return [coder.get_compressed().astype("<u4").tobytes()]

    def decompress(self, payloads: list[bytes], height: int, width: int, quality: float,
                   device: torch.device, version: int | None = None) -> Tensor:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payloads[0], dtype="<u4").astype(np.uint32))
        count = 3 * (height // 8) * (width // 8)
        symbols = coder.decode(self.model, count)
        if not coder.is_empty():
            raise FormatError("corrupted toy stream")
        means = torch.from_numpy(symbols).float().view(1, 3, height // 8, width // 8) / (self.levels(quality) - 1)
        return F.interpolate(means, scale_factor=8, mode="nearest").to(device)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Register the toy (one dict entry, as a real model) and ship it into a weights folder of its own."""
    monkeypatch.setitem(zoo.ARCHITECTURES, "toy", ToyCodec)
    weights = tmp_path / "weights"
    checkpoint = tmp_path / "last.pt"
    torch.save({"arch": "toy", "arch_config": {"max_levels": 64}, "model": ToyCodec().state_dict(), "step": 0,
                "elapsed": 0.0}, checkpoint)
    manifest = zoo.export(checkpoint, "toy", {"note": "test"}, weights)
    load, read = zoo.load, manifests.read_manifest
    monkeypatch.setattr(zoo, "load", lambda name: load(name, weights) if name == "toy" else load(name))
    monkeypatch.setattr(manifests, "read_manifest", lambda name: read(name, weights) if name == "toy" else read(name))
    yield manifest
    load.cache_clear()


def test_the_toy_round_trips_through_the_api(toy):
    image = make_photo(100, 60, seed=4)
    data = api.encode(image, quality=8, model="toy", tile=64)
    bitstream = container.unpack(data)
    h = bitstream.header
    assert (h.model, h.model_hash, h.streams_per_tile, h.tile_grid) == ("toy", toy.model_hash, 1, (1, 2))
    assert (h.pad_bottom, h.pad_right) == (4, 4)  # to a multiple of the toy's stride, 8
    out = np.asarray(api.decode(data), dtype=np.float64)
    blocks = np.asarray(image, dtype=np.float64)[:56, :96].reshape(7, 8, 12, 8, 3).mean(axis=(1, 3))
    assert np.abs(out[:56, :96].reshape(7, 8, 12, 8, 3)[:, 0, :, 0] - blocks).max() <= 255 / 63 / 2 + 1
    assert len(api.encode(image, quality=1, model="toy")) < len(data)


def test_the_toy_round_trips_through_the_command_line(toy, run_cli, save_png, tmp_path):
    source = save_png(make_photo(64, 48, seed=5))
    assert run_cli("encode", source, "-o", tmp_path / "a.xsc", "--model", "toy", "-q", "6").returncode == 0
    info = run_cli("info", tmp_path / "a.xsc")
    assert info.returncode == 0 and b"toy" in info.stdout
    assert run_cli("decode", tmp_path / "a.xsc", "-o", tmp_path / "a.png").returncode == 0
    assert (tmp_path / "a.png").stat().st_size > 0


def test_a_toy_file_is_refused_by_a_model_with_other_streams(toy):
    data = api.encode(make_photo(64, 64), quality=4, model="toy")
    bitstream = container.unpack(data)
    bitstream.header.model = "hyperprior"  # two streams per tile
    bitstream.header.model_hash = zoo.read_manifest("hyperprior").model_hash
    with pytest.raises(FormatError, match="streams per tile"):
        api.decode(container.pack(bitstream))
