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
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.agent.approval_flow import ApprovalFlow
from qa.agent.config import SessionLifeConfig
from qa.agent.exec_tool import EXEC_TOOL
from qa.agent.lock import LockHold, SessionLockError, SessionWriteLock
from qa.agent.media import transcript_text
from qa.agent.model import ModelClient, ModelFailed, ModelReply, ToolCall, build_messages
from qa.agent.policy import Inbound, session_key
from qa.agent.post_turn import PostTurnWork
from qa.agent.prompt_gate import Skip, skip_for
from qa.agent.streaming import Preview
from qa.agent.transcript import FencedWriteError, Transcript, claims_of, transcript_file_name, user_events
from qa.agent.turn_io import TurnIO
from qa.kernel.lock_settings import LockSettings
from qa.kernel.trace import Trace

# (room_id, text, thread_root, in_reply_to) -> the sent event id, or None when the send failed
SendReply = Callable[[str, str, str | None, str | None], Awaitable[str | None]]
# room id -> who may decide approvals there (None: anyone but the bot)
AllowedFor = Callable[[str], frozenset[str] | None]
# A turn may call tools this many times before it must answer in words.
MAX_TOOL_ROUNDS = 3


def context_for(records: list[dict[str, Any]], event_id: str, attempt: str) -> list[dict[str, Any]]:
    """What the model sees when answering `event_id`: the transcript up to that message, then what was written
    after it about the conversation before it (an earlier message's answer that landed later, a reaction
    notice, a summary), and this attempt's own records (tool calls). Messages that landed later, and whatever
    belongs to them, are their own turns' business: a turn retried after a takeover, or resumed after a crash,
    must answer its own message, not the newest one; another attempt's records about this message are stale."""
    at = next((i for i, r in enumerate(records) if r.get("kind") == "user" and r.get("eventId") == event_id), None)
    if at is None:
        return records
    later = records[at + 1:]
    later_messages = {r.get("eventId") for r in later if r.get("kind") == "user"}

    def belongs(r: dict[str, Any]) -> bool:
        if r.get("attempt") == attempt:
            return True
        if r.get("kind") == "user" or r.get("eventId") in later_messages:
            return False
        return r.get("eventId") != event_id  # this message's records from another (stale) attempt stay out

    return records[: at + 1] + [r for r in later if belongs(r)]


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


