"""Mutation fuzzing of the ``.xsc`` parser and decoder, over real files.

    python -m tests.fuzz --parse 50000 --decode 3000 --crafted 1000 --seed 1 [--save tests/corpus]

Seeds are small real files (several tile layouts, grayscale with an ICC profile) made by the
installed model, the regression corpus in ``tests/corpus`` and the hostile files of
``tests/hostile.py`` (those under 64 KB). Each input is a seed with one or
more mutations: truncation, bit flips, inserted or deleted bytes, header fields set to extremes,
stream payloads spliced from another file, streams reordered, or random bytes; most mutations
then recompute the CRC-32 so that they reach the parser and the entropy decoder behind it.

``CRAFTED`` is a dictionary of valid-structure mutations, what a hostile author writes on purpose:
files that parse (right checksum, a stream table that fits the tile grid) but hold empty, short or
overlong streams, tiles swapped, another tile size or size claim with the streams repeated to fit,
another number of streams per tile, or a model name that is a path or not shipped. ``--crafted N``
decodes N of them and reports, per kind, the outcomes and, of the refused files, the slowest and
the largest memory one needed (peak resident memory over the size before it).

Every input must end in a decoded image or an ``XcodecError``; anything else is a crash, and an
input slower than ``--slow`` seconds counts as a hang. Prints the counts by outcome; with
``--save`` writes crashing, hanging and a sample of interesting inputs into the corpus.
``tests/test_fuzz.py`` runs the same mutations under hypothesis, briefly, in the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
import resource
import struct
import time
import zlib
from collections import Counter
from pathlib import Path

from PIL import ImageCms

from xcodec import api, container
from xcodec.container import Bitstream, StreamKind
from xcodec.errors import XcodecError
from xcodec.models import zoo

CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_PIXELS = 512 * 512  # decodes of mutated sizes stay small and quick
FIELDS = {  # name: (offset after the model name, struct format), see docs/bitstream.md (format 3)
    "quality": (8, "<H"), "width": (10, "<I"), "height": (14, "<I"), "channels": (18, "<B"), "depth": (19, "<B"),
    "pad_bottom": (20, "<H"), "pad_right": (22, "<H"), "tile": (24, "<I"), "per_tile": (28, "<B"), "count": (29, "<I"),
}
TABLE = 33  # the stream table's offset after the model name
EXTREMES = (0, 1, 2, 63, 64, 65, 255, 256, 1023, 1024, 65535, 65536, 1 << 20, (1 << 20) + 1, 2**31, 2**32 - 1)


def make_seeds() -> list[bytes]:
    """Small real files: one tile, several tiles, tiny, grayscale with an ICC profile."""
    from tests.conftest import make_photo

    gray = make_photo(40, 30, seed=1).convert("L")
    gray.info["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    images = [(make_photo(64, 64), 0), (make_photo(97, 61, seed=2), 64), (make_photo(130, 70, seed=3), 64),
              (make_photo(1, 1), 0), (gray, 0)]
    seeds = [api.encode(image, quality=q, tile=tile, device="cpu") for (image, tile), q in zip(images, (1, 4, 8, 2, 6))]
    # the default model's files, and one of a stride-64, two-stream model
    return seeds + [api.encode(make_photo(97, 61, seed=4), quality=3, tile=64, model="hyperprior", device="cpu")]


def corpus_files() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*.xsc"))]


def hostile_files(seed: bytes, largest: int = 1 << 16) -> list[bytes]:
    """The crafted files of ``tests/hostile.py`` made from ``seed``, those of at most ``largest`` bytes."""
    from tests import hostile

    return [case.data for case in hostile.cases(seed).values() if len(case.data) <= largest]


def fix_crc(data: bytes) -> bytes:
    body = data[:-4] if len(data) >= 4 else data
    return body + struct.pack("<I", zlib.crc32(body))


def set_field(data: bytes, rng: random.Random) -> bytes:
    name, (offset, fmt) = rng.choice(list(FIELDS.items()))
    start = 6 + data[5] + offset if len(data) > 5 else 0
    bits = 8 * struct.calcsize(fmt)
    value = rng.choice(EXTREMES + (rng.getrandbits(bits),)) % (1 << bits)
    if start + struct.calcsize(fmt) > len(data):
        return data
    return data[:start] + struct.pack(fmt, value) + data[start + struct.calcsize(fmt) :]


def set_stream_length(data: bytes, rng: random.Random) -> bytes:
    table = 6 + data[5] + TABLE if len(data) > 5 else 0
    count = (len(data) - table) // 5
    if count <= 0:
        return data
    start = table + 5 * rng.randrange(min(count, 8)) + 1
    value = rng.choice(EXTREMES + (rng.getrandbits(32),)) % 2**32
    return data[:start] + struct.pack("<I", value) + data[start + 4 :]


def reshape_streams(data: bytes, other: bytes, rng: random.Random) -> bytes:
    """Splice, drop, duplicate, reorder or cut stream payloads, then repack (a valid container)."""
    try:
        a, b = container.unpack(data), container.unpack(other)
    except XcodecError:
        return data
    streams = list(a.streams)
    i = rng.randrange(len(streams))
    kind, payload = streams[i]
    action = rng.randrange(6)
    if action == 0:
        streams[i] = (kind, rng.choice(b.streams)[1])  # a payload from another file
    elif action == 1:
        streams[i] = (kind, payload[: 4 * rng.randrange(len(payload) // 4 + 1)])  # cut, still words
    elif action == 2:
        streams[i] = (kind, payload + bytes(rng.getrandbits(8) for _ in range(4 * rng.randint(1, 8))))
    elif action == 3:
        streams[i] = (kind, bytes(rng.getrandbits(8) for _ in range(len(payload))))  # same length, random
    elif action == 4:
        rng.shuffle(streams)
    else:
        del streams[i]
    return container.pack(Bitstream(a.header, streams))


def flip_payload_bits(data: bytes, rng: random.Random) -> bytes:
    """Flip bits inside the stream payloads only: the ANS decoder gets damaged data."""
    try:
        a = container.unpack(data)
    except XcodecError:
        return data
    streams = [(kind, bytearray(payload)) for kind, payload in a.streams]
    coded = [payload for kind, payload in streams if payload and kind != StreamKind.ICC]
    for _ in range(rng.randint(1, 4)):
        if coded:
            payload = rng.choice(coded)
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
    return container.pack(Bitstream(a.header, [(kind, bytes(payload)) for kind, payload in streams]))


def mutate(data: bytes, other: bytes, rng: random.Random) -> bytes:
    """One fuzz input: 1..3 mutations of ``data`` (``other`` is a second real file to splice from)."""
    for _ in range(rng.randint(1, 3)):
        action = rng.randrange(10)
        if action == 0:
            data = data[: rng.randrange(len(data) + 1)]
            continue  # a truncated file keeps its (now wrong) checksum
        if action == 1:
            damaged = bytearray(data or b"\0")
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            data = bytes(damaged)
        elif action == 2:
            pos = rng.randrange(len(data) + 1)
            data = data[:pos] + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16))) + data[pos:]
        elif action == 3:
            pos = rng.randrange(len(data) + 1)
            data = data[:pos] + data[pos + rng.randint(1, 16) :]
        elif action == 4:
            data = set_field(data, rng)
        elif action == 5:
            data = set_stream_length(data, rng)
        elif action in (6, 7):
            data = reshape_streams(data, other, rng)
        elif action == 8:
            data = flip_payload_bits(data, rng)
        else:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
            data = (data[:7] if rng.random() < 0.5 else container.MAGIC + bytes([container.VERSION]) + data)
        if rng.random() < 0.9:
            data = fix_crc(data)
    return data


# ---- valid-structure mutations ----------------------------------------------------------------------

def _tiles(b: Bitstream) -> list[list[bytes]]:
    return container.tile_streams(b)


def _with_tiles(b: Bitstream, tiles: list[list[bytes]], **header) -> Bitstream:
    """``b`` with other coded payloads per tile (and header fields), its metadata streams kept."""
    metadata = [(kind, data) for kind, data in b.streams if kind != StreamKind.CODED]
    coded = [(StreamKind.CODED, data) for tile in tiles for data in tile]
    return Bitstream(dataclasses.replace(b.header, **header), coded + metadata)


def _fit(b: Bitstream, rng: random.Random, **header) -> Bitstream:
    """Header fields changed, and the seed's tiles repeated (or cut) to fill the new tile grid."""
    h = dataclasses.replace(b.header, **header)
    stride = zoo.load(h.model)[0].stride if h.model in zoo.available() else 64
    h = dataclasses.replace(h, pad_bottom=-h.height % stride, pad_right=-h.width % stride)
    tiles = _tiles(b)
    return _with_tiles(b, [tiles[i % len(tiles)] for i in range(min(h.tiles, 4096))], **dataclasses.asdict(h))


