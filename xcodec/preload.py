"""What the forkserver of a batch's workers does before it forks them (``cli.outcomes_in_workers``).

It imports the API, loads the models that the environment variable ``defaults.PRELOAD`` names and,
for a batch on the CPU, warms them up (``api.warm_up``): a worker then starts its first file at once,
with the models' weights shared among the workers (copy-on-write) instead of loaded by each. Torch
runs on one thread here, so that no thread pool is forked (``models.threads.map_processes``: why that
is safe); a worker sets its own thread count (``cli.init_worker``).

Last, ``gc.freeze``: the garbage collector then never walks the objects made so far, neither in the
workers (whose pages then stay shared) nor at the server's own end, which would otherwise spend
0.3 s more tearing torch down, the command's stderr still open, after the command has ended.
"""

import gc
import json
import os
import signal
import warnings
from contextlib import suppress

from .cores import limit_threads
from .defaults import PRELOAD

signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's, as in the server's loop after this
limit_threads(1)

from . import api  # noqa: E402 (after the thread count)

settings = json.loads(os.environ.get(PRELOAD, '{"models": []}'))
with warnings.catch_warnings():  # the server's stderr is the command's
    warnings.simplefilter("ignore")
    for name in settings["models"]:
        with suppress(Exception):  # a model that cannot load fails each of its jobs, with its error
            (api.warm_up if settings.get("warm_up") else api.load_model)(name)
gc.freeze()
