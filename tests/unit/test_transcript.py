from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from qa.agent.lock import LockHold, SessionWriteLock, release_all_held
from qa.agent.transcript import FencedWriteError, FenceSnapshot, Transcript, fence_reason, scan_lines
from qa.kernel.lock_settings import LockSettings


@pytest.fixture(autouse=True)
def _no_leaked_holds() -> Iterator[None]:
    yield
    release_all_held()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "session.jsonl"


def hold_for(path: Path, attempt: str, settings: LockSettings | None = None) -> LockHold:
    return SessionWriteLock(path, settings or LockSettings()).acquire_sync(attempt, "test", timeout_ms=2000)


def append(path: Path, attempt: str, kind: str, event_id: str, content: str = "x") -> None:
    # max_hold_ms=1 lets these writers take over a runaway test hold (which promised 1 ms) at once.
    with hold_for(path, attempt, LockSettings(max_hold_ms=1)) as hold:
        Transcript(path).append(hold, {"kind": kind, "eventId": event_id, "content": content})


def test_append_fills_seq_time_and_attempt(path: Path) -> None:
    transcript = Transcript(path)
    with hold_for(path, "att-1") as hold:
        first = transcript.append(hold, {"kind": "user", "eventId": "$a", "sender": "@u:hs", "content": "hi"})
        second = transcript.append(hold, {"kind": "assistant", "eventId": "$a", "content": "hello"})
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["attempt"] == "att-1"
    assert second["t"] >= first["t"]
    assert list(first) == ["seq", "t", "at", "attempt", "kind", "eventId", "sender", "content"]
    assert transcript.read() == [first, second]
    assert path.read_text().count("\n") == 2


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "shout", "content": "x"},
        {"kind": "user"},
        {"kind": "user", "content": "x", "seq": 99},
        {"kind": "user", "content": "x", "attempt": "someone-else"},
        {"kind": "user", "content": "x", "eventId": 5},
    ],
    ids=["bad-kind", "no-content", "seq-is-ours", "foreign-attempt", "non-string-event"],
)
def test_append_rejects_malformed_records(path: Path, record: dict[str, object]) -> None:
    with hold_for(path, "a") as hold, pytest.raises(ValueError):
        Transcript(path).append(hold, record)


def test_append_accepts_own_attempt_and_drops_none_fields(path: Path) -> None:
    with hold_for(path, "a") as hold:
        written = Transcript(path).append(
            hold, {"kind": "notice", "attempt": "a", "eventId": None, "sender": None, "content": "reacted"}
        )
    assert "eventId" not in written and "sender" not in written
    assert written["attempt"] == "a"


def test_append_without_the_lock_is_fenced(path: Path, tmp_path: Path) -> None:
    hold = hold_for(path, "a")
    hold.release()
    with pytest.raises(FencedWriteError):
        Transcript(path).append(hold, {"kind": "user", "content": "x"})
    with hold_for(tmp_path / "other.jsonl", "a") as other, pytest.raises(FencedWriteError, match="not for"):
        Transcript(path).append(other, {"kind": "user", "content": "x"})
    assert not path.exists()