def _emptied(b: Bitstream, tile: int, stream: int) -> Bitstream:
    """Stream ``stream`` of tile ``tile`` empty, the others as they were."""
    tiles = _tiles(b)
    tiles[tile] = [b"" if j == stream else data for j, data in enumerate(tiles[tile])]
    return _with_tiles(b, tiles)


def _cut(payload: bytes, rng: random.Random) -> bytes:
    return payload[: rng.randint(1, 8)]


def _renamed(data: bytes, name: bytes) -> bytes:
    """The file with another model name, bytes as given (``pack`` refuses names that are not identifiers)."""
    return fix_crc(data[:5] + bytes([len(name)]) + name + data[6 + data[5] :])


CRAFTED = {  # kind: (seed file, rng) -> a file whose structure is valid
    "empty streams": lambda b, rng: _with_tiles(b, [[b""] * len(t) for t in _tiles(b)]),
    "one empty stream": lambda b, rng: _emptied(b, rng.randrange(len(_tiles(b))), rng.randrange(b.header.streams_per_tile)),
    "short streams": lambda b, rng: _with_tiles(b, [[_cut(d, rng) for d in t] for t in _tiles(b)]),
    "overlong streams": lambda b, rng: _with_tiles(b, [[d + rng.randbytes(rng.randint(1, 64)) for d in t] for t in _tiles(b)]),
    "tiles shuffled": lambda b, rng: _with_tiles(b, rng.sample(_tiles(b), len(_tiles(b)))),
    "streams swapped": lambda b, rng: _with_tiles(b, [t[::-1] for t in _tiles(b)]),
    "size claim": lambda b, rng: _fit(b, rng, width=rng.choice((256, 512, 1000, 4096, 100_000)),
                                      height=rng.choice((256, 512, 700, 4096, 100_000)), tile=1024),
    "tile size": lambda b, rng: _fit(b, rng, tile=rng.choice((0, 64, 128, 192, 1024, 2048, 4096))),
    "streams per tile": lambda b, rng: _fit(b, rng, streams_per_tile=rng.choice((1, 3, 4, 255))),
    "model name": lambda b, rng: dataclasses.replace(b, header=dataclasses.replace(
        b.header, model=rng.choice(("nosuch", "hyperprior", "transformer", "a" * 64)))),
}
RAW_NAMES = (b"../weights/transformer", b"/etc/passwd", b"Transformer", b"", b"a" * 65, b"tr\x00ansformer")


