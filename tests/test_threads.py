"""The thread policy and parallel work: usable cores, stripes and tiles on several threads, batch workers.

Whatever the thread or job count, files and pixels are the same; a batch keeps its lines' order,
its exit codes and its clean Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xcodec import api, cores
from xcodec.errors import InputError
from xcodec.models import threads, zoo
from xcodec.models.blocks import ONEDNN_MIN, blocked, pool_for
from xcodec.models.perceptual import PerceptualHead, draw_noise

from tests.conftest import REPO_ROOT, make_photo, png_bytes


@pytest.mark.parametrize("text,cores_", [("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000\n", 1),
                                         ("max 100000\n", None), ("garbage", None)])
def test_cgroup_quota_in_whole_cores(tmp_path, text, cores_):
    (tmp_path / "cpu.max").write_text(text)
    assert cores.cgroup_cpus(tmp_path / "cpu.max") == cores_
    assert cores.cgroup_cpus(tmp_path / "missing") is None


def test_usable_cores_within_the_affinity():
    assert 1 <= cores.usable_cores() <= len(os.sched_getaffinity(0))


def test_map_ordered_keeps_the_order_and_bounds_the_work_in_flight():
    running, peak, lock = [0], [0], threading.Lock()

    def work(i: int) -> tuple[int, int]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002 * (i % 3))
        with lock:
            running[0] -= 1
        return i, torch.get_num_threads()

    with threads.threads(3):
        results = list(threads.map_ordered(work, list(range(30))))
    assert [i for i, _ in results] == list(range(30))
    assert {n for _, n in results} == {1}  # each piece's kernels on one thread
    assert 1 < peak[0] <= 3


def test_map_processes_keeps_the_order_in_forked_workers_and_raises_their_errors():
    def work(i: int) -> tuple[int, int, int, bool]:
        if i == 9:
            raise InputError("nine")
        return i, os.getpid(), torch.get_num_threads(), torch.is_inference_mode_enabled()

    with torch.inference_mode(), threads.threads(2):
        results = list(threads.map_processes(work, list(range(9))))
        with pytest.raises(InputError, match="nine"):
            list(threads.map_processes(work, list(range(12))))
    assert [i for i, *_ in results] == list(range(9))
    assert (os.getpid() in {pid for _, pid, _, _ in results}) != sys.platform.startswith("linux")  # others on Linux
    assert {(n, inference) for _, _, n, inference in results} == {(1, True)}  # as on a thread of map_ordered


@pytest.mark.parametrize("height", [7, 50, 203])
def test_map_rows_gives_the_whole_maps_result_for_any_thread_count(height):
    torch.manual_seed(height)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 5, padding=2), nn.Conv2d(8, 2, 3, padding=1))
    x = torch.randn(1, 3, height, 37)
    with torch.inference_mode():
        with threads.threads(1):
            whole = net(x)
        striped = []
        for count in (1, 2, 3):
            with threads.threads(count):
                striped.append(threads.map_rows(lambda lo, hi: net(x[..., lo:hi, :]), height, halo=4, align=8, rows=16))
    # the same bits for any thread count; the whole map's up to the kernels' rounding (CPU kernels
    # may sum in another order for another map size; the post-filter's give the same bits)
    assert all(torch.equal(striped[0], s) for s in striped[1:])
    torch.testing.assert_close(striped[0], whole, rtol=0, atol=1e-5)


def grown_head() -> PerceptualHead:
    """A perceptual head with every kind of block twice (random weights, none at zero)."""
    head = PerceptualHead(blocks=2, coarse_blocks=2, late_blocks=2)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return head.eval()


@pytest.mark.parametrize("tokens", [None, 64])
@pytest.mark.parametrize("head", ["postfilter", "convfilter", "perceptual", "grown"])
@pytest.mark.parametrize("height,width", [(300, 90), (257, 203)])
def test_decoder_heads_in_stripes_give_the_whole_images_result(monkeypatch, head, height, width, tokens):
    """The post-filters (of versions up to 10, and the convolutions-only one from 11) and the
    perceptual head (the shipped one and a larger one), their coarse HybridBlocks included, give the
    same bits in stripes on any thread count as on the whole map (odd sizes: partial windows, pools,
    vector tails), with the global attention's pool grown to bound its keys (version 9) too."""
    model = zoo.load("wavelet")[0]
    net = grown_head() if head == "grown" else getattr(model, head)
    if net is None:
        pytest.skip(f"the installed wavelet model has no {head}")
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    quality = torch.tensor([4.0])
    noise = None if head.endswith("filter") else draw_noise(net.noise_shape(height, width), 5)
    outputs = []
    for rows, count in ((10**6, 1), (40, 1), (40, 2)):  # the whole map; stripes of 40 folded rows, 20 coarse
        monkeypatch.setattr(threads, "STRIPE_ROWS", rows)
        with torch.inference_mode(), threads.threads(count):
            outputs.append(net(x, quality, tokens=tokens) if noise is None else net(x, quality, noise, tokens))
    assert all(torch.equal(outputs[0], out) for out in outputs[1:])
    if tokens:  # the bound changes the pool here (19 x 6 and 17 x 13 pooled positions at pool 4)
        assert pool_for(-(-height // 4), -(-width // 4), 4, tokens) > 4


@pytest.mark.parametrize("height,width", [(192, 128), (128, 192), (256, 256), (512, 512), (75, 23), (4, 512), (1, 1)])
def test_pool_for_grows_the_pool_until_the_pooled_map_fits(height, width):
    def positions(pool: int) -> int:
        return -(-height // pool) * -(-width // pool)

    assert pool_for(height, width, 4) == 4  # unbounded
    pool = pool_for(height, width, 4, 1536)
    assert positions(pool) <= 1536 and (pool == 4 or positions(pool - 1) > 1536)  # the smallest that fits
    assert pool_for(192, 128, 4, 1536) == 4 and pool_for(256, 256, 4, 1536) == 7  # Kodak's coarse map; a 1024 tile's


@pytest.mark.parametrize("height,width", [(35, 45), (8, 197), (96, 130)])
def test_blocked_convolutions_give_the_dense_result(height, width):
    """On oneDNN's blocked tensors the same kernels run as torch picks for these maps: the same bits
    (fails if a torch version stops using oneDNN above ``ONEDNN_MIN``)."""
    assert 13 * 35 * 45 < ONEDNN_MIN < 13 * 8 * 197  # just below and just above; then a larger map
    torch.manual_seed(4)
    chain = nn.Sequential(nn.Conv2d(13, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 13, 3, padding=1))
    x = torch.randn(1, 13, height, width)
    with torch.inference_mode(), threads.threads(1):
        assert torch.equal(blocked(lambda t: t + chain(t), x), x + chain(x))


def test_files_and_pixels_do_not_depend_on_the_thread_count(torch_threads, monkeypatch):
    workers = set()

    def noted(fn, items):  # ``map_processes``, noting the processes that ran each item
        for pid, result in threads.map_processes(lambda item: (os.getpid(), fn(item)), items):
            workers.add(pid)
            yield result

    monkeypatch.setattr(api, "map_processes", noted)
    image = make_photo(90, 400, seed=4)  # 200 folded rows: the post-filter runs in stripes
    files = {count: api.encode(image, quality=3.5, device="cpu", threads=count) for count in (1, 2)}
    tiled = {count: api.encode(image, quality=3.5, device="cpu", tile=128, threads=count) for count in (1, 3)}
    assert files[1] == files[2] and tiled[1] == tiled[3]
    assert (workers - {os.getpid()} != set()) == sys.platform.startswith("linux")  # tiles coded in worker processes
    for data in (files[1], tiled[1]):
        pixels = [np.asarray(api.decode(data, device="cpu", threads=count)) for count in (1, 2, 3)]
        assert all(np.array_equal(pixels[0], p) for p in pixels[1:])
    assert torch.get_num_threads() == torch_threads  # the caller's thread count comes back


def test_thread_count_below_one_is_refused(photo):
    with pytest.raises(InputError, match="at least 1"):
        api.encode(photo(16, 16), threads=0)


# --- batches in worker processes ---------------------------------------------------------------------


def test_the_default_model_codes_without_importing_compressai():
    """Every command and batch worker imports the API and its model: CompressAI alone costs about
    3 CPU s there, so only the models built on it import it, when first used."""
    code = ("import sys; from PIL import Image; from xcodec import api; from xcodec.models import zoo; "
            "api.decode(api.encode(Image.new('RGB', (16, 16)), threads=1), threads=1); "
            "assert 'compressai' not in sys.modules, 'imported for the default model'; "
            "zoo.ARCHITECTURES['hyperprior']; assert 'compressai' in sys.modules")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def stderr_lines(result) -> list[str]:
    return result.stderr.decode().strip().splitlines()


def test_batch_with_two_jobs_keeps_order_bytes_and_exit_codes(run_cli, tmp_path):
    names = []
    for i in range(4):
        names.append(f"p{i}.png")
        (tmp_path / names[-1]).write_bytes(png_bytes(make_photo(60 + 10 * i, 40, seed=i)))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    inputs = [names[0], "bad.png", *names[1:]]
    one = run_cli("encode", *inputs, "-d", "one", "-j", "1")
    two = run_cli("encode", *inputs, "-d", "two", "-j", "2")
    for result in (one, two):
        assert result.returncode == 1, result.stderr.decode()
        lines = stderr_lines(result)
        assert [line.split(" ")[0].rstrip(":") for line in lines[:-1]] == [*inputs[:1], "error", *inputs[2:]], lines
        assert lines[-1] == "4 of 5 files done, 1 failed"
    for name in names:
        xsc = name.replace(".png", ".xsc")
        assert (tmp_path / "one" / xsc).read_bytes() == (tmp_path / "two" / xsc).read_bytes()

    decoded = run_cli("decode", "two", "-d", "decoded", "-j", "2", "--threads", "1")
    assert decoded.returncode == 0, decoded.stderr.decode()
    assert stderr_lines(decoded)[-1] == "4 of 4 files done, 0 failed"
    reference = run_cli("decode", "one", "-d", "reference", "-j", "1")
    assert reference.returncode == 0
    for name in names:
        with Image.open(tmp_path / "decoded" / name) as a, Image.open(tmp_path / "reference" / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_batch_prepares_the_models_its_workers_need(monkeypatch, tmp_path):
    """The models of the jobs that the header checks leave go to the workers' server (``xcodec.preload``)."""
    from xcodec import cli

    image = make_photo(40, 30)
    (tmp_path / "lossy.xsc").write_bytes(api.encode(image, threads=1))
    (tmp_path / "exact.xsc").write_bytes(api.encode(image, lossless=True, threads=1))
    (tmp_path / "bad.xsc").write_bytes(b"not a file")
    seen = {}

    def workers(jobs, work, inputs, force, count, threads, models):
        seen["models"] = models
        return iter([cli.Outcome(error=f"done {job.source}") for job in jobs])

    monkeypatch.setattr(cli, "outcomes_in_workers", workers)
    jobs = [cli.Job(str(tmp_path / f"{name}.xsc"), str(tmp_path / f"{name}.png")) for name in ("lossy", "bad", "exact")]
    work = cli.DecodeWork("cpu", True, None, 10**6, 1)
    errors = [outcome.error for outcome in cli.batch_outcomes(jobs, work, frozenset(), False, 2, 1)]
    assert errors[0] == f"done {jobs[0].source}" and errors[2] == f"done {jobs[2].source}" and "done" not in errors[1]
    assert seen["models"] == {zoo.DEFAULT_MODEL, "lossless-3"}
    encoding = cli.EncodeWork(None, None, None, False, "cpu", False, False, 0, None, 10**6, None, 1, None)
    assert encoding.precheck(jobs[0]) == zoo.DEFAULT_MODEL
    assert dataclasses.replace(encoding, max_error=0).precheck(jobs[0]) == "lossless-3"


@pytest.mark.parametrize("model,coded", [(zoo.DEFAULT_MODEL, {"model": zoo.DEFAULT_MODEL, "device": "cpu", "threads": 1}),
                                         ("lossless-3", {"lossless": True, "threads": 1}), ("lossless-2", None)])
def test_warm_up_codes_a_small_image_once_on_one_thread(monkeypatch, model, coded):
    calls = []
    monkeypatch.setattr(api, "encode", lambda image, **kwargs: calls.append(("encode", image.size, kwargs)) or b"file")
    monkeypatch.setattr(api, "decode", lambda data, **kwargs: calls.append(("decode", data, kwargs)))
    api.warm_up(model)
    expected = [("encode", (64, 64), coded), ("decode", b"file", {"device": "cpu", "threads": 1})] if coded else []
    assert calls == expected


PRELOADED = """
import gc, json, sys, torch
from xcodec import preload
from xcodec.lossless import tables
from xcodec.models import zoo
print(json.dumps([zoo.load.cache_info().currsize, tables.load.cache_info().currsize, torch.get_num_threads(),
                  gc.get_freeze_count() > 0]))
"""


@pytest.mark.parametrize("warm_up", [True, False])
def test_the_workers_server_loads_the_models_on_one_thread(warm_up):
    """``xcodec.preload`` loads (and warms up) the named models on one thread, skips one that cannot load."""
    from xcodec.defaults import PRELOAD

    models = [zoo.DEFAULT_MODEL, "lossless-3", "lossless-2", "nosuchmodel"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), PRELOAD: json.dumps({"models": models, "warm_up": warm_up})}
    result = subprocess.run([sys.executable, "-c", PRELOADED], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert json.loads(result.stdout) == [1, 2, 1, True]


def importing_torch(parent: int) -> bool:
    """Whether a multiprocessing forkserver that process ``parent`` started has begun to load torch."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            if (int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent and b"forkserver" in (stat.parent / "cmdline").read_bytes()
                    and "libtorch" in (stat.parent / "maps").read_text()):
                return True
    return False


def interruptible_batch(tmp_path: Path, count: int, width: int, height: int, **popen) -> subprocess.Popen:
    """``xcodec encode images -d out -j 2`` of ``count`` photos in ``tmp_path``, started (``INTERRUPTIBLE``)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(count):
        (folder / f"p{i:02}.png").write_bytes(png_bytes(make_photo(width, height, seed=i)))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE, "encode", "images", "-d", "out", "-j", "2"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, **popen)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_while_the_workers_server_starts(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: the forkserver too, while it imports torch
    and loads the models (``xcodec.preload``), ends without a traceback."""
    process = interruptible_batch(tmp_path, 4, 64, 48, start_new_session=True)
    deadline = time.monotonic() + 60
    while not importing_torch(process.pid):  # in xcodec.preload (a Ctrl-C before it would stop Python's own start)
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode(), stderr.decode()


@pytest.mark.slow
def test_ctrl_c_stops_a_batch_of_workers_cleanly(tmp_path):
    process = interruptible_batch(tmp_path, 12, 320, 240)
    assert b" -> " in process.stderr.readline()  # the first file is done, the others in the workers
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode()
    written = list((tmp_path / "out").iterdir())
    assert written and all(p.suffix == ".xsc" for p in written)  # no temporary file left
    assert len(written) < 12


INTERRUPTIBLE = """
import signal, sys
from xcodec import cli
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also when the suite runs in the background
sys.argv = ["xcodec", *sys.argv[1:]]
cli.main()
"""



HANGING_WORKERS = """
import os, time
from xcodec.models import threads
install = threads._install
def hanging(fn):  # a tile worker says its process id as it starts, then never ends a tile
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: print makes two (the number, the newline), which two workers interleave
    install(lambda item: time.sleep(3600))
threads._install = hanging
""" + INTERRUPTIBLE


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tile workers are forked on Linux only")
@pytest.mark.parametrize("command", ["encode", "decode"])
def test_ctrl_c_ends_a_large_images_tile_workers(tmp_path, command):
    """Tiles in forked worker processes, each stuck in its tile: Ctrl-C ends them and the command
    (a worker pool's shutdown would wait for them), which writes nothing."""
    image = make_photo(512, 384, seed=3)  # 12 tiles of 128
    source, target = tmp_path / "big.png", "out.xsc"
    source.write_bytes(png_bytes(image))
    if command == "decode":
        source, target = tmp_path / "big.xsc", "out.png"
        source.write_bytes(api.encode(image, quality=4, tile=128, device="cpu"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    tile = ["--tile", "128"] if command == "encode" else []
    process = subprocess.Popen([sys.executable, "-c", HANGING_WORKERS, command, source.name, "-o", target, *tile, "--threads", "2"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers = [int(process.stdout.readline()) for _ in range(2)]
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        for pid in filter(running, workers):
            os.kill(pid, signal.SIGKILL)
    assert process.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"big.png", source.name})  # nothing written
    time.sleep(1)  # the workers' parent has ended: they are orphans, reaped by init
    assert not any(map(running, workers))
