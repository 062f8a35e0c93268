"""The command line: files, pipes, exit codes, overwriting and messages.

The commands run in this process (Typer's ``CliRunner``, the ``run_cli`` fixture), so the model
loads once; pipes and Ctrl-C need a real process and run as subprocesses (marked slow).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
import typer
from PIL import Image

from xcodec import api, cli, container, files
from xcodec.errors import OutputError
from xcodec.models import zoo

from tests.conftest import REPO_ROOT, make_photo, png_bytes

MAGIC = b"\x89XSC"


def words(text: str) -> str:
    """The words of a message, also of one that Typer drew in a box over several lines."""
    return " ".join(text.replace("│", " ").split())


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.decode("utf-8", "replace").splitlines() if line.strip()]


def assert_error(result, code: int = 1) -> str:
    """A clean failure: the exit code, no traceback, nothing on stdout. Returns the message."""
    text = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code, text
    assert "Traceback" not in text and "Error:" not in text.replace("error:", ""), text
    assert result.stdout == b""
    lines = stderr_lines(result)
    assert lines and lines[0].startswith("error:"), text
    return " ".join(lines)


def assert_one_line(result) -> None:
    """The documented one-line message; long ones hit a known wrapping bug (see the test below)."""
    assert len(stderr_lines(result)) == 1, stderr_lines(result)


def no_leftovers(directory) -> None:
    leftovers = [p.name for p in directory.iterdir() if p.name.endswith(".part")]
    assert leftovers == [], leftovers


@pytest.fixture(scope="module")
def photo_png() -> bytes:
    return png_bytes(make_photo(97, 61, seed=7))


@pytest.fixture(scope="module")
def photo_xsc(photo_png) -> bytes:
    return api.encode(Image.open(io.BytesIO(photo_png)), quality=4)


def test_encode_info_decode(run_cli, tmp_path, save_png):
    photo_png = save_png(make_photo(97, 61, seed=7), "photo.png").read_bytes()

    enc = run_cli("encode", "photo.png", "-q", "3.5")  # default output: photo.xsc
    assert enc.returncode == 0, enc.stderr.decode()
    assert enc.stdout == b""  # data goes to files; messages go to stderr
    assert b"photo.xsc" in enc.stderr
    data = (tmp_path / "photo.xsc").read_bytes()
    assert data.startswith(MAGIC)
    assert container.unpack(data).header.quality == 3.5
    if not torch.cuda.is_available():  # the CLI picks the GPU when there is one
        assert data == api.encode(Image.open(io.BytesIO(photo_png)), quality=3.5, device="cpu")

    info = run_cli("info", "photo.xsc", "--json")
    assert info.returncode == 0, info.stderr.decode()
    fields = json.loads(info.stdout)
    manifest = zoo.load(zoo.DEFAULT_MODEL)[1]
    assert fields["model"] == zoo.DEFAULT_MODEL
    assert fields["weights"] == manifest.model_hash.hex()
    assert fields["quality"] == 3.5
    assert (fields["width"], fields["height"], fields["channels"], fields["bit_depth"]) == (97, 61, 3, 8)
    stride = zoo.load(zoo.DEFAULT_MODEL)[0].stride
    assert (fields["pad_bottom"], fields["pad_right"]) == (-61 % stride, -97 % stride)
    assert fields["bytes"] == len(data)
    assert fields["bpp"] == pytest.approx(8 * len(data) / (97 * 61), abs=1e-5)
    assert [s["kind"] for s in fields["streams"]] == [kind.name.lower() for kind, _ in container.unpack(data).streams]
    assert sum(s["bytes"] for s in fields["streams"]) < len(data)

    dec = run_cli("decode", "photo.xsc", "-o", "out.bmp")
    assert dec.returncode == 0, dec.stderr.decode()
    assert dec.stdout == b""
    with Image.open(tmp_path / "out.bmp") as out:
        assert (out.format, out.size, out.mode) == ("BMP", (97, 61), "RGB")
        if not torch.cuda.is_available():
            assert out.tobytes() == api.decode(data, device="cpu").tobytes()
    no_leftovers(tmp_path)


@pytest.mark.slow
def test_pipes(run_cli_process, tmp_path, photo_png):
    """Real pipes: stdin and stdout of a process hold the image and the file, messages go to stderr."""
    run_cli = run_cli_process
    enc = run_cli("encode", "-", "-o", "-", "-q", "2", input=photo_png)
    assert enc.returncode == 0, enc.stderr.decode()
    assert enc.stdout.startswith(MAGIC)
    assert MAGIC not in enc.stderr and enc.stderr.strip()  # the summary is on stderr, not in the data
    assert container.unpack(enc.stdout).header.width == 97  # stdout holds exactly one valid file

    dec = run_cli("decode", "-", "-o", "out.png", input=enc.stdout)
    assert dec.returncode == 0, dec.stderr.decode()
    assert dec.stdout == b""
    with Image.open(tmp_path / "out.png") as out:
        assert (out.format, out.size) == ("PNG", (97, 61))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.slow
def test_the_time_shown_leaves_out_the_wait_for_a_pipes_writer(tmp_path, photo_xsc):
    """``producer | xcodec decode -``: the seconds on the summary line are the decode's, not the
    time the producer took to write (here 3 s before the first byte)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    dec = subprocess.Popen([sys.executable, "-m", "xcodec.cli", "decode", "-", "-o", "out.png"], cwd=tmp_path, env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3)
    _, stderr = dec.communicate(photo_xsc, timeout=300)
    assert dec.returncode == 0, stderr.decode()
    summary = re.fullmatch(r"- -> out\.png: 97x61 RGB, (\d+\.\d+) s", stderr.decode().strip())
    assert summary is not None, stderr.decode()
    assert float(summary.group(1)) < 2.5
    if not torch.cuda.is_available():
        with Image.open(tmp_path / "out.png") as out:
            assert out.tobytes() == api.decode(photo_xsc, device="cpu").tobytes()


