"""The plain values the markdown and the HTML report lay out: the lock section (per-turn rows with units, probes
with the deciding value first, pictures in the table's order) and a failure that fits (issue 31)."""

from __future__ import annotations

from typing import Any

from qa.report.failure_view import SEEN_HEAD, SEEN_LINES_SHOWN, failure_view, fault_rows, seen_lines, seen_view
from qa.report.headline import ScenarioLock
from qa.report.lock_view import (
    MERMAID_FAILING,
    hold_kind_text,
    lock_pictures,
    lock_view,
    ms_or_empty,
    ordered_timelines,
    probe_line,
    takeover_line,
    turn_row,
    turn_rows,
)
from qa.report.summary import Failure, ScenarioResult, StepResult
from qa.report.text import CONTINUATION
from tests.unit.test_report_headline import fixture
from tests.unit.test_report_render import make_summary

LOCK_PATH = "/dev/shm/matrix-qa-x/state/s/bot/sessions/room_main-a518d471e02c.jsonl.lock"


def test_a_turn_row_has_units_for_every_duration() -> None:
    turn = {"scenario": "s", "session": "!roomIdThatIsLong:hs/main", "attempt": "turn-2", "kind": "whole-turn",
            "outcome": "replied", "waits": [[0.0, 1400.0], [1500.0, 1540.0], ["x", 1]], "longestHoldMs": 1514.3,
            "modelIo": [[1.0, 1001.0], [1100.0, 1600.0]], "overlapMs": 1500.0}
    assert turn_row(turn, 2) == {
        "scenario": "s", "number": 2, "session": "!roomIdTh…/main", "sessionFull": "!roomIdThatIsLong:hs/main",
        "attempt": "turn-2 (whole-turn)", "outcome": "replied", "waited": "1.44 s", "held": "1.51 s",
        "io": "1.50 s", "overlap": "1.50 s", "failed": True}
    bare = turn_row({"kind": "turn", "attempt": "a", "overlapMs": 0.0, "waits": "x", "modelIo": []}, None)
    assert (bare["attempt"], bare["waited"], bare["io"], bare["overlap"], bare["failed"]) == ("a", "—", "—", "0.0 ms",
                                                                                             False)
    assert turn_row({"overlapMs": "5"}, None)["failed"] is False


def test_turn_rows_follow_the_scenarios_table_then_time() -> None:
    turns: list[Any] = [
        {"scenario": "b", "attempt": "b2", "startT": 20.0}, {"scenario": "a", "attempt": "a1", "startT": 30.0},
        {"scenario": "b", "attempt": "b1", "startT": 10.0}, {"attempt": "loose", "startT": 0.0},
        {"scenario": "z", "attempt": "z1", "startT": "late"}, "junk",
    ]
    rows = turn_rows(turns, ["b", "a"])
    assert [(r["attempt"], r["number"]) for r in rows] == [("b1", 1), ("b2", 2), ("a1", 1), ("loose", None),
                                                            ("z1", 1)]


def test_probe_lines_lead_with_the_deciding_value() -> None:
    probe = {"session": "!qpviIePd5y44-qSk9:hs/main", "t": 5.0, "timeoutElapsedMs": 26.068,
             "error": f"session file locked (timeout 25ms): pid=1 {LOCK_PATH}", "duringModelIo": True}
    assert probe_line(probe) == ('probe timeoutElapsedMs=26.1 duringModelIo=true session=!qpviIePd…/main '
                                 'error="session file locked (timeout 25ms): pid=1 '
                                 '…/bot/sessions/room_main-a518d471e02c.jsonl.lock"')
    assert probe_line({"session": "!a", "acquiredElapsedMs": 3, "duringModelIo": False}) == \
        "probe acquiredElapsedMs=3 duringModelIo=false session=!a"
    assert probe_line({"session": "!a"}) == "probe session=!a"


