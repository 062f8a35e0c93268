"""The ``xcodec`` command line.

Data goes to stdout only when an output is ``-``; messages, progress and errors go to stderr.
Exit codes: 0 success, 1 bad input, a bad/corrupted file or an output that cannot be written
(one-line message), 2 usage error, 130 interrupted.

Torch loads only once there is work to do: ``--help``, ``info``, and the refusals of arguments,
outputs, headers and sizes answer without it. ``main`` ends the process as soon as the command is
done, without the teardown of torch's modules (``end``).
"""

from __future__ import annotations

import heapq
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__, container
from .defaults import (DEFAULT_MAX_PIXELS, DEFAULT_MODEL, DEFAULT_QUALITY, DEFAULT_TILE, LOSSLESS_MODEL, TILE_ALIGN, check_gpu,
                       check_pixels, check_realism)
from .errors import InputError, OutputError, XcodecError
from .files import is_image, write_atomic
from .models import DEPENDENCY_NOISE
from .models.manifest import check_file, find_model

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from .api import FileInfo, TileCallback

app = typer.Typer(add_completion=False, no_args_is_help=True, help="xcodec: learned image compression.")
err = Console(stderr=True, highlight=False)

DEVICES = ("auto", "cpu", "cuda")
QUIET, NORMAL, VERBOSE = 0, 1, 2  # how much a command says on stderr (errors always)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"xcodec {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """xcodec: learned image compression."""


def check_device(value: str) -> str:
    if value not in DEVICES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(DEVICES)}")
    return value


def check_model(value: Optional[str]) -> Optional[str]:
    if value is not None and not container.valid_model_name(value):
        raise typer.BadParameter(f"{value!r} is not a model name (a-z, 0-9, _ and -; not a path)")
    return value


def check_tile(value: int) -> int:
    if value % TILE_ALIGN:
        raise typer.BadParameter(f"{value} is not 0 or a multiple of {TILE_ALIGN}")
    return value


def check_realism_option(value: Optional[float]) -> Optional[float]:
    if value is not None:
        try:
            check_realism(value)
        except InputError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


DeviceOpt = Annotated[str, typer.Option("--device", callback=check_device, help="auto (GPU when there is one), cpu or cuda.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file.")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="Print errors only.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also print the model, tiles, stream sizes and times of each file.")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Take the files of folders' subfolders too (mirrored under --out-dir).")]
JobsOpt = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Worker processes for several files (default: the cores this process may use); on Linux and macOS they share the models, loaded once.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="Threads per process for the tiles of a large image (on Linux, worker processes) and the post-filter's stripes (default: the usable cores, shared among --jobs). The output does not depend on it.")]
DEFAULT_MODEL_HELP = "the default model, xcodec.models.zoo.DEFAULT_MODEL"


def say(message: str) -> None:
    """One line on stderr, never wrapped, never read as markup (file names may hold brackets)."""
    err.print(message, markup=False, soft_wrap=True)


def report(message: str) -> None:
    """An error as one line on stderr."""
    err.print("[bold red]error:[/] " + escape(message), soft_wrap=True)


def fail(message: str) -> typer.Exit:
    report(message)
    return typer.Exit(1)


def verbosity(quiet: bool, verbose: bool) -> int:
    if quiet and verbose:
        raise typer.BadParameter("give either --quiet or --verbose, not both")
    return QUIET if quiet else VERBOSE if verbose else NORMAL


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning of the block, each time it is raised, except the dependencies' noise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=DEPENDENCY_NOISE)
        yield caught


@contextmanager
def plain_warnings(source: str, show: bool = True) -> Iterator[None]:
    """Warnings as one line each on stderr, naming the file (not Python's two lines with a source path)."""
    with recorded_warnings() as caught:
        try:
            yield
        finally:
            for warning in caught if show else ():
                say(f"warning: {source}: {warning.message}")


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def load_image(data: bytes, max_pixels: int) -> Image:
    """Open an input image from its bytes under ``--max-pixels`` (which replaces Pillow's own limit
    and its warning)."""
    from PIL import Image as pillow

    from .image import open_image

    saved, pillow.MAX_IMAGE_PIXELS = pillow.MAX_IMAGE_PIXELS, None
    try:
        return open_image(data, max_pixels)
    finally:
        pillow.MAX_IMAGE_PIXELS = saved


def load_exact(data: bytes, max_pixels: int):
    """The input of a lossless or near-lossless encode: a Pillow image, or the (H, W, 3) uint16
    samples of a 16-bit RGB PNG (which Pillow would read as 8 bits) and its ICC profile and EXIF."""
    from .deep import is_png16_rgb, read_png16

    if not is_png16_rgb(data):
        return load_image(data, max_pixels), None
    with warnings.catch_warnings():  # Pillow's image, for its size and metadata only: no "coded at 8 bits"
        warnings.simplefilter("ignore")
        image = load_image(data, max_pixels)
    metadata = {key: image.info.get(key) for key in ("icc_profile", "exif")}
    return read_png16(data), metadata


def check_target(path: str, inputs: frozenset[Path], force: bool) -> None:
    """Refuse to overwrite an input, ever, or an existing file without ``--force``."""
    target = Path(path)
    if path == "-" or not target.exists():
        return
    if target.resolve() in inputs:
        raise OutputError(f"refusing to overwrite the input file {path}")
    if not force:
        raise OutputError(f"{path} exists (use --force to overwrite it)")


def write_output(data: bytes, path: str, force: bool, inputs: frozenset[Path] = frozenset()) -> None:
    """Write ``data`` to ``path`` (or stdout for ``-``) atomically (see ``files.write_atomic``)."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    check_target(path, inputs, force)
    try:
        write_atomic(Path(path), data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


@dataclass
class Job:
    source: str
    target: str
    data: Optional[bytes] = None  # standard input's bytes, read before the job's clock starts

    def read(self) -> bytes:
        """The input's bytes."""
        return read_input(self.source) if self.data is None else self.data


@dataclass
class Done:
    """What a job made: the output's bytes, the summary on its line, and what ``--verbose`` adds."""

    data: bytes
    summary: str
    details: list[str] = field(default_factory=list)
    setup: float = 0.0  # seconds spent loading a model, which the file's time leaves out