def test_corrupted_file_fails_cleanly(run_cli, tmp_path, photo_xsc):
    flipped = bytearray(photo_xsc)
    flipped[len(flipped) - 10] ^= 0x04
    (tmp_path / "bad.xsc").write_bytes(bytes(flipped))
    result = run_cli("decode", "bad.xsc", "-o", "out.png")
    message = assert_error(result)
    assert len(stderr_lines(result)) == 1, message
    assert "corrupt" in message or "checksum" in message
    assert not (tmp_path / "out.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xsc"]  # no partial output, no *.part


@pytest.mark.parametrize("case", ["not-an-image", "missing"])
def test_unreadable_input(run_cli, tmp_path, case):
    if case == "not-an-image":
        (tmp_path / "notes.png").write_bytes(b"this is not an image\n" * 10)
    result = run_cli("encode", "notes.png", "-o", "notes.xsc")
    message = assert_error(result)
    assert "notes.png" in message or "image" in message
    assert not (tmp_path / "notes.xsc").exists()
    no_leftovers(tmp_path)
    assert_one_line(result)


USAGE_ERRORS = {
    "unknown-option": ["encode", "photo.png", "--bogus"],
    "quality-9": ["encode", "photo.png", "-q", "9"],
    "quality-0.5": ["encode", "photo.png", "-q", "0.5"],
    "quality-not-a-number": ["encode", "photo.png", "-q", "three"],
    "quality-and-bpp": ["encode", "photo.png", "-q", "3", "--bpp", "0.5"],
    "strict-without-bpp": ["encode", "photo.png", "--strict"],
    "tile-100": ["encode", "photo.png", "--tile", "100"],
    "device-foo": ["encode", "photo.png", "--device", "foo"],
    "model-is-a-path": ["encode", "photo.png", "--model", "../weights/transformer"],
    "max-pixels-negative": ["encode", "photo.png", "--max-pixels", "-5"],
    "output-is-a-folder": ["encode", "photo.png", "-o", "folder", "--force"],
    "decode-to-gif": ["decode", "photo.xsc", "-o", "x.gif"],
    "unknown-command": ["frobnicate"],
}


