"""Sessions and the turn protocol: the place where the write-lock rule is kept or broken.

One session = one conversation (a room's top level, or one thread). Per session two workers run in order:

- the append worker writes each inbound message to the transcript as soon as it arrives
  (acquire → append → release), so a message that lands while a turn is thinking is recorded at once;
- the turn worker answers accepted messages one after another:
  model I/O with no lock held → reacquire → fence check → append reply → release → send to Matrix
  → post-turn work (qa.agent.post_turn: memory note, compaction; no lock across their model calls).

A turn that ends before any model call (an empty prompt once the mention is stripped, a local command, a
shutdown) still claims its message under a short hold and releases it (`turn.skipped`, `lockReleased`). A
turn whose hold was taken over (fence rule (b)) sends nothing and writes nothing; its message is then retried
once by a fresh attempt, so it is still answered exactly once.

Scope `attempt` is the legacy bug kept on purpose: the turn holds the lock from start to end, model call
included, so the append worker's acquire times out with `session file locked (timeout …)`. Tests use it to
show the lock evidence catching the bug.

Here: the sessions and their two workers. One turn is qa.agent.turn; its fenced writes, qa.agent.session_writes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

from qa.agent.approval_flow import ApprovalFlow
from qa.agent.config import SessionLifeConfig
from qa.agent.lock import SessionLockError, SessionWriteLock
from qa.agent.media import transcript_text
from qa.agent.model import ModelClient
from qa.agent.policy import Inbound, session_key
from qa.agent.post_turn import PostTurnWork
from qa.agent.session_writes import FencedWriter, Session
from qa.agent.transcript import Transcript, claims_of, transcript_file_name, user_events
from qa.agent.turn import AllowedFor, SendReply, TurnRunner
from qa.agent.turn_io import TurnIO
from qa.kernel.lock_settings import LockSettings
from qa.kernel.trace import Trace


class SessionManager:
    """Keeps the sessions: one transcript, lock and pair of workers each; appends arrivals, queues and resumes turns."""

    def __init__(
        self,
        state_dir: Path,
        settings: LockSettings,
        trace: Trace,
        model: ModelClient,
        system_prompt: str,
        send_reply: SendReply,
        approvals: ApprovalFlow | None = None,
        allowed_for: AllowedFor | None = None,
        turn_io: TurnIO | None = None,
        cross_room_memory: bool = False,
        send_notice: SendReply | None = None,
        life: SessionLifeConfig | None = None,
        bot_user_id: str | None = None,
    ) -> None:
        self._dir = state_dir / "sessions"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._settings = settings
        self._trace = trace
        self._sessions: dict[str, Session] = {}
        self._attempts = itertools.count(1)
        self._pid = os.getpid()
        self._life = life or SessionLifeConfig()
        self._post_turn = PostTurnWork(self._life, model, trace, system_prompt, self._next_attempt)
        self._turns = TurnRunner(settings, trace, model, system_prompt, send_reply, FencedWriter(self._life, trace),
                                 self._life, lambda: self._sessions.values(), approvals=approvals,
                                 allowed_for=allowed_for, turn_io=turn_io, cross_room_memory=cross_room_memory,
                                 send_notice=send_notice, bot_user_id=bot_user_id)

    def session_for(self, room_id: str, thread_root: str | None) -> Session:
        key = session_key(room_id, thread_root)
        session = self._sessions.get(key)
        if session is None:
            path = self._dir / transcript_file_name(key)
            meta = path.with_suffix(".meta.json")
            if not meta.exists():
                # Which conversation a transcript belongs to, so a restarted bot can resume its turns.
                meta.write_text(json.dumps({"key": key, "roomId": room_id, "threadRoot": thread_root}))
            transcript = Transcript(path)
            seen = user_events(transcript.read())
            session = Session(
                key=key,
                room_id=room_id,
                thread_root=thread_root,
                transcript=transcript,
                lock=SessionWriteLock(path, self._settings, self._trace, session=key),
                seen_events=seen,
            )
            session.workers = [
                asyncio.create_task(self._append_worker(session), name=f"append:{key}"),
                asyncio.create_task(self._turn_worker(session), name=f"turn:{key}"),
            ]
            self._sessions[key] = session
        return session

    async def flush_appends(self) -> None:
        """Until every queued inbound message is in its transcript: the sync position may then move past it."""
        await asyncio.gather(*(s.appends.join() for s in list(self._sessions.values())))

    def resume_interrupted(self) -> int:
        """Queue a turn for every message a previous run of the bot appended but never answered or gave up on
        (a crash mid-turn). Each is then answered exactly once; the dead run's lock is reclaimed on the way."""
        resumed = 0
        for meta_path in sorted(self._dir.glob("*.meta.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            session = self.session_for(str(meta["roomId"]), meta.get("threadRoot"))
            records = session.transcript.read()
            claimed = set(claims_of(records))
            for record in records:
                if record.get("kind") != "user" or record.get("eventId") in claimed:
                    continue
                inbound = Inbound(event_id=str(record["eventId"]), room_id=session.room_id,
                                  sender=str(record.get("sender", "")), msgtype="m.text",
                                  body=str(record.get("content", "")), mentioned=True,
                                  thread_root=session.thread_root)
                attempt = self._next_attempt("turn")
                self._trace.emit("turn.start", session=session.key, attempt=attempt, eventId=inbound.event_id,
                                 resumedFrom=record.get("attempt"))
                session.turns.put_nowait((inbound, attempt, False))
                resumed += 1
        return resumed

    def already_seen(self, inbound: Inbound) -> bool:
        return inbound.event_id in self.session_for(inbound.room_id, inbound.thread_root).seen_events

    def submit(self, inbound: Inbound) -> str:
        """Queue an accepted message; returns its session key. Never blocks the sync loop."""
        session = self.session_for(inbound.room_id, inbound.thread_root)
        session.seen_events.add(inbound.event_id)
        attempt = self._next_attempt("turn")
        # A turn starts when its message arrives: the inbound append is step 1 of the turn protocol.
        self._trace.emit("turn.start", session=session.key, attempt=attempt, eventId=inbound.event_id)
        session.appends.put_nowait((inbound, attempt))
        return session.key

    async def record_notice(self, room_id: str, thread_root: str | None, record: dict[str, Any]) -> bool:
        """Append a notice to the session's transcript; False when the lock could not be had."""
        session = self.session_for(room_id, thread_root)
        attempt = self._next_attempt("notice")
        try:
            hold = await session.lock.acquire(attempt, "notice")
        except SessionLockError as exc:
            self._trace.emit("error", where="notice", session=session.key, error=str(exc))
            return False
        try:
            session.transcript.append(hold, {"kind": "notice", "attempt": attempt, **record})
        finally:
            hold.release()
        return True

    async def close(self) -> None:
        tasks = [t for s in self._sessions.values() for t in s.workers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _next_attempt(self, kind: str) -> str:
        return f"{kind}-{self._pid}-{next(self._attempts)}"

    async def _append_worker(self, session: Session) -> None:
        while True:
            inbound, attempt = await session.appends.get()
            if "append-behind-turn" in self._life.test_bugs:  # test-only: the queue bug (qa.agent.config)
                await session.turns.join()
            try:
                hold = await session.lock.acquire(attempt, "inbound")
            except SessionLockError as exc:
                # The message is lost, exactly as writers were in the bug this project exists to catch.
                self._inbound_failed(session, inbound, attempt, str(exc))
                session.appends.task_done()
                continue
            try:
                session.transcript.append(hold, {
                    "kind": "user", "attempt": attempt, "eventId": inbound.event_id,
                    "sender": inbound.sender, "content": transcript_text(inbound.body, inbound.media),
                })
            except Exception as exc:  # a worker that dies silently would look like a bot that ignores people
                self._inbound_failed(session, inbound, attempt, f"{type(exc).__name__}: {exc}")
                session.appends.task_done()
                continue
            finally:
                hold.release()
            session.turns.put_nowait((inbound, attempt, False))
            session.appends.task_done()

    def _inbound_failed(self, session: Session, inbound: Inbound, attempt: str, error: str) -> None:
        self._trace.emit("error", where="inbound-append", session=session.key, eventId=inbound.event_id, error=error)
        self._trace.emit("turn.end", session=session.key, attempt=attempt, eventId=inbound.event_id, outcome="failed")

    async def _turn_worker(self, session: Session) -> None:
        while True:
            inbound, attempt, retry = await session.turns.get()
            try:
                outcome = await self._turns.run(session, inbound, attempt)
                if outcome == "replied":
                    await self._post_turn.run(session.key, session.transcript, session.lock)
                elif outcome == "taken-over" and not retry:
                    self._retry_after_takeover(session, inbound, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad turn must not stop the session
                self._trace.emit("error", where="turn", session=session.key, eventId=inbound.event_id,
                                 error=f"{type(exc).__name__}: {exc}")
            finally:
                session.turns.task_done()  # only the test-only append-behind-turn bug waits on it (join)

    def _retry_after_takeover(self, session: Session, inbound: Inbound, stale_attempt: str) -> None:
        """The stale attempt did nothing; one fresh attempt answers the message (fence rule (a) still holds)."""
        attempt = self._next_attempt("turn")
        self._trace.emit("turn.retry", session=session.key, attempt=attempt, previousAttempt=stale_attempt,
                         eventId=inbound.event_id)
        self._trace.emit("turn.start", session=session.key, attempt=attempt, eventId=inbound.event_id,
                         retryOf=stale_attempt)
        session.turns.put_nowait((inbound, attempt, True))