def test_lock_view_normalises_and_humanises() -> None:
    view = lock_view({"verdict": "fail", "reasons": ["session !roomIdThatIsLong:hs/main: held for 1506.7ms"],
                      "settings": {"a": 1, "b": 2.5, "c": "x", "d": [1]}, "turnCount": 1, "takeovers": True,
                      "longestHoldMs": 1506.7, "totalOverlapMs": None, "probes": ["junk", {"session": "!a"}]})
    assert view is not None
    assert view["reasons"] == ["session !roomIdTh…/main: held for 1.51 s"]
    assert view["settings"] == [("a", "1"), ("b", "2.5"), ("c", "x"), ("d", "[1]")]
    assert view["counters"] == ["1 turn"]
    assert (view["longestHold"], view["totalOverlap"], view["emoji"]) == ("1.51 s", "—", "❌")
    assert view["probes"] == ["probe session=!a"]
    assert lock_view(None) is None
    odd = lock_view({"verdict": "odd", "settings": "x"})
    assert odd is not None and odd["emoji"] == "❔" and odd["settings"] == []


def test_kinds_and_takeovers_read_in_the_one_duration_format() -> None:
    assert hold_kind_text({"kind": "inbound", "count": 3, "longestMs": 1.838}) == "inbound ×3 (longest 1.8 ms)"
    assert hold_kind_text({"kind": "turn", "count": 1, "longestMs": 5, "open": 1}) == "turn ×1 (longest 5.0 ms), 1 open"
    assert takeover_line({"session": "!a", "previousAttempt": "t1", "previousPid": 7, "previousAgeMs": 6100.0,
                          "byAttempt": "t2", "reason": "max-hold", "after": ["sent a reply"]}) == (
        "takeover session=!a t1 (pid 7, held 6.10 s) by t2 reason=max-hold; then: sent a reply")
    assert takeover_line({"startup": True, "byAttempt": "t2", "reason": "owner-dead"}) == (
        "startup reclaim session= ? (pid ?) by t2 reason=owner-dead; then: nothing sent, written, run or removed")
    assert ms_or_empty(True) == "—" and ms_or_empty(12) == "12.0 ms"


def test_pictures_come_in_the_scenarios_tables_order() -> None:
    summary = fixture("legacy-scope")
    # The run traced canary's turns first; the table lists them in plan order, which is what the pictures follow.
    summary.scenarios.reverse()
    assert [tl.scenario for tl in ordered_timelines(summary)] == [r.id for r in summary.scenarios]
    pictures = lock_pictures(summary)
    assert [p["scenario"] for p in pictures["failing"]] == [r.id for r in summary.scenarios]
    first = pictures["failing"][0]
    assert first["svg"] == "scenarios/matrix-session-lock-contention/lock-timeline.svg"
    assert first["mermaid"].startswith("gantt\n") and first["waited"] == "1.44 s"
    assert pictures["passing"] == [] and pictures["failing_drawn"] == 2 <= MERMAID_FAILING


# ---------------------------------------------------------------------------------------------------------
# Failures that fit


def test_seen_lines_drop_repeats_and_read_deciding_value_first() -> None:
    seen = ["bot b: exited with code 3 (log: /tmp/o/scenarios/s/bot.log)", "bot.log: tail 1\nbot.log: tail 2", "",
            "bot.log: tail 1", "bot.log: tail 2", "", "bot trace: lock.acquire session=!roomIdThatIsLong:hs/main "
            "waitMs=1456.7"]
    assert seen_lines(seen, "lock.acquire with waitMs <= 25") == [
        "bot b: exited with code 3 (log: scenarios/s/bot.log)", "bot.log: tail 1", "bot.log: tail 2", "", "",
        "bot trace: lock.acquire waitMs=1456.7 · session=!roomIdTh…/main"]
    view = seen_view(seen, "x")
    assert (view["shown"], view["total"], view["repeated"]) == (6, 6, 2)


