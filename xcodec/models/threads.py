"""The thread policy: every torch kernel on one thread; several cores only for independent pieces.

Torch splits each kernel over its thread pool and waits for every thread at the kernel's end. The
coding walk runs thousands of small kernels, so when another process takes a core, each of them
waits for a descheduled thread: 20-30x slower on a busy two-core machine. Inside ``threads(n)``,
torch runs on one thread, and up to ``n`` threads work on independent pieces (the tiles of an
image, the stripes of a post-filter), each piece on one thread, handed out as threads free up: a
thread that the machine slows down takes fewer pieces, and the others wait for it only at the end.

Pieces are cut by the image's size, never by the thread count, and a piece is computed the same
way by whichever thread takes it, so files and pixels do not depend on the thread count.

The tiles of a large image go to processes instead, where the caller can fork them
(``map_processes``): a walk's Python parts and its ANS calls in constriction hold the GIL (a
decoder's ANS decoding is a third of its walk), so the walks of two tiles on threads wait for
each other. The stripes of one tile's post-filter, torch's kernels, which free the GIL, and an
encoder's analyses kept for several qualities (callables, which cannot be pickled back) stay on
threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextvars import ContextVar
from typing import TypeVar

import torch
from torch import Tensor

from .codec import one_thread

T = TypeVar("T")
R = TypeVar("R")

CPU = torch.device("cpu")
STRIPE_ROWS = 96  # rows of a stripe (at the network's own resolution): a few stripes per Kodak image

_threads: ContextVar[int] = ContextVar("threads", default=1)


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """Inside the block torch runs on one thread here, and ``map_ordered`` uses ``count`` threads."""
    if count < 1:
        raise ValueError(f"the thread count must be at least 1, got {count}")
    token = _threads.set(count)
    try:
        with one_thread(CPU):
            yield
    finally:
        _threads.reset(token)


def map_ordered(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``fn`` of each item, in order, computed by the threads of the enclosing ``threads`` block.

    Each thread runs torch on one thread, in the caller's grad mode, and sees a budget of one
    thread itself (no nested pools); a single item runs here, with the block's whole budget for
    its own pieces. At most two items per thread are in flight, so that memory stays bounded.
    """
    count = _threads.get()
    if count <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    yield from _in_order(ThreadPoolExecutor(count, thread_name_prefix="xcodec"), _alone(fn), items, count)


def map_processes(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``map_ordered`` in worker processes forked for the call, so that the Python parts of ``fn``
    and the C calls that hold the GIL run on several cores at once; items and results are pickled
    (``fn`` is not: the workers inherit it, and whatever it reads, through the fork).

    On Linux only (elsewhere it is ``map_ordered``): a fork starts a worker in milliseconds with the
    caller's modules, model and data (an image, an encoder's kept analyses), where a fresh process
    would import torch again (1.5 CPU s). Forking a torch process is safe here: inside ``threads``
    torch runs on one thread, and a worker never uses the thread pools that a fork leaves behind.
    CPU tensors only (CUDA does not survive a fork).
    """
    count = _threads.get()
    if count <= 1 or len(items) <= 1 or not sys.platform.startswith("linux"):
        yield from map_ordered(fn, items)
        return
    pool = ProcessPoolExecutor(count, multiprocessing.get_context("fork"), initializer=_install, initargs=(_alone(fn),))
    yield from map(pickle.loads, _in_order(pool, _call, items, count, _ctrl_c_held))


def _alone(fn: Callable[[T], R]) -> Callable[[T], R]:
    """``fn`` as a worker runs it: torch on one thread, a budget of one thread, the caller's grad mode."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run(item: T) -> R:
        with threads(1), torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(item)

    return run


def _in_order(pool: Executor, fn: Callable[[T], R], items: Sequence[T], count: int,
              starting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> Iterator[R]:
    """``fn`` of each item on ``pool``'s ``count`` workers, in order, at most two items per worker in
    flight. On an error or Ctrl-C the items not started are dropped (by the pool: a future cancelled
    here could meet its manager thread failing it for the ended processes, an error printed from
    that thread) and worker processes end at once (a thread finishes its item). The first item's
    submission, which starts the pool, runs inside ``starting``."""
    pending = deque()
    try:
        with starting():
            pending.append(pool.submit(fn, items[0]))
        for item in items[1:]:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * count:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public way before Python 3.14
            process.terminate()
        pool.shutdown(cancel_futures=True)
        raise
    pool.shutdown()


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Ctrl-C held back while a process pool starts (forks its workers, then starts its manager
    thread): Python drops a KeyboardInterrupt raised in its at-fork handlers, and a pool stopped
    between the forks and the thread's start cannot be shut down."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


_work: Callable | None = None  # a worker process's function (``map_processes``)


def _install(fn: Callable) -> None:
    """A worker process's start: its function, which it inherits through the fork (not pickled);
    Ctrl-C is for the caller, who ends the pool, not for the workers."""
    global _work
    _work = fn
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call(item: object) -> bytes:
    """A worker's result, pickled here: the pool's own pickler would move its tensors to shared memory
    (``torch.multiprocessing``: /dev/shm, small in containers) and pass their file descriptors."""
    return pickle.dumps(_work(item), pickle.HIGHEST_PROTOCOL)


def map_rows(fn: Callable[[int, int], Tensor], height: int, halo: int, align: int = 1, rows: int | None = None,
             scale: int = 1) -> Tensor:
    """A map of ``height`` rows (dim -2) computed in horizontal stripes by ``map_ordered``.

    ``fn(top, bottom)`` computes the output's rows ``top:bottom`` from the inputs' same rows alone
    (each at its own scale), as if they were the whole image; its rows more than ``halo`` away from
    a cut must be exact, which holds for convolutions of receptive radius ``halo`` and for anything
    per position. The cuts are at multiples of ``align`` (windowed attention: its window; make
    ``halo`` a multiple of it too), placed by ``height`` and ``rows`` (default ``STRIPE_ROWS // scale``:
    a map at 1/``scale`` of the network's resolution gets stripes of as many image rows) alone, so
    the result does not depend on the thread count. This is how a decoder-side image-to-image
    network uses several cores deterministically.
    """
    rows = rows or STRIPE_ROWS // scale
    count = max(1, height // rows)
    tops = sorted({align * round(i * height / count / align) for i in range(count)})
    bottoms = tops[1:] + [height]
    if len(tops) == 1:
        return fn(0, height)

    def stripe(cut: tuple[int, int]) -> Tensor:
        top, bottom = cut
        lo, hi = max(0, top - halo), min(height, bottom + halo)
        return fn(lo, hi)[..., top - lo : bottom - lo, :]

    return torch.cat(list(map_ordered(stripe, list(zip(tops, bottoms)))), -2)
