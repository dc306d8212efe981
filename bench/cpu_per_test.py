"""A pytest plugin for bench/suite_time.py: the CPU each test costs, its own process tree's included.

Loaded with `-p bench.cpu_per_test` and MATRIX_QA_CPU_LOG=DIR (nothing happens without the variable). Around each
test's setup, call and teardown it reads the CPU of the pytest process (or xdist worker) and everything under it:
its own user+sys, its reaped children's (RUSAGE_CHILDREN: a CLI run and the Synapse that run reaped), and every live
descendant's user+sys plus the children that descendant reaped (/proc/PID/stat; the session's shared Synapse and
fork server, a run's bots). The difference is the test's CPU; a session fixture's boot is charged to the first test
that uses it, as in the JUnit times. A process re-parented away from the tree (double fork) is not counted. One JSON
line per test goes to DIR/cpu-<pid>.jsonl; one more line per process (`"nodeid": null`) holds the CPU the process
used outside tests (start, imports, collection, session teardown). A /proc scan costs ~1 ms of CPU, twice a test.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_TICK = os.sysconf("SC_CLK_TCK")
_state: dict[str, float] = {"in_tests": 0.0}


def _descendants_cpu(root: int) -> float:
    """User+sys (and reaped children's) of every live process below `root`, in seconds."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                raw = os.read(fd, 2048)
            finally:
                os.close(fd)
        except OSError:
            continue  # gone meanwhile
        fields = raw[raw.rfind(b")") + 2:].split()  # after "pid (comm) ": state ppid ... utime stime cutime cstime
        parent[int(name)] = int(fields[1])
        ticks[int(name)] = sum(int(x) for x in fields[11:15])
    total, below = 0, {root}
    changed = True
    while changed:  # processes are few (~100-300): a fixed point is cheaper than building a child map per level
        changed = False
        for pid, ppid in parent.items():
            if ppid in below and pid not in below:
                below.add(pid)
                total += ticks[pid]
                changed = True
    return total / _TICK


def tree_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + _descendants_cpu(os.getpid())


def _log_path() -> Path | None:
    where = os.environ.get("MATRIX_QA_CPU_LOG")
    return Path(where) / f"cpu-{os.getpid()}.jsonl" if where else None


def _write(record: dict[str, object]) -> None:
    path = _log_path()
    if path is not None:
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    if _log_path() is None:
        yield
        return
    cpu0, wall0 = tree_cpu(), time.monotonic()
    yield
    cpu = tree_cpu() - cpu0
    _state["in_tests"] += cpu
    _write({"nodeid": item.nodeid, "cpu": round(cpu, 3), "wall": round(time.monotonic() - wall0, 3)})


def pytest_unconfigure(config: pytest.Config) -> None:
    if _log_path() is None or (getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput")):
        return  # an xdist controller runs no test; its tree is the workers, whose own lines count them
    # What this process and its tree used outside tests: interpreter start, imports, collection (session fixtures'
    # teardown runs inside the last test's teardown, so it is charged to that test).
    _write({"nodeid": None, "cpu": round(tree_cpu() - _state["in_tests"], 3),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")})
