"""How many scenarios run side by side when --jobs is not given (imported by every CLI start for its help text,
so it imports only os)."""

from __future__ import annotations

import os

# Scenarios mostly wait (model latencies, quiet windows, a bot's own timeouts), not compute: on 2 cores the
# `all` profile keeps ~1 core busy at 2 jobs. Two jobs per core fill the waits (docs/ci.md has the figures);
# past JOBS_CAP the one homeserver's single process is what every job queues on, and each job is a bot's memory.
JOBS_PER_CORE = 2
JOBS_CAP = 8


def default_jobs(cores: int | None) -> int:
    """--jobs when none is given: two per core (`cores` None or 0 counts as one), at most JOBS_CAP."""
    return min(JOBS_PER_CORE * (cores or 1), JOBS_CAP)


def usable_cores() -> int | None:
    """The cores this process may run on (taskset, a container's CPU set), not the host's: a 2-CPU container on a
    64-core host must not get 8 jobs. A CPU quota (cgroup cpu.max) without a CPU set is not read."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()
