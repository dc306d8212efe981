"""The run's verdict and exit code, from what was recorded: pure, and the one place that decides it, so the
run and `report --merge` can never disagree.

    interrupted  a signal ended the run (exit 128 + signal: 130 SIGINT, 143 SIGTERM, 129 SIGHUP)
    error        a usage, config or infrastructure error, or nothing ran at all (exit 2)
    fail         a scenario or the lock evidence failed (exit 1)
    pass         something ran, and nothing failed (exit 0)

"Nothing ran" is an error rather than a pass: a run whose every scenario was skipped has tested nothing, and
the verdict must never be `pass` for what did not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

RunStatus = Literal["pass", "fail", "error", "interrupted"]
RAN = frozenset({"pass", "fail", "interrupted"})
NOTHING_RAN = "no scenario ran: every scenario of the plan was skipped"


def nothing_ran(statuses: Iterable[str]) -> bool:
    return not any(s in RAN for s in statuses)


def run_verdict(statuses: Iterable[str], *, errors: bool, lock: Mapping[str, Any] | None,
                interrupted_code: int | None = None) -> tuple[RunStatus, int]:
    statuses = list(statuses)
    if interrupted_code is not None:
        return "interrupted", interrupted_code
    if errors:
        return "error", 2
    if "fail" in statuses or "interrupted" in statuses or (lock is not None and lock.get("verdict") == "fail"):
        return "fail", 1
    if nothing_ran(statuses):
        return "error", 2
    return "pass", 0


def signal_exit_code(signum: int) -> int:
    return 128 + signum