@pytest.mark.parametrize("args", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_2(run_cli, tmp_path, photo_png, photo_xsc, args):
    (tmp_path / "photo.png").write_bytes(photo_png)
    (tmp_path / "photo.xsc").write_bytes(photo_xsc)
    (tmp_path / "folder").mkdir()
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr.decode()
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr
    assert result.stderr.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "photo.png", "photo.xsc"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_overwriting(run_cli, tmp_path, photo_png):
    (tmp_path / "photo.png").write_bytes(photo_png)
    (tmp_path / "photo.xsc").write_bytes(b"keep me")

    refused = run_cli("encode", "photo.png", "-o", "photo.xsc")
    message = assert_error(refused)
    assert "--force" in message
    assert len(stderr_lines(refused)) == 1, message
    assert (tmp_path / "photo.xsc").read_bytes() == b"keep me"
    no_leftovers(tmp_path)

    forced = run_cli("encode", "photo.png", "-o", "photo.xsc", "--force")
    assert forced.returncode == 0, forced.stderr.decode()
    assert (tmp_path / "photo.xsc").read_bytes().startswith(MAGIC)
    no_leftovers(tmp_path)

    onto_input = run_cli("encode", "photo.png", "-o", "./photo.png", "--force")
    message = assert_error(onto_input)
    assert "input" in message
    assert (tmp_path / "photo.png").read_bytes() == photo_png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "photo.xsc"]


def test_decode_to_tiff(run_cli, tmp_path, photo_xsc):
    (tmp_path / "photo.xsc").write_bytes(photo_xsc)
    result = run_cli("decode", "photo.xsc", "-o", "out.tif")
    assert result.returncode == 0, result.stderr.decode()
    with Image.open(tmp_path / "out.tif") as out:
        assert (out.format, out.size) == ("TIFF", (97, 61))


def test_decode_to_an_unknown_extension_is_refused(run_cli, tmp_path, photo_xsc):
    (tmp_path / "photo.xsc").write_bytes(photo_xsc)
    result = run_cli("decode", "photo.xsc", "-o", "out.xyz")
    assert result.returncode == 2, result.stderr.decode()
    assert ".xyz" in result.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.xsc"]


# --- the message helper, in process ---------------------------------------------------------------


def test_long_error_message_stays_on_one_line(capsys):
    # Long enough to wrap on any terminal as well as in a pipe (rich uses 80 columns there).
    folder = "/".join(["a-rather-long-folder-name"] * 12)
    message = f"cannot read /data/{folder}/photo.png: No such file or directory"
    assert isinstance(cli.fail(message), typer.Exit)
    assert capsys.readouterr().err.strip() == f"error: {message}"


@pytest.mark.parametrize("name", ["no[/]such.png", "[red]photo.png"])
def test_file_names_are_not_markup(capsys, name):
    assert isinstance(cli.fail(f"cannot read {name}: No such file or directory"), typer.Exit)
    assert name in capsys.readouterr().err


def test_unwritable_output_is_a_clean_error(tmp_path):
    target = tmp_path / "no-such-folder" / "out.png"
    with pytest.raises(OutputError, match="cannot write") as info:
        cli.write_output(b"data", str(target), force=False)
    assert "\n" not in str(info.value)
    assert not target.parent.exists()


def test_write_output_is_atomic_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    cli.write_output(b"first", str(target), force=False)
    assert target.read_bytes() == b"first"

    def broken_replace(src, dst):
        raise KeyboardInterrupt  # interrupted between writing the temporary file and the rename

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        cli.write_output(b"second", str(target), force=True)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


# --- batch mode -----------------------------------------------------------------------------------


def test_batch_encode_goes_past_bad_files(run_cli, tmp_path, photo_png):
    (tmp_path / "a.png").write_bytes(photo_png)
    (tmp_path / "b.png").write_bytes(png_bytes(make_photo(40, 30, seed=2)))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.xsc").write_bytes(b"keep me")  # exists: refused without --force

    result = run_cli("encode", "a.png", "bad.png", "missing.png", "b.png", "--out-dir", "out")
    assert result.returncode == 1, result.stderr.decode()
    assert result.stdout == b""
    lines = stderr_lines(result)
    errors = [line for line in lines if line.startswith("error:")]
    assert [e.split(":")[1].strip() for e in errors] == ["bad.png", "missing.png", "b.png"], lines
    assert "--force" in errors[2]
    assert lines[-1] == "1 of 4 files done, 3 failed"
    assert container.unpack((tmp_path / "out" / "a.xsc").read_bytes()).header.width == 97
    assert (tmp_path / "out" / "b.xsc").read_bytes() == b"keep me"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.xsc", "b.xsc"]


