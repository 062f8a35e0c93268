"""The realism knob: one file, decoded from the fidelity output (0) to the perceptual decoder's (1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from xcodec import api, container
from xcodec.container import Bitstream, StreamKind
from xcodec.errors import FormatError, InputError
from xcodec.models import zoo

from .conftest import make_photo


@pytest.fixture(scope="module")
def coded() -> bytes:
    return api.encode(make_photo(96, 72, seed=3), quality=1.5, device="cpu")


def decode(data: bytes, **kwargs) -> np.ndarray:
    return np.asarray(api.decode(data, device="cpu", **kwargs)).astype(int)


def test_the_default_model_has_a_perceptual_head():
    net, manifest = zoo.load(zoo.DEFAULT_MODEL)
    assert net.realistic and "perceptual" in manifest.heads


def test_realism_changes_the_pixels_and_blends_between_the_two_outputs(coded):
    fidelity, half, sharp = (decode(coded, realism=r) for r in (0.0, 0.5, 1.0))
    assert np.array_equal(fidelity, decode(coded))  # a file without a suggestion decodes at 0
    assert np.abs(sharp - fidelity).mean() > 0.5
    # half way is the blend of the two outputs, up to rounding, where neither is clamped
    inside = (fidelity > 0) & (fidelity < 255) & (sharp > 0) & (sharp < 255)
    assert inside.mean() > 0.9
    assert np.abs(half - (fidelity + sharp) / 2)[inside].max() <= 1.0


def test_one_decode_gives_every_realism(photo, monkeypatch):
    """decode_realisms reads each tile and runs the perceptual head once, and gives at each realism
    the pixels of a decode at that realism alone (None: the file's suggestion)."""
    data = api.encode(photo(150, 100, seed=4), quality=2, device="cpu", tile=64, realism=0.3)  # 6 tiles
    net, _ = zoo.load(zoo.DEFAULT_MODEL)
    calls = {"decompress": 0, "perceptual": 0}

    def counted(name, method):
        def call(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)
        return call

    monkeypatch.setattr(net, "decompress", counted("decompress", net.decompress))
    monkeypatch.setattr(net.perceptual, "forward", counted("perceptual", net.perceptual.forward))
    realisms = (0.7, 0.0, None, 1.0, 0.0)
    images = api.decode_realisms(data, realisms, device="cpu", threads=1)  # counted here, not in worker processes
    assert calls == {"decompress": 6, "perceptual": 6}
    for realism, image in zip(realisms, images):
        assert np.array_equal(np.asarray(image).astype(int), decode(data, realism=realism)), realism
    assert len({np.asarray(image).tobytes() for image in images}) == 4
    unfiltered = api.decode_realisms(data, (None, 0.0), device="cpu", postfilter=False)
    assert all(np.array_equal(np.asarray(image).astype(int), decode(data, postfilter=False)) for image in unfiltered)
    with pytest.raises(InputError, match="needs the post-filter"):
        api.decode_realisms(data, (0.0, 0.5), device="cpu", postfilter=False)


def test_compare_crops_take_both_outputs_from_one_decode(photo, tmp_path, monkeypatch):
    """`compare --realism R --crops` shows the fidelity output beside the output at R, from one decode."""
    from typer.testing import CliRunner

    from xcodec.cli import app

    photo(96, 72, seed=3).save(tmp_path / "a.png")
    (tmp_path / "a.xsc").write_bytes(api.encode(Image.open(tmp_path / "a.png"), quality=1.5, device="cpu"))
    decodes = []
    decode_realisms = api.decode_realisms

    def counted(data, realisms, **kwargs):
        decodes.append(tuple(realisms))
        return decode_realisms(data, realisms, **kwargs)

    monkeypatch.setattr(api, "decode_realisms", counted)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["compare", "a.png", "a.xsc", "--realism", "0.5", "--crops", "crops.png", "--crop-size", "32",
                                      "--no-lpips", "--no-dists", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert decodes == [(0.5, 0.0)]
    assert "fidelity, xcodec wavelet q1.5 realism 0.5" in " ".join(result.output.split())


def test_a_suggested_realism_adds_its_detail_gains_and_changes_no_coded_bit():
    image = make_photo(64, 48, seed=4)
    plain = api.encode(image, quality=2, device="cpu")
    hinted = api.encode(image, quality=2, device="cpu", realism=0.7)
    a, b = container.unpack(plain), container.unpack(hinted)
    assert [s for s in b.streams if s[0] not in (StreamKind.REALISM, StreamKind.GAINS)] == a.streams
    assert b.stream(StreamKind.REALISM) == bytes([70])
    assert b.stream(StreamKind.GAINS)  # the encoder's gains of the head's detail for realism 0.7
    assert a.header.version == container.FOLDED_VERSION and b.header.version == container.GAINS_VERSION
    # the suggestion is the default; an explicit realism, 0 included, overrides it; realism 0 and
    # the unfiltered output are those of the plain file, bit for bit
    assert np.array_equal(decode(hinted), decode(hinted, realism=0.7))
    assert np.array_equal(decode(hinted, realism=0.0), decode(plain))
    assert np.array_equal(decode(hinted, postfilter=False), decode(plain, postfilter=False))


def test_a_decode_is_reproducible(coded):
    assert np.array_equal(decode(coded, realism=1.0), decode(coded, realism=1.0))


@pytest.mark.parametrize("realism", [-0.1, 1.01, math.nan, math.inf])
def test_a_bad_realism_is_refused(coded, realism):
    with pytest.raises(InputError, match="realism must be between 0 and 1"):
        api.decode(coded, device="cpu", realism=realism)
    with pytest.raises(InputError, match="realism must be between 0 and 1"):
        api.encode(make_photo(16, 16), quality=2, device="cpu", realism=realism)


@pytest.mark.parametrize("realism", ["-0.1", "1.5", "nan"])
@pytest.mark.parametrize("command", ["decode", "compare", "encode"])
def test_the_cli_refuses_a_bad_realism_with_exit_2(run_cli, save_png, command, realism):
    path = save_png(make_photo(16, 16))
    args = {"decode": ("decode", "x.xsc"), "compare": ("compare", path, "x.xsc"), "encode": ("encode", path)}[command]
    result = run_cli(*args, "--realism", realism)
    assert result.returncode == 2
    assert b"realism" in result.stderr


def test_bench_refuses_a_bad_realism_list(run_cli, tmp_path):
    result = run_cli("bench", str(tmp_path), "--realism", "0,2")
    assert result.returncode == 2 and b"realism" in result.stderr


def test_models_without_a_perceptual_head_refuse_realism():
    image = make_photo(64, 64)
    with pytest.raises(InputError, match="no perceptual decoder"):
        api.encode(image, quality=2, model="hyperprior", device="cpu", realism=0.5)
    data = api.encode(image, quality=2, model="hyperprior", device="cpu")
    with pytest.raises(InputError, match="no perceptual decoder"):
        api.decode(data, device="cpu", realism=0.5)
    assert api.decode(data, device="cpu", realism=0.0).size == (64, 64)


def test_realism_needs_the_postfilter(coded):
    with pytest.raises(InputError, match="post-filter"):
        api.decode(coded, device="cpu", realism=1.0, postfilter=False)


@pytest.mark.parametrize("payload", [b"", bytes([101]), bytes([255]), bytes([50, 50])])
def test_a_malformed_realism_stream_is_refused(payload):
    header = container.Header("wavelet", bytes(8), 4.0, 8, 8)
    data = container.pack(Bitstream(header, [(StreamKind.CODED, b"x"), (StreamKind.REALISM, payload)]))
    with pytest.raises(FormatError, match="realism stream"):
        container.unpack(data)


def test_cli_decode_and_compare_take_the_realism(run_cli, save_png, tmp_path):
    path = save_png(make_photo(96, 72, seed=3))
    assert run_cli("encode", path, "-o", "x.xsc", "-q", "1.5", "--realism", "1").returncode == 0
    assert run_cli("decode", "x.xsc", "-o", "hint.png").returncode == 0
    assert run_cli("decode", "x.xsc", "-o", "r0.png", "--realism", "0").returncode == 0
    data = (tmp_path / "x.xsc").read_bytes()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "hint.png")), decode(data, realism=1.0))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r0.png")), decode(data, realism=0.0))
    result = run_cli("compare", path, "x.xsc", "--realism", "0.5", "--json", "--no-lpips")
    assert result.returncode == 0, result.stderr
    assert b'"realism": 0.5' in result.stdout


