"""One turn of the protocol, from an accepted message to its answer in the room.

Model I/O with no lock held → reacquire → fence check → append reply → release → send to Matrix (the writes
themselves: qa.agent.session_writes). A turn that ends before any model call claims its message under a short
hold (`turn.skipped`); a failed model call is recorded and told in the room as a notice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from qa.agent.approval_flow import ApprovalFlow
from qa.agent.config import SessionLifeConfig
from qa.agent.exec_tool import EXEC_TOOL
from qa.agent.lock import LockHold, SessionLockError
from qa.agent.model import ModelClient, ModelFailed, ModelReply, ToolCall, build_messages
from qa.agent.policy import Inbound
from qa.agent.prompt_gate import Skip, skip_for
from qa.agent.session_writes import FencedWriter, Session, StaleTurn
from qa.agent.streaming import Preview
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


class TurnRunner:
    """Runs one turn of a session: the model rounds and tools, the fenced writes, the reply or the notice."""

    def __init__(
        self,
        settings: LockSettings,
        trace: Trace,
        model: ModelClient,
        system_prompt: str,
        send_reply: SendReply,
        writer: FencedWriter,
        life: SessionLifeConfig,
        sessions: Callable[[], Iterable[Session]],
        *,
        approvals: ApprovalFlow | None,
        allowed_for: AllowedFor | None,
        turn_io: TurnIO | None,
        cross_room_memory: bool,
        send_notice: SendReply | None,
        bot_user_id: str | None,
    ) -> None:
        self._settings = settings
        self._trace = trace
        self._model = model
        self._system_prompt = system_prompt
        self._send_reply = send_reply
        self._writer = writer
        self._life = life
        self._all_sessions = sessions  # every open session: what the crossRoomMemory bug leaks from
        self._approvals = approvals
        self._allowed_for = allowed_for
        self._turn_io = turn_io
        self._cross_room_memory = cross_room_memory  # a test-only mutation (config crossRoomMemory)
        self._send_notice = send_notice
        self._bot_user_id = bot_user_id

    async def run(self, session: Session, inbound: Inbound, attempt: str) -> str:
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
            # A thread met for the first time: what it said before the bot saw it (I/O, no lock of ours). At the top
            # level there is none, and the transcript is not read (and parsed) for it.
            earlier = await io.thread_history(session.room_id, session.thread_root, session.transcript.read(),
                                              inbound, session.key, attempt) \
                if io and session.thread_root is not None else []
            reply = None
            for round_ in range(0 if prepared and prepared.refusal else MAX_TOOL_ROUNDS + 1):
                tools = [EXEC_TOOL] if self._approvals is not None and round_ < MAX_TOOL_ROUNDS else None
                asked_model = True
                reply = await self._call_model(session, attempt, inbound, round_, tools, preview, parts, earlier)
                if not reply.tool_calls:
                    break
                for call in reply.tool_calls:
                    # A stale attempt runs no tool: check the fence before acting, not only before writing.
                    await self._writer.fenced(session, attempt, inbound, "tool-check", None, held)
                    result = await self._run_tool_previewed(session, attempt, call, preview)
                    await self._writer.fenced(session, attempt, inbound, "tool", {"kind": "tool", "content": {
                        "callId": call.id, "name": call.name, "arguments": call.arguments, "result": result}}, held)
            if prepared and prepared.refusal:
                text = prepared.refusal  # the bot's own answer: the model never saw the attachment
            else:
                text = (reply.text.strip() if reply else "") or "(no answer)"
            if preview is not None:
                await preview.end_stream()
            await self._writer.fenced(session, attempt, inbound, "reply", {"kind": "assistant", "content": text}, held)
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
        except StaleTurn as exc:
            # Someone else owns this turn now: no output, no write, no cleanup of their state.
            trace.emit("turn.stale", session=session.key, attempt=attempt, reason=str(exc))
            outcome = "taken-over" if exc.taken_over else "stale"
        except _ModelFailed as exc:
            try:
                await self._writer.fenced(session, attempt, inbound, "failed",
                                          {"kind": "failed", "content": str(exc)}, held)
            except StaleTurn as stale:
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
                raise StaleTurn(stale)
            content: dict[str, Any] = {"reason": skip.reason}
            if skip.reply is not None:
                content["reply"] = skip.reply
            self._writer.append(session, hold, {"kind": "skipped", "attempt": attempt, "eventId": inbound.event_id,
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
        earlier: list[dict[str, Any]] | None = None,
    ) -> ModelReply:
        messages = build_messages(self._system_prompt, self._leaked_memory(session, inbound) + (earlier or [])
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
        return [r for other in self._all_sessions() if other is not session
                for r in other.transcript.read() if r.get("kind") == "user" and r.get("sender") == inbound.sender]

    async def _run_tool(self, session: Session, attempt: str, call: ToolCall) -> str:
        if call.name != "exec" or self._approvals is None:
            return f"unknown tool {call.name!r}"
        allowed = self._allowed_for(session.room_id) if self._allowed_for else None
        return await self._approvals.run_exec(session.key, attempt, session.room_id, session.thread_root,
                                              allowed, call)



class _ModelFailed(Exception):
    """The model call failed; the turn records that instead of a reply, and says so in the room."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(error)
        self.reason = reason
