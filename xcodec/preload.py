"""What the forkserver of a batch's workers does before it forks them (``cli.outcomes_in_workers``).

It imports the API, loads the models that the environment variable ``defaults.PRELOAD`` names and,
for a batch on the CPU, warms them up (``api.warm_up``): a worker then starts its first file at once,
with the models' weights shared among the workers (copy-on-write) instead of loaded by each. Torch
runs on one thread here, so that no thread pool is forked (``models.threads.map_processes``: why that
is safe); a worker sets its own thread count (``cli.init_worker``).

Then ``gc.freeze``: the garbage collector never walks the objects made so far, neither in the
workers (whose pages then stay shared) nor at the server's own end, which would otherwise take
twice as long (0.4-0.8 s on this 2-core machine) tearing torch down after the command has ended,
holding the command's stderr open.

A Ctrl-C while this runs (the server's loop ignores it afterwards) reaches the command too, which
reports it: the server then ends at once, without a traceback.
"""

import gc
import json
import os
import warnings
from contextlib import suppress

from .cores import limit_threads
from .defaults import PRELOAD

try:
    limit_threads(1)
    from . import api

    settings = json.loads(os.environ.get(PRELOAD, '{"models": []}'))
    with warnings.catch_warnings():  # the server's stderr is the command's
        warnings.simplefilter("ignore")
        for name in settings["models"]:
            with suppress(Exception):  # a model that cannot load fails each of its jobs, with its error
                (api.warm_up if settings.get("warm_up") else api.load_model)(name)
except KeyboardInterrupt:
    os._exit(130)
gc.freeze()