def test_batch_folders_round_trip(run_cli, tmp_path, photo_png, photo_xsc):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(photo_png)
    (images / "c.png").write_bytes(png_bytes(make_photo(30, 20, seed=3)))
    (images / "notes.txt").write_text("not an image, and not picked up")
    enc = run_cli("encode", "images", "-d", "coded", "-q", "2")
    assert enc.returncode == 0, enc.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "coded").iterdir()) == ["a.xsc", "c.xsc"]
    assert stderr_lines(enc)[-1] == "2 of 2 files done, 0 failed"

    damaged = bytearray(photo_xsc)
    damaged[-10] ^= 1
    (tmp_path / "coded" / "b.xsc").write_bytes(bytes(damaged))
    dec = run_cli("decode", "coded", "-d", "decoded")
    assert dec.returncode == 1, dec.stderr.decode()
    assert [line for line in stderr_lines(dec) if line.startswith("error:")] == [
        f"error: {tmp_path / 'coded' / 'b.xsc'}: corrupted .xsc file (checksum mismatch)".replace(str(tmp_path) + "/", "")
    ]
    assert sorted(p.name for p in (tmp_path / "decoded").iterdir()) == ["a.png", "c.png"]
    with Image.open(tmp_path / "decoded" / "c.png") as out:
        assert out.size == (30, 20)


@pytest.mark.parametrize("args,message", [
    (["encode", "a.png", "b.png", "-o", "x.xsc"], "single input"),
    (["encode", "a.png", "sub/a.png", "-d", "out"], "both be written"),
    (["encode", "a.png", "-", "-d", "out"], "stdin"),
    (["encode", "empty"], "no input files"),
], ids=["output-with-several-inputs", "same-output-twice", "stdin-in-a-batch", "empty-folder"])
def test_batch_usage_errors(run_cli, tmp_path, photo_png, args, message):
    (tmp_path / "sub").mkdir()
    (tmp_path / "empty").mkdir()
    for path in ("a.png", "b.png", "sub/a.png"):
        (tmp_path / path).write_bytes(photo_png)
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr.decode()
    assert message in " ".join(result.stderr.decode().split()), result.stderr.decode()
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.xsc").exists()


INTERRUPTED_WRITE = """
import os, signal, sys, time
from xcodec import cli
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also when the suite runs in the background
replace = os.replace
def slow_replace(src, dst):  # a slow disk: the temporary file stays until the rename
    print("writing", flush=True)
    time.sleep(60)
    replace(src, dst)
os.replace = slow_replace
sys.argv = ["xcodec", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.slow
def test_ctrl_c_leaves_no_partial_file(tmp_path, photo_png):
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    (tmp_path / "a.png").write_bytes(photo_png)
    (tmp_path / "a.xsc").write_bytes(b"keep me")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED_WRITE, "encode", "a.png", "--force"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"writing\n"  # the .part file is complete, the rename pending
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.xsc"]
    assert (tmp_path / "a.xsc").read_bytes() == b"keep me"


ENDING = """
import atexit, sys, threading, time
from xcodec.cli import end
atexit.register(lambda: sys.stdout.write("handler ran;"))
sys.stdout.write("buffered;")  # not flushed yet: end flushes it
if sys.argv[1] == "thread":  # a thread Python waits for at its exit: end leaves the exit to Python
    threading.Thread(target=lambda: (time.sleep(0.3), sys.stdout.write("thread done;"))).start()
end(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])
"""


@pytest.mark.parametrize("case,code,returncode,out", [
    ("plain", "0", 0, "buffered;handler ran;"), ("plain", "3", 3, "buffered;handler ran;"),
    ("thread", "0", 0, "buffered;thread done;handler ran;"), ("plain", "no number", 1, "buffered;handler ran;"),
], ids=["0", "3", "a-thread-running", "a-message"])
def test_end_exits_as_python_would(tmp_path, case, code, returncode, out):
    """``end`` skips only the teardown: exit handlers, flushed output, the code, threads waited for."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    result = subprocess.run([sys.executable, "-c", ENDING, case, code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    assert (result.returncode, result.stdout) == (returncode, out), result.stderr
    assert result.stderr == ("no number\n" if code == "no number" else "")


def test_a_whole_command_writes_its_outputs_whole(run_cli_process, tmp_path, photo_png):
    """``main`` ends the process at once (``end``): what it wrote to a file or to stdout is all there."""
    (tmp_path / "photo.png").write_bytes(photo_png)
    to_file = run_cli_process("encode", "photo.png", "--quiet")
    to_stdout = run_cli_process("encode", "photo.png", "-o", "-")
    assert to_file.returncode == to_stdout.returncode == 0, to_file.stderr + to_stdout.stderr
    assert to_stdout.stdout == (tmp_path / "photo.xsc").read_bytes() and len(to_stdout.stdout) > 100
    decoded = run_cli_process("decode", "-", "-o", "-", input=to_stdout.stdout)
    assert decoded.returncode == 0 and Image.open(io.BytesIO(decoded.stdout)).size == Image.open(io.BytesIO(photo_png)).size
    refused = run_cli_process("decode", "photo.png")
    assert refused.returncode == 1 and b"error:" in refused.stderr