def plan_jobs(sources: list[str], output: Optional[str], out_dir: Optional[Path], suffix: str,
              wanted: Callable[[Path], bool], recursive: bool = False) -> list[Job]:
    """Expand folders into their files (``recursive``: and their subfolders') and name each output.

    Refuse what cannot work as a whole. Under ``out_dir``, a file keeps its path within its folder.
    """
    files, names = [], []  # inputs, and their paths under --out-dir
    for source in sources:
        folder = Path(source)
        if source != "-" and folder.is_dir():
            found = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file() and wanted(p))
            if not found:
                hint = "" if recursive else " (--recursive looks into its subfolders)"
                raise typer.BadParameter(f"no input files in the folder {source}{hint}")
            files += [str(p) for p in found]
            names += [p.relative_to(folder) for p in found]
        else:
            files.append(source)
            names.append(Path(folder.name))
    if output is not None and out_dir is not None:
        raise typer.BadParameter("give either --output or --out-dir, not both")
    if output is not None and files != sources[:1]:
        raise typer.BadParameter("--output takes a single input file; use --out-dir for several", param_hint="--output")
    if "-" in files and (len(files) > 1 or out_dir is not None):
        raise typer.BadParameter("- (stdin) must be the only input, written with --output")
    if "-" in files and sys.stdin.isatty():
        raise typer.BadParameter("- reads stdin, which is a terminal: pipe the input in (... - < FILE) or name the file")
    if output == "-" and sys.stdout.isatty():
        raise typer.BadParameter("- writes binary data to stdout, which is a terminal: redirect it (> FILE) or name a file",
                                 param_hint="--output")
    if output not in (None, "-") and Path(output).is_dir():
        raise typer.BadParameter(f"{output} is a folder: name a file, or write into the folder with --out-dir",
                                 param_hint="--output")
    if out_dir is not None:
        targets = [str(out_dir / name.with_suffix(suffix)) for name in names]
    else:
        targets = [output or ("-" if f == "-" else str(Path(f).with_suffix(suffix))) for f in files]
    first: dict[Path, str] = {}
    for source, target in zip(files, targets):
        other = first.setdefault(Path(target).resolve(), source)
        if other != source:
            raise typer.BadParameter(f"{other} and {source} would both be written to {target}")
    for folder in sorted({Path(t).parent for t in targets}) if out_dir is not None else ():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(f"cannot create the folder {folder}: {exc.strerror}") from None
    return [Job(source, target) for source, target in zip(files, targets)]


def load_model(name: Optional[str]) -> tuple[str, float]:
    """Import torch and load a model (None: the default) now, as ``zoo.load`` keeps it.

    Returns its name and the seconds that took, which per-file times leave out.
    """
    start = time.perf_counter()
    from . import api

    name = name or DEFAULT_MODEL
    api.load_model(name)
    return name, time.perf_counter() - start


def coding(h: container.Header) -> str:
    """How a file was coded: its quality, or lossless, or its error bound."""
    if h.max_error is None:
        return f"quality {h.quality:g}"
    return "lossless" if h.max_error == 0 else f"max error {h.max_error}"


def describe(info: FileInfo, setup: float, seconds: float) -> list[str]:
    """The ``--verbose`` lines of a file: its model, tiles, streams and times."""
    h = info.header
    rows, cols = h.tile_grid
    coded = [size for kind, size in info.streams if kind == container.StreamKind.CODED]
    streams = [f"{len(coded)} coded ({sum(coded):,} bytes)"]
    streams += [f"{kind.name.lower()} ({size:,} bytes)" for kind, size in info.streams if kind != container.StreamKind.CODED]
    loaded = f"loaded in {setup:.2f} s" if setup else "already loaded"
    return [
        f"model {h.model} (weights {h.model_hash.hex()}, {loaded}), {coding(h)}",
        f"{h.width}x{h.height}, {'grayscale' if h.channels == 1 else 'RGB'}, {rows}x{cols} tiles of {h.tile_size[1]}x{h.tile_size[0]}",
        f"streams: {', '.join(streams)}; {info.size:,} bytes in all",
        f"coding {seconds:.2f} s",
    ]


@dataclass
class Outcome:
    """What became of a job: its ``Done`` (the output already written) or its error, and warnings."""

    done: Optional[Done] = None
    error: Optional[str] = None
    seconds: float = 0.0  # the job's time, less the model's loading
    warnings: list[str] = field(default_factory=list)


def attempt(work: Callable[[Job, Optional[TileCallback]], Done], job: Job, inputs: frozenset[Path], force: bool,
            batch: bool, on_tile: Optional[TileCallback] = None) -> Outcome:
    """Check the target, do the work and write the output, here or in a worker process.

    An ``XcodecError`` becomes the outcome's error; so does any other exception in a batch (a bug
    must not stop a batch of a million files), which a single job raises as it is.
    """
    outcome = Outcome()
    with recorded_warnings() as caught:
        try:
            check_target(job.target, inputs, force)  # before the work, not only at the end of it
            if job.source == "-":  # the time a pipe's writer takes is not the job's
                job = replace(job, data=read_input("-"))
            start = time.perf_counter()
            done = work(job, on_tile)
            end = time.perf_counter()
            write_output(done.data, job.target, force, inputs)
            if job.target != "-":  # nor is the time a pipe's reader takes
                end = time.perf_counter()
            outcome.done, done.data = done, b""  # written: a worker need not send it back
            outcome.seconds = end - start - done.setup
        except XcodecError as exc:
            outcome.error = str(exc)
        except Exception as exc:
            if not batch:
                raise
            outcome.error = f"unexpected {type(exc).__name__}: {exc} (a bug in xcodec; please report it)"
        finally:
            outcome.warnings = [str(warning.message) for warning in caught]
    return outcome


def init_worker(threads: int) -> None:
    """A batch worker: ``threads`` torch threads; Ctrl-C is the parent's to handle (``attempt_in_worker``)."""
    import signal

    from .cores import limit_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(threads)


