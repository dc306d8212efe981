"""The run's verdict and exit code, from what was recorded: pure, and the one place that decides it, so the
run and `report --merge` can never disagree.

    interrupted  a signal ended the run (exit 128 + signal: 130 SIGINT, 143 SIGTERM, 129 SIGHUP)
    error        a usage, config or infrastructure error, the run's --timeout passed, or nothing ran (exit 2)
    fail         a scenario or the lock evidence failed (exit 1)
    pass         something ran, and nothing failed (exit 0)

A scenario run N times (--repeat) has one status from its attempts (`repeated_status`): it passes when its
pass rate reaches --min-pass-rate, so the run's verdict and exit code follow from the same statuses.

"Nothing ran" is an error rather than a pass: a run whose every scenario was skipped has tested nothing, and
the verdict must never be `pass` for what did not run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
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


def pass_rate(statuses: Sequence[str]) -> tuple[int, int, float | None]:
    """(passed, finished, passed/finished) over attempts; skipped and interrupted attempts did not finish."""
    passed = sum(s == "pass" for s in statuses)
    finished = passed + sum(s == "fail" for s in statuses)
    return passed, finished, (passed / finished if finished else None)


def is_flaky(statuses: Sequence[str]) -> bool:
    passed, finished, _ = pass_rate(statuses)
    return 0 < passed < finished


def repeated_status(statuses: Sequence[str], min_pass_rate: float) -> str:
    """One scenario's status from its attempts: interrupted if one was cut short (the run was stopped), skip if
    none finished, else pass when the pass rate reaches `min_pass_rate`."""
    if "interrupted" in statuses:
        return "interrupted"
    _, _, rate = pass_rate(statuses)
    if rate is None:
        return "skip"
    # A rate is a ratio of small whole numbers; the tolerance keeps 2/3 >= 0.6667-style edges honest.
    return "pass" if rate >= min_pass_rate - 1e-9 else "fail"


_RATE_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(%?)\s*")


def parse_pass_rate(text: str) -> float:
    """--min-pass-rate: a fraction ("0.8") or a percentage ("80%"), above 0 and at most 1 (100 %)."""
    match = _RATE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a fraction like 0.8 or a percentage like 80%, got {text!r}")
    value = float(match.group(1)) / (100 if match.group(2) else 1)
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"must be above 0 and at most 1 (100%), got {text!r}")
    return value
