"""The bot's structured trace: one JSON object per line, appended and flushed as it happens.

Everything the harness learns about the bot's inner life (decisions, lock holds, model I/O) comes from this
file, so each record is written with a monotonic timestamp `t` (ms, see qa.clock) and a `type`.

Record types (fields beyond `t` and `type`):
  ready                 {userId, rooms}                       bot is syncing and has joined its rooms
  inbound               {eventId, roomId, sender, session, decision: accepted|dropped, reason}
                        (reasons: see qa.agent.policy, e.g. mention-required, notice, duplicate, history)
  lock.acquire          {session, attempt, purpose, lockPath, waitMs}
  lock.release          {session, attempt, purpose, heldMs, removed}
  lock.timeout          {session, attempt, purpose, error}
  lock.takeover         {session, attempt, previous: {pid, attempt, ageMs}, reason}
  lock.reclaim          {session, attempt, previous: {pid, attempt, ageMs}, reason}   startup cleanup of a dead
                        process's lock (qa.agent.startup_cleanup), before the first turn
  lock.startup          {locks, reclaimed}                    the startup cleanup is done
  lock.stall            {session, attempt, ms}                fault injection: a reply write keeps its lock
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
  approval.reaction     {approvalId, eventId, sender, key, decision: decided|ignored, outcome?, reason?}
  exec.run              {session, attempt, approvalId, ran, exitCode}
  preview.edit.start    {session, attempt, requestId, kind: draft|edit|final, target}   streaming preview I/O
  preview.edit.end      {session, attempt, requestId, kind, eventId, ok}                  (qa.agent.streaming)
  media.fetch.start     {session, attempt, eventId, msgtype, mimetype, size, encrypted}  attachment I/O
  media.fetch.end       {session, attempt, eventId, outcome: image|described|too-large|failed, images}
  invite                {roomId, inviter, direct, decision: joined|declined, reason}   (qa.agent.membership)
  membership            {roomId, membership: leave|ban, by, reason?}                  the bot was removed
  config.reload         {generation, ok, changed?, error?}                            (qa.agent.reload)
  error                 {where, error}
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from qa.clock import mono_ms


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
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
