"""How many scenarios run side by side when --jobs is not given (imported by every CLI start for its help text,
so it imports nothing)."""

from __future__ import annotations

# Scenarios mostly wait (model latencies, quiet windows, a bot's own timeouts), not compute: on 2 cores the
# `all` profile keeps ~1 core busy at 2 jobs. Two jobs per core fill the waits (docs/ci.md has the figures);
# past JOBS_CAP the one homeserver's single process is what every job queues on, and each job is a bot's memory.
JOBS_PER_CORE = 2
JOBS_CAP = 8


def default_jobs(cores: int | None) -> int:
    """--jobs when none is given: two per core (`cores` None or 0 counts as one), at most JOBS_CAP."""
    return min(JOBS_PER_CORE * (cores or 1), JOBS_CAP)
