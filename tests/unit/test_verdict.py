"""The one place that turns what was recorded into the run's status and exit code."""

from __future__ import annotations

import signal
from typing import get_args

import pytest

from qa.report.verdict import NOTHING_RAN, RunStatus, nothing_ran, run_verdict, signal_exit_code

CASES = [
    (["pass", "pass"], False, None, None, ("pass", 0)),
    (["pass", "skip"], False, {"verdict": "pass"}, None, ("pass", 0)),
    (["pass", "fail"], False, None, None, ("fail", 1)),
    (["pass"], False, {"verdict": "fail"}, None, ("fail", 1)),
    (["pass"], False, {"verdict": "n/a"}, None, ("pass", 0)),
    (["pass"], False, {"verdict": "none"}, None, ("pass", 0)),
    (["pass", "interrupted"], False, None, None, ("fail", 1)),
    (["fail"], True, None, None, ("error", 2)),
    (["skip", "skip"], False, None, None, ("error", 2)),
    ([], False, None, None, ("error", 2)),
    (["pass"], True, None, 143, ("interrupted", 143)),
    (["skip"], False, None, 130, ("interrupted", 130)),
]


@pytest.mark.parametrize(("statuses", "errors", "lock", "interrupted", "expected"), CASES)
def test_run_verdict(statuses: list[str], errors: bool, lock: dict[str, str] | None, interrupted: int | None,
                     expected: tuple[str, int]) -> None:
    assert run_verdict(statuses, errors=errors, lock=lock, interrupted_code=interrupted) == expected


def test_nothing_ran_counts_only_what_started() -> None:
    assert nothing_ran(["skip", "skip"]) and nothing_ran([])
    assert not nothing_ran(["skip", "pass"]) and not nothing_ran(["fail"]) and not nothing_ran(["interrupted"])


def test_signal_exit_codes() -> None:
    assert [signal_exit_code(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]


def test_the_status_type_is_exactly_the_statuses_a_run_can_end_with() -> None:
    # summary.json's `status` is typed by this alias and read by CI: it must name what run_verdict returns.
    produced = {run_verdict(s, errors=e, lock=lk, interrupted_code=i)[0] for s, e, lk, i, _ in CASES}
    assert set(get_args(RunStatus)) == produced == {"pass", "fail", "error", "interrupted"}


def test_the_nothing_ran_message_says_what_happened() -> None:
    assert NOTHING_RAN.startswith("no scenario ran:") and NOTHING_RAN.endswith("skipped")
