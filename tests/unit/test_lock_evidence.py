from __future__ import annotations

import json
from typing import Any

import pytest

from qa.report.lock_evidence import ProbeEvidence, analyze_lock_evidence


def rec(t: float, type_: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "type": type_, **fields}


def narrow_turn(session: str, attempt: str, t0: float, model_ms: float = 798.7) -> list[dict[str, Any]]:
    """acquire → append user → release → model I/O → reacquire → append reply → release."""
    s = {"session": session, "attempt": attempt}
    end = t0 + 1.3 + model_ms
    return [
        rec(t0, "turn.start", eventId=f"$ev-{attempt}", **s),
        rec(t0 + 0.0, "lock.acquire", purpose="append-user", lockPath="x.lock", waitMs=0.0, **s),
        rec(t0 + 0.9, "lock.release", purpose="append-user", heldMs=0.9, **s),
        rec(t0 + 1.3, "model.request.start", requestId=f"r-{attempt}", **s),
        rec(end, "model.request.end", requestId=f"r-{attempt}", ok=True, **s),
        rec(end + 12.4, "lock.acquire", purpose="append-reply", lockPath="x.lock", waitMs=0.1, **s),
        rec(end + 13.0, "lock.release", purpose="append-reply", heldMs=0.6, **s),
        rec(end + 13.5, "turn.end", eventId=f"$ev-{attempt}", outcome="replied", **s),
    ]


def attempt_scope_turn(session: str, attempt: str, t0: float) -> list[dict[str, Any]]:
    """The legacy bug: one hold around the whole attempt, model call inside it."""
    s = {"session": session, "attempt": attempt}
    return [
        rec(t0, "turn.start", eventId="$ev", **s),
        rec(t0 + 0.1, "lock.acquire", purpose="attempt", lockPath="x.lock", waitMs=0.0, **s),
        rec(t0 + 1.0, "model.request.start", requestId="r1", **s),
        rec(t0 + 800.0, "model.request.end", requestId="r1", ok=True, **s),
        rec(t0 + 801.0, "lock.release", purpose="attempt", heldMs=800.9, **s),
        rec(t0 + 801.5, "turn.end", eventId="$ev", outcome="replied", **s),
    ]


def test_clean_narrow_turn_passes_with_summary() -> None:
    evidence = analyze_lock_evidence(narrow_turn("!a", "att-1", 1000.0))

    assert evidence.verdict == "pass"
    assert evidence.reasons == []
    assert evidence.turn_count == 1
    assert evidence.model_requests == 1
    assert evidence.total_overlap_ms == 0
    (turn,) = evidence.turns
    assert (turn.session, turn.attempt, turn.event_id, turn.outcome) == ("!a", "att-1", "$ev-att-1", "replied")
    assert turn.acquire == pytest.approx([0.0, 812.4])
    assert turn.prompt == pytest.approx(1.3)
    assert turn.cleanup == pytest.approx(813.0)
    assert turn.longest_hold_ms == pytest.approx(0.9)
    assert turn.summary == "acquire=0.0,812.4 prompt=1.3 cleanup=813.0 holds=0.9,0.6ms overlap=0ms"
    assert evidence.longest_hold_ms == pytest.approx(0.9)


def test_attempt_scope_overlap_fails() -> None:
    evidence = analyze_lock_evidence(attempt_scope_turn("!a", "att-1", 0.0))

    assert evidence.verdict == "fail"
    (turn,) = evidence.turns
    assert turn.overlap_ms == pytest.approx(799.0)
    assert turn.summary.endswith("overlap=799.0ms")
    assert evidence.total_overlap_ms == pytest.approx(799.0)
    assert evidence.longest_hold_ms == pytest.approx(800.9)
    assert any("lock held during model I/O for 799.0ms" in r for r in evidence.reasons)


