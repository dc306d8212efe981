"""The kernel's trace format: the writer, the reader, timed records, and the lock holds a trace describes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qa.kernel import trace as trace_module
from qa.kernel.trace import (
    LOCK_RECORDS,
    TAKEOVER_RECORDS,
    Hold,
    Trace,
    holds,
    holds_open_at_end,
    read_trace,
    record_key,
    timed,
)


def rec(t: Any, type_: str, session: str = "s", attempt: str = "a", **fields: Any) -> dict[str, Any]:
    return {"t": t, "type": type_, "session": session, "attempt": attempt, **fields}


def spans(found: list[Hold]) -> list[tuple[str, str, str, float, float | None]]:
    return [(h.session, h.attempt, h.purpose, h.start, h.end) for h in found]


# --- names ----------------------------------------------------------------------------------------------------


def test_record_type_names_are_the_documented_ones() -> None:
    assert {"lock.acquire", "lock.release", "lock.timeout", "lock.takeover", "lock.reclaim"} == LOCK_RECORDS
    assert {"lock.takeover", "lock.reclaim"} == TAKEOVER_RECORDS
    assert (trace_module.MODEL_REQUEST_START, trace_module.MODEL_REQUEST_END) == \
        ("model.request.start", "model.request.end")


# --- writer and reader ----------------------------------------------------------------------------------------


def test_the_writer_appends_one_compact_line_per_record_and_the_reader_reads_them(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    monkeypatch.setattr(trace_module, "mono_ms", lambda: 12.34567)
    path = tmp_path / "trace.jsonl"
    path.write_text('{"t": 1, "type": "old"}\n')  # appended to, never truncated: restarts share the file
    trace = Trace(path)
    record = trace.emit("inbound", eventId="$e", reason="é")
    assert record == {"t": 12.346, "type": "inbound", "eventId": "$e", "reason": "é"}
    trace.close()
    trace.close()  # idempotent
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1] == '{"t":12.346,"type":"inbound","eventId":"$e","reason":"é"}'
    assert read_trace(path) == [{"t": 1, "type": "old"}, record]


def test_a_trace_without_a_file_still_returns_its_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_module, "mono_ms", lambda: 5.0)
    trace = Trace(None)
    assert trace.emit("ready", userId="@b:x") == {"t": 5.0, "type": "ready", "userId": "@b:x"}
    trace.close()


def test_each_record_is_flushed_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    trace = Trace(path)
    trace.emit("a")
    assert [r["type"] for r in read_trace(path)] == ["a"], "the harness follows the file while the bot runs"
    trace.close()


def test_the_reader_skips_blank_and_torn_lines_and_a_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    assert read_trace(path) == []
    path.write_text('{"t": 1, "type": "a"}\n\n   \n{"t": 2, "ty\n{"t": 3, "type": "c"}\n{"t": 4, "type"', "utf-8")
    assert read_trace(path) == [{"t": 1, "type": "a"}, {"t": 3, "type": "c"}]


# --- timed records --------------------------------------------------------------------------------------------


def test_timed_keeps_finite_numbers_in_time_order() -> None:
    records = [{"t": 3}, {"t": 1.5}, {"t": True}, {"t": "2"}, {"t": float("inf")}, {"t": float("nan")},
               {"t": 10**400}, {}, {"t": None}, {"t": -1}, {"t": 2}]
    assert [r["t"] for r in timed(records)] == [-1, 1.5, 2, 3]


def test_timed_is_stable_for_equal_times() -> None:
    assert [r["n"] for r in timed([{"t": 1, "n": 1}, {"t": 0, "n": 0}, {"t": 1, "n": 2}])] == [0, 1, 2]


def test_record_key_defaults_to_empty_strings_and_stringifies() -> None:
    assert record_key({}) == ("", "")
    assert record_key({"session": 7, "attempt": None}) == ("7", "None")


# --- holds ----------------------------------------------------------------------------------------------------


def test_an_acquire_and_its_release_make_one_hold() -> None:
    found = holds([rec(1, "lock.acquire", purpose="inbound"), rec(4, "lock.release", purpose="inbound")])
    assert spans(found) == [("s", "a", "inbound", 1.0, 4.0)]
    assert isinstance(found[0].start, float) and isinstance(found[0].end, float)
    assert found[0].removed_after_takeover is False


def test_a_hold_never_released_stays_open() -> None:
    assert spans(holds([rec(1, "lock.acquire")])) == [("s", "a", "", 1.0, None)]


def test_a_release_ends_the_hold_of_its_own_session_and_attempt() -> None:
    found = holds([rec(1, "lock.acquire", session="x"), rec(2, "lock.acquire", attempt="b"),
                   rec(3, "lock.acquire"), rec(5, "lock.release")])
    assert spans(found) == [("x", "a", "", 1.0, None), ("s", "b", "", 2.0, None), ("s", "a", "", 3.0, 5.0)]


def test_a_release_prefers_the_hold_of_its_purpose_else_the_oldest() -> None:
    same_purpose = holds([rec(1, "lock.acquire", purpose="reply"), rec(2, "lock.acquire", purpose="tool"),
                          rec(3, "lock.release", purpose="tool"), rec(4, "lock.release", purpose="reply")])
    assert spans(same_purpose) == [("s", "a", "reply", 1.0, 4.0), ("s", "a", "tool", 2.0, 3.0)]
    oldest = holds([rec(1, "lock.acquire", purpose="reply"), rec(2, "lock.acquire", purpose="tool"),
                    rec(3, "lock.release", purpose="other")])
    assert spans(oldest) == [("s", "a", "reply", 1.0, 3.0), ("s", "a", "tool", 2.0, None)]


def test_a_release_without_its_acquire_counts_back_by_held_ms() -> None:
    found = holds([rec(10, "lock.release", purpose="p", heldMs=4)])
    assert spans(found) == [("s", "a", "p", 6.0, 10.0)]
    assert spans(holds([rec(10, "lock.release", heldMs=2.5)])) == [("s", "a", "", 7.5, 10.0)]
    assert spans(holds([rec(10, "lock.release", heldMs="4")])) == [("s", "a", "", 10.0, 10.0)]
    assert spans(holds([rec(10, "lock.release")])) == [("s", "a", "", 10.0, 10.0)]


def test_orphan_releases_are_listed_where_they_appear() -> None:
    found = holds([rec(1, "lock.acquire", attempt="x"), rec(3, "lock.release", attempt="y", heldMs=1),
                   rec(4, "lock.acquire", attempt="z")])
    assert [h.attempt for h in found] == ["x", "y", "z"]


@pytest.mark.parametrize("kind", sorted(TAKEOVER_RECORDS))
def test_a_takeover_ends_the_previous_holders_oldest_hold(kind: str) -> None:
    found = holds([rec(1, "lock.acquire", attempt="old", purpose="p1"),
                   rec(2, "lock.acquire", attempt="old", purpose="p2"),
                   rec(7, kind, attempt="new", previous={"pid": 1, "attempt": "old"})])
    assert spans(found) == [("s", "old", "p1", 1.0, 7.0), ("s", "old", "p2", 2.0, None)]


def test_a_takeover_without_previous_or_with_nothing_open_changes_nothing() -> None:
    found = holds([rec(1, "lock.acquire", attempt="old"), rec(2, "lock.takeover", previous="old"),
                   rec(3, "lock.takeover"), rec(4, "lock.takeover", session="other", previous={"attempt": "old"}),
                   rec(5, "lock.takeover", previous={"attempt": "gone"})])
    assert spans(found) == [("s", "old", "", 1.0, None)]


def test_a_takeover_with_no_attempt_named_matches_the_empty_attempt() -> None:
    found = holds([rec(1, "lock.acquire", attempt=""), rec(3, "lock.takeover", previous={})])
    assert spans(found) == [("s", "", "", 1.0, 3.0)]


def test_the_release_after_a_takeover_is_not_a_second_hold_and_says_whether_it_removed_a_file() -> None:
    base = [rec(1, "lock.acquire", attempt="old", purpose="turn"),
            rec(5, "lock.takeover", attempt="new", previous={"attempt": "old"})]
    quiet = holds([*base, rec(9, "lock.release", attempt="old", purpose="turn", removed=False)])
    assert spans(quiet) == [("s", "old", "turn", 1.0, 5.0)] and quiet[0].removed_after_takeover is False
    loud = holds([*base, rec(9, "lock.release", attempt="old", purpose="turn", removed=True)])
    assert spans(loud) == [("s", "old", "turn", 1.0, 5.0)] and loud[0].removed_after_takeover is True
    truthy = holds([*base, rec(9, "lock.release", attempt="old", purpose="turn", removed=1)])
    assert truthy[0].removed_after_takeover is False, "only a JSON true counts"
    # A second release of the same attempt, with no taken hold left, is an orphan of its own.
    twice = holds([*base, rec(9, "lock.release", attempt="old", removed=True),
                   rec(11, "lock.release", attempt="old", heldMs=1)])
    assert spans(twice) == [("s", "old", "turn", 1.0, 5.0), ("s", "old", "", 10.0, 11.0)]


def test_the_release_after_a_takeover_prefers_the_taken_hold_of_its_purpose() -> None:
    found = holds([rec(1, "lock.acquire", attempt="old", purpose="p1"),
                   rec(2, "lock.acquire", attempt="old", purpose="p2"),
                   rec(3, "lock.takeover", previous={"attempt": "old"}),
                   rec(4, "lock.takeover", previous={"attempt": "old"}),
                   rec(6, "lock.release", attempt="old", purpose="p2", removed=True)])
    assert [(h.purpose, h.end, h.removed_after_takeover) for h in found] == [("p1", 3.0, False),
                                                                              ("p2", 4.0, True)]


def test_an_open_hold_is_released_before_a_taken_one() -> None:
    found = holds([rec(1, "lock.acquire", attempt="old", purpose="p"),
                   rec(2, "lock.takeover", previous={"attempt": "old"}),
                   rec(3, "lock.acquire", attempt="old", purpose="p"),
                   rec(4, "lock.release", attempt="old", purpose="p", removed=True)])
    assert [(h.start, h.end, h.removed_after_takeover) for h in found] == [(1.0, 2.0, False), (3.0, 4.0, False)]


def test_other_records_are_ignored() -> None:
    assert holds([rec(1, "lock.timeout"), rec(2, "model.request.start"), rec(3, "lock.startup")]) == []


# --- holds open at the end ------------------------------------------------------------------------------------


def test_holds_open_at_end_are_measured_to_the_last_timed_record() -> None:
    records = [rec(2.0004, "lock.acquire", purpose="skip"), rec(1, "lock.acquire", attempt="b", purpose="inbound"),
               rec(1.5, "lock.release", attempt="b", purpose="inbound"), {"t": "late", "type": "x"},
               rec(252.5, "turn.end")]
    assert holds_open_at_end(records) == [("s", "a", "skip", 250.5)]
    assert holds_open_at_end([rec(1, "lock.acquire"), rec(3.12345, "x")]) == [("s", "a", "", 2.123)]


def test_no_records_no_open_holds() -> None:
    assert holds_open_at_end([]) == []
    assert holds_open_at_end([rec(1, "lock.acquire"), rec(2, "lock.release")]) == []


def test_a_trace_written_by_the_writer_reads_back_into_holds(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    trace = Trace(path)
    trace.emit("lock.acquire", session="s", attempt="a", purpose="p")
    trace.emit("lock.release", session="s", attempt="a", purpose="p", heldMs=0.1)
    trace.close()
    [hold] = holds(timed(read_trace(path)))
    assert hold.end is not None and hold.end >= hold.start
    assert json.loads(path.read_text().splitlines()[0])["purpose"] == "p"


def test_the_writer_says_where_it_writes(tmp_path: Path) -> None:
    trace = Trace(tmp_path / "t.jsonl")
    assert trace.path == tmp_path / "t.jsonl"
    trace.close()
    assert Trace(None).path is None


def test_records_without_a_session_are_one_session_for_takeovers_too() -> None:
    found = holds([{"t": 1, "type": "lock.acquire", "attempt": "old"},
                   {"t": 2, "type": "lock.takeover", "attempt": "new", "previous": {"attempt": "old"}}])
    assert spans(found) == [("", "old", "", 1.0, 2.0)]
