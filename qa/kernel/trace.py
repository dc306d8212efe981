"""The trace format (docs/trace-format.md): record type names, the writer, the reader, and the lock holds a trace
describes. Shared by the bot that writes a trace (the embedded agent) and the harness that judges it.

One JSON object per line, appended and flushed as it happens, each with a monotonic timestamp `t` (ms, see
qa.kernel.clock) and a `type`. Every record is optional for a bot; these are the ones the embedded agent writes
(fields beyond `t` and `type`):

  ready                 {userId, rooms}                       bot is syncing and has joined its rooms
  inbound               {eventId, roomId, sender, session, decision: accepted|dropped, reason}
                        (reasons, e.g. mention-required, notice, duplicate, history)
  lock.acquire          {session, attempt, purpose, lockPath, waitMs}
  lock.release          {session, attempt, purpose, heldMs, removed}
  lock.timeout          {session, attempt, purpose, error}
  lock.takeover         {session, attempt, previous: {pid, attempt, ageMs}, reason}
  lock.reclaim          {session, attempt, previous: {pid, attempt, ageMs}, reason}   startup cleanup of a dead
                        process's lock, before the first turn
  lock.startup          {locks, reclaimed}                    the startup cleanup is done
  lock.stall            {session, attempt, ms}                fault injection: a reply write keeps its lock
                        until it is taken over, at most `ms`
  transcript.write      {session, attempt, kind, seq}         a turn's transcript append
  compaction.start      {session, attempt, reason, cutSeq, folded, lastSeq, bytes}
  compaction.end        {session, attempt, outcome: compacted|prefix-changed, folded?, records?, landedMeanwhile?}
  turn.skipped          {session, attempt, eventId, reason: empty|command|shutdown, lockReleased}
  post_turn.end         {session, attempt, work: memory, seq}   the post-turn note is written
  turn.retry            {session, attempt, previousAttempt, eventId}   a fresh attempt after a takeover
  model.request.start   {session, attempt, requestId, eventId}
  model.request.end     {session, attempt, requestId, ok, toolCalls?, error?}
  turn.start            {session, attempt, eventId}
  turn.end              {session, attempt, eventId, outcome: replied|skipped|stale|taken-over|failed|cancelled}
  turn.stale            {session, attempt, reason}
  reply.sent            {session, attempt, eventId, inReplyTo}
  reaction              {session, eventId, roomId, sender, key, target, decision: recorded|ignored, reason}
  approval.request      {session, attempt, approvalId, eventId (first chunk), chunks, command}
  approval.wait.start   {session, attempt, requestId (= approvalId)}      waiting on a person: I/O, no lock held
  approval.wait.end     {session, attempt, requestId, outcome: approved|denied|expired}
  approval.reaction     {approvalId, eventId, sender, key, decision: decided|ignored, outcome?, reason?}  (reason
                        already-<outcome>: a reaction after the request ended)
  exec.run              {session, attempt, approvalId, ran, exitCode}
  preview.edit.start    {session, attempt, requestId, kind: draft|edit|final, target}   streaming preview I/O
  preview.edit.end      {session, attempt, requestId, kind, eventId, ok}
  media.fetch.start     {session, attempt, eventId, msgtype, mimetype, size, encrypted}  attachment I/O
  media.fetch.end       {session, attempt, eventId, outcome: image|described|too-large|failed, images, via?}
                        (via: authenticated|legacy, the download endpoint that served it)
  invite                {roomId, inviter, direct, decision: joined|declined, reason}
  membership            {roomId, membership: leave|ban, by, reason?}                  the bot was removed
  config.reload         {generation, ok, changed?, error?}
  error                 {where, error}  (where=sync: retryInS, the backoff before the next try)
  sync.stall            {waitedMs, timeoutMs}   a /sync silent well past its own timeout, given up on
  sync.resumed          {afterFailures}

Lock holds (`holds`), all in the trace's monotonic ms: lock.acquire → the matching lock.release (same session
+ attempt, same purpose preferred), or → a lock.takeover / lock.reclaim naming its attempt as `previous` (the
lock file is gone then, and a SIGKILLed holder never releases). A hold still open when the trace ends has no
end; a release with no acquire in the trace (the trace started mid-hold) counts from `t - heldMs`. Pure.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qa.kernel.clock import mono_ms

LOCK_ACQUIRE = "lock.acquire"
LOCK_RELEASE = "lock.release"
LOCK_TIMEOUT = "lock.timeout"
LOCK_TAKEOVER = "lock.takeover"
LOCK_RECLAIM = "lock.reclaim"
MODEL_REQUEST_START = "model.request.start"
MODEL_REQUEST_END = "model.request.end"
LOCK_RECORDS = frozenset({LOCK_ACQUIRE, LOCK_RELEASE, LOCK_TIMEOUT, LOCK_TAKEOVER, LOCK_RECLAIM})
# A removal of the previous holder's lock: by a waiter (takeover) or by the startup cleanup (reclaim).
TAKEOVER_RECORDS = frozenset({LOCK_TAKEOVER, LOCK_RECLAIM})


class Trace:
    """Appends records to the trace file ($MATRIX_QA_TRACE_FILE), which the harness follows as the bot writes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh = path.open("a", encoding="utf-8") if path else None

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        record = {"t": round(mono_ms(), 3), "type": type_, **fields}
        if self._fh is None:
            return record
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
        return record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Read a trace, skipping a torn last line (the bot may have been SIGKILLed mid-write)."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # torn; an integer of thousands of digits; nested past the reader
            continue
        if isinstance(record, dict):  # a line of another shape is no record
            records.append(record)
    return records


