"""Lock evidence at its edges, pinned where the first tests left a change unnoticed (tests/unit/MUTATION.md):
every purpose's hold kind and every I/O kind by name, the 50 ms leak grace as a number, a turn's kind when its
holds are of several kinds, takeover records missing fields, the open holds a trace leaves (the doctor's view),
and touching intervals."""

from __future__ import annotations

from qa.kernel.trace import holds_open_at_end
from qa.report.lock_evidence import (
    TakeoverEvidence,
    analyze_lock_evidence,
    has_lock_records,
    hold_kind,
    intersections,
    not_applicable,
)
from tests.unit.test_lock_life_evidence import hold, model, rec, takeover


def test_every_purpose_has_its_kind() -> None:
    purposes = ("reply", "tool", "tool-check", "failed", "turn", "inbound", "notice", "skip", "post-turn",
                "compaction", "append-user", "")
    assert {p: hold_kind(p) for p in purposes} == {
        "reply": "turn", "tool": "turn", "tool-check": "turn", "failed": "turn", "turn": "whole-turn",
        "inbound": "inbound", "notice": "notice", "skip": "skipped-prompt", "post-turn": "post-turn",
        "compaction": "compaction", "append-user": "other", "": "other"}


def test_a_startup_reclaim_alone_is_a_lock_record() -> None:
    assert has_lock_records([{"type": "lock.reclaim"}])


def test_a_turn_is_named_by_its_most_telling_hold() -> None:
    def turn_kind(*purposes: str) -> str:
        records = [rec(0, "turn.start", "t1")]
        for i, purpose in enumerate(purposes):
            records += hold(10 * i + 1, 10 * i + 2, "t1", purpose)
        records += model(100, 110, "t1")
        [turn] = analyze_lock_evidence(records).turns
        return turn.kind

    assert turn_kind("turn") == "whole-turn"
    assert turn_kind("reply", "turn") == "whole-turn"
    assert turn_kind("reply", "skip") == "skipped-prompt"
    assert turn_kind("reply", "inbound") == "turn"
    assert turn_kind() == "turn"


def test_the_leak_grace_is_fifty_milliseconds() -> None:
    def leaked(release_at: float) -> bool:
        records = [rec(0, "turn.start", "t1"), *hold(1, release_at, "t1", "skip"),
                   rec(10, "turn.end", "t1", outcome="skipped")]
        return any("with its lock still held" in r for r in analyze_lock_evidence(records).reasons)

    assert not leaked(60.0) and leaked(60.5)


def test_a_hold_taken_as_the_turn_ends_and_never_released_is_a_leak() -> None:
    records = [rec(0, "turn.start", "t1"), rec(10, "lock.acquire", "t1", purpose="reply"), rec(10, "turn.end", "t1")]
    assert analyze_lock_evidence(records).reasons == [
        "session !a attempt t1: turn ended (?) with its lock still held (reply)"]


def test_every_io_kind_is_named_in_time_order() -> None:
    records = [rec(0, "turn.start", "t1"), *hold(1, 2, "t1", "reply")]
    for t, name in ((10, "preview.edit"), (20, "approval.wait"), (30, "media.fetch"), (40, "model.request")):
        records += [rec(t, f"{name}.start", "t1", requestId=name), rec(t + 5, f"{name}.end", "t1", requestId=name)]
    ev = analyze_lock_evidence(records)
    [turn] = ev.turns
    assert turn.io_kinds == ["preview", "approval", "media", "model"]
    assert turn.model_io == [(10.0, 15.0), (20.0, 25.0), (30.0, 35.0), (40.0, 45.0)], "closed, not run to the end"
    assert ev.model_requests == 4


def test_a_hold_kind_counts_its_open_holds_and_rounds_its_longest_to_the_microsecond() -> None:
    records = [*hold(0, 1.0004, "a", "inbound"), *hold(5, None, "b", "inbound"), rec(7.5, "ready", "x")]
    [kind] = analyze_lock_evidence(records).hold_kinds
    assert (kind.kind, kind.count, kind.open, kind.longest_ms) == ("inbound", 2, 1, 2.5)
    [short] = analyze_lock_evidence(hold(0, 1.0004, "a", "inbound")).hold_kinds
    assert (short.open, short.longest_ms) == (0, 1.0)


def test_a_takeover_record_missing_its_fields_is_read_as_empty() -> None:
    records = [rec(1, "lock.acquire", "t1", session="", purpose="reply"),
               {"t": 2, "type": "lock.takeover", "previous": {"attempt": "t1", "pid": "123", "ageMs": True}},
               {"t": 3, "type": "reply.sent", "attempt": "t1"}]
    [tk] = analyze_lock_evidence(records).takeover_list
    assert (tk.session, tk.by_attempt, tk.reason, tk.startup) == ("", "", "", False)
    assert tk.previous_pid is None and tk.previous_age_ms is None, "a pid or age of the wrong type is left out"
    assert tk.after == ["sent a reply"], "records without a session are that session's"


def test_what_a_stale_attempt_did_counts_from_the_record_right_after_the_takeover() -> None:
    before = rec(399, "reply.sent", "t1")
    ev = analyze_lock_evidence([r for r in takeover() if r["t"] < 400] + [before]
                               + [r for r in takeover() if r["t"] >= 400] + [rec(401, "exec.run", "t1")])
    assert ev.takeover_list[0].after == ["ran a tool"]
    assert ev.reasons == ["session !a attempt t1: its hold was taken over (max-hold) but it then ran a tool"]


def test_a_stale_attempt_after_a_startup_reclaim_is_named_so() -> None:
    ev = analyze_lock_evidence(takeover(rec(500, "transcript.write", "t1"), type_="lock.reclaim"))
    assert ev.reasons == ["session !a attempt t1: its hold was taken over (startup max-hold) but it then wrote the "
                          "transcript"]


def test_optional_fields_of_a_takeover_default_to_absent() -> None:
    tk = TakeoverEvidence(t=1, session="s", by_attempt="b", previous_attempt=None, reason="", startup=False, after=[])
    assert tk.previous_pid is None and tk.previous_age_ms is None


def test_an_na_section_has_every_counter_at_zero() -> None:
    section = not_applicable(model_requests=0)
    assert (section["startupReclaims"], section["holdKinds"], section["takeoverList"]) == (0, [], [])


def test_the_open_holds_a_trace_leaves_are_measured_to_its_last_record() -> None:
    records = [rec(1, "lock.acquire", "t1", purpose="reply"), rec(2.5, "lock.acquire", "t2", purpose="inbound"),
               rec(3, "lock.release", "t2", purpose="inbound"), rec(4.0004, "ready", "x"), rec(9.2, "noop", "y")]
    assert holds_open_at_end(records) == [("!a", "t1", "reply", 8.2)]
    assert holds_open_at_end(records[:4]) == [("!a", "t1", "reply", 3.0)]
    assert holds_open_at_end([]) == []
    assert holds_open_at_end([rec(1, "lock.acquire", "t1", purpose="reply"), {"type": "ready", "when": 5}]) == [
        ("!a", "t1", "reply", 0.0)], "records without a time do not end the trace"


def test_touching_intervals_do_not_overlap() -> None:
    assert intersections([(0.0, 1.0)], [(1.0, 2.0)]) == []
    assert intersections([(0.0, 1.5)], [(1.0, 2.0)]) == [(1.0, 1.5)]