class SessionManager:
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
        self._model = model
        self._system_prompt = system_prompt
        self._send_reply = send_reply
        self._approvals = approvals
        self._allowed_for = allowed_for
        self._turn_io = turn_io
        self._cross_room_memory = cross_room_memory  # a test-only mutation (config crossRoomMemory)
        self._send_notice = send_notice
        self._sessions: dict[str, Session] = {}
        self._attempts = itertools.count(1)
        self._pid = os.getpid()
        self._life = life or SessionLifeConfig()
        self._bot_user_id = bot_user_id
        self._post_turn = PostTurnWork(self._life, model, trace, system_prompt, self._next_attempt)
        # The stall fault hits the process's first reply write only, so the retry after the takeover is clean.
        self._stall_left = self._life.stall_first_reply_ms > 0

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
                outcome = await self._run_turn(session, inbound, attempt)
                if outcome == "replied":
                    await self._post_turn.run(session.key, session.transcript, session.lock)
                elif outcome == "taken-over" and not retry:
                    self._retry_after_takeover(session, inbound, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad turn must not stop the session
                self._trace.emit("error", where="turn", session=session.key, eventId=inbound.event_id,
                                 error=f"{type(exc).__name__}: {exc}")

    async def _run_turn(self, session: Session, inbound: Inbound, attempt: str) -> str:
        """One turn; returns its outcome (replied, skipped, stale, taken-over, failed, cancelled)."""
        trace = self._trace
        # Legacy `attempt` scope: one hold for the whole turn, model I/O included (the bug, kept on purpose).
        held: LockHold | None = None
        preview: Preview | None = None
        outcome = "failed"
        asked_model = False
        try:
            if self._settings.scope == "attempt":
                held = await session.lock.acquire(attempt, "turn")
            # An attachment is a prompt even without a caption: only a text message can be an empty prompt.
            skip = skip_for(inbound.body, self._bot_user_id) if inbound.media is None else None
            if skip is not None:
                outcome = await self._skip_turn(session, inbound, attempt, skip, held)
                return outcome
            io = self._turn_io
            preview = io.preview(session.room_id, session.thread_root, inbound, session.key, attempt,
                                 session.lock) if io else None
            if preview is not None:
                await preview.start()
            # The attachment is fetched (I/O, no lock of ours) before the model sees the message.
            prepared = await io.attachment(inbound, session.key, attempt) if io else None
            parts = {inbound.event_id: prepared.parts} if prepared and prepared.parts else None
            reply = None
            for round_ in range(0 if prepared and prepared.refusal else MAX_TOOL_ROUNDS + 1):
                tools = [EXEC_TOOL] if self._approvals is not None and round_ < MAX_TOOL_ROUNDS else None
                asked_model = True
                reply = await self._call_model(session, attempt, inbound, round_, tools, preview, parts)
                if not reply.tool_calls:
                    break
                for call in reply.tool_calls:
                    # A stale attempt runs no tool: check the fence before acting, not only before writing.
                    await self._fenced(session, attempt, inbound, "tool-check", None, held)
                    result = await self._run_tool_previewed(session, attempt, call, preview)
                    await self._fenced(session, attempt, inbound, "tool", {"kind": "tool", "content": {
                        "callId": call.id, "name": call.name, "arguments": call.arguments, "result": result}}, held)
            if prepared and prepared.refusal:
                text = prepared.refusal  # the bot's own answer: the model never saw the attachment
            else:
                text = (reply.text.strip() if reply else "") or "(no answer)"
            if preview is not None:
                await preview.end_stream()
            await self._fenced(session, attempt, inbound, "reply", {"kind": "assistant", "content": text}, held)
            if held is not None:
                held.release()
                held = None
            if preview is not None:
                sent = await preview.finish(text)
            else:
                sent = await self._send_reply(session.room_id, text, session.thread_root, inbound.event_id)
            if sent:
                trace.emit("reply.sent", session=session.key, attempt=attempt, eventId=sent,
                           inReplyTo=inbound.event_id)
                outcome = "replied"
        except _Stale as exc:
            # Someone else owns this turn now: no output, no write, no cleanup of their state.
            trace.emit("turn.stale", session=session.key, attempt=attempt, reason=str(exc))
            outcome = "taken-over" if exc.taken_over else "stale"
        except _ModelFailed as exc:
            try:
                await self._fenced(session, attempt, inbound, "failed", {"kind": "failed", "content": str(exc)}, held)
            except _Stale as stale:
                trace.emit("turn.stale", session=session.key, attempt=attempt, reason=str(stale))
                outcome = "taken-over" if stale.taken_over else "stale"
            else:
                await self._notify_failure(session, attempt, inbound, exc.reason, held)
                held = None
        except SessionLockError as exc:
            trace.emit("error", where="turn", session=session.key, eventId=inbound.event_id, error=str(exc))
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if preview is not None:
                await preview.end_stream()
            if held is not None:
                held.release()
            task = asyncio.current_task()
            if preview is not None and outcome == "failed" and not (task and task.cancelling()):
                await preview.give_up()  # a failed turn leaves no draft behind (a stale one leaves the owner's)
            if outcome == "cancelled" and not asked_model:
                # The skipped-prompt path's third way: shutdown before the model was asked.
                trace.emit("turn.skipped", session=session.key, attempt=attempt, eventId=inbound.event_id,
                           reason="shutdown", lockReleased=held is None or held.released)
            trace.emit("turn.end", session=session.key, attempt=attempt, eventId=inbound.event_id,
                       outcome=outcome)
        return outcome

    async def _skip_turn(
        self, session: Session, inbound: Inbound, attempt: str, skip: Skip, held: LockHold | None
    ) -> str:
        """A turn that ends before any model call: claim the message under a short hold, release it, say so."""
        hold = held or await session.lock.acquire(attempt, "skip")
        try:
            stale = session.transcript.check_fence(hold, attempt, inbound.event_id)
            if stale:
                raise _Stale(stale)
            content: dict[str, Any] = {"reason": skip.reason}
            if skip.reply is not None:
                content["reply"] = skip.reply
            self._append(session, hold, {"kind": "skipped", "attempt": attempt, "eventId": inbound.event_id,
                                         "content": content})
        finally:
            if held is None and "leak-skipped" not in self._life.test_bugs:
                hold.release()
            self._trace.emit("turn.skipped", session=session.key, attempt=attempt, eventId=inbound.event_id,
                             reason=skip.reason, lockReleased=held is None and hold.released)
        if skip.reply is not None:
            sent = await self._send_reply(session.room_id, skip.reply, session.thread_root, inbound.event_id)
            if sent:
                self._trace.emit("reply.sent", session=session.key, attempt=attempt, eventId=sent,
                                 inReplyTo=inbound.event_id, local=True)
        return "skipped"

    def _retry_after_takeover(self, session: Session, inbound: Inbound, stale_attempt: str) -> None:
        """The stale attempt did nothing; one fresh attempt answers the message (fence rule (a) still holds)."""
        attempt = self._next_attempt("turn")
        self._trace.emit("turn.retry", session=session.key, attempt=attempt, previousAttempt=stale_attempt,
                         eventId=inbound.event_id)
        self._trace.emit("turn.start", session=session.key, attempt=attempt, eventId=inbound.event_id,
                         retryOf=stale_attempt)
        session.turns.put_nowait((inbound, attempt, True))

    async def _notify_failure(self, session: Session, attempt: str, inbound: Inbound, reason: str,
                              held: LockHold | None) -> None:
        """One notice saying the turn failed and why, sent with no lock held; never a part of a reply."""
        if held is not None:
            held.release()
        if self._send_notice is None:
            return
        text = f"Sorry, I could not answer this: the model failed ({reason}). Please try again."
        sent = await self._send_notice(session.room_id, text, session.thread_root, inbound.event_id)
        if sent:
            self._trace.emit("reply.sent", session=session.key, attempt=attempt, eventId=sent,
                             inReplyTo=inbound.event_id, notice=True)

    async def _call_model(
        self, session: Session, attempt: str, inbound: Inbound, round_: int, tools: list[dict[str, Any]] | None,
        preview: Preview | None = None, parts: dict[str, list[dict[str, Any]]] | None = None,
    ) -> ModelReply:
        messages = build_messages(self._system_prompt, self._leaked_memory(session, inbound)
                                  + context_for(session.transcript.read(), inbound.event_id, attempt), parts)
        request_id = f"{attempt}-model-{round_}"
        self._trace.emit("model.request.start", session=session.key, attempt=attempt, requestId=request_id,
                         eventId=inbound.event_id)
        def retrying(tries: int, error: str, delay_s: float) -> None:
            self._trace.emit("model.retry", session=session.key, attempt=attempt, requestId=request_id, tries=tries,
                             error=error, retryInMs=round(delay_s * 1000))

        try:
            if preview is not None:
                preview.next_round()
                reply = await self._model.complete(messages, tools, on_text=preview.on_text, on_retry=retrying)
            else:
                reply = await self._model.complete(messages, tools, on_retry=retrying)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._trace.emit("model.request.end", session=session.key, attempt=attempt, requestId=request_id,
                             ok=False, error=error)
            raise _ModelFailed(error, exc.reason if isinstance(exc, ModelFailed) else error) from exc
        self._trace.emit("model.request.end", session=session.key, attempt=attempt, requestId=request_id, ok=True,
                         toolCalls=len(reply.tool_calls))
        return reply

    async def _run_tool_previewed(self, session: Session, attempt: str, call: ToolCall,
                                  preview: Preview | None) -> str:
        """Run a tool, folding its progress into the turn's preview (agent setting toolProgress)."""
        if preview is None:
            return await self._run_tool(session, attempt, call)
        await preview.tool_started(call.name, call.parsed_arguments())
        result = await self._run_tool(session, attempt, call)
        failed = await preview.tool_finished(call.name, call.parsed_arguments(), result)
        if failed and self._turn_io is not None and self._turn_io.abandons_on_tool_error:
            preview.abandon()  # the test-only bug: the draft is left as it was
        return result

    def _leaked_memory(self, session: Session, inbound: Inbound) -> list[dict[str, Any]]:
        """The bug `crossRoomMemory` stands for: what the sender said in other sessions (a DM, another room)
        rides along, so one conversation leaks into the other. Empty unless the mutation is on."""
        if not self._cross_room_memory:
            return []
        return [r for other in self._sessions.values() if other is not session
                for r in other.transcript.read() if r.get("kind") == "user" and r.get("sender") == inbound.sender]

    async def _run_tool(self, session: Session, attempt: str, call: ToolCall) -> str:
        if call.name != "exec" or self._approvals is None:
            return f"unknown tool {call.name!r}"
        allowed = self._allowed_for(session.room_id) if self._allowed_for else None
        return await self._approvals.run_exec(session.key, attempt, session.room_id, session.thread_root,
                                              allowed, call)

    async def _fenced(
        self, session: Session, attempt: str, inbound: Inbound, purpose: str,
        record: dict[str, Any] | None, held: LockHold | None,
    ) -> None:
        """Reacquire (unless the turn already holds the lock), check the fence, append `record` if given."""
        hold = held or await session.lock.acquire(attempt, purpose)
        try:
            if purpose == "reply":
                await self._stall_fault(session, attempt)
            if "skip-fence" in self._life.test_bugs:
                hold = await self._unfenced_write(session, attempt, inbound, purpose, record, hold, held)
                return
            stale = session.transcript.check_fence(hold, attempt, inbound.event_id)
            if stale:
                raise _Stale(stale)
            if record is not None:
                try:
                    self._append(session, hold, {**record, "attempt": attempt, "eventId": inbound.event_id})
                except FencedWriteError as exc:
                    raise _Stale(str(exc)) from exc
        finally:
            if held is None:
                hold.release()

    async def _stall_fault(self, session: Session, attempt: str) -> None:
        """Fault injection (`stallFirstReplyMs`): the first reply write keeps its lock like a stalled disk."""
        if not self._stall_left:
            return
        self._stall_left = False
        ms = self._life.stall_first_reply_ms
        self._trace.emit("lock.stall", session=session.key, attempt=attempt, ms=ms)
        await asyncio.sleep(ms / 1000)

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
        self._append(session, hold, {**record, "attempt": attempt, "eventId": inbound.event_id})
        return hold

    def _append(self, session: Session, hold: LockHold, record: dict[str, Any]) -> None:
        """A turn's transcript write, traced: the lock evidence checks that no taken-over attempt writes."""
        written = session.transcript.append(hold, record)
        self._trace.emit("transcript.write", session=session.key, attempt=hold.attempt, kind=written["kind"],
                         seq=written["seq"])


class _Stale(Exception):
    """The fence says another owner has this turn."""

    @property
    def taken_over(self) -> bool:
        # Rule (a) (another attempt answered the event) names the event; every other reason is a lost hold.
        return "already answered" not in str(self)


class _ModelFailed(Exception):
    """The model call failed; the turn records that instead of a reply, and says so in the room."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(error)
        self.reason = reason
