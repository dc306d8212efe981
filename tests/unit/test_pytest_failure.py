"""What pytest prints for a failed scenario or test: the report's text (qa.pytest_plugin.failure), pure."""

from __future__ import annotations

from qa.pytest_plugin.failure import MatrixQAFailure, MatrixQAUsageError, failure_text
from qa.report.summary import Failure, ScenarioResult


def test_the_failure_reads_like_the_report() -> None:
    result = ScenarioResult(id="s", title="t", status="fail", details="step 3 (expect_reply): reply to 'ask'",
                            failure=Failure(step=3, stepKind="expect_reply", expected="reply to 'ask'",
                                            seen=["expected rel_type m.thread", "expected rel_type m.thread"],
                                            hints=["look at the thread"]))
    assert failure_text(result) == "\n".join([
        "s fail: step 3 (expect_reply): reply to 'ask'", "expected: reply to 'ask'", "seen:",
        "  expected rel_type m.thread", "hints:", "  - look at the thread"])
    assert failure_text(ScenarioResult(id="s", title="t", status="fail", details="boom")) == "s fail: boom"
    assert isinstance(MatrixQAFailure("x"), AssertionError)


def test_a_long_evidence_block_is_cut_as_the_report_cuts_it() -> None:
    seen = [f"line {n}" for n in range(30)]
    text = failure_text(ScenarioResult(id="s", title="t", status="fail", details="d",
                                       failure=Failure(expected="e", seen=seen)))
    lines = text.splitlines()
    assert lines[:3] == ["s fail: d", "expected: e", "seen:"]
    assert lines[3:6] == ["  line 0", "  line 1", "  line 2"] and lines[6] == "  … 10 lines left out …"
    assert lines[-1] == "  line 29" and "hints:" not in text


def test_the_errors_are_what_pytest_and_python_expect() -> None:
    failure = MatrixQAFailure("boom", result="r")
    assert str(failure) == "boom" and failure.result == "r" and MatrixQAFailure("x").result is None
    assert issubclass(MatrixQAUsageError, TypeError)