# --- outputs: modes, folders -----------------------------------------------------------------------


@pytest.fixture
def umask():
    """Set the process's umask for a test: ``umask(0o077)``; the old one comes back after it."""
    import os

    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def test_outputs_get_the_umasks_mode_and_keep_a_replaced_files(run_cli, tmp_path, photo_png, umask):
    (tmp_path / "photo.png").write_bytes(photo_png)
    assert run_cli("encode", "photo.png", "-o", "a.xsc").returncode == 0
    assert (tmp_path / "a.xsc").stat().st_mode & 0o777 == 0o644  # as open() gives under umask 022
    umask(0o077)
    assert run_cli("decode", "a.xsc", "-o", "a.png").returncode == 0
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o600
    (tmp_path / "a.xsc").chmod(0o640)
    assert run_cli("encode", "photo.png", "-o", "a.xsc", "-q", "2", "--force").returncode == 0
    assert (tmp_path / "a.xsc").stat().st_mode & 0o777 == 0o640  # --force keeps the old file's mode


def test_an_out_dir_that_cannot_be_created_is_a_clean_error(run_cli, tmp_path, photo_png):
    (tmp_path / "photo.png").write_bytes(photo_png)
    (tmp_path / "file").write_text("a file, not a folder")
    result = run_cli("encode", "photo.png", "--out-dir", "file/out")
    assert "cannot create the folder file/out" in assert_error(result)
    assert_one_line(result)


# --- --bpp out of reach, warnings ------------------------------------------------------------------


def test_unreachable_bpp_warns_or_fails_with_strict(run_cli, tmp_path):
    (tmp_path / "tiny.png").write_bytes(png_bytes(make_photo(24, 16, seed=5)))  # small: the search is quick
    result = run_cli("encode", "tiny.png", "--bpp", "0.01")
    assert result.returncode == 0, result.stderr.decode()
    warning, done = stderr_lines(result)
    assert warning.startswith("warning: tiny.png: 0.01 bpp is out of reach: the smallest file, at quality 1, has ")
    assert done.startswith("tiny.png -> tiny.xsc:") and "quality 1," in done
    strict = run_cli("encode", "tiny.png", "--bpp", "0.01", "--strict", "-o", "strict.xsc")
    assert "0.01 bpp is out of reach" in assert_error(strict)
    assert not (tmp_path / "strict.xsc").exists()


def rgb48_png(width: int, height: int) -> bytes:
    """A 16-bit RGB PNG (Pillow writes none): a horizontal ramp."""
    import struct
    import zlib

    import numpy as np

    row = np.repeat(np.linspace(0, 65535, width).astype(">u2")[:, None], 3, axis=1).tobytes()
    raw = b"".join(b"\0" + row for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in ((b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)),
                           (b"IDAT", zlib.compress(raw)), (b"IEND", b"")))


@pytest.mark.parametrize("mode", ["I;16", "RGB;16"])
def test_warnings_are_one_plain_line(run_cli, tmp_path, mode):
    import numpy as np

    if mode == "I;16":
        Image.fromarray(np.asarray(make_photo(40, 30).convert("L")).astype(np.uint16) * 257).save(tmp_path / "deep.png")
    else:
        (tmp_path / "deep.png").write_bytes(rgb48_png(40, 30))
    result = run_cli("encode", "deep.png")
    assert result.returncode == 0, result.stderr.decode()
    assert stderr_lines(result)[0] == f"warning: deep.png: {mode} input has more than 8 bits per sample; coding it at 8 bits"
    assert len(stderr_lines(result)) == 2 and "UserWarning" not in result.stderr.decode()


def test_a_plain_encode_and_decode_warn_of_nothing(run_cli_process, tmp_path):
    """A fresh process (the dependencies imported inside the command) shows no warning of theirs."""
    make_photo(40, 30).save(tmp_path / "photo.png")
    for args in (("encode", "photo.png"), ("decode", "photo.xsc", "-o", "back.png")):
        result = run_cli_process(*args)
        assert result.returncode == 0 and "warning" not in result.stderr.decode(), result.stderr.decode()