def test_torn_last_line_is_skipped_and_next_append_starts_fresh(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    append(path, "a", "user", "$1")
    with path.open("a") as fh:
        fh.write('{"seq":2,"t":1,"kind":"assis')  # SIGKILL mid-write

    scan = Transcript(path).scan()
    assert [r["seq"] for r in scan.records] == [1]
    assert scan.torn_tail and scan.corrupt == []

    append(path, "a", "assistant", "$1")
    caplog.set_level(logging.WARNING)
    scan = Transcript(path).scan()
    assert [r["seq"] for r in scan.records] == [1, 2]
    # The torn fragment is now a corrupt middle line: reported, not fatal, and not glued to our record.
    assert [c.lineno for c in scan.corrupt] == [2]
    assert not scan.torn_tail
    assert "corrupt transcript line" in caplog.text


def test_scan_reports_corrupt_lines_without_crashing() -> None:
    data = b'{"seq":1}\nnot json\n[1,2]\n\xff\xfe\n\n{"seq":2}\n'
    scan = scan_lines(data)
    assert [r["seq"] for r in scan.records] == [1, 2]
    assert [c.lineno for c in scan.corrupt] == [2, 3, 4]
    assert not scan.torn_tail


def test_complete_last_line_without_newline_is_kept() -> None:
    scan = scan_lines(b'{"seq":1}\n{"seq":2}')
    assert [r["seq"] for r in scan.records] == [1, 2]
    assert not scan.ends_with_newline and not scan.torn_tail


def test_missing_transcript_reads_empty(path: Path) -> None:
    assert Transcript(path).read() == []
    assert Transcript(path).snapshot() == FenceSnapshot(last_seq=0, claims={}, taken_over=frozenset())


# --- fence -------------------------------------------------------------------------------------------------


def reacquire_and_check(path: Path, attempt: str, event_id: str) -> str | None:
    with hold_for(path, attempt) as hold:
        return Transcript(path).check_fence(hold, attempt, event_id)


def test_fence_ignores_other_turns_user_messages(path: Path) -> None:
    append(path, "A", "user", "$1")
    # While A is in model I/O, a second message arrives and is appended at once by its own turn.
    append(path, "B", "user", "$2")
    append(path, "B", "tool", "$2")
    append(path, "B", "assistant", "$2")
    assert reacquire_and_check(path, "A", "$1") is None


def test_fence_ignores_our_own_records(path: Path) -> None:
    append(path, "A", "user", "$1")
    append(path, "A", "assistant", "$1", "part one")
    assert reacquire_and_check(path, "A", "$1") is None


@pytest.mark.parametrize("kind", ["assistant", "failed"])
def test_fence_stops_when_another_attempt_claimed_our_event(path: Path, kind: str) -> None:
    append(path, "A", "user", "$1")
    append(path, "A2", kind, "$1")
    assert reacquire_and_check(path, "A", "$1") == "event $1 already answered by attempt A2"


def test_fence_stops_after_our_hold_was_taken_over(path: Path) -> None:
    runaway = hold_for(path, "A", LockSettings(max_hold_ms=1))
    Transcript(path).append(runaway, {"kind": "user", "eventId": "$1", "content": "hi"})
    # B takes the lock over once A's 1 ms promise has passed; B appends only its own user message.
    append(path, "B", "user", "$2")
    runaway.release()

    assert Transcript(path).snapshot().taken_over == frozenset({"A"})
    assert reacquire_and_check(path, "A", "$1") == "lock hold of attempt A was taken over"
    assert reacquire_and_check(path, "B", "$2") is None


def test_fence_without_owning_the_lock_is_never_clear(path: Path) -> None:
    hold = hold_for(path, "A")
    hold.release()
    reason = Transcript(path).check_fence(hold, "A", "$1")
    assert reason is not None and "no longer carries our token" in reason
    with pytest.raises(ValueError):
        Transcript(path).check_fence(hold_for(path, "A"), "B", "$1")


def test_fence_reason_is_pure() -> None:
    snap = FenceSnapshot(last_seq=7, claims={"$1": frozenset({"A", "C"})}, taken_over=frozenset({"Z"}))
    assert fence_reason(snap, "A", "$1") == "event $1 already answered by attempt C"
    assert fence_reason(snap, "A", "$2") is None
    assert fence_reason(snap, "Z", "$2") == "lock hold of attempt Z was taken over"


def test_snapshot_collects_claims(path: Path) -> None:
    append(path, "A", "user", "$1")
    append(path, "A", "assistant", "$1")
    append(path, "B", "failed", "$1")
    append(path, "B", "notice", "$9")
    snap = Transcript(path).snapshot()
    assert snap.last_seq == 4
    assert snap.claims == {"$1": frozenset({"A", "B"})}
    assert json.loads(path.read_text().splitlines()[-1])["kind"] == "notice"
