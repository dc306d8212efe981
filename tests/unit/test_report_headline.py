"""The report's first screen says what went wrong (issue 31): one sentence per failing scenario, with the lock
finding and its numbers first; a failure of the lock evidence alone is named too. Read as GitHub renders it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qa.report.headline import (
    Finding,
    ScenarioLock,
    findings,
    lock_sentence,
    scenario_locks,
    seen_value,
    step_sentence,
)
from qa.report.markdown import render_markdown
from qa.report.summary import Failure, ScenarioResult, Summary
from tests.unit.reader import first_screen, visible_blocks
from tests.unit.test_report_folding import big_run
from tests.unit.test_report_render import make_summary

FIXTURES = Path(__file__).parent / "report_fixtures"


def fixture(name: str) -> Summary:
    """Summaries of real runs (paths made neutral): the issue's legacy-scope runs and a passing one."""
    return Summary.model_validate(json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8")))


def turn(scenario: str, session: str, attempt: str, **fields: Any) -> dict[str, Any]:
    return {"scenario": scenario, "session": session, "attempt": attempt, "startT": 0.0, **fields}


# ---------------------------------------------------------------------------------------------------------
# The runs, as a reader sees them


def test_the_legacy_run_names_the_hold_and_the_wait_on_its_first_screen() -> None:
    md = render_markdown(fixture("legacy-scope"))
    screen = first_screen(md)
    assert screen[:4] == [
        "❌ matrix-qa: fail — 1 passed, 1 failed, 0 skipped of 2 · lock evidence failed",
        "Not passing:",
        "❌ matrix-session-lock-contention: the bot held its session write lock during model I/O for 1.52 s "
        "(turn-32013-1); a second writer waited 1.44 s for it (limit 25 ms)",
        "❌ canary: its steps passed, but the bot held its session write lock during model I/O for 14.3 ms "
        "(turn-32008-1)",
    ]
    # Within the first 15 lines of the markdown itself, too.
    head = "\n".join(md.splitlines()[:15])
    assert "during model I/O for 1.52 s" in head and "waited 1.44 s" in head


def test_a_lock_only_failure_is_not_passing_in_failures_and_never_green() -> None:
    md = render_markdown(fixture("canary-legacy-scope"))
    assert first_screen(md)[:3] == [
        "❌ matrix-qa: fail — 1 passed, 0 failed, 0 skipped of 1 · lock evidence failed",
        "Not passing:",
        "❌ canary: its steps passed, but the bot held its session write lock during model I/O for 7.5 ms "
        "(turn-32126-1)",
    ]
    blocks = visible_blocks(md)
    row = next(text for tag, text in blocks if tag == "tr" and text.startswith("canary "))
    assert "❌ lock fail" in row and "✅" not in row
    assert ("h3", "❌ canary (lock evidence)") in blocks
    failure = md.split("### ❌ canary (lock evidence)", 1)[1]
    assert failure.split("\n\n")[2].startswith("**Lock:** the bot held its session write lock during model I/O "
                                               "for 7.5 ms (turn-32126-1); its steps passed")


def test_a_passing_run_has_no_finding() -> None:
    summary = fixture("narrow-scope")
    assert findings(summary) == []
    screen = first_screen(render_markdown(summary))
    assert screen[0] == "✅ matrix-qa: pass — 2 passed, 0 failed, 0 skipped of 2"
    assert "Not passing:" not in screen


def test_a_70_scenario_run_names_both_failures_above_the_fold() -> None:
    screen = first_screen(render_markdown(big_run()))
    assert screen[1:4] == ["Not passing:", "❌ scenario-07: a step expected a reply; saw x",
                           "❌ scenario-41: a step expected a reply; saw x"]
    assert len(screen) <= 8


def test_many_failures_are_capped_on_the_first_screen() -> None:
    from qa.report.markdown import FINDINGS_SHOWN

    screen = first_screen(render_markdown(big_run(failing=tuple(range(12)))))
    listed = [line for line in screen if line.startswith("❌ scenario-")]
    assert len(listed) == FINDINGS_SHOWN
    assert f"… and {12 - FINDINGS_SHOWN} more under Failures" in screen


# ---------------------------------------------------------------------------------------------------------
# The sentences


def test_scenario_locks_gathers_each_scenarios_turns_and_reasons() -> None:
    locks = scenario_locks(fixture("legacy-scope").lock)
    contention = locks["matrix-session-lock-contention"]
    assert contention.overlap_ms == pytest.approx(1518.479) and contention.overlap_attempt == "turn-32013-1"
    assert contention.waited_ms == pytest.approx(1440, abs=5) and contention.held_ms > 1500
    assert contention.io_kinds == {"model"} and len(contention.reasons) == 2  # its hold and its probe
    assert locks["canary"].failed and len(locks["canary"].reasons) == 1
    assert scenario_locks(None) == {} and scenario_locks({"turns": [None, {"session": "!a"}]}) == {}


def test_reasons_count_only_when_the_verdict_failed() -> None:
    lock = {"verdict": "pass", "reasons": ["session !a: x"], "turns": [turn("s", "!a", "t1")]}
    assert not scenario_locks(lock)["s"].failed
    lock["verdict"] = "fail"
    assert scenario_locks(lock)["s"].reasons == ["session !a: x"]


def test_the_worst_turn_and_longest_wait_win() -> None:
    lock = {"turns": [turn("s", "!a", "t1", overlapMs=5.0, ioKinds=["approval"], longestHoldMs=9.0,
                           waits=[[0, 2], [3, 40]]),
                      turn("s", "!a", "t2", overlapMs=50.0, longestHoldMs=60.0, waits=[[0, 1], "junk", [1]]),
                      turn("s", "!a", "t3", overlapMs=True, longestHoldMs=1.0)]}
    mine = scenario_locks(lock)["s"]
    assert (mine.overlap_ms, mine.overlap_attempt, mine.io_kinds) == (50.0, "t2", {"model"})
    assert (mine.waited_ms, mine.held_ms) == (37.0, 60.0)


def test_the_lock_sentence() -> None:
    mine = ScenarioLock(sessions={"!a"}, overlap_ms=1514.3, overlap_attempt="turn-1", io_kinds={"model"},
                        waited_ms=1439.4, reasons=["r"])
    assert lock_sentence(mine, "lock.acquire with waitMs <= 25") == (
        "the bot held its session write lock during model I/O for 1.51 s (turn-1); a second writer waited 1.44 s "
        "for it (limit 25 ms)")
    assert lock_sentence(mine, "") == ("the bot held its session write lock during model I/O for 1.51 s (turn-1); "
                                   "a second writer waited 1.44 s for it")
    mine.waited_ms = 9.9  # the lock file's own cost, not a finding
    mine.io_kinds = {"model", "approval"}
    assert lock_sentence(mine, "") == "the bot held its session write lock during I/O for 1.51 s (turn-1)"
    quiet = ScenarioLock(reasons=["session !roomIdThatIsLong:hs/main attempt t: its hold was taken over after 40ms"])
    assert lock_sentence(quiet, "") == "session !roomIdTh…/main attempt t: its hold was taken over after 40 ms"
    assert lock_sentence(ScenarioLock(), "") == ""


def step(expected: str, seen: list[str], step: int | None = 4, kind: str | None = "expect_trace") -> ScenarioResult:
    return ScenarioResult(id="s", title="t", status="fail", details="d",
                          failure=Failure(step=step, stepKind=kind, expected=expected, seen=seen))


def test_the_seen_value_that_decided() -> None:
    wait = step("lock.acquire with waitMs <= 25", ["bot trace: lock.acquire session=!a attempt=x waitMs=1456.7"])
    assert seen_value(wait) == "waitMs=1456.7"
    reply = step("a reply", ["body 'MQA-' != expected 'MQA-123'", "second"])
    assert seen_value(reply) == "body 'MQA-' != expected 'MQA-123'"
    assert seen_value(step("x", [])) == "nothing"
    assert seen_value(step("x", [""])) == ""
    crash = step("the bot to keep running", ["bot b: exited with code 3 unexpectedly (log: /t/o/scenarios/s/bot.log)"
                                             "\nmore"])
    assert seen_value(crash) == "bot b: exited with code 3 unexpectedly (log: scenarios/s/bot.log)"
    assert len(seen_value(step("x", ["y" * 400]))) == 160
    assert seen_value(ScenarioResult(id="s", title="t", status="fail")) == "nothing"


def test_the_step_sentence() -> None:
    assert step_sentence(step("a reply", ["none"], 2, "expect_reply")) == \
        "step 2 (expect_reply) expected a reply; saw none"
    assert step_sentence(step("a reply", [], None, None)) == "a step expected a reply; saw nothing"
    assert step_sentence(ScenarioResult(id="s", title="t", status="fail", details="boom")) == "boom"
    assert step_sentence(ScenarioResult(id="s", title="t", status="fail")) == "fail"
    assert step_sentence(step("e" * 300, [])).startswith("step 4 (expect_trace) expected " + "e" * 159 + "…; saw")


def run_with(scenarios: list[ScenarioResult], lock: dict[str, Any] | None) -> Summary:
    return make_summary(scenarios, lock=lock)


def test_findings_order_and_kinds() -> None:
    lock = {"verdict": "fail", "reasons": ["session !b attempt t: lock held during model I/O for 20.0ms",
                                           "session !gone attempt z: hold still open", "another"],
            "turns": [turn("b-lock", "!b", "t", overlapMs=20.0, ioKinds=["model"]),
                      turn("c-wait", "!c", "w", waits=[[0, 500]])]}
    scenarios = [ScenarioResult(id="a-pass", title="t", status="pass"),
                 ScenarioResult(id="b-lock", title="t", status="pass"),
                 ScenarioResult(id="c-wait", title="t", status="fail",
                                failure=Failure(step=3, stepKind="expect_trace",
                                                expected="lock.acquire with waitMs <= 25",
                                                seen=["bot trace: lock.acquire waitMs=500"])),
                 ScenarioResult(id="d-int", title="t", status="interrupted", details="interrupted: SIGTERM"),
                 ScenarioResult(id="e-skip", title="t", status="skip", details="no e2ee")]
    assert findings(run_with(scenarios, lock)) == [
        # c-wait has no lock reason of its own: its step says what was seen.
        Finding("c-wait", "step 3 (expect_trace) expected lock.acquire with waitMs <= 25; saw waitMs=500"),
        Finding("d-int", "interrupted: SIGTERM"),
        Finding("b-lock", "its steps passed, but the bot held its session write lock during model I/O for 20.0 ms "
                          "(t)", lock_only=True),
        Finding(None, "session !gone attempt z: hold still open (and 1 more)"),
    ]


def test_a_failing_scenario_with_a_lock_finding_and_an_unrelated_step() -> None:
    lock = {"verdict": "fail", "reasons": ["session !b attempt t: lock held during model I/O for 20.0ms"],
            "turns": [turn("s", "!b", "t", overlapMs=20.0, waits=[[0, 300]])]}
    unrelated = ScenarioResult(id="s", title="t", status="fail",
                               failure=Failure(step=5, stepKind="expect_reply", expected="a reply", seen=["none"]))
    (found,) = findings(run_with([unrelated], lock))
    assert found.text == ("the bot held its session write lock during model I/O for 20.0 ms (t); a second writer "
                          "waited 300 ms for it; step 5 (expect_reply) expected a reply; saw none")
    interrupted = ScenarioResult(id="s", title="t", status="interrupted", details="")
    assert findings(run_with([interrupted], lock))[0].text.endswith("; interrupted")
    # One reason left over, no "(and … more)".
    lone = {"verdict": "fail", "reasons": ["session !x: y"], "turns": []}
    assert findings(run_with([], lone)) == [Finding(None, "session !x: y")]
    assert findings(run_with([], {"verdict": "fail", "reasons": [], "turns": []})) == []


def test_a_scenario_without_waits_holds_or_numbers_counts_zero() -> None:
    import dataclasses

    mine = scenario_locks({"turns": [turn("s", "!a", "t", overlapMs="x", longestHoldMs=None)]})["s"]
    assert (mine.overlap_ms, mine.waited_ms, mine.held_ms, mine.overlap_attempt) == (0.0, 0.0, 0.0, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Finding("s", "x").text = "y"  # type: ignore[misc]


def test_scenario_locks_edges() -> None:
    # An untagged turn first does not hide the tagged ones after it; on a tie the first turn is the worst.
    lock = {"verdict": "fail", "reasons": ["session !abX: held", "session !abX: probe"],
            "turns": [None, {"session": "!x"}, turn("s", "!abX", "first", overlapMs=5.0),
                      turn("s", "!abX", "second", overlapMs=5.0, ioKinds=["approval"]),
                      turn("t", "!c", None, overlapMs=1.0, ioKinds=["approval"])]}
    locks = scenario_locks(lock)
    assert (locks["s"].overlap_attempt, locks["s"].io_kinds) == ("first", {"model"})
    # A session id ending in X, reasons naming it with a colon after it: both are the scenario's.
    assert locks["s"].reasons == ["session !abX: held", "session !abX: probe"]
    assert (locks["t"].overlap_attempt, locks["t"].io_kinds) == ("?", {"approval"})


def test_sentence_edges() -> None:
    mine = ScenarioLock(sessions={"!a"}, overlap_ms=0.5, overlap_attempt="t", io_kinds={"model"}, waited_ms=10.0,
                        reasons=["r"])
    assert lock_sentence(mine, "") == ("the bot held its session write lock during model I/O for 0.5 ms (t); "
                                       "a second writer waited 10.0 ms for it")
    two = step("model.request.start with a and b", ["bot trace: model.request.start a=1 c=3 b=2"])
    assert seen_value(two) == "a=1 b=2"
    # A failing scenario whose lock verdict passed says nothing about the lock, whatever its turns hold.
    lock = {"verdict": "pass", "reasons": [], "turns": [turn("s", "!a", "t", overlapMs=5.0)]}
    (found,) = findings(run_with([step("a reply", ["none"], 2, "expect_reply")], lock))
    assert found.text == "step 2 (expect_reply) expected a reply; saw none"


def test_an_interrupted_scenario_says_why_and_a_ten_millisecond_wait_explains_the_step() -> None:
    cut = ScenarioResult(id="s", title="t", status="interrupted", details="interrupted: SIGTERM during step 2",
                         failure=Failure(step=2, stepKind="expect_reply", expected="a reply", seen=["none"]))
    assert findings(run_with([cut], None))[0].text == "interrupted: SIGTERM during step 2"
    lock = {"verdict": "fail", "reasons": ["session !b attempt t: held"],
            "turns": [turn("w", "!b", "t", overlapMs=20.0, waits=[[0, 10]])]}
    waited = step("lock.acquire with waitMs <= 5", ["bot trace: lock.acquire waitMs=10"])
    waited.id = "w"
    assert findings(run_with([waited], lock))[0].text == (
        "the bot held its session write lock during model I/O for 20.0 ms (t); a second writer waited 10.0 ms for "
        "it (limit 5 ms)")
