"""The run's lock section (lock_evidence.lock_section): the verdict over every scenario's trace, decided once,
with the provider journal standing in for the model I/O of a scenario whose bot traces holds but no model
requests. Before, run.py re-decided the verdict after lock_evidence by matching "provider journal" in the
reasons; these pin what it decided, field by field."""

from __future__ import annotations

from typing import Any

from qa.report.lock_evidence import NO_MODEL_REQUEST, NOT_APPLICABLE, lock_section
from tests.unit.test_lock_evidence import attempt_scope_turn, narrow_turn, rec

NOTE = "model I/O of {} request(s) taken from the provider journal (the bot traces no model requests)"


def holds(session: str = "s", attempt: str = "a1", *spans: tuple[float, float]) -> list[dict[str, Any]]:
    """A foreign bot's trace: lock holds only, no model requests."""
    s = {"session": session, "attempt": attempt, "purpose": "inbound"}
    return [r for start, end in spans for r in (rec(start, "lock.acquire", **s), rec(end, "lock.release", **s))]


def test_no_trace_is_no_section() -> None:
    assert lock_section({}, {}) is None
    assert lock_section({}, {"canary": [(1.0, 2.0)]}) is None


def test_no_lock_record_is_na_counting_the_traced_requests_first_then_the_journal() -> None:
    traced = {"a": [rec(1, "model.request.start"), rec(2, "model.request.end")], "b": [rec(3, "model.request.start")]}
    assert lock_section(traced, {"a": [(1.0, 2.0)] * 5})["modelRequests"] == 2  # type: ignore[index]
    untraced = {"a": [rec(1, "ready")], "b": []}
    section = lock_section(untraced, {"a": [(1.0, 2.0)], "b": [(3.0, 4.0), (5.0, 6.0)]})
    assert section is not None
    assert (section["verdict"], section["reasons"], section["modelRequests"]) == ("n/a", [NOT_APPLICABLE], 3)
    assert lock_section(untraced, {})["modelRequests"] == 0  # type: ignore[index]
    assert "scope" not in section, "n/a judges nothing: no lock settings either"


def test_a_bot_that_traces_its_model_requests_is_judged_on_its_trace_alone() -> None:
    trace = narrow_turn("s", "a1", 100.0)
    section = lock_section({"canary": trace}, {"canary": [(100.0, 2000.0)]})
    assert section is not None
    assert (section["verdict"], section["modelRequests"], section["reasons"]) == ("pass", 1, [])
    failing = lock_section({"canary": attempt_scope_turn("s", "a1", 0.0)}, {"canary": [(0.0, 900.0)]})
    assert failing is not None and failing["verdict"] == "fail" and failing["modelRequests"] == 1
    assert not any("provider journal" in r for r in failing["reasons"])


def test_hold_only_trace_with_clean_journal_requests_passes_and_says_where_the_io_came_from() -> None:
    section = lock_section({"canary": holds("s", "a1", (10, 20), (60, 70))}, {"canary": [(20.0, 60.0), (80, 90)]})
    assert section is not None
    assert section["verdict"] == "pass"
    assert section["reasons"] == [NOTE.format(2)], "the 'no model request' reason goes: the journal has them"
    assert section["modelRequests"] == 2


def test_hold_only_trace_with_a_hold_during_a_journal_request_fails() -> None:
    section = lock_section({"canary": holds("s", "a1", (10, 50))}, {"canary": [(40.0, 100.0)]})
    assert section is not None
    assert section["verdict"] == "fail"
    assert section["reasons"] == [
        "session s attempt a1: lock (inbound) held for 10.0ms while the provider journal shows a model request in "
        "flight", NOTE.format(1)]


def test_a_trace_failure_stays_a_failure_when_the_journal_of_another_scenario_is_clean() -> None:
    traces = {"bad": attempt_scope_turn("s", "a1", 0.0), "foreign": holds("t", "b1", (2000, 2010))}
    section = lock_section(traces, {"bad": [(1.0, 800.0)], "foreign": [(2010.0, 2100.0), (2200, 2300)]})
    assert section is not None
    assert section["verdict"] == "fail" and section["modelRequests"] == 1 + 2
    assert section["reasons"][0].startswith("session s attempt a1: lock held during model I/O")
    assert section["reasons"][1:] == [NOTE.format(2)]


