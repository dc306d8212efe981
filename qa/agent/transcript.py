"""Session transcript: a JSONL file, one record per line, appended only under the session write lock.

Record fields (`append` fills the first four; the caller gives the rest):
  seq      int       1, 2, 3 … in file order; assigned under the lock from the highest seq on disk
  t        float     qa.kernel.clock.mono_ms() at append, comparable with the trace and the provider journal
  at       str       wall-clock ISO time, for humans
  attempt  str       the attempt whose hold wrote the line — taken from the hold; a caller may repeat it, but
                     a different value is refused
  kind     str       user | assistant | tool | notice | failed | skipped | memory | summary
  eventId  str?      user: the inbound Matrix event. assistant / failed / tool: the inbound event of the turn
                     that wrote it (the one being answered, given up on, or worked on)
  sender   str?      user: the Matrix user id that sent it (None for eventId/sender means "leave it out")
  content  JSON      user: body text; assistant: reply text; tool: {name, arguments, result};
                     notice: free-form bookkeeping; failed: the error text; skipped: why the turn ended
                     before any model call; memory: a post-turn note; summary: folded older records
                     (qa.agent.compaction: text, the user events and claims it folded)

Durability: each record is one line written with a single write (looping only on a short write) and fsynced,
so a crash leaves every complete line parseable and at most a torn last line, which `scan` skips. The next
append starts a fresh line first, so a torn line never swallows a good record.

Fence rule (the turn protocol's step 3). A turn for inbound event E is: acquire → append `user` E → release
→ model I/O with no lock → reacquire → `check_fence(hold, attempt, E)` → append `assistant` → release. While
the lock is free the transcript legitimately grows: a second message to the same session appends its `user`
record at once (its own turn comes later), and other turns append records for *their* events. None of that
makes us stale, so the fence never compares seq numbers. We are stale — and stop with no live output, no tool
run, no transcript write and no cleanup — only when another owner has taken over *our* turn:
  (a) a different attempt has written an `assistant` or `failed` record for E (a redelivery or a retry answered
      it or gave up on it; whenever that happened, answering E twice is wrong), or
  (b) the lock's takeover log shows a hold of our attempt was taken away (max-hold, stale or dead-owner
      reclaim): the taker may have interleaved writes with ours or be redoing our turn, or
  (c) we are not holding the lock as we check: the answer would not stay true until our append.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.agent.compaction import (
    CLAIMS,
    CompactionLimits,
    CompactionPlan,
    landed_after,
    plan_compaction,
    rewrite_bytes,
)
from qa.agent.lock import LockHold, lock_path_for, read_takeovers, write_all
from qa.kernel.clock import mono_ms, utc_now_iso

log = logging.getLogger(__name__)

KINDS = frozenset({"user", "assistant", "tool", "notice", "failed", "skipped", "memory"})
# Kinds by which an attempt claims an inbound event as handled.
CLAIM_KINDS = CLAIMS
_CALLER_KEYS = frozenset({"kind", "content", "eventId", "sender", "attempt"})


class FencedWriteError(RuntimeError):
    """An append (or fence check) was attempted without owning the session lock."""


@dataclass(frozen=True)
class CorruptLine:
    lineno: int
    text: str
    error: str


@dataclass(frozen=True)
class TranscriptScan:
    records: list[dict[str, Any]]
    corrupt: list[CorruptLine]
    torn_tail: bool  # the last line had no newline and did not parse: a writer died mid-write
    ends_with_newline: bool
    # Byte offset just past each record's line (its newline included), parallel to `records`.
    ends: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class FenceSnapshot:
    last_seq: int
    # inbound eventId -> attempts that wrote an assistant/failed record for it
    claims: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # attempts that had a hold taken away from them
    taken_over: frozenset[str] = frozenset()


def scan_lines(data: bytes) -> TranscriptScan:
    """Parse transcript bytes. Pure, so torn and corrupt cases are tested without crashing a writer."""
    records: list[dict[str, Any]] = []
    corrupt: list[CorruptLine] = []
    ends: list[int] = []
    lines = data.split(b"\n")
    ends_with_newline = data == b"" or data.endswith(b"\n")
    # split() leaves a final "" after a trailing newline; otherwise the last piece is an unterminated line.
    last_unterminated = None if ends_with_newline else len(lines) - 1
    torn_tail = False
    offset = 0
    for index, raw in enumerate(lines):
        offset += len(raw) + 1
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"expected an object, got {type(record).__name__}")
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if index == last_unterminated:
                torn_tail = True
            else:
                corrupt.append(CorruptLine(index + 1, raw.decode("utf-8", "replace")[:200], str(err)))
            continue
        records.append(record)
        ends.append(min(offset, len(data)))
    return TranscriptScan(records, corrupt, torn_tail, ends_with_newline, ends)


@dataclass(frozen=True)
class PreparedCompaction:
    plan: CompactionPlan
    prefix: bytes  # the file's bytes up to and including the last folded record's line, as planned


def user_events(records: list[dict[str, Any]]) -> set[str]:
    """Inbound events the transcript has recorded, folded ones (in a summary record) included."""
    seen = {str(r["eventId"]) for r in records if r.get("kind") == "user" and r.get("eventId")}
    for record in records:
        if record.get("kind") == "summary" and isinstance(record.get("content"), Mapping):
            seen.update(str(e) for e in record["content"].get("events", []))
    return seen


def claims_of(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """inbound event -> attempts that answered it, gave up on it or skipped it, folded claims included."""
    claims: dict[str, set[str]] = {}
    for record in records:
        event_id = record.get("eventId")
        if record.get("kind") in CLAIM_KINDS and isinstance(event_id, str):
            claims.setdefault(event_id, set()).add(str(record.get("attempt")))
        elif record.get("kind") == "summary" and isinstance(record.get("content"), Mapping):
            for event, attempts in (record["content"].get("claims") or {}).items():
                claims.setdefault(str(event), set()).update(str(a) for a in attempts)
    return claims


def fence_reason(snapshot: FenceSnapshot, attempt: str, event_id: str) -> str | None:
    """Rules (a) and (b) of the module docstring; None means the turn is still ours."""
    others = sorted(snapshot.claims.get(event_id, frozenset()) - {attempt})
    if others:
        return f"event {event_id} already answered by attempt {', '.join(others)}"
    if attempt in snapshot.taken_over:
        return f"lock hold of attempt {attempt} was taken over"
    return None


class Transcript:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def scan(self) -> TranscriptScan:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        result = scan_lines(data)
        for bad in result.corrupt:
            log.warning("%s:%d: corrupt transcript line skipped (%s): %s", self.path, bad.lineno, bad.error, bad.text)
        return result

    def read(self) -> list[dict[str, Any]]:
        return self.scan().records

    def snapshot(self) -> FenceSnapshot:
        records = self.read()
        claims = claims_of(records)
        taken_over = {
            str(entry["previous"]["attempt"])
            for entry in read_takeovers(self.path)
            if isinstance(entry.get("previous"), dict) and entry["previous"].get("attempt") is not None
        }
        return FenceSnapshot(
            last_seq=_last_seq(records),
            claims={event: frozenset(attempts) for event, attempts in claims.items()},
            taken_over=frozenset(taken_over),
        )

    def check_fence(self, hold: LockHold, attempt: str, event_id: str) -> str | None:
        """Why our turn for `event_id` must stop, or None. Call under the reacquired lock, before writing."""
        if hold.attempt != attempt:
            raise ValueError(f"hold belongs to attempt {hold.attempt!r}, fence asked for {attempt!r}")
        problem = self._hold_problem(hold)
        if problem is not None:
            return problem
        return fence_reason(self.snapshot(), attempt, event_id)

    def append(self, hold: LockHold, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record under `hold`; raises FencedWriteError unless the hold still owns the lock."""
        body = _validated(record, hold.attempt)
        problem = self._hold_problem(hold)
        if problem is not None:
            raise FencedWriteError(problem)
        scan = self.scan()
        full = {
            "seq": _last_seq(scan.records) + 1,
            "t": round(mono_ms(), 3),
            "at": utc_now_iso(),
            "attempt": hold.attempt,
            **body,
        }
        line = json.dumps(full, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8") if scan.ends_with_newline else b"\n" + line.encode("utf-8")
        created = not self.path.exists()
        # Checked again right before the write: the scan above may have taken long enough for a takeover.
        if not hold.still_owned():
            raise FencedWriteError(f"lock {hold.lock_path} no longer carries our token")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return full

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def prepare_compaction(self, limits: CompactionLimits) -> PreparedCompaction | None:
        """Plan a compaction from the file as it is now (no lock needed: appends only add whole lines)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        scan = scan_lines(data)
        plan = plan_compaction(scan.records, len(data), limits)
        if plan is None:
            return None
        return PreparedCompaction(plan, data[: scan.ends[len(plan.folded) - 1]])

    def compact(
        self, hold: LockHold, prepared: PreparedCompaction, summary: Mapping[str, Any]
    ) -> tuple[int, int] | None:
        """Replace the planned prefix by one summary record (content `summary`, see compaction.summary_content)
        under `hold`: read, write aside, fsync, atomic rename. Returns (records that landed since the plan,
        records now), or None when the prefix changed meanwhile. Raises FencedWriteError unless the hold owns
        the lock, checked before and right before the rename.

        The hold's work does not grow with the folded part: the prefix is compared as bytes and only the tail
        (what the plan kept, plus what landed) is parsed and copied."""
        problem = self._hold_problem(hold)
        if problem is not None:
            raise FencedWriteError(problem)
        plan = prepared.plan
        current = self.path.read_bytes()
        record = {"seq": plan.cut_seq, "t": round(mono_ms(), 3), "at": utc_now_iso(), "attempt": hold.attempt,
                  "kind": "summary", "content": dict(summary)}
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        data = rewrite_bytes(current, prepared.prefix, line)
        if data is None:
            return None
        tail = scan_lines(current[len(prepared.prefix):]).records
        aside = self.path.with_name(f"{self.path.name}.{os.urandom(6).hex()}.compact")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            if not hold.still_owned():
                raise FencedWriteError(f"lock {hold.lock_path} no longer carries our token")
            os.replace(aside, self.path)
        finally:
            if aside.exists():
                aside.unlink()
        _fsync_dir(self.path.parent)
        return landed_after(tail, plan), len(tail) + 1

    def _hold_problem(self, hold: LockHold) -> str | None:
        if hold.lock_path != lock_path_for(self.path):
            return f"hold is for {hold.lock_path}, not for {lock_path_for(self.path)}"
        if not hold.still_owned():
            return f"lock {hold.lock_path} no longer carries our token (released or taken over)"
        return None


def _validated(record: Mapping[str, Any], attempt: str) -> dict[str, Any]:
    extra = set(record) - _CALLER_KEYS
    if extra:
        raise ValueError(f"transcript record has unknown or reserved keys {sorted(extra)}")
    if "attempt" in record and record["attempt"] != attempt:
        # Writing on behalf of another attempt would forge the claims the fence relies on.
        raise ValueError(f"record says attempt {record['attempt']!r} but the hold is {attempt!r}'s")
    record = {k: v for k, v in record.items() if not (k in ("eventId", "sender") and v is None)}
    if record.get("kind") not in KINDS:
        raise ValueError(f"transcript record kind must be one of {sorted(KINDS)}, got {record.get('kind')!r}")
    if "content" not in record:
        raise ValueError("transcript record needs content")
    for key in ("eventId", "sender"):
        if key in record and not isinstance(record[key], str):
            raise ValueError(f"transcript record {key} must be a string, got {record[key]!r}")
    # Fixed key order keeps lines diffable.
    return {key: record[key] for key in ("kind", "eventId", "sender", "content") if key in record}


def _last_seq(records: list[dict[str, Any]]) -> int:
    seqs = [r["seq"] for r in records if isinstance(r.get("seq"), int) and not isinstance(r.get("seq"), bool)]
    return max(seqs, default=0)


def _fsync_dir(directory: Path) -> None:
    # Makes the new file's directory entry durable, not just its contents.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def transcript_file_name(key: str) -> str:
    """A session's file name: readable, and unique by its digest. Here, not in session.py, so the harness's lock
    probe can name a transcript without importing the model SDK (about 1.5 s of the harness's start)."""
    readable = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")[:60]
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{readable}-{digest}.jsonl"