def test_hold_in_one_session_does_not_count_against_model_io_in_another() -> None:
    a = {"session": "!a", "attempt": "a1"}
    b = {"session": "!b", "attempt": "b1"}
    records = [
        rec(0, "lock.acquire", purpose="append-user", **a),
        rec(10, "model.request.start", requestId="rb", **b),
        rec(400, "lock.release", purpose="append-user", heldMs=400, **a),
        rec(500, "model.request.end", requestId="rb", ok=True, **b),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass", evidence.reasons
    assert evidence.total_overlap_ms == 0
    assert evidence.turn_count == 1  # only !b talked to the model
    assert evidence.other_holds == 1
    assert evidence.longest_hold_ms == 400


def test_two_sessions_interleaved_narrow_pass_and_attempt_scope_is_caught() -> None:
    good = narrow_turn("!a", "a1", 0.0)
    bad = attempt_scope_turn("!b", "b1", 100.0)
    evidence = analyze_lock_evidence(sorted(good + bad, key=lambda r: r["t"]))
    assert evidence.verdict == "fail"
    overlaps = {t.session: t.overlap_ms for t in evidence.turns}
    assert overlaps["!a"] == 0
    assert overlaps["!b"] == pytest.approx(799.0)
    assert all("!b" in r for r in evidence.reasons)


def test_second_message_appended_during_model_io_is_not_overlap() -> None:
    # Attempt a2's short append of the next user message lands while a1 is in model I/O: allowed by design.
    first = narrow_turn("!a", "a1", 0.0)
    s2 = {"session": "!a", "attempt": "a2"}
    second = [
        rec(300.0, "turn.start", eventId="$2", **s2),
        rec(300.1, "lock.acquire", purpose="append-user", **s2),
        rec(300.8, "lock.release", purpose="append-user", heldMs=0.7, **s2),
    ]
    evidence = analyze_lock_evidence(sorted(first + second, key=lambda r: r["t"]))
    assert evidence.verdict == "pass", evidence.reasons
    assert evidence.turn_count == 2


def test_separate_inbound_writer_is_not_a_turn() -> None:
    # The bot's shape: an `inbound-*` attempt appends the user message, a `turn-*` attempt talks to the model.
    inbound = {"session": "!a", "attempt": "inbound-1"}
    turn = {"session": "!a", "attempt": "turn-2"}
    records = [
        rec(0.0, "lock.acquire", purpose="inbound", **inbound),
        rec(0.8, "lock.release", purpose="inbound", heldMs=0.8, **inbound),
        rec(1.0, "turn.start", eventId="$1", **turn),
        rec(1.5, "model.request.start", requestId="m", **turn),
        rec(300.0, "lock.acquire", purpose="inbound", **{**inbound, "attempt": "inbound-3"}),
        rec(300.5, "lock.release", purpose="inbound", heldMs=0.5, **{**inbound, "attempt": "inbound-3"}),
        rec(700.0, "model.request.end", requestId="m", ok=True, **turn),
        rec(701.0, "lock.acquire", purpose="reply", **turn),
        rec(701.4, "lock.release", purpose="reply", heldMs=0.4, **turn),
        rec(702.0, "turn.end", eventId="$1", outcome="replied", **turn),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass", evidence.reasons
    assert (evidence.turn_count, evidence.other_holds) == (1, 2)
    assert evidence.turns[0].summary == "acquire=700.0 prompt=0.5 cleanup=700.4 holds=0.4ms overlap=0ms"
    assert evidence.longest_hold_ms == pytest.approx(0.8)


def test_parallel_model_requests_are_not_counted_twice() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(10, "model.request.start", requestId="r1", **s),
        rec(12, "lock.acquire", purpose="p", **s),
        rec(15, "model.request.start", requestId="r2", **s),
        rec(20, "model.request.end", requestId="r1", ok=True, **s),
        rec(22, "lock.release", purpose="p", heldMs=10, **s),
        rec(25, "model.request.end", requestId="r2", ok=True, **s),
    ]
    assert analyze_lock_evidence(records).total_overlap_ms == pytest.approx(10.0)


def test_release_without_acquire_counts_back_from_held_ms() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(45, "model.request.start", requestId="r1", **s),
        rec(50, "lock.release", purpose="p", heldMs=10, **s),
        rec(60, "model.request.end", requestId="r1", ok=True, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.total_overlap_ms == pytest.approx(5.0)
    assert evidence.verdict == "fail"


def test_probe_timeout_during_model_io_fails() -> None:
    probes = [{"session": "!a", "t": 400.0, "timeoutElapsedMs": 25.6, "error": "session file locked ..."}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "fail"
    (probe,) = evidence.probes
    assert probe.during_model_io is True
    assert any("contention probe timed out after 25.6ms" in r for r in evidence.reasons)


def test_probe_that_acquires_during_model_io_passes() -> None:
    probe = ProbeEvidence(session="!a", t=400.0, acquired_elapsed_ms=0.4)
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), [probe])
    assert evidence.verdict == "pass"
    assert evidence.probes[0].during_model_io is True


def test_probe_timeout_outside_model_io_or_in_another_session_does_not_fail() -> None:
    probes = [
        {"session": "!a", "t": 5000.0, "timeoutElapsedMs": 25.0},
        {"session": "!other", "t": 400.0, "timeoutElapsedMs": 25.0},
    ]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "pass", evidence.reasons
    assert [p.during_model_io for p in evidence.probes] == [False, False]


def test_probe_timeout_with_unknown_start_fails() -> None:
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), [{"session": "!a", "timeoutElapsedMs": 25}])
    assert evidence.verdict == "fail"
    assert evidence.probes[0].during_model_io is None