def test_reasons_keep_the_order_of_the_scenarios() -> None:
    traces = {"one": holds("s", "a1", (10, 30)), "two": holds("t", "b1", (10, 30))}
    section = lock_section(traces, {"one": [(20.0, 40.0)], "two": [(0.0, 15.0)]})
    assert section is not None
    assert [r.split(":")[0] for r in section["reasons"]] == ["session s attempt a1", "session t attempt b1",
                                                             NOTE.format(2)]
    assert "10.0ms" in section["reasons"][0] and "5.0ms" in section["reasons"][1]


def test_a_journal_counts_only_for_its_own_scenario() -> None:
    # "quiet" holds its lock while "busy"'s request is in flight: side by side, that says nothing about "quiet".
    traces = {"quiet": holds("s", "a1", (10, 50)), "busy": holds("t", "b1", (0, 1))}
    section = lock_section(traces, {"quiet": [], "busy": [(20.0, 40.0)]})
    assert section is not None
    assert section["verdict"] == "pass" and section["modelRequests"] == 1
    assert section["reasons"] == [NOTE.format(1)]


def test_no_journal_for_a_hold_only_trace_leaves_nothing_proven() -> None:
    section = lock_section({"canary": holds("s", "a1", (10, 50))}, {})
    assert section is not None
    assert (section["verdict"], section["reasons"], section["modelRequests"]) == ("none", [NO_MODEL_REQUEST], 0)


def test_a_scenario_without_lock_records_borrows_no_journal() -> None:
    traces = {"locks": holds("s", "a1", (10, 50)), "plain": [rec(5, "ready")]}
    section = lock_section(traces, {"plain": [(20.0, 40.0)]})
    assert section is not None
    assert (section["verdict"], section["modelRequests"]) == ("none", 0)


def test_a_scenario_that_traces_model_requests_borrows_no_journal() -> None:
    traces = {"canary": [*holds("s", "a1", (10, 50)), rec(60, "model.request.start", requestId="r"),
                         rec(70, "model.request.end", requestId="r")]}
    section = lock_section(traces, {"canary": [(20.0, 40.0)]})
    assert section is not None
    assert (section["verdict"], section["modelRequests"], section["reasons"]) == ("pass", 1, [])


def test_probes_are_judged_too() -> None:
    probe = {"session": "s", "t": 500.0, "timeoutElapsedMs": 25.0}
    section = lock_section({"canary": narrow_turn("s", "a1", 100.0)}, {}, [probe])
    assert section is not None and section["verdict"] == "fail"
    assert section["probes"][0]["duringModelIo"] is True


def test_the_lock_settings_come_from_the_first_start_record_that_has_them() -> None:
    settings = {"scope": "turn", "acquireTimeoutMs": 1000, "staleMs": 5000, "maxHoldMs": 2000, "other": 1,
                "sources": {"staleMs": "env"}}
    traces = {"a": [rec(1, "start"), rec(2, "start", lock="not a mapping")],
              "b": [rec(0, "start", lock=settings), rec(3, "start", lock={"scope": "attempt"}),
                    *narrow_turn("s", "a1", 100.0)]}
    section = lock_section(traces, {})
    assert section is not None
    assert section["scope"] == "turn"
    assert section["settings"] == {"acquireTimeoutMs": 1000, "staleMs": 5000, "maxHoldMs": 2000}
    assert section["sources"] == {"staleMs": "env"}


def test_without_a_start_record_the_settings_are_empty_and_named() -> None:
    section = lock_section({"a": narrow_turn("s", "a1", 100.0)}, {})
    assert section is not None
    assert section["scope"] is None and section["sources"] == {}
    assert section["settings"] == {"acquireTimeoutMs": None, "staleMs": None, "maxHoldMs": None}
    bare = lock_section({"a": [rec(0, "start", lock={"scope": "attempt"}), *narrow_turn("s", "a1", 100.0)]}, {})
    assert bare is not None and bare["sources"] == {} and bare["scope"] == "attempt"


def test_the_section_is_the_evidence_as_json_then_the_settings() -> None:
    section = lock_section({"a": narrow_turn("s", "a1", 100.0)}, {})
    assert section is not None
    assert list(section) == ["verdict", "reasons", "turnCount", "otherHolds", "modelRequests", "longestHoldMs",
                             "totalOverlapMs", "takeovers", "lockTimeouts", "probes", "turns", "startupReclaims",
                             "holdKinds", "takeoverList", "scope", "settings", "sources"]
    assert section["turns"][0]["holds"] == [[0.0, 0.9], [812.4, 813.0]], "json mode: intervals are lists"