# --- refusals answer at once, without torch (fresh processes) --------------------------------------

PROBE = """
import atexit, sys
sys.argv = ["xcodec", *sys.argv[1:]]
atexit.register(lambda: print("torch loaded" if "torch" in sys.modules else "no torch", file=sys.stderr))  # main ends the process
from xcodec.cli import main
main()
"""


def huge_png(width: int, height: int) -> bytes:
    """A PNG header that claims ``width`` x ``height`` pixels, and no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def claiming(data: bytes, width: int, height: int) -> bytes:
    """A real one-tile file whose header claims another size, its streams repeated for every tile."""
    import dataclasses

    bitstream = container.unpack(data)
    header = dataclasses.replace(bitstream.header, width=width, height=height, tile=1024,
                                 pad_bottom=-height % 64, pad_right=-width % 64)
    coded = [s for s in bitstream.streams if s[0] == container.StreamKind.CODED]
    other = [s for s in bitstream.streams if s[0] != container.StreamKind.CODED]
    rows, cols = header.tile_grid
    return container.pack(dataclasses.replace(bitstream, header=header, streams=coded * (rows * cols) + other))


REFUSALS = {  # name: (arguments, exit code, text in the message)
    "help": (["--help"], 0, "Usage"),
    "info": (["info", "photo.xsc"], 0, "bpp"),
    "output-exists": (["encode", "photo.png"], 1, "exists"),
    "quality-and-bpp": (["encode", "photo.png", "-q", "2", "--bpp", "1"], 2, "either --quality or --bpp"),
    "tile-100": (["encode", "photo.png", "--tile", "100"], 2, "multiple of 64"),
    "device-foo": (["encode", "photo.png", "--device", "foo"], 2, "auto, cpu, cuda"),
    "decode-to-gif": (["decode", "photo.xsc", "-o", "x.gif"], 2, ".gif"),
    "image-too-large": (["encode", "huge.png"], 1, "100000x100000 is 10,000,000,000 pixels, above the limit"),
    "file-too-large": (["decode", "claims.xsc"], 1, "10000x8000 is 80,000,000 pixels, above the limit"),
    "above-pillows-limit": (["encode", "big.png", "--max-pixels", "300000000"], 1, "cannot read the input image"),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals_are_quick_and_torch_free(tmp_path, photo_png, photo_xsc, case):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO_ROOT

    args, code, text = case
    (tmp_path / "photo.png").write_bytes(photo_png)
    (tmp_path / "photo.xsc").write_bytes(photo_xsc)
    (tmp_path / "huge.png").write_bytes(huge_png(100_000, 100_000))
    (tmp_path / "claims.xsc").write_bytes(claiming(photo_xsc, 10000, 8000))
    (tmp_path / "big.png").write_bytes(huge_png(20_000, 10_000))  # 200 Mpixel: Pillow alone would refuse it
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode == code, result.stderr
    assert text in words(result.stdout + result.stderr)
    assert result.stderr.splitlines()[-1] == "no torch"
    assert "Traceback" not in result.stderr and "decompression bomb" not in result.stderr.lower()
    assert elapsed < 5, f"{elapsed:.1f} s"  # about 0.3 s on an idle machine; torch alone takes several


@pytest.mark.parametrize("stream", ["stdin", "stdout"])
def test_binary_data_and_a_terminal(tmp_path, photo_png, stream):
    """`-o -` with stdout on a terminal, or `-` with stdin on one, is refused with a hint."""
    import os
    import pty
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    (tmp_path / "photo.png").write_bytes(photo_png)
    master, terminal = pty.openpty()
    args = ["encode", "-", "-o", "out.xsc"] if stream == "stdin" else ["encode", "photo.png", "-o", "-"]
    try:
        result = subprocess.run([sys.executable, "-m", "xcodec.cli", *args], cwd=tmp_path, stderr=subprocess.PIPE,
                                timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                                **({"stdin": terminal} if stream == "stdin" else {"stdout": terminal}))
    finally:
        os.close(terminal)
        os.close(master)
    message = words(result.stderr.decode())
    assert result.returncode == 2, message
    assert "which is a terminal" in message and ("< FILE" in message or "> FILE" in message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]