def timed(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records with a usable time, in time order. A trace is the bot's to write: a `t` that is not a finite
    number of ms (a bool, a string, a 400-digit integer) makes its record unusable as timing, not the reader."""
    def usable(t: Any) -> bool:
        if isinstance(t, bool) or not isinstance(t, int | float):
            return False
        try:
            return math.isfinite(float(t))
        except OverflowError:
            return False

    return sorted((r for r in records if usable(r.get("t"))), key=lambda r: float(r["t"]))


def record_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """(session, attempt): whose record it is."""
    return (str(record.get("session", "")), str(record.get("attempt", "")))


class Hold:
    """One lock hold: `end` None while it is still open at the trace's end."""

    def __init__(self, session: str, attempt: str, purpose: str, start: float, end: float | None) -> None:
        self.session = session
        self.attempt = attempt
        self.purpose = purpose
        self.start = start
        self.end = end
        # The release of a hold already taken over removed a lock file: the stale attempt cleaned up.
        self.removed_after_takeover = False


def holds(ordered: Sequence[Mapping[str, Any]]) -> list[Hold]:
    """Every hold of a `timed` trace, in the order its start appears (see the module's note)."""
    found: list[Hold] = []
    open_by_key: dict[tuple[str, str], list[Hold]] = {}
    # Holds ended by a takeover; the old holder's own later release must not count them a second time.
    taken_by_key: dict[tuple[str, str], list[Hold]] = {}
    for r in ordered:
        kind = r.get("type")
        if kind == LOCK_ACQUIRE:
            session, attempt = record_key(r)
            hold = Hold(session, attempt, str(r.get("purpose", "")), float(r["t"]), None)
            found.append(hold)
            open_by_key.setdefault((session, attempt), []).append(hold)
        elif kind in TAKEOVER_RECORDS:
            _take_over(r, open_by_key, taken_by_key)
        elif kind == LOCK_RELEASE:
            released = _release(r, open_by_key, taken_by_key)
            if released is not None:
                found.append(released)
    return found


def _take_over(r: Mapping[str, Any], open_by_key: dict[tuple[str, str], list[Hold]],
               taken_by_key: dict[tuple[str, str], list[Hold]]) -> None:
    previous = r.get("previous")
    if not isinstance(previous, Mapping):
        return
    # From here on the old hold excludes nobody, and a SIGKILLed holder never writes its release.
    key = (str(r.get("session", "")), str(previous.get("attempt", "")))
    candidates = open_by_key.get(key, [])
    if candidates:
        taken = candidates.pop(0)
        taken.end = float(r["t"])
        taken_by_key.setdefault(key, []).append(taken)


def _release(r: Mapping[str, Any], open_by_key: dict[tuple[str, str], list[Hold]],
             taken_by_key: dict[tuple[str, str], list[Hold]]) -> Hold | None:
    """Ends the hold this release belongs to; returns a hold only when the trace never saw its acquire."""
    key = record_key(r)
    purpose = str(r.get("purpose", ""))
    candidates = open_by_key.get(key, [])
    match = _pick(candidates, purpose)
    if match is not None:
        candidates.remove(match)
        match.end = float(r["t"])
        return None
    taken = _pick(taken_by_key.get(key, []), purpose)
    if taken is not None:
        taken_by_key[key].remove(taken)
        taken.removed_after_takeover = r.get("removed") is True
        return None
    held = r.get("heldMs")
    start = float(r["t"]) - (float(held) if isinstance(held, int | float) else 0.0)
    return Hold(key[0], key[1], purpose, start, float(r["t"]))


def _pick(candidates: Sequence[Hold], purpose: str) -> Hold | None:
    return next((h for h in candidates if h.purpose == purpose), candidates[0] if candidates else None)


def holds_open_at_end(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, float]]:
    """(session, attempt, purpose, held ms) of every hold neither released nor taken over by the trace's end:
    the lock file a run left behind, as the doctor reports it for an artifacts directory."""
    ordered = timed(records)
    end = float(ordered[-1]["t"]) if ordered else 0.0
    return [(h.session, h.attempt, h.purpose, round(end - h.start, 3)) for h in holds(ordered) if h.end is None]
