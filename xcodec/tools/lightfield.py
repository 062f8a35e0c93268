"""Light fields: read the common layouts, cut sub-aperture views into patches for ``xcodec bench``.

    python -m xcodec.tools.lightfield LIGHT_FIELDS PATCHES --patch 256 --view-step 4 [--grid 15x15]
    xcodec bench PATCHES

A light field here is an array ``(U, V, H, W, 3)`` of uint8: U x V sub-aperture views (U rows of
the camera grid, top to bottom; V columns, left to right), each H x W RGB.

Layouts read:

- **A folder of views**, one image per view, named by angular index. HCI 4D benchmark style
  ``input_Cam000.png .. input_Cam080.png`` (index = row * V + column; a square grid unless
  ``grid`` says otherwise), or two indices in the name, ``..._RR_CC.png`` / ``...RR-CC...`` (Stanford
  Lytro / Gantry style ``out_RR_CC_...``): the first two numbers joined by ``_`` or ``-`` are row
  and column. Other files in
  the folder (depth maps, configs) are ignored.
- **A grid image**, one big image holding U x V views: ``tiles`` (each view a contiguous H x W
  block, view (u, v) at rows u*H.., columns v*W..; the usual "all views" mosaic of decoded EPFL /
  Lytro sets) or ``interleaved`` (lenslet order: pixel (y, x) of view (u, v) at (y*U + u, x*V + v)).
  The angular size must be given (``9x9``, ``15x15:interleaved``); it is not guessed.

:func:`extract_patches` writes square patches of the chosen views as PNG files, which the
benchmark then treats as an ordinary folder of images. :func:`synthetic` renders a small light
field (a textured scene with two depth planes, so views differ by parallax) for tests and demos.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import is_image, list_images, write_atomic

HCI_VIEW = re.compile(r"^input_Cam(\d+)$", re.IGNORECASE)
TWO_INDICES = re.compile(r"(\d+)[_\-](\d+)")
ONE_INDEX = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class Grid:
    rows: int
    cols: int
    layout: str = "tiles"  # or "interleaved"

    @classmethod
    def parse(cls, text: str) -> "Grid":
        """``"9x9"``, ``"15x15:interleaved"`` or ``"8x8:tiles"``."""
        size, _, layout = text.partition(":")
        try:
            rows, cols = (int(n) for n in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"bad light-field grid {text!r} (expected e.g. 9x9 or 15x15:interleaved)") from None
        layout = layout or "tiles"
        if layout not in ("tiles", "interleaved") or rows < 1 or cols < 1:
            raise ValueError(f"bad light-field grid {text!r} (layout is tiles or interleaved)")
        return cls(rows, cols, layout)


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


def view_files(folder: Path, grid: Grid | None = None) -> dict[tuple[int, int], Path] | None:
    """Map (row, column) -> view file for a folder of views, or None if the folder is not one."""
    files = _images(folder)
    hci = [(int(m.group(1)), p) for p in files if (m := HCI_VIEW.match(p.stem))]
    if hci:
        indexed = hci
    else:
        pairs = [(m, p) for p in files if (m := TWO_INDICES.search(p.stem))]
        if len(pairs) >= 4 and len(pairs) == len(files):
            views = {(int(m.group(1)), int(m.group(2))): p for m, p in pairs}
            rows0 = min(r for r, _ in views)
            cols0 = min(c for _, c in views)
            views = {(r - rows0, c - cols0): p for (r, c), p in views.items()}
            nr, nc = max(r for r, _ in views) + 1, max(c for _, c in views) + 1
            return views if len(views) == nr * nc else None
        indexed = [(int(m.group(1)), p) for p in files if (m := ONE_INDEX.search(p.stem))]
        if len(indexed) < 4 or len(indexed) != len(files):
            return None
    indexed.sort()
    n = len(indexed)
    if grid is not None:
        rows, cols = grid.rows, grid.cols
    else:
        rows = cols = int(round(n**0.5))
    if rows * cols != n:
        raise ValueError(f"{folder}: {n} views do not form a {rows}x{cols} grid (give the grid, e.g. --grid 9x17)")
    first = indexed[0][0]
    if [i for i, _ in indexed] != list(range(first, first + n)):
        raise ValueError(f"{folder}: view indices are not consecutive")
    return {divmod(i - first, cols): p for i, p in indexed}


def read_views(folder: Path, grid: Grid | None = None) -> np.ndarray:
    views = view_files(folder, grid)
    if views is None:
        raise ValueError(f"{folder} is not a folder of light-field views")
    rows, cols = max(r for r, _ in views) + 1, max(c for _, c in views) + 1
    first = _rgb(views[0, 0])
    lf = np.empty((rows, cols, *first.shape), np.uint8)
    for (r, c), path in views.items():
        view = first if (r, c) == (0, 0) else _rgb(path)
        if view.shape != first.shape:
            raise ValueError(f"{path}: view size {view.shape[1]}x{view.shape[0]} differs from the others")
        lf[r, c] = view
    return lf


def split_grid(image: np.ndarray, grid: Grid) -> np.ndarray:
    H, W = image.shape[:2]
    if H % grid.rows or W % grid.cols:
        raise ValueError(f"a {W}x{H} image does not split into {grid.rows}x{grid.cols} views")
    h, w = H // grid.rows, W // grid.cols
    if grid.layout == "tiles":
        return np.ascontiguousarray(image.reshape(grid.rows, h, grid.cols, w, 3).transpose(0, 2, 1, 3, 4))
    return np.ascontiguousarray(image.reshape(h, grid.rows, w, grid.cols, 3).transpose(1, 3, 0, 2, 4))


def join_grid(lf: np.ndarray, layout: str = "tiles") -> np.ndarray:
    U, V, h, w, c = lf.shape
    if layout == "tiles":
        return np.ascontiguousarray(lf.transpose(0, 2, 1, 3, 4).reshape(U * h, V * w, c))
    return np.ascontiguousarray(lf.transpose(2, 0, 3, 1, 4).reshape(h * U, w * V, c))


def read_grid(path: Path, grid: Grid) -> np.ndarray:
    return split_grid(_rgb(path), grid)


def find_light_fields(root: Path, grid: Grid | None = None) -> list[tuple[str, Path, str]]:
    """(name, path, kind) for every light field under ``root``; kind is "views" or "grid".

    With a grid given, every image file under ``root`` is a grid image. Otherwise every folder
    (``root`` itself or below) that holds a set of indexed views is one light field.
    """
    found = []
    if root.is_file():
        if grid is None:
            raise ValueError(f"{root} is a single image: give its grid (e.g. --grid 15x15)")
        return [(root.stem, root, "grid")]
    if grid is not None and not any(HCI_VIEW.match(p.stem) for p in _images(root)):
        return [(str(p.relative_to(root).with_suffix("")), p, "grid") for p in list_images(root)]
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if view_files(folder, grid) is not None:
            name = folder.name if folder == root else str(folder.relative_to(root))
            found.append((name, folder, "views"))
    return found


def read(path: Path, kind: str, grid: Grid | None = None) -> np.ndarray:
    return read_views(path, grid) if kind == "views" else read_grid(path, grid)


def select_views(rows: int, cols: int, step: int = 1) -> list[tuple[int, int]]:
    """Every ``step``-th view in both directions, always including the central one."""
    cr, cc = rows // 2, cols // 2
    return [(r, c) for r in range(rows) for c in range(cols) if (r - cr) % step == 0 and (c - cc) % step == 0]


def patch_origins(h: int, w: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping size x size patches, the whole grid centred in the view."""
    ny, nx = h // size, w // size
    oy, ox = (h - ny * size) // 2, (w - nx * size) // 2
    return [(oy + i * size, ox + j * size) for i in range(ny) for j in range(nx)]


