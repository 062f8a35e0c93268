"""Files: which ones are images, and writing one atomically.

Torch-free, so that the command line can use it before deciding whether any work is needed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def is_image(path: Path) -> bool:
    """Whether the name says a format Pillow can read (with the plugins registered so far)."""
    from PIL import Image

    return Image.registered_extensions().get(path.suffix.lower()) in Image.OPEN


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder``, recursively, sorted; ``[folder]`` for a single file."""
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function that writes to a binary file) to ``path`` atomically.

    The data goes to a temporary file beside ``path``, which then replaces it: readers see the old
    file or the new one, never a part. Whatever interrupts the write (an error, Ctrl-C), the
    temporary file is removed and an existing ``path`` is left as it was. The new file gets the
    mode a plain ``open()`` would give it (0o666 less the umask), or the mode of the file it
    replaces (the temporary file's own 0o600 would otherwise stay).
    """
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
