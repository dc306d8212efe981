"""Lock evidence for bots that are not ours: n/a without lock records, the journal for hold-only traces."""

from __future__ import annotations

from qa.report.lock_evidence import (
    NOT_APPLICABLE,
    has_lock_records,
    has_model_records,
    journal_overlap_reasons,
    not_applicable,
)
from qa.report.merge import merge_lock


def acquire(t: float, session: str = "s", attempt: str = "a1") -> dict[str, object]:
    return {"t": t, "type": "lock.acquire", "session": session, "attempt": attempt, "purpose": "inbound"}


def release(t: float, session: str = "s", attempt: str = "a1") -> dict[str, object]:
    return {"t": t, "type": "lock.release", "session": session, "attempt": attempt, "purpose": "inbound"}


def test_not_applicable_is_never_a_pass_nor_none() -> None:
    section = not_applicable(model_requests=3)
    assert section["verdict"] == "n/a"
    assert section["reasons"] == [NOT_APPLICABLE] and "no lock records" in NOT_APPLICABLE
    assert section["modelRequests"] == 3, "the journal's requests are counted, not reported as 0"
    assert section["turnCount"] == 0 and section["longestHoldMs"] == 0.0


def test_record_detection() -> None:
    assert not has_lock_records([{"type": "ready"}, {"type": "model.request.start"}])
    assert has_lock_records([{"type": "lock.release"}])
    assert has_model_records([{"type": "model.request.start"}]) and not has_model_records([acquire(1)])


def test_a_hold_during_a_journal_request_fails() -> None:
    trace = [acquire(10), release(50)]
    reasons = journal_overlap_reasons(trace, [(40, 100)])
    assert len(reasons) == 1 and "10.0ms" in reasons[0] and "provider journal" in reasons[0]


def test_holds_outside_every_journal_request_pass() -> None:
    trace = [acquire(10), release(20), acquire(101, attempt="a2"), release(102, attempt="a2")]
    assert journal_overlap_reasons(trace, [(20, 100), (150, 160)]) == []


def test_every_overlapping_hold_is_reported_not_only_the_first() -> None:
    trace = [acquire(1), release(2), acquire(10, attempt="a2"), release(30, attempt="a2"),
             acquire(60, attempt="a3"), release(70, attempt="a3")]
    reasons = journal_overlap_reasons(trace, [(25, 65)])
    assert [r.split(" ")[3] for r in reasons] == ["a2:", "a3:"]


def test_a_hold_still_open_runs_to_the_end_of_the_evidence() -> None:
    assert journal_overlap_reasons([acquire(10)], [(500, 600)]) != []


def test_sub_millisecond_overlap_still_fails() -> None:
    assert journal_overlap_reasons([acquire(10), release(10.5)], [(10.25, 99)]) != []


def test_merge_keeps_na_unless_something_was_judged() -> None:
    na = not_applicable(1)
    assert merge_lock([na, na])["verdict"] == "n/a"
    assert merge_lock([na, {**na, "verdict": "pass", "reasons": []}])["verdict"] == "pass"
    assert merge_lock([na, {**na, "verdict": "fail", "reasons": ["x"]}])["verdict"] == "fail"


def test_an_na_section_judges_nothing_and_says_why() -> None:
    # The report and summary.json show this reason in place of a verdict: the wording is the contract.
    section = not_applicable(model_requests=2)
    assert section["reasons"] == ["n/a (the bot reports no lock records)"]
    counted = {k: section[k] for k in ("turnCount", "otherHolds", "longestHoldMs", "totalOverlapMs", "takeovers",
                                       "lockTimeouts", "probes", "turns")}
    assert counted == {"turnCount": 0, "otherHolds": 0, "longestHoldMs": 0.0, "totalOverlapMs": 0.0,
                       "takeovers": 0, "lockTimeouts": 0, "probes": [], "turns": []}


def test_any_one_lock_record_type_makes_the_evidence_judgeable() -> None:
    for kind in ("lock.acquire", "lock.release", "lock.timeout", "lock.takeover"):
        assert has_lock_records([{"type": "ready"}, {"type": kind}]), kind
    assert not has_lock_records([{"type": "lock.acquired"}, {"type": "lock"}])


def test_a_journal_overlap_reason_names_the_hold_and_the_journal() -> None:
    trace = [{**acquire(10, session="!r:hs", attempt="a7"), "purpose": "transcript"},
             release(50, session="!r:hs", attempt="a7")]
    assert journal_overlap_reasons(trace, [(40, 100)]) == [
        "session !r:hs attempt a7: lock (transcript) held for 10.0ms while the provider journal shows a model "
        "request in flight"]


def test_records_whose_time_is_not_a_finite_number_are_left_out_not_fatal() -> None:
    from qa.report.lock_evidence import analyze_lock_evidence

    odd = [{**acquire(0), "t": t} for t in ("5", None, "abc", True, 10**400, float("nan"))]
    # None of the odd holds may count (with a journal request all along, any counted hold would overlap it)...
    assert journal_overlap_reasons(odd, [(0, 100)]) == []
    # ...and the usable records around them still do, in time order.
    assert len(journal_overlap_reasons([*odd, acquire(10), release(20)], [(15, 100)])) == 1
    evidence = analyze_lock_evidence([*odd, acquire(1), release(2)])
    assert evidence.other_holds == 1 and evidence.longest_hold_ms == 1.0
