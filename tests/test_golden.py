"""Golden files: any change to the format or to a shipped model's bytes or pixels shows here.

The hashes are of CPU kernels: the analysis and synthesis run in float32, whose last bits differ
between kernels, so the decoder's networks (post-filter, perceptual head) can round a handful of
samples the other way (torch's native convolutions instead of oneDNN's: 2 samples of the 1.6
million of version-11-wavelet.xsc, by 1). Where the pixels' hash differs between the kinds of
machine these tests have run on, each is listed: the first machines', then those of 2026-12-07
(Intel Xeon with AVX-512), then those of 2026-12-08 (AMD EPYC with AVX2: the two large files' and
their version-9 decode's). The file bytes came out the same on all. If a golden breaks on a new
CPU with the code unchanged, that is why; if it breaks after a change, the change altered files (a
new format version, or new weights).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xcodec import api, container
from xcodec.models import zoo

CORPUS = Path(__file__).resolve().parent / "corpus"
SAMPLE = Path(api.__file__).resolve().parent / "samples" / "chelsea.png"

# (model, quality, tile): SHA-256 of the .xsc file of the 96x80 crop below (wavelet: version 14, every
# detail symbol folded, and a grain stream)
ENCODED = {
    ("hyperprior", 2.0, 64): "f2a388d5f8022f85902ba29bd282c0de450eef5b102971f115c0546016442251",
    ("hyperprior", 7.5, 0): "b0b7d8d40cfb6a16b2761369961af576d4590abbe91db14fd194c4dc9b6df657",
    ("transformer", 2.0, 64): "c314fa41fdfb036b0a4163c9dd8435e126b4ed290ea2b78e28738820929c0c86",
    ("transformer", 7.5, 0): "f76795e177dab0f05a5890ea2966ae2660e2ba417d70a3f735aa35f85b533537",
    ("wavelet", 2.0, 64): "42ab9a260ece8b2158fbea86a041b461a35bbfa3473ef69b16d7be7c73ed5a18",
    ("wavelet", 7.5, 0): "d8fff93db3f824f33eb892b745d7aa055873be47d5336102cfd254cb9f408619",
}
FIDELITY = {  # (quality, tile): the SHA-256s of the pixels of the wavelet file above decoded at realism 0 (version 11's
    # filter, version 12's smoothed tile borders)
    (2.0, 64): ("5d95cbd3dffb1b78521abe7f16da9e9ec79fac52773c6f0d6e93f8c80d4db7f7",
                "22847c6f29578cda23b7f23ac062aed114d907b179526a6f6d0d0edc6974b5db"),
    (7.5, 0): ("fba02594904ffdde331a1a68c8deab6c63a4a64d2ae37e13696a5c1ecfdd3470",),
}
DECODED = {  # committed files of older versions (the crop, 2x2 tiles of 64): version, SHA-256s of the RGB pixels
    "version-2-hyperprior.xsc": (2, ("c797fa5f36b2ac72dcc460e1480ae2619003a34c32f6a34db53a0c1a7c32939c",)),  # quality 4
    "version-2-transformer.xsc": (2, ("d1702689d2d9bed998eb84d961d40a10915b413368e6c61302630d56f35ac7ee",)),  # quality 4
    # quality 3, the low band of one scale per channel (before version 7)
    "version-3-wavelet.xsc": (3, ("9b50fd40ea0515ffd08e17a57393c3c67bfa7e2e0e853af514392bde3517ab35",)),
    # quality 3, effort 1 (xcodec 0.2.0, before version 8's adapt stream): the same pixels
    "version-7-wavelet.xsc": (7, ("9b50fd40ea0515ffd08e17a57393c3c67bfa7e2e0e853af514392bde3517ab35",)),
    # the sample at twice its size (902x600, one tile), quality 3, effort 2 (with an adapt stream): a
    # tile whose post-filter's global attention version 9 bounds (its pixels as before, from main 16d79bf)
    "version-8-wavelet-large.xsc": (8, ("5388c3e26418633ecdf53c88c842b2bbb7dde46989f59c78f4afcaf6a6b7d4ee",
                                        "645ef9877377e558b5d020e3edb0a01c725a0cd3201c0f33aeaf7f5cf6cc5b3c",
                                        "cf6a4264401772c60453a7671dc7dc0bb6665e049b79b74b3b56b93f729665e9")),
    # quality 3, effort 1, the second passes' signs coded with their contexts: the symbols, and so the
    # pixels, of the version-7 file
    "version-10-wavelet.xsc": (10, ("9b50fd40ea0515ffd08e17a57393c3c67bfa7e2e0e853af514392bde3517ab35",)),
    # the sample at twice its size (902x600, one tile), quality 5, effort 2 (with an adapt stream fitted
    # to the convolutions-only post-filter's tail; at qualities 3 and 4 the encoder sends none)
    "version-11-wavelet.xsc": (11, ("b406a0e575edef5ca95d1a05f3b849ffed9d86a781fcf99f34493e825bd0e3fa",
                                    "35da83032d8ad08decb98eb95ca50c61c75b2fc13c2933c071b633c12c754fb5",
                                    "ad1c955d306930782fd2df31267e92c3d679f2d1b481420a569cf44fb1cc79a4")),
    # the crop in tiles of 64 at quality 2 (main 0d6288c), with a grain stream: the symbols, and so the
    # pixels, of the version-14 file above
    "version-13-wavelet.xsc": (13, FIDELITY[2.0, 64]),
}
# the convolutions-only post-filter of version 11: another one decodes version-11 files to other pixels
CONVFILTER = "9d2f805d59cbcbbb8659d443540ee157a00912dc3c2519e07b75a78d9353f8da"
# the tiled wavelet file above (quality 2) as version 11: its tile borders as decoded, not smoothed
TILED_V11 = ("288bd0fffce6e3748224b43eee567528e99b2879caee9af45bb848e3afdf24eb",
             "b934d38f54e082968b77ec19f05573af17bfe869a34c9d8d7275e99afd930e45")
# version-10-wavelet.xsc's streams in a version-11 file: its image before the post-filter, filtered by it
V10_AS_V11 = ("c202bc891e9ceba663b9588b432a7b4ced1c6de3449ea0102175181cfdffeb18",)
# The shipped perceptual head (G3, 2026-12-07): its realism-1 pixels are compared with references
# committed as PNGs (within 1 grey level, see near_reference); a new head needs new references.
HEAD = "c6fabd6fe2dfef56b5c1b4209abce7b36f1aa02a86f881ba68dc0ffd7142002c"
# version-8-wavelet-large.xsc's streams in a version-9 file at realism 0
BOUNDED = ("7a147e369df2ee027b9be4efbb48d36900e7683fa2bd0b14ce3413f592d98e38",
           "b01d42c0fa5cf6c3edb63821e9be7d69c2f2abeaa83bf001d034c2784204913f",
           "fb771090197165733cfbe0b390e9e5fd66967ddde8aab0eec1df6e4418cfcae3")
LARGE_CROP = (540, 150, 732, 342)  # of version-8-wavelet-large.xsc: an eye, fur and the blurred background


def crop() -> Image.Image:
    return Image.open(SAMPLE).convert("RGB").crop((200, 60, 296, 140))


def pixels_sha256(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def near_reference(image: Image.Image, name: str) -> bool:
    """``image`` against the reference PNG ``name`` of the corpus: within 1 grey level, and equal but
    for at most 0.1% of the samples. The perceptual head's float kernels differ between kinds of CPU,
    so a hash of its pixels would hold on one kind only."""
    decoded = np.asarray(image).astype(int)
    reference = np.asarray(Image.open(CORPUS / name)).astype(int)
    return decoded.shape == reference.shape and np.abs(decoded - reference).max() <= 1 and (decoded != reference).mean() <= 0.001


@pytest.mark.parametrize("model,quality,tile", list(ENCODED), ids=lambda v: str(v))
def test_encoded_bytes(model, quality, tile):
    data = api.encode(crop(), quality=quality, model=model, tile=tile, device="cpu", strip=True)  # the sample's XMP aside
    version = container.FOLDED_VERSION if model == "wavelet" else container.VERSION
    assert container.unpack(data).header.version == version
    assert hashlib.sha256(data).hexdigest() == ENCODED[model, quality, tile]


@pytest.mark.parametrize("quality,tile", list(FIDELITY), ids=str)
def test_realism_0_is_the_fidelity_output_of_before_the_perceptual_head(quality, tile):
    data = api.encode(crop(), quality=quality, model="wavelet", tile=tile, device="cpu", strip=True)
    assert pixels_sha256(api.decode(data, device="cpu")) in FIDELITY[quality, tile]
    assert pixels_sha256(api.decode(data, device="cpu", realism=0.0)) in FIDELITY[quality, tile]


@pytest.mark.parametrize("name", list(DECODED))
def test_files_of_older_versions_decode_to_the_same_pixels(name):
    data = (CORPUS / name).read_bytes()
    version, pixels = DECODED[name]
    assert container.unpack(data).header.version == version
    assert pixels_sha256(api.decode(data, device="cpu")) in pixels


def test_version_9_bounds_the_global_attentions_of_a_large_tile_and_older_versions_do_not():
    data = (CORPUS / "version-8-wavelet-large.xsc").read_bytes()
    assert zoo.read_manifest("wavelet").heads["perceptual"]["sha256"] == HEAD, "another head: its realism-1 pixels are new"
    unbounded = api.decode(data, device="cpu", realism=1.0).crop(LARGE_CROP)
    assert near_reference(unbounded, "version-8-wavelet-large-realism-1.png")
    bitstream = container.unpack(data)
    bitstream.header.version = container.DECODER_VERSION
    fidelity, perceptual = api.decode_realisms(container.pack(bitstream), (0.0, 1.0), device="cpu")
    assert pixels_sha256(fidelity) in BOUNDED
    assert near_reference(perceptual.crop(LARGE_CROP), "version-9-wavelet-large-realism-1.png")
    assert not near_reference(unbounded, "version-9-wavelet-large-realism-1.png")


def test_version_13_draws_the_grain_at_realism_1():
    """The wavelet file of quality 7.5 above (version 14: one tile, with the grain stream of version
    13) at realism 1, against its pixels committed as a PNG."""
    assert zoo.read_manifest("wavelet").heads["perceptual"]["sha256"] == HEAD, "another head: its realism-1 pixels are new"
    data = api.encode(crop(), quality=7.5, model="wavelet", device="cpu", strip=True)
    assert container.unpack(data).stream(container.StreamKind.GRAIN)
    assert near_reference(api.decode(data, device="cpu", realism=1.0), "version-14-wavelet-realism-1.png")


def test_version_14_codes_the_symbols_of_version_13_in_hardly_other_bytes():
    """Every detail symbol folded (magnitude, then sign): the same symbols and grain, so the same
    fidelity output, in a file within 0.5% of the size. (The perceptual head's noise is seeded by a
    tile's bytes: at realism above 0 the two files draw other noise of the same kind.)"""
    older = (CORPUS / "version-13-wavelet.xsc").read_bytes()
    newer = api.encode(crop(), quality=2.0, model="wavelet", tile=64, device="cpu", strip=True)
    assert container.unpack(newer).stream(container.StreamKind.GRAIN) == container.unpack(older).stream(container.StreamKind.GRAIN)
    assert abs(len(newer) - len(older)) <= 0.005 * len(older)
    assert np.array_equal(*(np.asarray(api.decode(data, device="cpu")) for data in (older, newer)))


def test_version_15_scales_the_detail_by_the_files_gains():
    """The crop of quality 2 in tiles of 64, encoded for realism 1 (main 76e81b6): a gains stream
    whose blocks decode to the gains it was written with, the coded streams and grain of the plain
    file, realism 0 its pixels, and realism 1 its pixels committed as a PNG (the gains 0.5 and 1.5
    among the 1s: other pixels than the plain file's at realism 1)."""
    from xcodec.models import gains

    data = (CORPUS / "version-15-wavelet.xsc").read_bytes()
    bitstream = container.unpack(data)
    assert bitstream.header.version == container.GAINS_VERSION
    shapes = [box[2:] for box in bitstream.header.tile_boxes()]
    grids = gains.read(bitstream.stream(container.StreamKind.GAINS), shapes)
    assert [grid.tolist() for grid in grids] == [[[2, 2], [2, 2]], [[2], [1]], [[3, 3]], [[2]]]
    plain = container.unpack(api.encode(crop(), quality=2.0, model="wavelet", tile=64, device="cpu", strip=True))
    kept = (container.StreamKind.CODED, container.StreamKind.GRAIN)
    assert [s for s in bitstream.streams if s[0] in kept] == [s for s in plain.streams if s[0] in kept]
    assert pixels_sha256(api.decode(data, device="cpu", realism=0.0)) in FIDELITY[2.0, 64]
    assert zoo.read_manifest("wavelet").heads["perceptual"]["sha256"] == HEAD, "another head: its realism-1 pixels are new"
    assert near_reference(api.decode(data, device="cpu"), "version-15-wavelet-realism-1.png")  # its suggested realism, 1
    assert not near_reference(api.decode(container.pack(plain), device="cpu", realism=1.0), "version-15-wavelet-realism-1.png")


def test_version_11_decodes_the_streams_of_version_10_with_the_convolutions_only_postfilter():
    assert zoo.read_manifest("wavelet").heads["convfilter"]["sha256"] == CONVFILTER, "another filter: version 11's pixels are new"
    data = (CORPUS / "version-10-wavelet.xsc").read_bytes()
    bitstream = container.unpack(data)
    bitstream.header.version = container.FILTER_VERSION
    newer = container.pack(bitstream)
    unfiltered = [np.asarray(api.decode(d, device="cpu", postfilter=False)) for d in (data, newer)]
    assert np.array_equal(*unfiltered)
    assert pixels_sha256(api.decode(newer, device="cpu")) in V10_AS_V11
    assert not set(V10_AS_V11) & set(DECODED["version-10-wavelet.xsc"][1])


def test_version_12_smooths_the_tile_borders_that_version_11_leaves():
    bitstream = container.unpack((CORPUS / "version-13-wavelet.xsc").read_bytes())  # the coded streams of versions 10 to 13
    bitstream.header.version = container.FILTER_VERSION
    bitstream.streams = [(kind, payload) for kind, payload in bitstream.streams if kind != container.StreamKind.GRAIN]
    assert pixels_sha256(api.decode(container.pack(bitstream), device="cpu")) in TILED_V11
    assert not set(TILED_V11) & set(FIDELITY[2.0, 64])


CODE_SCRIPT = """
import hashlib, sys
import numpy as np
from PIL import Image
from xcodec import api
large = Image.open(sys.argv[1])
for realism in (None, 1.0):  # plain, and with the detail gains chosen for realism 1
    for threads in (1, 3):  # its tiles coded here, then in worker processes
        data = api.encode(large, quality=6, tile=256, device="cpu", strip=True, threads=threads, realism=realism)
        print(hashlib.sha256(data).hexdigest())
for arg in sys.argv[2:]:
    path, realism = arg.split("@")
    for threads in (1, 3):
        image = api.decode(open(path, "rb").read(), device="cpu", realism=float(realism), threads=threads)
        print(hashlib.sha256(np.asarray(image).tobytes()).hexdigest())
"""


def test_files_and_pixels_do_not_depend_on_the_thread_count(tmp_path):
    # Before the synthesis ran on one thread, this photo at quality 6 decoded to other pixels with
    # OMP_NUM_THREADS=2 than with 1, for both models. The wavelet's perceptual head (realism 1) too,
    # and the gains of its detail that an encoder for realism 1 chooses (a tiled file).
    # The API's threads (1 or 3 here) must not matter either: twice the photo's size has the
    # post-filter in stripes, tiles of 256 in parallel, encoded and decoded in worker processes.
    image = Image.open(SAMPLE).convert("RGB")
    paths = []
    for model in ("hyperprior", "transformer", "wavelet"):
        paths.append(tmp_path / f"{model}.xsc")
        paths[-1].write_bytes(api.encode(image, quality=6, model=model, device="cpu"))
    large = image.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC)
    for tile, realism in ((0, None), (256, 1.0), (256, None)):
        paths.append(tmp_path / f"wavelet-large-{tile}-{realism}.xsc")
        paths[-1].write_bytes(api.encode(large, quality=6, tile=tile, device="cpu", strip=True, realism=realism))  # the XMP a PNG drops
    large.save(tmp_path / "large.png")
    hashes = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        args = [f"{path}@0" for path in paths] + [f"{paths[2]}@1", f"{paths[3]}@1", f"{paths[4]}@1"]
        result = subprocess.run([sys.executable, "-c", CODE_SCRIPT, tmp_path / "large.png", *args], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        hashes.append(result.stdout.split())
    assert hashes[0] == hashes[1]
    assert hashes[0][0::2] == hashes[0][1::2]
    assert hashes[0][0] == hashlib.sha256(paths[-1].read_bytes()).hexdigest()  # the files encoded here
    assert hashes[0][2] == hashlib.sha256(paths[-2].read_bytes()).hexdigest()
