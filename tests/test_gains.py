"""The detail gains of the perceptual decoder (``models.gains``, ``.xsc`` version 15)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from xcodec import api, container
from xcodec.container import StreamKind
from xcodec.errors import FormatError
from xcodec.models import gains
from xcodec.models.wavelet import WaveletCodec

from .conftest import make_photo


def test_the_stream_gives_back_every_tiles_grid():
    shapes = [(64, 64), (64, 20), (33, 64), (5, 7)]
    grids = [torch.randint(0, len(gains.GAINS), gains.grid_shape(*shape), generator=torch.Generator().manual_seed(i))
             for i, shape in enumerate(shapes)]
    assert [grid.shape for grid in grids] == [(2, 2), (2, 1), (2, 2), (1, 1)]
    read = gains.read(gains.write(grids), shapes)
    assert all(torch.equal(a, b) for a, b in zip(read, grids))


@pytest.mark.parametrize("shapes", [[(64, 64)], [(64, 64), (64, 64), (64, 64)]])
def test_a_stream_for_other_tiles_is_refused(shapes):
    data = gains.write([torch.full((2, 2), 4), torch.full((2, 2), 3)])  # two tiles' blocks of rare gains
    with pytest.raises(FormatError):
        gains.read(data, shapes)


def test_the_field_is_the_gains_between_the_blocks_centres():
    grid = torch.tensor([[0, 4]])  # gains 0 and 2 side by side
    field = gains.field(grid, 32, 64)[0, 0]
    assert field.shape == (32, 64)
    assert torch.all(field[:, : gains.BLOCK // 2] == 0) and torch.all(field[:, -gains.BLOCK // 2 :] == 2)
    middle = field[0, gains.BLOCK // 2 : -gains.BLOCK // 2]
    assert torch.all(middle[1:] > middle[:-1])  # no step at the blocks' edge


def test_the_encoder_keeps_detail_where_the_photo_has_it():
    """Left half: the photo is the decoded image plus the detail; right half: the decoded image.
    The encoder's gains keep the detail on the left (1, or 1.5: LPIPS is not a distance to the
    detail itself) and drop it (gain 0) on the right."""
    generator = torch.Generator().manual_seed(0)
    fidelity = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 128, 128, generator=generator), 9, 1, 4) * 0.5 + 0.25
    detail = (torch.rand(1, 3, 128, 128, generator=generator) - 0.5) * 0.3
    x = fidelity.clone()
    x[..., :64] += detail[..., :64]
    chosen = gains.choose(x, fidelity, detail, 1.0)
    assert chosen.shape == (4, 4)
    assert set(torch.tensor(gains.GAINS)[chosen[:, 0]].tolist()) <= {1.0, 1.5}
    assert torch.all(torch.tensor(gains.GAINS)[chosen[:, 3]] == 0)


def test_a_tiny_tile_gets_gains_too():
    image = make_photo(70, 70, seed=2)
    data = api.encode(image, quality=2, device="cpu", tile=64, realism=1.0)  # tiles of 64, 6 and 6 x 64, 6 x 6
    bitstream = container.unpack(data)
    shapes = [box[2:] for box in bitstream.header.tile_boxes()]
    assert len(gains.read(bitstream.stream(StreamKind.GAINS), shapes)) == 4


def test_gains_change_realism_1_only():
    image = make_photo(96, 80, seed=7)
    plain = api.encode(image, quality=1.5, device="cpu")
    tuned = api.encode(image, quality=1.5, device="cpu", realism=1.0)
    bitstream = container.unpack(tuned)
    # the same file with every gain 1: the plain file's decode at every realism
    shapes = [box[2:] for box in bitstream.header.tile_boxes()]
    ones = [torch.full(gains.grid_shape(*shape), gains.GAINS.index(1.0)) for shape in shapes]
    bitstream.streams = [(kind, gains.write(ones) if kind == StreamKind.GAINS else data) for kind, data in bitstream.streams]
    for realism in (0.0, 0.5, 1.0):
        assert np.array_equal(np.asarray(api.decode(container.pack(bitstream), device="cpu", realism=realism)),
                              np.asarray(api.decode(plain, device="cpu", realism=realism)))
    assert np.array_equal(np.asarray(api.decode(tuned, device="cpu", realism=0.0)), np.asarray(api.decode(plain, device="cpu")))
    chosen = gains.read(container.unpack(tuned).stream(StreamKind.GAINS), shapes)
    if any(bool((grid != gains.GAINS.index(1.0)).any()) for grid in chosen):
        assert not np.array_equal(np.asarray(api.decode(tuned, device="cpu", realism=1.0)),
                                  np.asarray(api.decode(plain, device="cpu", realism=1.0)))


@pytest.mark.parametrize("damage", ["truncated", "extended", "empty"])
def test_a_damaged_gains_stream_is_refused_before_any_tile(damage, monkeypatch):
    bitstream = container.unpack(api.encode(make_photo(64, 64, seed=3), quality=2, device="cpu", realism=1.0))
    stream = bitstream.stream(StreamKind.GAINS)
    stream = {"truncated": stream[:-1], "extended": stream + b"\x55\x55\x55\x55", "empty": b""}[damage]
    bitstream.streams = [(kind, stream if kind == StreamKind.GAINS else data) for kind, data in bitstream.streams]
    monkeypatch.setattr(WaveletCodec, "decompress", lambda *args: pytest.fail("a tile was decoded"))
    with pytest.raises(FormatError):
        api.decode(container.pack(bitstream), device="cpu", realism=1.0)


def test_a_version_14_file_has_no_gains_stream():
    bitstream = container.unpack(api.encode(make_photo(64, 64, seed=3), quality=2, device="cpu", realism=1.0))
    bitstream.header.version = container.FOLDED_VERSION
    data = container.pack(bitstream)
    assert data[4] == container.GAINS_VERSION  # pack writes the version that holds the stream
    body = bytearray(data[:-4])
    body[4] = container.FOLDED_VERSION
    with pytest.raises(FormatError, match="GAINS"):
        container.unpack(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))


def test_encode_to_bpp_chooses_the_gains_for_the_quality_it_keeps(monkeypatch):
    """The search for the size codes without the gains and chooses them for the quality it keeps;
    where their bytes take the file over the target, it searches again below: the file is within
    the target and is the one ``encode`` writes for that quality and realism."""
    image, pixels = make_photo(96, 96, seed=7), 96 * 96
    chosen = []
    choose = gains.choose
    monkeypatch.setattr(gains, "choose", lambda *args: chosen.append(args) or choose(*args))
    target = 8 * len(api.encode(image, quality=3, device="cpu", realism=1.0)) / pixels
    for rounds in (1, 2):
        chosen.clear()
        data = api.encode_to_bpp(image, target, device="cpu", realism=1.0, threads=1)
        bitstream = container.unpack(data)
        assert 8 * len(data) / pixels <= target
        assert len(chosen) == rounds  # one tile: a choice per round, none in the search
        assert StreamKind.GAINS in {kind for kind, _ in bitstream.streams}
        assert data == api.encode(image, quality=bitstream.header.quality, device="cpu", realism=1.0)
        target = 8 * (len(data) - 1) / pixels  # the same search's quality no longer fits once its gains are in