def test_a_long_seen_block_keeps_its_first_and_last_lines_and_wraps() -> None:
    seen = ["exit line"] + [f"line {i}" for i in range(1, 30)] + ["x " * 80]
    view = seen_view(seen, "")
    lines = view["lines"]
    assert (view["shown"], view["total"]) == (SEEN_LINES_SHOWN, 31)
    assert lines[:SEEN_HEAD + 1] == ["exit line", "line 1", "line 2", "… 11 lines left out …"]
    assert lines[-3] == "line 29" and lines[-2].startswith("x x") and lines[-1].startswith(CONTINUATION + "x")
    assert all(len(line) <= 100 for line in lines)
    assert seen_view([], "")["lines"] == []


def test_the_step_detail_is_not_the_expectation_again() -> None:
    failure = Failure(step=4, stepKind="expect_trace", expected="lock.acquire with waitMs <= 25", seen=["s"])
    steps = [StepResult(index=4, kind="expect_trace", status="fail", detail="lock.acquire with waitMs <= 25 ")]
    result = ScenarioResult(id="s", title="t", status="fail", failure=failure, steps=steps,
                            artifacts={"bot": "scenarios/s/bot.log"})
    view = failure_view(result)
    assert (view["step"], view["kind"], view["detail"], view["expected"]) == (4, "expect_trace", None,
                                                                              "lock.acquire with waitMs <= 25")
    assert view["artifacts"] == [("bot", "scenarios/s/bot.log")] and view["lock"] is None
    result.steps = [StepResult(index=4, kind="expect_trace", status="fail", detail="waited 30 s"),
                    StepResult(index=3, kind="send", status="pass", detail="other")]
    assert failure_view(result)["detail"] == "waited 30 s"


def test_a_lock_only_failure_view() -> None:
    mine = ScenarioLock(overlap_ms=12.7, overlap_attempt="t1", io_kinds={"model"}, reasons=["r"])
    view = failure_view(ScenarioResult(id="canary", title="t", status="pass"), mine)
    assert view["lock_only"] and view["step"] is None and view["seen"] is None
    assert view["lock"] == "the bot held its session write lock during model I/O for 12.7 ms (t1)"
    assert view["lock_reasons"] == ["r"]
    assert failure_view(ScenarioResult(id="c", title="t", status="fail"), ScenarioLock())["lock"] is None


def test_fault_rows_shorten_the_room_in_a_request_path() -> None:
    hits = [{"source": "homeserver", "rule": "r", "action": "status", "what": "403",
             "method": "PUT", "path": "/_matrix/client/v3/rooms/!XAcxMa9rsA7yvdSz:hs/send/m.room.message/t1"},
            {"source": "homeserver", "rule": "r", "action": "status", "method": "PUT", "path": "/x"}]
    (row,) = fault_rows(make_summary([ScenarioResult(id="s", title="t", status="fail", faultHits=hits)]).scenarios[0])
    assert row["paths"] == ["PUT /_matrix/client/v3/rooms/!XAcxMa9r…/send/m.room.message/t1", "PUT /x"]
    assert (row["hits"], row["actions"], row["what"]) == (2, ["status"], "403")


def test_a_skip_for_a_lacking_capability_says_what_it_means() -> None:
    from qa.report.markdown import lacking_meanings, render_markdown
    from qa.report.summary import BotInfo

    reason = ("skipped: bot 'echo' lacks 'lock' (requires:), 'state mutation x' (step 3 (mutate_bot_state)), "
              "'e2ee' (room secret) and a long reason that goes on well past the table's usual cut of its details")
    summary = make_summary([ScenarioResult(id="s", title="t", status="skip", details=reason),
                            ScenarioResult(id="t", title="t", status="skip", details="skipped: bot 'echo' lacks "
                                                                                   "'lock' (requires:)")])
    assert lacking_meanings(summary) == []  # a summary written before the meanings were recorded
    summary.environment.bot = BotInfo(name="echo", source="echo.yaml", ready="joined",
                                      capabilityMeanings={"lock": "keeps a session lock", "e2ee": "talks E2EE",
                                                          "media": "takes attachments"})
    assert lacking_meanings(summary) == [("lock", "keeps a session lock"), ("e2ee", "talks E2EE")]
    md = render_markdown(summary)
    assert "Skipped for what the bot lacks: `lock` keeps a session lock · `e2ee` talks E2EE" in md
    assert reason in md  # a skip's reason is never cut


