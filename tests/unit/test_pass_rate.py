"""--repeat's pass rates, --min-pass-rate's verdict and --rerun-failed's choice: pure logic, no servers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from qa.report.junit import render_junit
from qa.report.markdown import render_markdown
from qa.report.repeats import attempt_id, combine_attempts, rerun_ids
from qa.report.summary import Deadline, Failure, InfraRetry, RunError, ScenarioResult, count
from qa.report.verdict import is_flaky, parse_pass_rate, pass_rate, repeated_status, run_verdict
from tests.unit.test_report_render import assert_tables_well_formed, make_summary


def attempt(status: str, k: int, ms: float = 1000.0, **extra: object) -> ScenarioResult:
    failure = Failure(expected=f"reply to attempt {k}", seen=[f"wrong {k}"]) if status == "fail" else None
    return ScenarioResult(id=attempt_id("canary", k), title="Canary", status=status, durationMs=ms,  # type: ignore[arg-type]
                          details=f"details of {k}", failure=failure, replyLatenciesMs=[10.0 * k], **extra)


def flaky_four(min_pass_rate: float = 1.0) -> ScenarioResult:
    tries = [attempt(s, k) for k, s in enumerate(["pass", "fail", "pass", "fail"], start=1)]
    return combine_attempts("canary", "Canary", tries, [t.id for t in tries], min_pass_rate)


@pytest.mark.parametrize(("statuses", "expected"), [
    (["pass", "fail", "pass", "fail"], (2, 4, 0.5)),
    (["pass", "pass", "skip"], (2, 2, 1.0)),  # a skipped attempt did not finish: not in the rate
    (["fail", "interrupted"], (0, 1, 0.0)),
    (["skip", "skip"], (0, 0, None)),
])
def test_pass_rate_counts_only_finished_attempts(statuses: list[str], expected: tuple) -> None:
    assert pass_rate(statuses) == expected


@pytest.mark.parametrize(("statuses", "flaky"), [
    (["pass", "fail"], True), (["pass", "pass"], False), (["fail", "fail"], False), (["pass", "skip"], False),
])
def test_flaky_means_some_but_not_all_finished_attempts_passed(statuses: list[str], flaky: bool) -> None:
    assert is_flaky(statuses) is flaky


@pytest.mark.parametrize(("statuses", "rate", "status"), [
    (["pass", "fail", "pass", "fail"], 1.0, "fail"),
    (["pass", "fail", "pass", "fail"], 0.5, "pass"),
    (["pass", "fail", "pass", "fail"], 0.51, "fail"),
    (["pass", "pass", "fail"], parse_pass_rate("66.67%"), "fail"),
    (["pass", "pass", "fail"], 2 / 3, "pass"),  # exactly at the threshold passes
    (["pass", "interrupted"], 0.5, "interrupted"),
    (["skip", "skip"], 1.0, "skip"),
])
def test_repeated_status_from_the_pass_rate(statuses: list[str], rate: float, status: str) -> None:
    assert repeated_status(statuses, rate) == status


@pytest.mark.parametrize(("text", "value"), [("0.8", 0.8), ("80%", 0.8), (" 100 % ", 1.0), ("1", 1.0), (".5", 0.5)])
def test_min_pass_rate_reads_fractions_and_percentages(text: str, value: float) -> None:
    assert parse_pass_rate(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "0%", "1.5", "150%", "-0.5", "half", "", "nan"])
def test_min_pass_rate_refuses_what_is_not_a_share(text: str) -> None:
    with pytest.raises(ValueError, match=r"like 0\.8|above 0"):
        parse_pass_rate(text)


def test_two_of_four_is_fifty_percent_flagged_flaky_and_fails_at_the_default_rate() -> None:
    record = flaky_four()
    assert record.id == "canary" and record.status == "fail"
    p = record.passRate
    assert p is not None
    assert (p.repeat, p.finished, p.passed, p.passRate, p.flaky) == (4, 4, 2, 0.5, True)
    assert [a.status for a in p.attempts] == ["pass", "fail", "pass", "fail"]
    assert [a.ranAs for a in p.attempts] == ["canary~1", "canary~2", "canary~3", "canary~4"]
    assert record.details.startswith("2 of 4 attempts passed (50 %), flaky; needs 100 %; attempt 2: details of 2")
    # The failure shown is the first failed attempt's, the time is all attempts', the latencies every reply's.
    assert record.failure is not None and record.failure.expected == "reply to attempt 2"
    assert record.durationMs == 4000.0
    assert record.replyLatenciesMs == [10.0, 20.0, 30.0, 40.0]


def test_the_run_verdict_and_exit_code_follow_the_min_pass_rate() -> None:
    assert run_verdict([flaky_four(1.0).status], errors=False, lock=None) == ("fail", 1)
    lenient = flaky_four(0.5)
    assert lenient.status == "pass" and lenient.failure is None
    assert run_verdict([lenient.status], errors=False, lock=None) == ("pass", 0)
    assert count([lenient]).flaky == 1 and count([lenient]).passed == 1


def test_a_retried_attempt_is_marked_and_its_retry_kept() -> None:
    retried = attempt("pass", 2, retries=[InfraRetry(ranAs="canary~2", error="infrastructure (homeserver): 502")])
    record = combine_attempts("canary", "Canary", [attempt("pass", 1), retried], ["canary~1", "canary~2~retry"], 1.0)
    assert record.status == "pass"
    assert record.passRate is not None and [a.retried for a in record.passRate.attempts] == [False, True]
    assert record.passRate.attempts[1].ranAs == "canary~2~retry"
    assert [r.error for r in record.retries] == ["infrastructure (homeserver): 502"]


def test_rerun_takes_failed_interrupted_and_unrun_scenarios_only() -> None:
    results = [
        ScenarioResult(id="a", title="A", status="pass"),
        ScenarioResult(id="b", title="B", status="fail"),
        ScenarioResult(id="c", title="C", status="interrupted"),
        ScenarioResult(id="d", title="D", status="skip", details="not run: the run was stopped early (deadline)"),
        ScenarioResult(id="e", title="E", status="skip", details="skipped: the bot lacks reactions"),
    ]
    assert rerun_ids(make_summary(results)) == ["b", "c", "d"]


def test_markdown_and_junit_show_the_pass_rate_and_the_flaky_flag() -> None:
    record = flaky_four()
    summary = make_summary([record], repeat=4, minPassRate=1.0, status="fail", exitCode=1)
    markdown = render_markdown(summary)
    assert_tables_well_formed(markdown)
    section = markdown.split("## Pass rates", 1)[1].split("\n## ", 1)[0]
    assert "| `canary` | 2 of 4 | 50 % | ❌ fail | ⚠️ flaky | ✅ ❌ ✅ ❌ |" in section
    assert "each scenario 4 times; passes at a pass rate of 100 % or more; 1 flaky" in markdown
    case = ET.fromstring(render_junit(summary).split("?>", 1)[1]).find("testcase")
    assert case is not None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props == {"passRate": "0.5", "passed": "2", "finished": "4", "repeat": "4", "flaky": "true"}
    assert case.find("failure") is not None
    assert "2 of 4 attempts passed (50 %), flaky" in (case.findtext("system-out") or "")


def test_a_check_an_attempt_could_not_make_stays_not_checked_in_every_report() -> None:
    """Attempts that all passed, one of them with a check it could not make: the combined record says so, and the
    markdown and JUnit show it (they render `details`), not just the JSON's per-attempt list."""
    note = "3 steps passed; final checks NOT CHECKED: $edit never reached a test user's client"
    tries = [attempt("pass", 1), attempt("pass", 2).model_copy(update={"details": note}), attempt("pass", 3)]
    record = combine_attempts("canary", "Canary", tries, [t.id for t in tries], 1.0)
    assert record.status == "pass"
    assert record.details == f"3 of 3 attempts passed (100 %); NOT CHECKED in attempt(s) 2: {note}"
    summary = make_summary([record], repeat=3, minPassRate=1.0)
    assert "NOT CHECKED in attempt(s) 2" in render_markdown(summary)
    assert "NOT CHECKED in attempt(s) 2" in render_junit(summary)
    # A failed attempt's note is its failure's, already shown; only passes are named here.
    tries = [attempt("fail", 1).model_copy(update={"details": "NOT CHECKED elsewhere"}), attempt("pass", 2)]
    assert "NOT CHECKED in" not in combine_attempts("canary", "Canary", tries, [t.id for t in tries], 0.5).details


