"""How many CPU cores this process may really use (torch-free, for the command line's defaults).

``os.cpu_count()`` counts the machine's cores; a process pinned to some of them (``taskset``,
``sched_setaffinity``) or a container with a CPU quota (cgroup ``cpu.max``) gets fewer, and
threads beyond those only wait for each other.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"


def cgroup_cpus(path: Path = CGROUP_CPU_MAX) -> int | None:
    """The cgroup's CPU quota in whole cores (rounded up), None without one."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpus()
    return max(1, min(cores, quota) if quota else cores)


def limit_threads(threads: int) -> None:
    """Give torch ``threads`` threads in this process, now if it is loaded, else when it is (a worker's setup)."""
    import sys

    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when it is first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