def test_pillow_takes_a_default_and_a_per_image_realism(coded, tmp_path, monkeypatch):
    import xcodec.pillow

    path = tmp_path / "x.xsc"
    path.write_bytes(coded)
    monkeypatch.setattr(xcodec.pillow, "REALISM", 1.0)
    assert np.array_equal(np.asarray(Image.open(path)).astype(int), decode(coded, realism=1.0))
    image = Image.open(path)
    image.realism = 0.0
    assert np.array_equal(np.asarray(image).astype(int), decode(coded))
    Image.open(path).save(tmp_path / "y.xsc", quality=2, realism=0.3)
    assert Image.open(tmp_path / "y.xsc").info["realism"] == 0.3


def test_bench_names_each_realism_apart():
    from xcodec.bench.codecs import build_codecs

    codecs, _ = build_codecs(["xcodec"], ["wavelet"], realisms=(0.0, 0.5, 1.0))
    assert [c.name for c in codecs] == ["xcodec-wavelet", "xcodec-wavelet-r0.5", "xcodec-wavelet-r1"]


def test_bench_encodes_a_file_for_every_realism(tmp_path, monkeypatch):
    """`bench --realism` encodes each image at each quality for each realism (a realism-R file carries
    the gains of the head's detail that the encoder chose for R), decodes it at that realism, and
    keeps each realism's curve under its own name; a later run with one more realism encodes again
    only for the results it lacks. The model's rate estimate (a walk as costly as a decode) is the
    plain file's: only the fidelity curve's rows carry it."""
    import csv

    from typer.testing import CliRunner

    from xcodec.bench import codecs
    from xcodec.cli import app

    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    make_photo(96, 72, seed=5).save(folder / "a.png")
    encodes = []
    encode = codecs.XcodecCodec.encode

    def counted(self, rgb, quality):
        if rgb.shape[:2] == (72, 96):  # not the untimed warm-up's 64x64 crop
            encodes.append(quality)
        return encode(self, rgb, quality)

    monkeypatch.setattr(codecs.XcodecCodec, "encode", counted)
    estimates = []
    estimate = codecs.XcodecCodec.estimated_bits
    monkeypatch.setattr(codecs.XcodecCodec, "estimated_bits", lambda self, rgb, q: estimates.append(q) or estimate(self, rgb, q))

    def bench(realisms: str) -> dict:
        result = CliRunner().invoke(app, ["bench", str(folder), "--out", str(out), "--codecs", "xcodec", "--models", "wavelet",
                                          "--qualities", "1,3", "--realism", realisms, "--no-lpips", "--no-dists",
                                          "--no-plots", "--threads", "1", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        return {(row["codec"], float(row["setting"])): row for row in csv.DictReader((out / "rows.csv").open())}

    rows = bench("0,0.5,1")
    assert sorted(encodes) == [1, 1, 1, 3, 3, 3]  # a file per realism: encoded for it
    names = ["xcodec-wavelet", "xcodec-wavelet-r0.5", "xcodec-wavelet-r1"]
    assert set(rows) == {(name, q) for name in names for q in (1, 3)}
    assert sorted(path.stem for path in (out / "cache").glob("*.jsonl")) == names
    for q in (1, 3):
        plain = int(rows[names[0], q]["bytes"])
        assert all(int(rows[name, q]["bytes"]) > plain for name in names[1:])  # the realism and gains streams
        assert len({rows[name, q]["psnr"] for name in names}) == 3  # decoded three ways
        assert float(rows[names[0], q]["estimated_bpp"]) > 0
        assert all(math.isnan(float(rows[name, q]["estimated_bpp"])) for name in names[1:])
    assert sorted(estimates) == [1, 3]
    encodes.clear()
    estimates.clear()
    rows = bench("0.5,0.25")
    assert sorted(encodes) == [1, 3] and not estimates  # for 0.25 only: 0.5 is cached
    assert {name for name, _ in rows} == {"xcodec-wavelet-r0.5", "xcodec-wavelet-r0.25"}
    assert len((out / "cache" / "xcodec-wavelet-r0.5.jsonl").read_text().splitlines()) == 2
