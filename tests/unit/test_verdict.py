"""The one place that turns what was recorded into the run's status and exit code."""

from __future__ import annotations

import signal

import pytest

from qa.report.verdict import nothing_ran, run_verdict, signal_exit_code


@pytest.mark.parametrize(("statuses", "errors", "lock", "interrupted", "expected"), [
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
])
def test_run_verdict(statuses: list[str], errors: bool, lock: dict[str, str] | None, interrupted: int | None,
                     expected: tuple[str, int]) -> None:
    assert run_verdict(statuses, errors=errors, lock=lock, interrupted_code=interrupted) == expected


def test_nothing_ran_counts_only_what_started() -> None:
    assert nothing_ran(["skip", "skip"]) and nothing_ran([])
    assert not nothing_ran(["skip", "pass"]) and not nothing_ran(["fail"]) and not nothing_ran(["interrupted"])


def test_signal_exit_codes() -> None:
    assert [signal_exit_code(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]