def craft(data: bytes, rng: random.Random, kind: str | None = None) -> tuple[str, bytes]:
    """One crafted file from the real file ``data``, of ``kind`` or a random one: (its kind, its bytes)."""
    kind = kind or rng.choice([*CRAFTED, "raw model name"])
    if kind == "raw model name":
        return kind, _renamed(data, rng.choice(RAW_NAMES))
    return kind, container.pack(CRAFTED[kind](container.unpack(data), rng))


def outcome(data: bytes, decode: bool) -> str:
    """``ok``, the name of the ``XcodecError`` raised, or ``crash: <exception>`` for anything else."""
    try:
        if decode:
            image = api.decode(data, device="cpu", max_pixels=MAX_PIXELS)
            header = container.unpack(data).header
            assert image.size == (header.width, header.height), "decoded size differs from the header"
        else:
            container.unpack(data)
        return "ok"
    except XcodecError as exc:
        assert str(exc) and "\n" not in str(exc), f"not a one-line message: {exc!r}"
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - the point of fuzzing
        return f"crash: {type(exc).__name__}: {exc}"


def run(count: int, decode: bool, rng: random.Random, seeds: list[bytes], slow: float,
        save: Path | None) -> Counter:
    outcomes: Counter = Counter()
    slowest = 0.0
    for _ in range(count):
        data = mutate(rng.choice(seeds), rng.choice(seeds), rng)
        start = time.perf_counter()
        result = outcome(data, decode)
        elapsed = time.perf_counter() - start
        slowest = max(slowest, elapsed)
        if elapsed > slow:
            result = f"hang ({elapsed:.1f} s)"
        outcomes[result.split(" (")[0] if result.startswith("hang") else result] += 1
        if save and (result.startswith(("crash", "hang")) or (decode and result == "ok" and rng.random() < 0.01)):
            save.mkdir(parents=True, exist_ok=True)
            (save / f"{hashlib.sha256(data).hexdigest()[:16]}.xsc").write_bytes(data)
        if result.startswith(("crash", "hang")):
            print(f"{result}: {data[:48].hex()}...", flush=True)
    outcomes["slowest input (ms)"] = round(1000 * slowest)
    return outcomes