def test_the_whole_lock_view_of_a_rich_section() -> None:
    from qa.report.lock_view import LOCK_VERDICT_EMOJI, MERMAID_PASSING, MERMAID_TASKS

    assert LOCK_VERDICT_EMOJI == {"pass": "✅", "fail": "❌", "none": "➖", "n/a": "➖"}
    assert (MERMAID_FAILING, MERMAID_PASSING, MERMAID_TASKS) == (4, 3, 40)
    counters = {"turnCount": 2, "modelRequests": 2, "otherHolds": 2, "takeovers": 2, "lockTimeouts": 2,
                "startupReclaims": 2}
    view = lock_view({"verdict": "pass", "scope": "narrow", "sources": {"scope": "env"}, "totalOverlapMs": 0.5,
                      "takeoverList": [{"session": "!a", "previousAttempt": "t1", "byAttempt": "t2", "reason": "r",
                                        "after": ["sent a reply", "ran a tool"]}], **counters})
    assert view is not None
    assert {k: view[k] for k in ("scope", "verdict", "emoji", "sources", "totalOverlap", "counters")} == {
        "scope": "narrow", "verdict": "pass", "emoji": "✅", "sources": [("scope", "env")], "totalOverlap": "0.5 ms",
        "counters": ["2 turns", "2 model requests", "2 other holds", "2 takeovers", "2 lock timeouts",
                     "2 startup reclaims"]}
    assert view["takeovers"] == ["takeover session=!a t1 (pid ?) by t2 reason=r; then: sent a reply, ran a tool"]
    singular = lock_view({k: 1 for k in counters})
    assert singular is not None and singular["counters"] == [
        "1 turn", "1 model request", "1 other hold", "1 takeover", "1 lock timeout", "1 startup reclaim"]
    assert singular["verdict"] == "none" and singular["emoji"] == "➖"
    assert [lock_view({"verdict": v})["emoji"] for v in ("fail", "n/a")] == ["❌", "➖"]  # type: ignore[index]


def test_turn_rows_of_scenarios_the_table_does_not_list_sort_by_name_then_time() -> None:
    turns = [{"scenario": "y", "attempt": "y1", "startT": 0.0}, {"scenario": "x", "attempt": "x1", "startT": 1.0},
             {"scenario": "y", "attempt": "y2", "startT": 2.0}, {"scenario": "A", "attempt": "A1", "startT": 5.0},
             {"attempt": "none", "startT": 3.0}, {"scenario": "x", "attempt": "x0", "startT": "junk"},
             {"scenario": "x", "attempt": "x-early", "startT": 0.5}]
    assert [r["attempt"] for r in turn_rows(turns, [])] == ["none", "A1", "x0", "x-early", "x1", "y1", "y2"]
    assert turn_row({"overlapMs": 0.5}, None)["failed"] is True


def test_pictures_are_capped_per_kind_and_say_how_many_are_drawn() -> None:
    from qa.report.lock_evidence import analyze_lock_evidence
    from qa.report.lock_timeline import tag_scenarios
    from tests.unit.test_lock_evidence import attempt_scope_turn, narrow_turn

    traces = {f"bad{i}": attempt_scope_turn(f"!b{i}:x", f"b{i}", i * 1000.0) for i in range(5)}
    traces.update({f"ok{i}": narrow_turn(f"!o{i}:x", f"o{i}", 10_000 + i * 1000.0) for i in range(4)})
    lock = analyze_lock_evidence([r for t in traces.values() for r in t]).model_dump(mode="json", by_alias=True)
    tag_scenarios(lock, traces)
    pictures = lock_pictures(make_summary([ScenarioResult(id=sid, title="t", status="pass") for sid in traces],
                                          lock=lock))
    assert [p["mermaid"] is not None for p in pictures["failing"]] == [True] * 4 + [False]
    assert [p["mermaid"] is not None for p in pictures["passing"]] == [True] * 3 + [False]
    assert (pictures["failing_drawn"], pictures["passing_drawn"]) == (4, 3)
    assert pictures["failing"][0]["overlap"] == "799 ms" and pictures["passing"][0]["overlap"] == "0.0 ms"


