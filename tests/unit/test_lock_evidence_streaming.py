"""Lock evidence over streaming previews and attachment fetches: they are I/O, so no turn may hold its lock
across them (qa.report.lock_evidence)."""

from __future__ import annotations

from typing import Any

from qa.report.lock_evidence import analyze_lock_evidence


def rec(t: float, type_: str, attempt: str = "turn-1", **fields: Any) -> dict[str, Any]:
    return {"t": t, "type": type_, "session": "s", "attempt": attempt, **fields}


def turn(*middle: dict[str, Any]) -> list[dict[str, Any]]:
    return [rec(0, "turn.start", eventId="$a"),
            rec(1, "model.request.start", requestId="m0"), rec(5, "model.request.end", requestId="m0"),
            *middle, rec(100, "turn.end", eventId="$a", outcome="replied")]


def test_a_lock_held_while_a_draft_is_edited_fails_the_evidence() -> None:
    records = turn(rec(10, "lock.acquire", purpose="preview"), rec(11, "preview.edit.start", requestId="p1"),
                   rec(31, "preview.edit.end", requestId="p1"), rec(40, "lock.release", purpose="preview"))
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "fail" and evidence.total_overlap_ms == 20.0
    assert evidence.reasons == ["session s attempt turn-1: lock held during model I/O for 20.0ms"]


def test_attachment_fetches_are_io_too() -> None:
    records = turn(rec(10, "lock.acquire", purpose="x"), rec(12, "media.fetch.start", eventId="$a"),
                   rec(15, "media.fetch.end", eventId="$a"), rec(20, "lock.release", purpose="x"))
    assert analyze_lock_evidence(records).total_overlap_ms == 3.0


def test_another_message_appended_while_the_draft_is_edited_passes() -> None:
    records = turn(rec(11, "preview.edit.start", requestId="p1"),
                   rec(12, "lock.acquire", attempt="turn-2", purpose="inbound"),
                   rec(13, "lock.release", attempt="turn-2", purpose="inbound"),
                   rec(31, "preview.edit.end", requestId="p1"),
                   rec(50, "lock.acquire", purpose="reply"), rec(51, "lock.release", purpose="reply"))
    evidence = analyze_lock_evidence(records)
    assert evidence.verdict == "pass" and evidence.total_overlap_ms == 0