def attempt_in_worker(*args) -> Outcome:
    """``attempt`` in a worker process, interruptible (the parent forwards Ctrl-C) only while it works,
    so that an interrupted write removes its temporary file and an idle worker ignores the signal."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return attempt(*args)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def outcomes_in_workers(jobs: list[Job], work: Callable, inputs: frozenset[Path], force: bool, workers: int,
                        threads: Optional[int], models: Collection[str] = ()) -> Iterator[Outcome]:
    """The outcomes of ``jobs`` in their order, computed by ``workers`` processes; Ctrl-C stops them
    all and leaves no partial output.

    Where it can, a forkserver (a process that this one starts, so that torch is imported there,
    not here) forks the workers once it has imported the API and loaded ``models`` and, for a batch
    on the CPU, warmed them up (``xcodec.preload``): each worker starts its first job at once, the
    models' weights shared. Elsewhere, or for a model that the server did not load (it serves
    every batch of this process, and prepares what the first one needs), a worker loads it on
    its first job.
    """
    import multiprocessing
    import os
    import signal
    from concurrent.futures import ProcessPoolExecutor

    from .defaults import PRELOAD, may_have_gpu

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")  # no fork of a torch process
    if "forkserver" in methods:
        ctx.set_forkserver_preload(["xcodec.preload"])
    cpu = work.device == "cpu" or work.device == "auto" and not may_have_gpu()
    os.environ[PRELOAD] = json.dumps({"models": sorted(models), "warm_up": cpu})  # read by the server as it starts
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=(threads or 1,))
    try:
        try:
            futures = [pool.submit(attempt_in_worker, work, job, inputs, force, True) for job in jobs]
        finally:
            del os.environ[PRELOAD]
        for future in futures:
            try:
                yield future.result()
            except Exception as exc:  # a worker that died (killed, out of memory): its job failed
                yield Outcome(error=f"the worker process failed ({type(exc).__name__}: {exc})")
    except BaseException:
        for pid in list(getattr(pool, "_processes", None) or {}):  # the live workers
            with suppress(OSError):
                os.kill(pid, signal.SIGINT)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def batch_outcomes(jobs: list[Job], work: Callable, inputs: frozenset[Path], force: bool, workers: int,
                   threads: Optional[int]) -> Iterator[Outcome]:
    """The outcomes of ``jobs`` in their order: the refusals that ``work.precheck`` makes from a
    file alone come from this process, without torch; the other jobs go to ``workers`` processes,
    which start only if some job is left for them, with the models those jobs need loaded."""
    early: dict[int, Outcome] = {}
    models: set[str] = set()
    for i, job in enumerate(jobs):
        try:
            models.add(work.precheck(job))
        except XcodecError as exc:
            early[i] = Outcome(error=str(exc))
    rest = [job for i, job in enumerate(jobs) if i not in early]
    late = outcomes_in_workers(rest, work, inputs, force, workers, threads, models) if rest else iter(())
    for i in range(len(jobs)):
        yield early[i] if i in early else next(late)


def run_jobs(jobs: list[Job], work: Callable[[Job, Optional[TileCallback]], Done], force: bool, level: int = NORMAL,
             workers: int = 1, threads: Optional[int] = None) -> None:
    """Run ``work`` on each job and write its output; in a batch, report failures and go on.

    One input fails as before: a one-line error, exit 1. Several inputs: one line per file (done
    or failed) in the inputs' order, a summary, and exit 1 at the end if any failed; ``workers``
    processes (``threads`` torch threads each) work on them at once. On a terminal, progress bars
    show the files of a batch and, in this process, the tiles of a large image.
    """
    batch = len(jobs) > 1
    inputs = frozenset(Path(job.source).resolve() for job in jobs if job.source != "-")
    failed = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=level == QUIET or not err.is_terminal) as progress:
        task = progress.add_task("files", total=len(jobs), visible=batch)
        tiles = progress.add_task("tiles", visible=False)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total, visible=total > 1)

        def here() -> Iterator[Outcome]:
            for job in jobs:
                progress.reset(tiles, visible=False)
                yield attempt(work, job, inputs, force, batch, on_tile)

        outcomes = batch_outcomes(jobs, work, inputs, force, workers, threads) if batch and workers > 1 else here()
        for outcome, job in zip(outcomes, jobs):  # the outcomes first: their workers end with the last
            for message in outcome.warnings if level > QUIET else ():
                say(f"warning: {job.source}: {message}")
            if outcome.error is not None:
                if not batch:
                    raise fail(outcome.error)
                failed += 1
                report(f"{job.source}: {outcome.error}")
            else:
                if level > QUIET:
                    say(f"{job.source} -> {job.target}: {outcome.done.summary}, {outcome.seconds:.2f} s")
                for line in outcome.done.details if level == VERBOSE else ():
                    say(f"  {line}")
            progress.advance(task)
    if batch and level > QUIET:
        say(f"{len(jobs) - failed} of {len(jobs)} files done, {failed} failed")
    if failed:
        raise typer.Exit(1)


def parallelism(files: int, jobs: Optional[int], threads: Optional[int]) -> tuple[int, Optional[int]]:
    """Worker processes for a batch (default: the usable cores, no more than the files) and torch
    threads per worker (default: the cores shared among the workers; None for the API's own default)."""
    from .cores import usable_cores

    workers = min(jobs or usable_cores(), files)
    if workers > 1 and threads is None:
        threads = max(1, usable_cores() // workers)
    return workers, threads


@dataclass(frozen=True)
class EncodeWork:
    """``encode``'s work on one file (a picklable object: batch workers receive it)."""

    model: Optional[str]
    quality: Optional[float]
    bpp: Optional[float]
    strict: bool
    device: str
    drop_alpha: bool
    strip: bool
    tile: int
    effort: Optional[int]
    max_pixels: int
    realism: Optional[float]
    threads: Optional[int]
    max_error: Optional[int]  # 0: lossless, 1..4: near-lossless (the lossless coder); None: lossy

    def precheck(self, job: Job) -> str:
        """The model the job needs (``encode`` refuses a file only once it reads the image)."""
        return LOSSLESS_MODEL if self.max_error is not None else self.model or DEFAULT_MODEL

    def __call__(self, job: Job, on_tile: Optional[TileCallback]) -> Done:
        exact = self.max_error is not None
        data = job.read()
        image, metadata = load_exact(data, self.max_pixels) if exact else (load_image(data, self.max_pixels), None)
        name, setup = load_model(self.precheck(job))  # torch: only now that there is work
        from . import api

        start = time.perf_counter()
        kwargs = dict(device=self.device, drop_alpha=self.drop_alpha, max_pixels=self.max_pixels, tile=self.tile,
                      strip=self.strip, threads=self.threads)
        lossy = dict(model=name, effort=self.effort, realism=self.realism)
        if exact:
            data = api.encode(image, max_error=self.max_error, on_tile=on_tile, metadata=metadata, **kwargs)
        elif self.bpp is None:
            quality = DEFAULT_QUALITY if self.quality is None else self.quality
            data = api.encode(image, quality, on_tile=on_tile, **kwargs, **lossy)
        else:
            data = api.encode_to_bpp(image, self.bpp, **kwargs, **lossy)
        seconds = time.perf_counter() - start
        summary = api.info(data)
        if self.bpp is not None and summary.bpp > self.bpp:
            message = f"{self.bpp:g} bpp is out of reach: the smallest file, at quality 1, has {summary.bpp:.4f} bpp"
            if self.strict:
                raise InputError(message)
            warnings.warn(message)
        return Done(data, f"{summary.size:,} bytes, {summary.bpp:.4f} bpp, {coding(summary.header)}",
                    describe(summary, setup, seconds), setup)


@dataclass(frozen=True)
class DecodeWork:
    """``decode``'s work on one file (picklable, as ``EncodeWork``)."""

    device: str
    postfilter: bool
    realism: Optional[float]
    max_pixels: int
    threads: Optional[int]

    def precheck(self, job: Job) -> str:
        """The refusals the file's header decides, made without torch (``check``); the model the job needs."""
        return self.check(job)[0].model

    def check(self, job: Job, data: Optional[bytes] = None) -> tuple[container.Header, str]:
        """The refusals the file's header decides (a bad file, model, size or output format), made
        without torch; the header and the output format."""
        from .image import check_format, output_format

        header = container.read_table(job.read() if data is None else data).header
        check_pixels(header.width, header.height, self.max_pixels)
        check_file(header)
        fmt = "PNG" if job.target == "-" else output_format(Path(job.target).suffix)
        check_format(fmt, header.channels, header.bit_depth)
        return header, fmt

    def __call__(self, job: Job, on_tile: Optional[TileCallback]) -> Done:
        from .image import save_bytes

        data = job.read()
        header, fmt = self.check(job, data)
        _, setup = load_model(header.model)
        from . import api

        start = time.perf_counter()
        threads = api.thread_count(self.threads)
        if header.bit_depth == 16 and header.channels == 3:  # Pillow has no 16-bit RGB
            from .deep import write_tiff16
            from .png import write_png

            samples, metadata = api.decode_samples(data, max_pixels=self.max_pixels, threads=self.threads)
            seconds = time.perf_counter() - start
            out = (write_png(samples, metadata.get("icc_profile"), threads=threads) if fmt == "PNG"
                   else write_tiff16(samples, metadata.get("icc_profile")))
            return Done(out, f"{header.width}x{header.height} RGB, 16 bits", describe(api.info(data), setup, seconds), setup)
        image = api.decode(data, device=self.device, max_pixels=self.max_pixels, on_tile=on_tile,
                           postfilter=self.postfilter, realism=self.realism, threads=self.threads)
        seconds = time.perf_counter() - start
        return Done(save_bytes(image, fmt, threads), f"{image.width}x{image.height} {image.mode}",
                    describe(api.info(data), setup, seconds), setup)


OutDirOpt = Annotated[Optional[Path], typer.Option("--out-dir", "-d", help="Write the outputs into this folder (created if needed), named after the inputs.")]


@app.command()
def encode(
    sources: Annotated[list[str], typer.Argument(metavar="IN", help="Images to compress (any format Pillow reads), folders of images, or - for stdin.")],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output .xsc file (one input only), or - for stdout. Default: IN with .xsc.")] = None,
    out_dir: OutDirOpt = None,
    quality: Annotated[Optional[float], typer.Option("--quality", "-q", min=1, max=8, help=f"Quality 1 (smallest) .. 8 (best); fractions allowed. Default: {DEFAULT_QUALITY:g}.")] = None,
    bpp: Annotated[Optional[float], typer.Option("--bpp", min=0, help="Target bits per pixel: search for the quality that meets it.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="With --bpp: fail (no file) when even quality 1 is above the target, instead of a warning.")] = False,
    lossless: Annotated[bool, typer.Option("--lossless", help="Code every sample exactly (8-bit, or 16-bit grayscale kept at 16 bits), with the lossless coder.")] = False,
    max_error: Annotated[Optional[int], typer.Option("--max-error", min=1, max=4, help="Near-lossless: every sample within +-N of the original (checked), with the lossless coder.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", callback=check_model, help="Model from weights/.")] = None,
    effort: Annotated[Optional[int], typer.Option("--effort", "-e", min=0, help="Encoder effort: more work for fewer bits, decoded the same way. wavelet: 0 (dead-zone rounding), 1 (rate-distortion optimised, its default) or 2 (1, and its post-filter fitted to the image, sent in the file; about 1 s more per Kodak image); other models: 0.")] = None,
    drop_alpha: Annotated[bool, typer.Option("--drop-alpha", help="Drop the alpha channel of images with transparency instead of coding it.")] = False,
    strip: Annotated[bool, typer.Option("--strip", help="Drop EXIF and XMP metadata (kept by default; the ICC profile is always kept).")] = False,
    realism: Annotated[Optional[float], typer.Option("--realism", callback=check_realism_option, help="Store a suggested realism 0..1 for decoders that are given none (wavelet: 0 fidelity .. 1 perceptual detail), and tune the perceptual detail for it (wavelet: the gains of its detail per 32-pixel block, chosen against the photo; about 1.4 s more per Kodak image). The coded image, and its decode at realism 0, are the same.")] = None,
    tile: Annotated[int, typer.Option("--tile", min=0, callback=check_tile, help=f"Code the image in independent tiles of this many pixels (a multiple of {TILE_ALIGN}; 0: one tile). Bounds memory on large images.")] = DEFAULT_TILE,
    recursive: RecursiveOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    workers: JobsOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compress images into .xsc files."""
    if quality is not None and bpp is not None:
        raise typer.BadParameter("give either --quality or --bpp, not both")
    if strict and bpp is None:
        raise typer.BadParameter("--strict goes with --bpp", param_hint="--strict")
    exact = lossless or max_error is not None
    if exact and (quality is not None or bpp is not None or model is not None or effort is not None or realism is not None):
        raise typer.BadParameter("--lossless and --max-error take no --quality, --bpp, --model, --effort or --realism")
    if lossless and max_error is not None:
        raise typer.BadParameter("give either --lossless or --max-error, not both")
    level = verbosity(quiet, verbose)
    try:  # what every file would meet, refused once and before torch loads
        check_gpu(device)
        find_model(LOSSLESS_MODEL if exact else model or DEFAULT_MODEL, effort)
    except XcodecError as exc:
        raise fail(str(exc)) from None
    jobs = plan_jobs(sources, output, out_dir, ".xsc", lambda p: is_image(p) and p.suffix.lower() != ".xsc",  # xcodec.pillow reads .xsc
                     recursive)
    workers, threads = parallelism(len(jobs), workers, threads)
    work = EncodeWork(model, quality, bpp, strict, device, drop_alpha, strip, tile, effort, max_pixels, realism, threads,
                      0 if lossless else max_error)
    run_jobs(jobs, work, force, level, workers, threads)


@app.command()
def decode(
    sources: Annotated[list[str], typer.Argument(metavar="IN", help=".xsc files, folders of them, or - for stdin.")],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output image (one input only; format from the extension), or - for PNG on stdout. Default: IN with .png.")] = None,
    out_dir: OutDirOpt = None,
    recursive: RecursiveOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    postfilter: Annotated[bool, typer.Option("--postfilter/--no-postfilter", help="Apply the model's decoder-side post-filter and tile-border smoothing (wavelet), which the file does not depend on.")] = True,
    realism: Annotated[Optional[float], typer.Option("--realism", callback=check_realism_option, help="0 (default): the fidelity output; 1: the perceptual decoder's sharp detail; between: a blend. Default: the file's suggestion, else 0. Same file, any look (wavelet).")] = None,
    workers: JobsOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Decompress .xsc files into images (PNG unless --output names another format; .pgm for grayscale only)."""
    from .image import output_format

    if output not in (None, "-"):
        try:
            output_format(Path(output).suffix)
        except InputError as exc:
            raise typer.BadParameter(str(exc), param_hint="--output") from None
    level = verbosity(quiet, verbose)
    try:
        check_gpu(device)
    except XcodecError as exc:
        raise fail(str(exc)) from None
    jobs = plan_jobs(sources, output, out_dir, ".png", lambda p: p.suffix.lower() == ".xsc", recursive)
    workers, threads = parallelism(len(jobs), workers, threads)
    run_jobs(jobs, DecodeWork(device, postfilter, realism, max_pixels, threads), force, level, workers, threads)


INFO_LARGEST = 3  # streams of a kind that ``info`` lists by size; --json lists them all


@app.command()
def info(
    source: Annotated[str, typer.Argument(metavar="IN", help="An .xsc file, or - for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table, with every stream.")] = False,
) -> None:
    """Show the header, a summary of the streams and the bit rate of an .xsc file (without decoding it)."""
    try:
        data = read_input(source)
        table = container.read_table(data)
    except XcodecError as exc:
        raise fail(str(exc)) from None
    h = table.header
    fields = {
        "model": h.model, "weights": h.model_hash.hex(), "quality": h.quality, "width": h.width,
        "height": h.height, "channels": h.channels, "bit_depth": h.bit_depth, "max_error": h.max_error, "pad_bottom": h.pad_bottom,
        "pad_right": h.pad_right, "tile": h.tile, "tiles": h.tile_grid[0] * h.tile_grid[1], "bytes": len(data),
        "bpp": round(8 * len(data) / (h.width * h.height), 6),
    }
    if as_json:  # a stream per line, written directly: json.dumps's indented encoder is slow for millions
        names = {int(kind): kind.name.lower() for kind in container.StreamKind}
        streams = ",\n".join(f'    {{"kind": "{names[kind]}", "bytes": {length}}}' for kind, length in zip(table.kinds, table.lengths))
        typer.echo(f'{json.dumps(fields, indent=2)[:-2]},\n  "streams": [\n{streams}\n  ]\n}}')
        return
    rows = Table(title=Text(source), show_header=False)  # a file name is text, never markup
    for key, value in fields.items():
        rows.add_row(key, Text(str(value)))
    for kind in container.StreamKind:
        lengths = table.sizes(kind)
        summary = f"{sum(lengths):,} bytes"
        if len(lengths) > 1:
            largest = ", ".join(f"{n:,}" for n in heapq.nlargest(INFO_LARGEST, lengths))
            summary = f"{len(lengths):,} streams, {summary} (largest {largest}{', ...' if len(lengths) > INFO_LARGEST else ''})"
        if lengths:
            rows.add_row(f"{kind.name.lower()} streams" if len(lengths) > 1 else kind.name.lower(), summary)
    Console().print(rows)


def read_rgb(path: Path, max_pixels: int, device: str,
             realisms: tuple[Optional[float], ...] = (None,)) -> tuple[list[np.ndarray], Optional[FileInfo]]:
    """An image as the encoder sees it (8-bit RGB, EXIF orientation applied), once per realism, or
    an .xsc file decoded once at each of ``realisms`` (``api.decode_realisms``), with its info."""
    import numpy as np

    data = read_input(str(path))
    if data.startswith(container.MAGIC):
        header = container.read_table(data).header
        check_pixels(header.width, header.height, max_pixels)
        check_file(header)
        from . import api

        images = api.decode_realisms(data, realisms, device=device, max_pixels=max_pixels)
        return [np.asarray(image.convert("RGB")) for image in images], api.info(data)
    from .image import prepare

    return [prepare(load_image(data, max_pixels), drop_alpha=True).rgb] * len(realisms), None


@app.command()
def compare(
    reference: Annotated[Path, typer.Argument(help="Original image.")],
    distorted: Annotated[Path, typer.Argument(help="Decoded image of the same size, or the .xsc file itself (decoded here; its bpp shown).")],
    crops: Annotated[Optional[str], typer.Option("--crops", help="Write a picture of the same crops of the original, the decoded image and AVIF at the same file size, labelled with bpp and PSNR (DISTORTED must be the .xsc file).")] = None,
    crop_size: Annotated[int, typer.Option("--crop-size", min=16, help="Side of each crop in pixels (shown enlarged 2x).")] = 128,
    crop_count: Annotated[int, typer.Option("--crop-count", min=1, help="Number of crops: the most detailed regions, not overlapping.")] = 3,
    lpips: Annotated[bool, typer.Option("--lpips/--no-lpips", help="Compute LPIPS (AlexNet).")] = True,
    realism: Annotated[Optional[float], typer.Option("--realism", callback=check_realism_option, help="Decode the .xsc file at this realism (0 fidelity .. 1 perceptual; default: the file's suggestion, else 0); --crops then shows the fidelity output beside it.")] = None,
    dists: Annotated[bool, typer.Option("--dists/--no-dists", help="Compute DISTS (VGG16; the slowest metric).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
) -> None:
    """Print PSNR, MS-SSIM, LPIPS and DISTS between an original and its decoded image (8-bit RGB, as coded)."""
    inputs = frozenset({reference.resolve(), distorted.resolve()})
    if crops is not None:  # refused before any work
        from .image import output_format

        try:
            output_format(Path(crops).suffix)
            check_target(crops, inputs, force)
        except XcodecError as exc:
            raise fail(str(exc)) from None
    try:
        with plain_warnings(str(reference)):
            (a,), _ = read_rgb(reference, max_pixels, device)
        with plain_warnings(str(distorted)):  # for --crops at a realism, the fidelity output too, from the same decode
            decoded, coded = read_rgb(distorted, max_pixels, device, (realism, 0.0) if crops and realism else (realism,))
    except XcodecError as exc:
        raise fail(str(exc)) from None
    b, fidelity = decoded[0], (decoded[1] if len(decoded) > 1 else None)
    if a.shape != b.shape:
        raise fail(f"the images differ in size: {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")
    if crops is not None and coded is None:
        raise fail("--crops needs the .xsc file as DISTORTED (its size sets the AVIF reference's)")
    from .api import resolve_device
    from .metrics import MS_SSIM_MIN_SIDE
    from .compare import scores

    dev = str(resolve_device(device))
    result = scores(a, b, dev, lpips, dists)
    fields = {"psnr": result.psnr, "ms_ssim": result.ms_ssim, "ms_ssim_db": result.ms_ssim_db, "lpips": result.lpips,
              "dists": result.dists}
    if coded is not None:
        fields |= {"bytes": coded.size, "bpp": coded.bpp, "realism": realism}
    if as_json:
        typer.echo(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in fields.items()}, indent=2))
    else:
        typer.echo(f"PSNR {result.psnr:.2f} dB")
        typer.echo(f"MS-SSIM {result.ms_ssim:.5f} ({result.ms_ssim_db:.2f} dB)" if not math.isnan(result.ms_ssim)
                   else f"MS-SSIM n/a (it needs both sides of at least {MS_SSIM_MIN_SIDE} pixels, and pytorch-msssim)")
        if lpips:
            typer.echo(f"LPIPS {result.lpips:.4f}")
        if dists:
            typer.echo(f"DISTS {result.dists:.4f}")
        if coded is not None:
            typer.echo(f"{coded.bpp:.4f} bpp ({coded.size:,} bytes)")
    if crops is not None:
        write_crops(crops, a, b, coded, crop_size, crop_count, force, inputs, realism, fidelity)


def write_crops(path: str, a: np.ndarray, b: np.ndarray, coded: FileInfo, size: int, count: int, force: bool,
                inputs: frozenset[Path], realism: Optional[float] = None, fidelity: Optional[np.ndarray] = None) -> None:
    """The crops picture of ``compare --crops``: original, AVIF at the same file size, and xcodec
    (its fidelity output too when ``b`` was decoded at a realism above 0)."""
    from . import compare as cmp
    from .image import output_format, save_bytes
    from .metrics import psnr

    pixels = a.shape[0] * a.shape[1]
    h = coded.header
    columns = [("original", a)]
    avif = cmp.avif_at_size(a, coded.size)
    if avif is None:
        say("warning: this Pillow has no AVIF; the crops show no AVIF reference")
    else:
        quality, data, decoded = avif
        columns.append((f"AVIF 4:4:4 q{quality}\n{8 * len(data) / pixels:.3f} bpp, {psnr(a, decoded):.2f} dB", decoded))
    label = f"xcodec {h.model} q{h.quality:g}"
    if fidelity is not None:
        columns.append((f"{label} fidelity\n{coded.bpp:.3f} bpp, {psnr(a, fidelity):.2f} dB", fidelity))
        label += f" realism {realism:g}"
    columns.append((f"{label}\n{coded.bpp:.3f} bpp, {psnr(a, b):.2f} dB", b))
    size = min(size, a.shape[0], a.shape[1])
    corners = cmp.pick_crops(a, count, size)
    picture = cmp.crops_picture(columns, corners, size)
    try:
        write_output(save_bytes(picture, output_format(Path(path).suffix)), path, force, inputs)
    except XcodecError as exc:
        raise fail(str(exc)) from None
    say(f"wrote {path}: {len(corners)} crops of {size}x{size}, {', '.join(label.splitlines()[0] for label, _ in columns)}")


BENCH_CODECS_HELP = """Codecs to run, comma-separated (default: all of them):
xcodec (the models of --models),
jpeg (JPEG 4:2:0), jpeg444 (JPEG 4:4:4), webp (WebP),
avif (AVIF 4:4:4), avif-best (AVIF 4:4:4, speed 0, tune=psnr: slow), avif420 (AVIF 4:2:0),
jp2 (JPEG 2000), jxl (JPEG XL), heic (HEIC 4:4:4)."""


@app.command()
def bench(
    folder: Annotated[Path, typer.Argument(help="Folder of images (e.g. ../shared/data/kodak), searched recursively.")],
    codecs: Annotated[Optional[str], typer.Option("--codecs", help=BENCH_CODECS_HELP)] = None,
    models: Annotated[Optional[str], typer.Option("--models", "--model", "-m", help="xcodec models from weights/ (default: all).")] = None,
    qualities: Annotated[Optional[str], typer.Option("--qualities", help="xcodec qualities, comma-separated (default 1..8).")] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--settings", help="Sweep of one codec, CODEC=V1,V2,... (repeatable).")] = None,
    anchors: Annotated[Optional[list[Path]], typer.Option("--anchors", help="Published results (CompressAI JSON): a folder or file (repeatable).")] = None,
    anchor_select: Annotated[Optional[str], typer.Option("--anchor-select", help="Keep only published curves whose name contains one of these (comma-separated).")] = None,
    anchor_curve: Annotated[Optional[str], typer.Option("--anchor-curve", help="BD-rate reference curve(s), comma-separated (default: vtm if loaded, else jpeg).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder: report, CSV, JSON, plots and the result cache.")] = Path("bench-results"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes.")] = 1,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Threads per worker for torch and the codecs (default: CPUs / jobs).")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Run only shard i of n (0-based), e.g. 0/4: images i, i+n, ...")] = None,
    merge: Annotated[Optional[list[Path]], typer.Option("--merge", help="Copy the cached results of another output folder in first (repeatable).")] = None,
    compute: Annotated[bool, typer.Option("--compute/--no-compute", help="--no-compute: report from the cache only.")] = True,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N images.")] = None,
    lpips: Annotated[bool, typer.Option("--lpips/--no-lpips", help="Compute LPIPS (AlexNet).")] = True,
    dists: Annotated[bool, typer.Option("--dists/--no-dists", help="Compute DISTS (VGG16; the slowest metric).")] = True,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the RD plots (PNG).")] = True,
    postfilter: Annotated[bool, typer.Option("--postfilter/--no-postfilter", help="--no-postfilter: decode xcodec files without the post-filter (curves named xcodec-MODEL-unfiltered).")] = True,
    lossless: Annotated[bool, typer.Option("--lossless", help="Lossless benchmark instead: xcodec --lossless and --max-error 1, 2, 4 against PNG, WebP, JPEG XL and JPEG 2000 lossless (bpp, CPU times; --codecs, --limit, --shard and --out apply).")] = False,
    realism: Annotated[Optional[str], typer.Option("--realism", help="Decode xcodec files at these realisms, comma-separated, e.g. 0,0.5,1 (curves named xcodec-MODEL-rR for R > 0; default 0).")] = None,
    effort: Annotated[Optional[str], typer.Option("--effort", help="xcodec encoder efforts, comma-separated, e.g. 1,2 (curves named xcodec-MODEL-eN, except at the model's default effort: xcodec-MODEL; default: the model's own).")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Rate-distortion benchmark: xcodec models against conventional codecs and published curves."""
    import shlex

    if lossless:
        from .bench import lossless as lossless_bench
        from .bench.benchmark import parse_shard

        names = [x.strip() for x in codecs.split(",")] if codecs else None
        chosen = parse_shard(shard) if shard else None
        rows = lossless_bench.run(folder, out, names, limit, chosen, log=say)
        typer.echo(lossless_bench.table(rows, folder.name), nl=False)
        return

    from .bench.benchmark import BenchConfig, benchmark, parse_shard
    from .bench.codecs import ALL_CODECS, parse_settings

    def split(text: Optional[str]) -> Optional[list[str]]:
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    try:
        names = split(codecs) or list(ALL_CODECS)
        unknown = [n for n in names if n not in ALL_CODECS]
        if unknown:
            raise typer.BadParameter(f"unknown codec(s) {', '.join(unknown)} (known: {', '.join(ALL_CODECS)})", param_hint="--codecs")
        sweeps = {}
        for item in settings or []:
            name, sep, values = item.partition("=")
            if not sep or not values:
                raise typer.BadParameter(f"{item!r}: expected CODEC=V1,V2,...", param_hint="--settings")
            if name.strip() not in ALL_CODECS and not name.startswith("xcodec-"):
                raise typer.BadParameter(f"{item!r}: unknown codec {name!r}", param_hint="--settings")
            sweeps[name.strip()] = parse_settings(values)
        if qualities:
            sweeps["xcodec"] = tuple(float(q) for q in parse_settings(qualities))
        try:
            realisms = tuple(check_realism(float(r)) for r in split(realism) or ["0"])
        except (ValueError, InputError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--realism") from None
        if not postfilter and any(realisms):
            raise typer.BadParameter("a realism above 0 needs the post-filter", param_hint="--realism")
        cfg = BenchConfig(
            folder=folder, out=out, codecs=names, models=split(models), settings=sweeps, anchors=list(anchors or []),
            anchor_select=split(anchor_select), anchor_curves=split(anchor_curve), jobs=jobs, threads=threads,
            shard=parse_shard(shard) if shard else None, merge=list(merge or []), compute=compute, limit=limit,
            device=device, lpips=lpips, dists=dists, plots=plots, postfilter=postfilter, realisms=realisms,
            efforts=tuple(int(e) for e in split(effort)) if effort else (None,),
            command=shlex.join(["xcodec", *sys.argv[1:]]) if sys.argv and "xcodec" in Path(sys.argv[0]).name else "xcodec bench",
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        code = benchmark(cfg, err, Console() if sys.stdout.isatty() else Console(width=200))
    except (XcodecError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if code:
        raise typer.Exit(code)


class StagesHelp(typer.core.TyperCommand):
    """``train --help`` ends with the stages each model declares (this loads the models, and torch)."""

    def format_help(self, ctx, formatter) -> None:
        from .models import zoo

        self.epilog = "\n\n".join(["Stages, as each model declares them:"] + [
            f"--model {name} --stage {stage.name}{' (default)' if i == 0 else ''}: {stage.summary}"
            + (f"; options: {', '.join(f'{k}={v:g}' for k, v in stage.options.items())}" if stage.options else "")
            for name, codec in zoo.ARCHITECTURES.items() for i, stage in enumerate(codec.training_stages())
        ])
        super().format_help(ctx, formatter)


def parse_options(values: Optional[list[str]]) -> dict[str, float]:
    options = {}
    for value in values or []:
        name, _, number = value.partition("=")
        try:
            options[name] = float(number)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not NAME=NUMBER") from None
    return options


StageDefault = "Default: the stage's."


@app.command(cls=StagesHelp)
def train(
    model: Annotated[Optional[str], typer.Option(help=f"Architecture from the zoo (hyperprior, transformer, wavelet). Default: {DEFAULT_MODEL_HELP}.")] = None,
    stage: Annotated[Optional[str], typer.Option(help="A stage the model declares (listed below). Default: its first.")] = None,
    data: Annotated[Path, typer.Option(help="Folder of training photos (searched recursively).")] = Path("../shared/data/train"),
    run: Annotated[Optional[Path], typer.Option("--run-dir", help="Run folder: checkpoints, training pack and logs. Default: runs/MODEL.")] = None,
    model_config: Annotated[str, typer.Option(help='Constructor arguments as JSON, over --init\'s and the stage\'s, e.g. \'{"M": 192}\'.')] = "{}",
    init: Annotated[Optional[str], typer.Option(help="Start from the shipped weights/NAME (fresh optimizers; parts the stage adds start fresh).")] = None,
    parts: Annotated[Optional[str], typer.Option(help="The model's parts that learn, comma-separated. Default: the stage's.")] = None,
    fresh: Annotated[Optional[str], typer.Option(help="Parts of --init's model that start anew (fresh initialisation), comma-separated, e.g. postfilter.")] = None,
    option: Annotated[Optional[list[str]], typer.Option(help="A loss setting of the stage, NAME=NUMBER (repeatable).")] = None,
    val: Annotated[Optional[Path], typer.Option(help="Folder of validation images (e.g. ../shared/data/kodak).")] = None,
    val_images: Annotated[int, typer.Option(help="How many of them (the first).")] = 4,
    val_minutes: Annotated[Optional[float], typer.Option(help=f"Minutes between validations. {StageDefault}")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN/last.pt (model, optimizers, step, RNG).")] = False,
    lr: Annotated[Optional[float], typer.Option(help=f"Peak learning rate. {StageDefault}")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help=f"Steps of linear warm-up. {StageDefault}")] = None,
    decay_start: Annotated[Optional[int], typer.Option(help=f"Step from which the learning rate decays (cosine) to --lr-end at --max-steps. {StageDefault}")] = None,
    lr_end: Annotated[Optional[float], typer.Option(help=f"Learning rate at --max-steps when it decays. {StageDefault}")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Crops per step (per process). {StageDefault}")] = None,
    crop: Annotated[Optional[int], typer.Option(help=f"Crop size in pixels. {StageDefault}")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help=f"Stop after this many steps in total. {StageDefault}")] = None,
    max_minutes: Annotated[float, typer.Option(help="Stop after this many minutes in this process.")] = float("inf"),
    checkpoint_minutes: Annotated[float, typer.Option(help="Minutes between checkpoints.")] = 5.0,
    log_every: Annotated[Optional[int], typer.Option(help=f"Steps between log lines. {StageDefault}")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and of the crops.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads (0: default).")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Train a model, one stage at a time (resumable); the stages come from the models."""
    from .models import zoo
    from .train.config import TrainConfig
    from .train.loop import train as run_training

    model = model or zoo.DEFAULT_MODEL  # shipped models are named after their architecture
    cfg = TrainConfig(
        data=data, run_dir=run or Path("runs") / model, model=model, stage=stage, model_config=json.loads(model_config),
        init=init, parts=tuple(parts.split(",")) if parts else None, fresh=tuple(fresh.split(",")) if fresh else (), options=parse_options(option), val_dir=val,
        val_images=val_images, val_minutes=val_minutes, lr=lr, warmup_steps=warmup_steps, decay_start=decay_start,
        lr_end=lr_end, batch_size=batch_size, crop=crop, max_steps=max_steps, max_minutes=max_minutes,
        checkpoint_minutes=checkpoint_minutes, log_every=log_every, seed=seed, threads=threads, device=device,
    )
    try:
        run_training(cfg, resume=resume)
    except (XcodecError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None


@app.command()
def export(
    run: Annotated[Optional[Path], typer.Option("--run-dir", help="Run folder whose last.pt is exported. Default: runs/NAME.")] = None,
    name: Annotated[Optional[str], typer.Option(help=f"Model name: writes weights/NAME.safetensors and NAME.json. Default: {DEFAULT_MODEL_HELP}.")] = None,
    note: Annotated[Optional[str], typer.Option(help="Free text stored in the manifest (data, hardware).")] = None,
    bench_images: Annotated[Optional[Path], typer.Option("--bench", help="Then benchmark the exported model on this folder (real files) and record bpp/PSNR per quality in its manifest.")] = None,
    bench_out: Annotated[Path, typer.Option(help="Output folder (and result cache) of that benchmark, shared with `xcodec bench --out`.")] = Path("bench-results"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes for the benchmark (one thread each).")] = 1,
    head: Annotated[Optional[str], typer.Option("--head", help="Export only this decoder head (e.g. perceptual) as weights/NAME.HEAD.safetensors; the model's own weights, and the files made with them, stay.")] = None,
    part: Annotated[Optional[str], typer.Option("--part", help="With --head: the checkpoint's part that becomes the head, when it trained in another's place (--head convfilter --part postfilter). Default: the head's name.")] = None,
) -> None:
    """Export a training checkpoint into weights/ with its manifest."""
    from .models import zoo

    name = name or zoo.DEFAULT_MODEL
    run = run or Path("runs") / name
    info = {"note": note} if note else {}
    try:
        if head:
            manifest = zoo.export_head(run / "last.pt", name, head, info, part=part)
            say(f"wrote weights/{name}.{head}.safetensors ({manifest.heads[head]['info']['steps']} steps, "
                f"sha256 {manifest.heads[head]['sha256'][:16]}...)")
            return
        manifest = zoo.export(run / "last.pt", name, info)
    except XcodecError as exc:
        raise fail(str(exc)) from None
    say(f"wrote weights/{name}.safetensors ({manifest.info['steps']} steps, sha256 {manifest.sha256[:16]}...)")
    if bench_images is None:
        return
    from .bench.benchmark import BenchConfig, benchmark

    cfg = BenchConfig(folder=bench_images, out=bench_out, codecs=["xcodec"], models=[name], jobs=jobs, threads=1, plots=False,
                      command=f"xcodec export --bench {bench_images} --bench-out {bench_out}")
    try:
        code = benchmark(cfg, err, Console(stderr=True, width=200))
    except (XcodecError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if code:
        raise typer.Exit(code)
    results = json.loads((bench_out / "results" / f"xcodec-{name}.json").read_text())
    zoo.record_results(name, bench_images.name, results)
    say(f"recorded {bench_images.name} bpp/PSNR per quality in weights/{name}.json")


def end(code: object) -> NoReturn:
    """Exit with ``code`` as Python would, less its teardown of every module's objects.

    Once torch is imported that teardown (the final garbage collection, the clearing of each module)
    takes 0.4-0.5 s after the command's work is done, and a single small image's command pays it in
    full. Here the exit handlers (``atexit``: multiprocessing's, temporary folders', logging's) run as
    at any exit, then stdout and stderr are flushed and the process ends (``os._exit``). Every file
    the commands write is closed before (``files.write_atomic``, the training logs in ``finally``).
    Where that would differ from Python's own exit (a thread that Python would wait for still
    running, a code that is not a number, a stream that cannot be flushed: a closed pipe), Python
    exits its own way.
    """
    import atexit
    import os
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if others or not isinstance(code, (int, type(None))):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code or 0)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        end(130)
    except SystemExit as exc:
        end(exc.code)


if __name__ == "__main__":
    main()