def extract_patches(root: Path, out: Path, patch: int = 256, view_step: int = 1, grid: Grid | None = None,
                    limit: int | None = None) -> list[Path]:
    """Write the patches of the selected views of every light field under ``root`` as PNG files.

    Names: ``LF__uRR_vCC__yY_xX.png``. Files that exist with the same name are kept (re-runs are cheap).
    """
    light_fields = find_light_fields(root, grid)
    if not light_fields:
        raise FileNotFoundError(f"no light fields under {root} (see docs/benchmarks.md for the layouts)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path, kind in light_fields:
        lf = read(path, kind, grid)
        U, V, h, w, _ = lf.shape
        origins = patch_origins(h, w, patch)
        if not origins:
            raise ValueError(f"{name}: views of {w}x{h} are smaller than the {patch}px patches")
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
        for r, c in select_views(U, V, view_step):
            for y, x in origins:
                target = out / f"{safe}__u{r:02d}_v{c:02d}__y{y}_x{x}.png"
                if not target.exists():
                    view = Image.fromarray(lf[r, c, y : y + patch, x : x + patch])
                    write_atomic(target, lambda f: view.save(f, "PNG"))
                written.append(target)
                if limit is not None and len(written) >= limit:
                    return written
    return written


def synthetic(rows: int = 5, cols: int = 5, height: int = 96, width: int = 128, disparity: int = 2) -> np.ndarray:
    """A small light field: a textured background plane and a textured square in front of it.

    The background is at zero disparity (identical in all views); the square moves by ``disparity``
    pixels per view step (right for each column, down for each row), so neighbouring views differ
    by parallax and occlusion exactly as a rectified camera array would see it. No randomness.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    background = np.stack([
        128 + 60 * np.sin(xx / 6.0) * np.cos(yy / 9.0),
        128 + 50 * np.cos((xx + yy) / 11.0),
        128 + 40 * np.sin(xx * yy / 400.0),
    ], axis=-1)
    s = min(height, width) // 3
    fy, fx = np.mgrid[0:s, 0:s].astype(np.float64)
    square = np.stack([200 - 50 * ((fx // 4 + fy // 4) % 2), 60 + 2 * fx, 90 + 2 * fy], axis=-1)
    top, left = (height - s) // 2, (width - s) // 2
    lf = np.empty((rows, cols, height, width, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            view = background.copy()
            y0 = top + (r - rows // 2) * disparity
            x0 = left + (c - cols // 2) * disparity
            view[y0 : y0 + s, x0 : x0 + s] = square
            lf[r, c] = np.clip(np.round(view), 0, 255).astype(np.uint8)
    return lf


def write_views(lf: np.ndarray, folder: Path, pattern: str = "input_Cam{index:03d}.png") -> list[Path]:
    """Save a light field as a folder of views (HCI naming by default; ``{row}``/``{col}`` also work)."""
    folder.mkdir(parents=True, exist_ok=True)
    U, V = lf.shape[:2]
    paths = []
    for r in range(U):
        for c in range(V):
            path = folder / pattern.format(index=r * V + c, row=r, col=c)
            Image.fromarray(lf[r, c]).save(path)
            paths.append(path)
    return paths


def write_grid(lf: np.ndarray, path: Path, layout: str = "tiles") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(join_grid(lf, layout)).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="A light field, or a folder of them (see docs/benchmarks.md for the layouts).")
    parser.add_argument("out", type=Path, help="Folder for the patches (PNG); existing patches are kept.")
    parser.add_argument("--patch", type=int, default=256, help="Patch size in pixels (MS-SSIM needs 161 or more).")
    parser.add_argument("--view-step", type=int, default=1, help="Use every k-th view in each angular direction.")
    parser.add_argument("--grid", type=Grid.parse, help="Angular size of grid images (e.g. 15x15, 15x15:interleaved), "
                        "or of view folders that are not square.")
    parser.add_argument("--limit", type=int, help="Stop after this many patches.")
    args = parser.parse_args()
    if args.patch < 16 or args.view_step < 1:
        parser.error("--patch must be at least 16 and --view-step at least 1")
    try:
        paths = extract_patches(args.root, args.out, args.patch, args.view_step, args.grid, args.limit)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{len(paths)} patches of {args.patch}px in {args.out}")


if __name__ == "__main__":
    main()
