"""Where a start's time goes between the bot's `start` and its `ready`: named marks, each with the wall clock, the
process's CPU and its time queued for a core, summed per phase into the `ready` record's `boot` field (issue 29).

A phase's wall time is its CPU, plus its wait for a core (the kernel's run-queue delay of the main thread,
/proc/self/schedstat), plus the rest: waiting on I/O (the homeserver's answer, the disk). A forked bot's CPU
and run-queue counters start at zero at its fork, so the first mark also tells what it spent before `start`.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from qa.kernel.clock import mono_ms

_SCHEDSTAT = "/proc/self/schedstat"


def run_queue_ms() -> float | None:
    """The main thread's time spent waiting for a core since it began (None where the kernel does not say)."""
    try:
        with open(_SCHEDSTAT, "rb") as fh:
            return int(fh.read().split()[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return None


def phases(marks: list[tuple[str, float, float, float | None]]) -> dict[str, dict[str, float]]:
    """Pure: per phase (named by the mark that ends it), wall, CPU and run-queue ms since the mark before, and
    the rest (wall - CPU - queue, never below 0): the wait on I/O. A phase met again (a start that took more than
    one sync) is summed, so the phases still add up to the whole."""
    out: dict[str, dict[str, float]] = {}
    for (_, t0, cpu0, queue0), (name, t1, cpu1, queue1) in itertools.pairwise(marks):
        wall, cpu = t1 - t0, cpu1 - cpu0
        queue = queue1 - queue0 if queue0 is not None and queue1 is not None else 0.0
        these = {"wallMs": wall, "cpuMs": cpu, "queueMs": queue, "ioMs": max(0.0, wall - cpu - queue)}
        was = out.get(name, {})
        out[name] = {k: round(v + was.get(k, 0.0), 2) for k, v in these.items()}
    return out


MAX_MARKS = 64  # a bot that never gets ready (a sync failing again and again) marks each try: not without end


class BootMarks:
    """The marks of one start, up to `ready`; later marks are ignored (a bot marks its first sync only)."""

    def __init__(self) -> None:
        self._marks: list[tuple[str, float, float, float | None]] = []
        self.done = False
        self.mark("start")

    def mark(self, name: str) -> None:
        if not self.done and (len(self._marks) < MAX_MARKS - 1 or name == "ready"):
            self._marks.append((name, mono_ms(), time.process_time() * 1000, run_queue_ms()))

    def summary(self) -> dict[str, Any]:
        """The `ready` record's `boot` field; marks `ready` and closes the list."""
        self.mark("ready")
        self.done = True
        _, _, cpu0, queue0 = self._marks[0]
        return {"beforeStart": {"cpuMs": round(cpu0, 2), "queueMs": round(queue0 or 0.0, 2)},
                "phases": phases(self._marks)}
