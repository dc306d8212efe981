"""How many scenarios run side by side when --jobs is not given, and on how many homeservers (--homeservers,
qa.run.homeservers). Imported by every CLI start for its help text and to read its flags, so it imports only os."""

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


# Only the embedded Synapse can be booted more than once by the run: an external URL is one server, a Docker
# image's or Tuwunel's container is one (and Tuwunel is not single-threaded).
MULTI_BACKENDS = frozenset({"synapse"})
# A run of fewer scenarios than this stays on one homeserver under `auto`, and each further homeserver needs this
# many more (12 → two, 24 → three, …: more cores alone do not boot Synapses a short plan never paid for). A second
# Synapse (forked from the early interpreter: no import, ~+58 MB Pss, its boot beside the first's) is won back only
# once enough scenarios run side by side to keep two Synapses busy. Measured on 2 cores at the default --jobs 4,
# --homeservers 2 against 1, paired whole runs (docs/cli.md, --homeservers, has the commands and ranges): 2 and 4
# scenarios: wall 1.013 and 1.003, CPU +9 % and +7 % (a loss); 8: wall 0.885 (0.64-1.23), CPU +10 %, too wide to
# call; 12: wall 0.790 (0.67-1.06), CPU +8 %, the first clear gain; the fast profile's 16: wall 0.813, CPU +3 %.
# 12 also keeps `--profile restart` (8 scenarios) on one. The old threshold, 40, kept the fast profile on one
# Synapse for a gain not resolved at load 14-25.
AUTO_MIN_SCENARIOS = 12
# Why `auto` booted several, as the run's first line says it (the report, which may not import this, keeps a copy:
# qa.report.markdown.AUTO_HOMESERVERS_RULE; tests/unit/test_homeservers.py holds them equal).
AUTO_RULE = f"auto: {AUTO_MIN_SCENARIOS} scenarios or more"
# Under `auto` each homeserver serves at least this many job slots: fewer and its Synapse idles while its one
# scenario waits on the model or the bot, which is what the second homeserver was meant to win back.
AUTO_SLOTS_PER_HOMESERVER = 2
# An explicit N beyond this is refused: each is a Synapse process of ~100 MB.
MAX_HOMESERVERS = 8


def parse_homeservers(text: str) -> int | None:
    """`--homeservers`: `auto` (None) or a whole number from 1 to MAX_HOMESERVERS. ValueError says why not."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected auto or a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    if value > MAX_HOMESERVERS:
        raise ValueError(f"must be at most {MAX_HOMESERVERS}, got {value}: each is a Synapse process of ~100 MB")
    return value


def homeserver_count(requested: int | None, *, backend: str, jobs: int, scenarios: int, cores: int | None) -> int:
    """How many homeservers the run boots. Explicit N (checked by qa.run.homeservers.check_count) as given;
    `auto`: one, unless the embedded Synapse runs a plan of AUTO_MIN_SCENARIOS or more with job slots to share,
    then one a core (each Synapse keeps one core busy at most), each with AUTO_SLOTS_PER_HOMESERVER job slots or
    more, and one more per AUTO_MIN_SCENARIOS scenarios of the plan at most (what was measured is two from 12:
    4 cores do not boot 4 Synapses for the fast profile's 16)."""
    if requested is not None:
        return requested
    if backend not in MULTI_BACKENDS:
        return 1
    return max(1, min(cores or 1, jobs // AUTO_SLOTS_PER_HOMESERVER, 1 + scenarios // AUTO_MIN_SCENARIOS))


def slot_homeservers(slots: int, count: int) -> list[int]:
    """Which homeserver (0-based) each job slot serves: round robin, so the slots that start first (they take the
    longest scenarios, qa.harness.plan.longest_first) are spread over every homeserver."""
    return [i % count for i in range(slots)]