def test_the_record_merges_every_attempt_and_shows_the_one_cut_short() -> None:
    from qa.report.summary import NegativeCheck

    def check(k: int) -> NegativeCheck:
        return NegativeCheck(step=k, triggerEventId=f"$t{k}", expectedReason="not mentioned")

    tries = [attempt("pass", 1, ms=100.0, negativeChecks=[check(1)], botBootMs=1.0),
             attempt("interrupted", 2, ms=200.0, negativeChecks=[check(2)], botBootMs=2.0).model_copy(
                 update={"failure": Failure(expected="the run was stopped", seen=[])}),
             attempt("skip", 3, ms=300.04, retries=[InfraRetry(ranAs="canary~3", error="502")], botBootMs=3.0),
             attempt("pass", 4, ms=400.0, botBootMs=4.0)]
    record = combine_attempts("canary", "Canary title", tries, [t.id for t in tries], 1.0)
    assert record.id == "canary" and record.title == "Canary title"
    assert record.details == "2 of 2 attempts passed (100 %); 2 attempt(s) did not finish", record.details
    assert record.status == "interrupted" and record.botBootMs == 2.0, "the attempt cut short is the one shown"
    assert record.failure is not None and record.failure.expected == "the run was stopped"
    passes = [attempt("pass", k, botBootMs=float(k)) for k in (1, 2, 3)]
    assert combine_attempts("canary", "C", passes, [t.id for t in passes], 1.0).botBootMs == 3.0, "else the last"
    assert record.durationMs == 1000.0
    assert record.replyLatenciesMs == [10.0, 20.0, 30.0, 40.0] and record.latency is not None
    assert [c.step for c in record.negativeChecks] == [1, 2] and [r.ranAs for r in record.retries] == ["canary~3"]
    assert record.passRate is not None and record.passRate.passRate == 1.0
    # Only unfinished attempts: the details are the one shown (the interrupted one, not the last).
    cut = [attempt("skip", 1), attempt("interrupted", 2), attempt("skip", 3)]
    assert combine_attempts("canary", "C", cut, [t.id for t in cut], 1.0).details == "details of 2"
    # Two attempts with a check they could not make: both named, the first's note shown.
    notes = [attempt("pass", k).model_copy(update={"details": f"NOT CHECKED {k}"}) for k in (1, 2)]
    assert combine_attempts("canary", "C", notes, [t.id for t in notes], 1.0).details.endswith(
        "; NOT CHECKED in attempt(s) 1, 2: NOT CHECKED 1")
    three = [attempt("pass", 1), attempt("fail", 2), attempt("pass", 3)]
    assert combine_attempts("canary", "C", three, [t.id for t in three], 0.5).passRate.passRate == 0.6667


def test_a_run_without_repeat_has_no_pass_rate_section() -> None:
    markdown = render_markdown(make_summary([ScenarioResult(id="a", title="A", status="pass")]))
    assert "## Pass rates" not in markdown and "Repeat" not in markdown


def test_the_report_names_a_reached_deadline_and_what_did_not_finish() -> None:
    deadline = Deadline(timeout="20s", timeoutMs=20000, reached=True, finished=["canary"], unfinished=["b"])
    summary = make_summary([ScenarioResult(id="canary", title="C", status="pass"),
                            ScenarioResult(id="b", title="B", status="interrupted")],
                           deadline=deadline, status="error", exitCode=2,
                           errors=[RunError(component="deadline", message="the run's --timeout of 20s passed")])
    markdown = render_markdown(summary)
    assert "--timeout 20s: reached; every process stopped; 1 finished, 1 did not" in markdown


def test_an_attempt_runs_its_scenario() -> None:
    from qa.report.repeats import attempt_id, scenario_of

    assert scenario_of(attempt_id("matrix-canary", 3)) == "matrix-canary"
    assert scenario_of("matrix-canary") == "matrix-canary"
    assert scenario_of("matrix-canary~retry") == "matrix-canary"