def test_open_hold_at_trace_end_counts_to_the_end() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "turn.start", eventId="$1", **s),
        rec(10, "lock.acquire", purpose="append-user", **s),
        rec(20, "model.request.start", requestId="r1", **s),
        rec(50, "model.request.end", requestId="r1", ok=True, **s),
        rec(60, "reply.sent", **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    (turn,) = evidence.turns
    assert turn.open_holds == 1
    assert turn.holds == [(10.0, 60.0)]
    assert turn.cleanup is None
    assert turn.overlap_ms == pytest.approx(30.0)
    assert evidence.longest_hold_ms == pytest.approx(50.0)
    assert turn.summary.endswith("open=1")
    assert any("still open at trace end" in r for r in evidence.reasons)


def test_leaked_hold_of_another_attempt_in_the_session_fails() -> None:
    records = [
        *narrow_turn("!a", "a1", 100.0),
        rec(50, "lock.acquire", purpose="append-user", session="!a", attempt="a0"),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.total_overlap_ms == 0
    assert any("attempt a0" in r and "still open" in r for r in evidence.reasons)


def test_takeover_ends_the_previous_hold() -> None:
    # The old bot was SIGKILLed holding the lock; after the restart its lock is reclaimed and a new turn runs.
    records = [
        rec(10, "lock.acquire", purpose="inbound", session="!a", attempt="inbound-old"),
        rec(
            500,
            "lock.takeover",
            session="!a",
            attempt="inbound-new",
            reason="owner-dead",
            previous={"pid": 1, "attempt": "inbound-old", "ageMs": 490},
        ),
        rec(500.1, "lock.acquire", purpose="inbound", session="!a", attempt="inbound-new"),
        rec(501, "lock.release", purpose="inbound", heldMs=0.9, session="!a", attempt="inbound-new"),
        *narrow_turn("!a", "turn-new", 502.0),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass", evidence.reasons
    assert evidence.longest_hold_ms == pytest.approx(490)
    assert evidence.takeovers == 1


def test_takeover_of_attempt_scope_hold_still_counts_overlap_until_the_takeover() -> None:
    s = {"session": "!a", "attempt": "turn-1"}
    records = [
        rec(0, "lock.acquire", purpose="turn", **s),
        rec(1, "model.request.start", requestId="m", **s),
        rec(
            5001,
            "lock.takeover",
            session="!a",
            attempt="inbound-2",
            reason="max-hold",
            previous={"pid": 1, "attempt": "turn-1", "ageMs": 5001},
        ),
        rec(6000, "model.request.end", requestId="m", ok=True, **s),
        rec(6001, "lock.release", purpose="turn", heldMs=6001, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.total_overlap_ms == pytest.approx(5000)
    assert evidence.turns[0].holds == [(0.0, 5001.0)]  # the late release is not a second hold


def test_open_hold_without_model_io_is_no_evidence() -> None:
    records = [
        rec(0, "turn.start", session="!a", attempt="a1", eventId="$1"),
        rec(10, "lock.acquire", session="!a", attempt="a1", purpose="p"),
        # Still in progress (no turn.end): a turn that ended with its hold open is a leak, tested below.
        rec(29, "lock.acquire", session="!a", attempt="b1", purpose="inbound"),
        rec(30, "lock.release", session="!a", attempt="b1", purpose="inbound"),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "none"
    assert evidence.turns[0].open_holds == 1
    assert evidence.longest_hold_ms == 20


def test_empty_trace_has_no_evidence() -> None:
    evidence = analyze_lock_evidence([])
    assert evidence.verdict == "none"
    assert evidence.turn_count == 0
    assert evidence.longest_hold_ms == 0
    assert evidence.reasons == ["no model request in the trace: nothing to check the lock against"]


def test_dump_is_json_with_camel_case_fields() -> None:
    records = [
        *narrow_turn("!a", "a1", 0.0),
        rec(900, "lock.takeover", session="!a", attempt="a9", previous={}, reason="max-hold"),
        rec(901, "lock.timeout", session="!a", attempt="a8", purpose="p", error="…"),
    ]
    dumped = analyze_lock_evidence(records, [{"session": "!a", "t": 1.0, "acquiredElapsedMs": 0.3}]).model_dump(
        mode="json"
    )
    json.dumps(dumped)
    assert {"verdict", "reasons", "turnCount", "modelRequests", "longestHoldMs", "totalOverlapMs"} <= set(dumped)
    assert (dumped["takeovers"], dumped["lockTimeouts"]) == (1, 1)
    turn = dumped["turns"][0]
    assert {"eventId", "startT", "acquire", "prompt", "cleanup", "holds", "modelIo", "overlapMs"} <= set(turn)
    assert turn["holds"][0] == [0.0, 0.9]
    assert dumped["probes"][0]["acquiredElapsedMs"] == 0.3


def test_a_hold_across_an_approval_wait_fails_like_one_across_model_io() -> None:
    s = {"session": "!a", "attempt": "att-1"}
    records = [
        rec(0.0, "turn.start", eventId="$ev", **s),
        rec(1.0, "model.request.start", requestId="r1", **s),
        rec(5.0, "model.request.end", requestId="r1", ok=True, **s),
        rec(6.0, "lock.acquire", purpose="tool", lockPath="x.lock", waitMs=0.0, **s),
        rec(7.0, "approval.wait.start", requestId="ap-1", **s),
        rec(900.0, "approval.wait.end", requestId="ap-1", **s),
        rec(901.0, "lock.release", purpose="tool", heldMs=895.0, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.total_overlap_ms == pytest.approx(893.0)
    # The same wait with the lock released before it is fine.
    released_first = [*records[:4], rec(6.5, "lock.release", purpose="tool", heldMs=0.5, **s), *records[4:6]]
    assert analyze_lock_evidence(released_first).verdict == "pass"


# --- several holds, probes and boundaries: the verdict must not depend on which one is listed first ---------


def test_a_turn_whose_first_hold_overlaps_model_io_fails_even_if_its_second_does_not() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "turn.start", eventId="$1", **s),
        rec(0, "lock.acquire", purpose="append-user", **s),
        rec(10, "model.request.start", requestId="r1", **s),
        rec(14, "lock.release", purpose="append-user", heldMs=14, **s),  # 4 ms inside the request
        rec(50, "model.request.end", requestId="r1", ok=True, **s),
        rec(60, "lock.acquire", purpose="append-reply", **s),
        rec(61, "lock.release", purpose="append-reply", heldMs=1, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.turns[0].overlap_ms == pytest.approx(4.0)
    assert evidence.reasons == ["session !a attempt a1: lock held during model I/O for 4.0ms"]


def test_overlaps_of_several_holds_with_several_requests_add_up() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "model.request.start", requestId="r1", **s),
        rec(8, "lock.acquire", purpose="p", **s),
        rec(10, "model.request.end", requestId="r1", ok=True, **s),  # 2 ms under the lock
        rec(12, "lock.release", purpose="p", heldMs=4, **s),
        rec(20, "lock.acquire", purpose="q", **s),
        rec(23, "model.request.start", requestId="r2", **s),  # 3 ms under the lock
        rec(26, "lock.release", purpose="q", heldMs=6, **s),
        rec(40, "model.request.end", requestId="r2", ok=True, **s),
        rec(41, "lock.acquire", purpose="r", **s),
        rec(42, "lock.release", purpose="r", heldMs=1, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.turns[0].overlap_ms == pytest.approx(5.0)
    assert evidence.total_overlap_ms == pytest.approx(5.0)
    assert evidence.turns[0].holds == [(8.0, 12.0), (20.0, 26.0), (41.0, 42.0)]
    assert evidence.turns[0].model_io == [(0.0, 10.0), (23.0, 40.0)]


def test_an_overlap_of_half_a_millisecond_fails() -> None:
    # The promise is "no overlap at all" (> 0 ms), not "no overlap worth a millisecond".
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "turn.start", eventId="$1", **s),
        rec(1, "lock.acquire", purpose="append-user", **s),
        rec(2, "model.request.start", requestId="r1", **s),
        rec(2.5, "lock.release", purpose="append-user", heldMs=1.5, **s),
        rec(100, "model.request.end", requestId="r1", ok=True, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.total_overlap_ms == pytest.approx(0.5)
    assert evidence.turns[0].summary.endswith("overlap=0.5ms")


def test_a_hold_released_exactly_when_the_request_starts_does_not_overlap() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "lock.acquire", purpose="append-user", **s),
        rec(5, "lock.release", purpose="append-user", heldMs=5, **s),
        rec(5, "model.request.start", requestId="r1", **s),
        rec(50, "model.request.end", requestId="r1", ok=True, **s),
        rec(50, "lock.acquire", purpose="append-reply", **s),
        rec(51, "lock.release", purpose="append-reply", heldMs=1, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass", evidence.reasons
    assert evidence.total_overlap_ms == 0
    assert evidence.turns[0].summary.endswith("overlap=0ms")


def test_a_leaked_hold_listed_after_a_released_one_still_fails() -> None:
    other = {"session": "!a", "attempt": "inbound-1"}
    leaked = {"session": "!a", "attempt": "inbound-2"}
    records = [
        *narrow_turn("!a", "a1", 100.0),
        rec(10, "lock.acquire", purpose="inbound", **other),
        rec(11, "lock.release", purpose="inbound", heldMs=1, **other),
        rec(50, "lock.acquire", purpose="inbound", **leaked),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.reasons == [
        "session !a attempt inbound-2: hold (inbound) still open at trace end, overlapping model I/O for 798.7ms"
    ]


def test_a_leaked_hold_overlapping_model_io_by_half_a_millisecond_fails() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "model.request.start", requestId="r1", **s),
        rec(10, "model.request.end", requestId="r1", ok=True, **s),
        rec(9.5, "lock.acquire", purpose="stray", session="!a", attempt="a0"),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.reasons == [
        "session !a attempt a0: hold (stray) still open at trace end, overlapping model I/O for 0.5ms"
    ]


def test_a_leaked_hold_in_another_session_or_after_the_model_io_is_not_a_leak() -> None:
    records = [
        *narrow_turn("!a", "a1", 0.0),
        rec(100, "lock.acquire", purpose="stray", session="!b", attempt="b0"),
        rec(900, "lock.acquire", purpose="late", session="!a", attempt="a9"),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass", evidence.reasons
    assert evidence.other_holds == 2


def test_a_timed_out_probe_listed_after_a_clean_one_still_fails() -> None:
    probes = [
        {"session": "!a", "t": 300.0, "acquiredElapsedMs": 0.2},
        {"session": "!a", "t": 5000.0, "timeoutElapsedMs": 25.0},
        {"session": "!a", "t": 400.0, "timeoutElapsedMs": 25.6},
    ]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "fail"
    assert [p.during_model_io for p in evidence.probes] == [True, False, True]
    assert evidence.reasons == [
        "session !a: contention probe timed out after 25.6ms while a model request was in flight"
    ]


def test_a_probe_of_unknown_start_listed_after_a_clean_one_still_fails() -> None:
    probes = [{"session": "!a", "t": 300.0, "acquiredElapsedMs": 0.2}, {"session": "!a", "timeoutElapsedMs": 25}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "fail"
    assert evidence.reasons == ["session !a: contention probe timed out (start time unknown)"]


def test_a_probe_started_just_before_the_request_and_timed_out_during_it_fails() -> None:
    # narrow_turn's request runs from 1.3 to 800.0: the probe waits from 0.0 to 25.0, into the request.
    probes = [{"session": "!a", "t": 0.0, "timeoutElapsedMs": 25.0}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "fail"
    assert evidence.probes[0].during_model_io is True


def test_probe_windows_are_closed_at_both_ends() -> None:
    # The request of narrow_turn("!a", "a1", 100.0) runs from 101.3 to 900.0.
    probes = [
        {"session": "!a", "t": 91.3, "acquiredElapsedMs": 10.0},  # ends exactly at the request's start
        {"session": "!a", "t": 900.0, "acquiredElapsedMs": 1.0},  # starts exactly at its end
        {"session": "!a", "t": 91.2, "acquiredElapsedMs": 10.0},  # ends 0.1 ms before it
        {"session": "!a", "t": 900.1, "acquiredElapsedMs": 1.0},  # starts 0.1 ms after it
        {"session": "!a", "t": 101.0},  # neither elapsed field: the instant of its start
    ]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 100.0), probes)
    assert [p.during_model_io for p in evidence.probes] == [True, True, False, False, False]


def test_a_probes_unset_fields_are_null_in_the_dump() -> None:
    # The harness writes only what it measured; readers of the summary test the other fields for null.
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), [{"session": "!a", "t": 400.0,
                                                                      "timeoutElapsedMs": 25.0}])
    assert evidence.model_dump(mode="json")["probes"] == [
        {"session": "!a", "t": 400.0, "acquiredElapsedMs": None, "timeoutElapsedMs": 25.0, "error": None,
         "heldSinceT": None, "duringModelIo": True, "note": None}
    ]
    assert ProbeEvidence(session="!a").model_dump() == {
        "session": "!a", "t": None, "acquiredElapsedMs": None, "timeoutElapsedMs": None, "error": None,
        "heldSinceT": None, "duringModelIo": None, "note": None,
    }


def test_nested_holds_of_one_attempt_pair_by_purpose() -> None:
    # An outer hold and an inner one, released inner first: each release ends the hold of its own purpose.
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "model.request.start", requestId="r1", **s),
        rec(1, "model.request.end", requestId="r1", ok=True, **s),
        rec(10, "lock.acquire", purpose="outer", **s),
        rec(20, "lock.acquire", purpose="inner", **s),
        rec(30, "lock.release", purpose="inner", heldMs=10, **s),
        rec(40, "lock.release", purpose="outer", heldMs=30, **s),
    ]
    assert analyze_lock_evidence(records).turns[0].holds == [(10.0, 40.0), (20.0, 30.0)]
    # Without a purpose on the inner pair, the release without one still ends the hold without one.
    bare = [r if r.get("purpose") != "inner" else {k: v for k, v in r.items() if k != "purpose"} for r in records]
    assert analyze_lock_evidence(bare).turns[0].holds == [(10.0, 40.0), (20.0, 30.0)]


def test_records_without_session_or_attempt_still_pair_up() -> None:
    # A minimal trace that never names its session or attempt: acquire, takeover and release still match.
    records = [
        rec(0, "lock.acquire", purpose="p"),
        rec(5, "model.request.start", requestId="r1"),
        rec(20, "lock.takeover", reason="max-hold", previous={"pid": 1}),
        rec(30, "model.request.end", requestId="r1", ok=True),
        rec(31, "lock.release", purpose="p", heldMs=31),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.turns[0].holds == [(0.0, 20.0)]
    assert evidence.total_overlap_ms == pytest.approx(15.0)
    assert evidence.reasons == ["session  attempt : lock held during model I/O for 15.0ms"]


def test_a_malformed_takeover_does_not_hide_the_records_after_it() -> None:
    records = [
        rec(0, "lock.takeover", session="!a", attempt="x", reason="owner-dead"),  # no `previous`
        *attempt_scope_turn("!a", "a1", 10.0),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail"
    assert evidence.total_overlap_ms == pytest.approx(799.0)


def test_a_release_without_acquire_or_held_ms_is_an_instant() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "model.request.start", requestId="r1", **s),
        rec(5, "lock.release", purpose="p", **s),
        rec(10, "model.request.end", requestId="r1", ok=True, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass", evidence.reasons
    assert evidence.turns[0].holds == [(5.0, 5.0)]
    assert evidence.longest_hold_ms == 0


def test_a_model_request_end_without_its_start_is_ignored() -> None:
    # The trace began mid-request: nothing to pair the end with.
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "model.request.end", requestId="r0", ok=True, **s),
        rec(1, "lock.acquire", purpose="p", **s),
        rec(2, "lock.release", purpose="p", heldMs=1, **s),
        rec(3, "model.request.start", requestId="r1", **s),
        rec(9, "model.request.end", requestId="r1", ok=True, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass", evidence.reasons
    assert evidence.model_requests == 1
    assert evidence.turns[0].model_io == [(2.0, 8.0)]


def test_a_turn_starts_at_its_turn_start_or_else_at_its_first_lock_record() -> None:
    s = {"session": "!a", "attempt": "a1"}
    late_start = [
        rec(0, "lock.acquire", purpose="p", **s),
        rec(1, "lock.release", purpose="p", heldMs=1, **s),
        rec(2, "turn.start", eventId="$1", **s),
        rec(3, "model.request.start", requestId="r1", **s),
        rec(4, "model.request.end", requestId="r1", ok=True, **s),
    ]
    (turn,) = analyze_lock_evidence(late_start).turns
    assert (turn.start_t, turn.event_id, turn.acquire) == (2.0, "$1", [-2.0])
    mid_hold = [
        rec(5, "lock.release", purpose="p", heldMs=3, **s),  # the trace began during this hold
        rec(6, "model.request.start", requestId="r1", **s),
        rec(9, "model.request.end", requestId="r1", ok=True, **s),
    ]
    (turn,) = analyze_lock_evidence(mid_hold).turns
    assert (turn.start_t, turn.event_id, turn.holds, turn.prompt) == (5.0, None, [(-3.0, 0.0)], 1.0)


def test_durations_are_rounded_to_the_microsecond() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "lock.acquire", purpose="p", **s),
        rec(1, "model.request.start", requestId="r1", **s),
        rec(2.23456, "lock.release", purpose="p", heldMs=2.23456, **s),
        rec(3, "model.request.end", requestId="r1", ok=True, **s),
    ]
    evidence = analyze_lock_evidence(records)
    assert (evidence.longest_hold_ms, evidence.total_overlap_ms) == (2.235, 1.235)
    assert (evidence.turns[0].longest_hold_ms, evidence.turns[0].overlap_ms) == (2.235, 1.235)


def test_the_first_turn_start_of_an_attempt_counts() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "turn.start", eventId="$1", **s),
        rec(1, "model.request.start", requestId="r1", **s),
        rec(2, "model.request.end", requestId="r1", ok=True, **s),
        rec(5, "turn.start", eventId="$again", **s),
        rec(9, "turn.end", eventId="$end", outcome="replied", **s),
    ]
    (turn,) = analyze_lock_evidence(records).turns
    assert (turn.start_t, turn.end_t, turn.event_id, turn.outcome) == (0.0, 9.0, "$1", "replied")


def test_without_turn_start_the_event_id_comes_from_turn_end() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(1, "model.request.start", requestId="r1", **s),
        rec(2, "model.request.end", requestId="r1", ok=True, **s),
        rec(3, "turn.end", eventId="$1", outcome="failed", **s),
    ]
    (turn,) = analyze_lock_evidence(records).turns
    assert (turn.start_t, turn.end_t, turn.event_id, turn.outcome) == (1.0, 3.0, "$1", "failed")


def test_a_turn_without_holds_says_so_in_its_summary() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [rec(0, "turn.start", eventId="$1", **s), rec(4, "turn.end", eventId="$1", outcome="dropped", **s)]
    (turn,) = analyze_lock_evidence(records).turns
    assert turn.summary == "acquire=- prompt=- cleanup=- holds=-ms overlap=0ms"
    assert (turn.longest_hold_ms, turn.acquire, turn.holds, turn.prompt, turn.cleanup) == (0, [], [], None, None)


def test_the_summary_of_a_turn_with_an_open_hold() -> None:
    s = {"session": "!a", "attempt": "a1"}
    records = [
        rec(0, "turn.start", eventId="$1", **s),
        rec(1.23456, "lock.acquire", purpose="p", **s),
        rec(2, "model.request.start", requestId="r1", **s),
        rec(10, "model.request.end", requestId="r1", ok=True, **s),
    ]
    (turn,) = analyze_lock_evidence(records).turns
    assert turn.acquire == [1.235]  # relative times are rounded to the microsecond too
    assert turn.summary == "acquire=1.2 prompt=2.0 cleanup=- holds=8.8ms overlap=8.0ms open=1"


# --- a timed-out probe is judged where the lock was proved held: at its window's end, or over the hold it names ---
# Seen on main (`--profile all --jobs 3`, matrix-lock-max-hold-takeover, a correct bot): a probe's first try came
# ~5 ms late, its window started inside an 11 ms model request and timed out 22 ms after the request ended, kept
# out by the reply write's hold (a stall the scenario injects), taken after the request. Judged on the window's
# start, that was "a model request in flight": a false fail of a correct bot.


def test_a_probe_kept_out_by_a_hold_taken_after_the_request_ended_passes() -> None:
    # narrow_turn's request runs from 1.3 to 800.0; the reply hold is taken at 801.0.
    probes = [{"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "heldSinceT": 801.0}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "pass", evidence.reasons
    assert (evidence.probes[0].during_model_io, evidence.probes[0].note) == (False, None)


def test_a_probe_kept_out_by_a_hold_taken_before_the_request_ended_fails() -> None:
    # The whole-turn lock: taken before the request, the probe's window ending after it.
    probes = [{"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "heldSinceT": 0.5}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "fail"
    assert evidence.probes[0].during_model_io is True
    assert evidence.reasons == [
        "session !a: contention probe timed out after 26.2ms while a model request was in flight"
    ]


def test_a_hold_taken_exactly_when_the_request_ended_is_not_during_it() -> None:
    probes = [{"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "heldSinceT": 800.0},
              {"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "heldSinceT": 799.9}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert [p.during_model_io for p in evidence.probes] == [False, True]


def test_a_probe_whose_window_ended_before_the_request_began_is_not_during_it() -> None:
    # The hold [0.5, 1.0] ends before the request (1.3 to 800.0) begins.
    probes = [{"session": "!a", "t": 0.0, "timeoutElapsedMs": 1.0, "heldSinceT": 0.5}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.probes[0].during_model_io is False


def test_without_held_since_a_window_straddling_the_requests_end_is_not_checked() -> None:
    probes = [{"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "error": "session file locked"}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "pass", evidence.reasons
    (probe,) = evidence.probes
    assert probe.during_model_io is None
    assert probe.note is not None and probe.note.startswith("contention probe NOT CHECKED")
    assert "heldSinceT" in probe.note


def test_without_held_since_a_window_ending_inside_a_request_fails() -> None:
    # Ends exactly at the request's end: the lock was held while it was in flight.
    probes = [{"session": "!a", "t": 774.0, "timeoutElapsedMs": 26.0}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "fail"
    assert (evidence.probes[0].during_model_io, evidence.probes[0].note) == (True, None)


def test_a_not_checked_probe_is_shown_with_its_note() -> None:
    from qa.report.lock_view import probe_line

    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), [{"session": "!a", "t": 790.0,
                                                                      "timeoutElapsedMs": 26.2}])
    line = probe_line(evidence.model_dump(mode="json")["probes"][0])
    assert 'note="contention probe NOT CHECKED' in line


def test_a_request_in_flight_at_the_windows_end_fails_whatever_held_since_says() -> None:
    # heldSinceT after the request began cannot clear a window that ends inside it: the lock was held then.
    probes = [{"session": "!a", "t": 400.0, "timeoutElapsedMs": 26.0, "heldSinceT": 410.0}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "fail"
    assert evidence.probes[0].during_model_io is True


def test_a_held_since_after_the_windows_end_is_another_clock_and_not_used() -> None:
    probes = [{"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "heldSinceT": 1e12},
              {"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "heldSinceT": 816.2}]  # exactly the end
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.verdict == "pass", evidence.reasons
    unusable, at_end = evidence.probes
    assert unusable.during_model_io is None
    assert unusable.note is not None and "after its window's end" in unusable.note
    assert (at_end.during_model_io, at_end.note) == (False, None)


def test_probes_not_checked_counts_notes_and_errors_that_say_so() -> None:
    from qa.report.lock_evidence import probes_not_checked

    probes = [
        {"session": "!a", "note": "contention probe NOT CHECKED: it timed out after …"},
        {"session": "-", "error": "contention probe NOT CHECKED: the bot file names no lock_probe"},
        {"session": "!a", "error": "session file locked (timeout 25ms)"},
        {"session": "!a", "note": None},
        "not a probe",
    ]
    assert probes_not_checked(probes) == 2
    assert probes_not_checked([]) == 0


# --- mutation survivors of timed_out_during_model_io / _probe, killed (MUTATION.md ⁵⁹ᵃ) ---


def test_a_probe_is_judged_again_whatever_it_said_before() -> None:
    # A ProbeEvidence read back (a merged or re-judged summary) keeps none of its old judgement.
    stale = {"during_model_io": True, "note": "contention probe NOT CHECKED: old"}
    unknown_start = ProbeEvidence(session="!a", timeout_elapsed_ms=25.0, **stale)
    acquired = ProbeEvidence(session="!a", t=5000.0, acquired_elapsed_ms=0.2, **stale)
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), [unknown_start, acquired])
    assert [(p.during_model_io, p.note) for p in evidence.probes] == [(None, None), (False, None)]


def test_a_window_ending_exactly_as_the_request_starts_was_held_while_it_started() -> None:
    # narrow_turn's request runs from 1.3 to 800.0.
    probes = [{"session": "!a", "t": 0.0, "timeoutElapsedMs": 1.3},
              {"session": "!a", "t": 0.0, "timeoutElapsedMs": 1.3, "heldSinceT": 1.0}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert [p.during_model_io for p in evidence.probes] == [True, True]


def test_a_window_starting_exactly_as_the_request_ends_is_not_checked_without_held_since() -> None:
    probes = [{"session": "!a", "t": 800.0, "timeoutElapsedMs": 26.0}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    assert evidence.probes[0].during_model_io is None


def test_the_not_checked_notes_say_why() -> None:
    probes = [{"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2},
              {"session": "!a", "t": 790.0, "timeoutElapsedMs": 26.2, "heldSinceT": 900.0}]
    evidence = analyze_lock_evidence(narrow_turn("!a", "a1", 0.0), probes)
    tail = (", so the hold that kept it out may have been taken after the request (a reply write)")
    head = "contention probe NOT CHECKED: it timed out after the model request its window overlaps had ended, and "
    assert [p.note for p in evidence.probes] == [
        head + "gave no heldSinceT" + tail,
        head + "its heldSinceT 900.0 is after its window's end 816.2 (another clock?)" + tail,
    ]