def run_crafted(count: int, rng: random.Random, seeds: list[bytes], slow: float) -> dict[str, Counter]:
    """Decode ``count`` files crafted from ``seeds`` (files of the installed models); per kind, the
    outcomes, and of the refused files the slowest (ms) and the most memory above the process's size
    before it (MiB)."""
    from xcodec.bench.run import PeakMemory

    for data in seeds[:5]:  # load the models first: their loading is not a crafted file's cost
        outcome(data, decode=True)
    memory = PeakMemory()
    kinds: dict[str, Counter] = {}
    for _ in range(count):
        kind, data = craft(rng.choice(seeds), rng)
        start = time.perf_counter()
        with memory:
            result = outcome(data, decode=True)
        elapsed = time.perf_counter() - start
        if elapsed > slow:
            result = "hang"
        counts = kinds.setdefault(kind, Counter())
        counts[result] += 1
        if result != "ok":  # a refusal: how long it took, how much memory it needed
            counts["slowest refusal ms"] = max(counts["slowest refusal ms"], round(1000 * elapsed))
            counts["most MiB"] = max(counts["most MiB"], round(memory.extra))
        if result.startswith(("crash", "hang")):
            print(f"{kind}: {result}: {data[:48].hex()}...", flush=True)
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description="Mutation fuzzing of the .xsc parser and decoder.")
    parser.add_argument("--parse", type=int, default=10000, help="Inputs for the container parser alone.")
    parser.add_argument("--decode", type=int, default=500, help="Inputs for the full decoder.")
    parser.add_argument("--crafted", type=int, default=500, help="Crafted files (CRAFTED) for the full decoder.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow", type=float, default=30.0, help="Seconds after which an input counts as a hang.")
    parser.add_argument("--save", type=Path, help="Folder for crashing, hanging and sample inputs (e.g. tests/corpus).")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fresh = make_seeds()
    seeds = fresh + corpus_files() + hostile_files(fresh[0])
    start = time.perf_counter()
    for name, count, decode in (("parser", args.parse, False), ("decoder", args.decode, True)):
        t = time.perf_counter()
        outcomes = run(count, decode, rng, seeds, args.slow, args.save)
        print(f"{name}: {count} inputs in {time.perf_counter() - t:.0f} s: {dict(sorted(outcomes.items()))}", flush=True)
    t = time.perf_counter()
    crafted = run_crafted(args.crafted, rng, fresh, args.slow)
    print(f"crafted: {args.crafted} files in {time.perf_counter() - t:.0f} s", flush=True)
    for kind, outcomes in sorted(crafted.items()):
        print(f"  {kind}: {dict(sorted(outcomes.items()))}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {time.perf_counter() - start:.0f} s, peak RSS {peak:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
