"""The built wheel is the whole tool: installed outside the checkout, it encodes and decodes.

Slow (it builds the wheel and starts Python three times); `make test` and .ci/run run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, make_photo

pytestmark = pytest.mark.slow

ROUND_TRIP = """
import io, sys
from PIL import Image
import xcodec
from xcodec import api
from xcodec.models import zoo
assert xcodec.__file__.startswith(sys.argv[1]), xcodec.__file__  # the installed copy, not the checkout
assert str(zoo.WEIGHTS_DIR).startswith(sys.argv[1]), zoo.WEIGHTS_DIR
image = Image.open("photo.png")
data = api.encode(image, quality=3, device="cpu")
assert api.decode(data, device="cpu").size == image.size
print(len(data))
"""


def sources() -> list[Path]:
    """The files of the working tree that git tracks or would track (not build outputs)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    return [Path(name) for name in listed if name and (REPO_ROOT / name).is_file()]


def test_wheel_installs_and_works_outside_the_checkout(tmp_path):
    tree = tmp_path / "src"  # a clean copy: a build in the checkout would reuse stale build/ files
    files = sources()
    for name in files:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, tree / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", tree], check=True)
    (wheel,) = (tmp_path / "dist").glob("xcodec-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    package = {str(name) for name in files if name.parts[0] == "xcodec"}  # modules and the sample photo
    assert package <= names, sorted(package - names)
    weights = {name.name for name in files if name.parts[0] == "weights"}
    assert {f"xcodec/weights/{name}" for name in weights} <= names
    assert {"transformer.safetensors", "hyperprior.safetensors", "lpips-alex.safetensors"} <= weights
    shipped = sum((REPO_ROOT / "weights" / name).stat().st_size for name in weights)
    assert wheel.stat().st_size < shipped + 2**20, f"{wheel.stat().st_size:,} bytes"  # the weights, little else

    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    make_photo(80, 48).save(work / "photo.png")
    env = {k: v for k, v in os.environ.items() if k not in ("XCODEC_WEIGHTS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    python = [sys.executable, "-P"]  # -P: neither the current folder nor the checkout on sys.path
    result = subprocess.run([*python, "-c", ROUND_TRIP, str(target)], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout) > 0

    xcodec = [sys.executable, "-P", str(target / "bin" / "xcodec")]  # the console script the wheel installs
    for args in (["encode", "photo.png", "-q", "2", "--device", "cpu"], ["decode", "photo.xsc", "-o", "back.png"]):
        result = subprocess.run([*xcodec, *args], cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "back.png").stat().st_size > 0
