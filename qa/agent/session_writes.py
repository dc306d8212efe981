"""One session's state and how a turn writes to it: the transcript, its write lock, and the fenced, traced append.

A turn reacquires the lock for each write, checks the fence (qa.agent.transcript: no write by an attempt whose
hold was taken over, none for a message already answered) and only then appends; a failed check is StaleTurn.
Two test-only faults live here because they are faults of this write: `stallFirstReplyMs` and `skip-fence`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from qa.agent.config import SessionLifeConfig
from qa.agent.lock import LockHold, SessionWriteLock
from qa.agent.policy import Inbound
from qa.agent.transcript import FencedWriteError, Transcript
from qa.kernel.trace import Trace

STALL_LOOK_S = 0.02


@dataclass
class Session:
    key: str
    room_id: str
    thread_root: str | None
    transcript: Transcript
    lock: SessionWriteLock
    seen_events: set[str]
    # Each accepted message carries its attempt id from arrival to reply, so the inbound append and the
    # reply append of one turn are one attempt in the trace and in the lock evidence.
    appends: asyncio.Queue[tuple[Inbound, str]] = field(default_factory=asyncio.Queue)
    # (message, attempt, retry): retry is True for the one fresh attempt after a takeover made a turn stale.
    turns: asyncio.Queue[tuple[Inbound, str, bool]] = field(default_factory=asyncio.Queue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)


class StaleTurn(Exception):
    """The fence says another owner has this turn."""

    @property
    def taken_over(self) -> bool:
        # Rule (a) (another attempt answered the event) names the event; every other reason is a lost hold.
        return "already answered" not in str(self)


class FencedWriter:
    """Writes a turn's records under the session lock, fence checked and traced (with the two write faults)."""

    def __init__(self, life: SessionLifeConfig, trace: Trace) -> None:
        self._life = life
        self._trace = trace
        # The stall fault hits the process's first reply write only, so the retry after the takeover is clean.
        self._stall_left = self._life.stall_first_reply_ms > 0

    async def fenced(
        self, session: Session, attempt: str, inbound: Inbound, purpose: str,
        record: dict[str, Any] | None, held: LockHold | None,
    ) -> None:
        """Reacquire (unless the turn already holds the lock), check the fence, append `record` if given."""
        hold = held or await session.lock.acquire(attempt, purpose)
        try:
            if purpose == "reply":
                await self._stall_fault(session, attempt, hold)
            if "skip-fence" in self._life.test_bugs:
                hold = await self._unfenced_write(session, attempt, inbound, purpose, record, hold, held)
                return
            stale = session.transcript.check_fence(hold, attempt, inbound.event_id)
            if stale:
                raise StaleTurn(stale)
            if record is not None:
                try:
                    self.append(session, hold, {**record, "attempt": attempt, "eventId": inbound.event_id})
                except FencedWriteError as exc:
                    raise StaleTurn(str(exc)) from exc
        finally:
            if held is None:
                hold.release()

    async def _stall_fault(self, session: Session, attempt: str, hold: LockHold) -> None:
        """Fault injection (`stallFirstReplyMs`): the first reply write keeps its lock like a stalled disk, until
        the hold is taken over or the time is up. Ending at the takeover makes the window exact: a second message
        takes the lock over however late it lands (within the time), and the fence is checked right after."""
        if not self._stall_left:
            return
        self._stall_left = False
        ms = self._life.stall_first_reply_ms
        self._trace.emit("lock.stall", session=session.key, attempt=attempt, ms=ms)
        deadline = asyncio.get_running_loop().time() + ms / 1000
        # A takeover by this process or another shows only in the lock file: look every STALL_LOOK_S.
        while hold.still_owned() and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(min(STALL_LOOK_S, left))

    async def _unfenced_write(
        self, session: Session, attempt: str, inbound: Inbound, purpose: str,
        record: dict[str, Any] | None, hold: LockHold, held: LockHold | None,
    ) -> LockHold:
        """The `skip-fence` bug: no fence check, and a lost hold is simply taken again before writing."""
        if record is None:
            return hold
        if not hold.still_owned():
            hold.release()
            hold = await session.lock.acquire(attempt, purpose)
        self.append(session, hold, {**record, "attempt": attempt, "eventId": inbound.event_id})
        return hold

    def append(self, session: Session, hold: LockHold, record: dict[str, Any]) -> None:
        """A turn's transcript write, traced: the lock evidence checks that no taken-over attempt writes."""
        written = session.transcript.append(hold, record)
        self._trace.emit("transcript.write", session=session.key, attempt=hold.attempt, kind=written["kind"],
                         seq=written["seq"])