def test_the_whole_failure_view() -> None:
    hits = [{"source": "homeserver", "rule": "r1", "action": "status", "what": "403", "method": "PUT", "path": "/a"},
            {"source": "homeserver", "rule": "r1", "action": "status", "what": "later", "method": "PUT",
             "path": "/a"},
            {"rule": "r2", "method": "GET", "path": "/b"}]
    failure = Failure(step=2, stepKind="expect_reply", expected="a reply", seen=["one", "dup\ndup", "two"])
    steps = [StepResult(index=1, kind="send", status="pass", detail="sent"),
             StepResult(index=2, kind="expect_reply", status="fail", detail=""),
             StepResult(index=2, kind="expect_reply", status="fail", detail="waited 30 s")]
    result = ScenarioResult(id="s", title="T", status="interrupted", source="scenarios/s.yaml", failure=failure,
                            steps=steps, faultHits=hits)
    assert failure_view(result) == {
        "id": "s", "title": "T", "source": "scenarios/s.yaml", "status": "interrupted", "lock_only": False,
        "artifacts": [], "faults": ["r1 ×2 (403)", "r2 ×1 ()"], "lock": None, "lock_reasons": [], "step": 2,
        "kind": "expect_reply", "detail": "waited 30 s", "expected": "a reply",
        "seen": {"lines": ["one", "dup", "two"], "shown": 3, "total": 3, "repeated": 1}, "hints": [], "diff": []}
    assert fault_rows(result)[1] == {"source": "", "rule": "r2", "hits": 1, "actions": [], "what": "",
                                     "paths": ["GET /b"]}
    assert failure_view(result.model_copy(update={"status": "fail"}))["lock_only"] is False
    assert seen_view(["x"], "")["lines"] == ["x"] and seen_view([""], "")["repeated"] == 0
    assert seen_view(["a\nb\na\nc"], "")["lines"] == ["a", "b", "c"]
    two = [{"source": "homeserver", "rule": "r"}, {"source": "provider", "rule": "r"}, {"source": "provider"}]
    rows = fault_rows(ScenarioResult(id="s", title="t", status="fail", faultHits=two))
    assert [(r["source"], r["rule"]) for r in rows] == [("homeserver", "r"), ("provider", "r"), ("provider", "")]
    bare = Failure(step=9, stepKind="x", expected="e")
    assert failure_view(ScenarioResult(id="s", title="t", status="fail", failure=bare))["detail"] is None
    mine = ScenarioLock(overlap_ms=0.0, reasons=["session !a: probe timed out after 26.1ms"], waited_ms=50.0)
    assert failure_view(ScenarioResult(id="s", title="t", status="pass"), mine)["lock"] == \
        "session !a: probe timed out after 26.1 ms"


def test_a_seen_block_of_exactly_the_cap_is_whole_and_one_more_is_cut() -> None:
    whole = seen_view([f"l{i}" for i in range(SEEN_LINES_SHOWN)], "")
    assert whole["lines"] == [f"l{i}" for i in range(SEEN_LINES_SHOWN)]
    cut = seen_view([f"l{i}" for i in range(SEEN_LINES_SHOWN + 1)], "")["lines"]
    assert cut == ["l0", "l1", "l2", "… 1 lines left out …", *[f"l{i}" for i in range(4, SEEN_LINES_SHOWN + 1)]]
    assert seen_view(["same", "other", "same"], "x")["lines"] == ["same", "other"]
