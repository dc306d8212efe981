"""Work a session does after a reply is sent: a memory note and compaction. Both may call the model.

The rule is the turn's: no lock across model I/O. Each piece runs as its own attempt (`memory-…`,
`compact-…`), so the lock evidence sees its holds and model requests as one unit and fails it like a turn if
they overlap. The only holds are the short writes: the memory note's append, and compaction's rewrite
(read, write aside, atomic rename; see qa.agent.compaction). The test-only bugs `hook-under-lock` and
`compact-under-model` take the lock before the model call instead, which is what the scenarios catch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qa.agent.compaction import CompactionLimits, CompactionPlan, local_summary, summary_content, summary_prompt
from qa.agent.config import SessionLifeConfig
from qa.agent.lock import LockHold, SessionLockError, SessionWriteLock
from qa.agent.model import ModelClient, build_messages
from qa.agent.transcript import FencedWriteError, Transcript
from qa.kernel.trace import Trace

MEMORY_PROMPT = "Update your memory notes: in one short sentence, what should you remember from this conversation?"
SUMMARY_SYSTEM = "You summarize chat transcripts faithfully and briefly."


class PostTurnWork:
    def __init__(self, life: SessionLifeConfig, model: ModelClient, trace: Trace, system_prompt: str,
                 next_attempt: Callable[[str], str]) -> None:
        self._life = life
        self._model = model
        self._trace = trace
        self._system_prompt = system_prompt
        self._next_attempt = next_attempt
        c = life.compaction
        self._limits = CompactionLimits(max_records=c.max_records, max_bytes=c.max_bytes, keep_records=c.keep_records)

    async def run(self, key: str, transcript: Transcript, lock: SessionWriteLock) -> None:
        """Called by the turn worker after the reply went out; failures are traced, never raised."""
        if self._life.post_turn_memory:
            await self._guarded("post-turn", self._memory(key, transcript, lock), key)
        if self._life.compaction.enabled:
            await self._guarded("compaction", self._compact(key, transcript, lock), key)

    async def _guarded(self, where: str, work: Any, key: str) -> None:
        try:
            await work
        except (SessionLockError, FencedWriteError, _ModelError) as exc:
            self._trace.emit("error", where=where, session=key, error=str(exc))

    async def _memory(self, key: str, transcript: Transcript, lock: SessionWriteLock) -> None:
        attempt = self._next_attempt("memory")
        early = await self._early_hold(lock, attempt, "post-turn", "hook-under-lock")
        try:
            messages = build_messages(self._system_prompt, transcript.read())
            messages.append({"role": "user", "content": MEMORY_PROMPT})
            note = await self._ask(key, attempt, messages, "post-turn")
            hold = early or await lock.acquire(attempt, "post-turn")
            try:
                written = transcript.append(hold, {"kind": "memory", "content": note.strip() or "(nothing)"})
            finally:
                hold.release()
            self._trace.emit("post_turn.end", session=key, attempt=attempt, work="memory", seq=written["seq"])
        finally:
            if early is not None:
                early.release()

    async def _compact(self, key: str, transcript: Transcript, lock: SessionWriteLock) -> None:
        prepared = transcript.prepare_compaction(self._limits)
        if prepared is None:
            return
        plan = prepared.plan
        attempt = self._next_attempt("compact")
        self._trace.emit("compaction.start", session=key, attempt=attempt, reason=plan.reason, cutSeq=plan.cut_seq,
                         folded=len(plan.folded), lastSeq=plan.last_seq, bytes=transcript.size())
        early = await self._early_hold(lock, attempt, "compaction", "compact-under-model")
        try:
            text = await self._summary(key, attempt, plan)
            # Built before the hold: it walks every folded record, and the hold must not grow with them.
            content = summary_content(plan.folded, text)
            hold = early or await lock.acquire(attempt, "compaction")
            try:
                result = transcript.compact(hold, prepared, content)
            finally:
                hold.release()
        finally:
            if early is not None:
                early.release()
        if result is None:
            self._trace.emit("compaction.end", session=key, attempt=attempt, outcome="prefix-changed")
            return
        landed, kept = result
        self._trace.emit("compaction.end", session=key, attempt=attempt, outcome="compacted", folded=len(plan.folded),
                         records=kept, landedMeanwhile=landed)

    async def _summary(self, key: str, attempt: str, plan: CompactionPlan) -> str:
        if self._life.compaction.summary == "local":
            return local_summary(plan.folded)
        messages = [{"role": "system", "content": SUMMARY_SYSTEM},
                    {"role": "user", "content": summary_prompt(plan.folded)}]
        return (await self._ask(key, attempt, messages, "compaction")).strip() or local_summary(plan.folded)

    async def _early_hold(self, lock: SessionWriteLock, attempt: str, purpose: str, bug: str) -> LockHold | None:
        if bug not in self._life.test_bugs:
            return None
        return await lock.acquire(attempt, purpose)

    async def _ask(self, key: str, attempt: str, messages: list[dict[str, Any]], purpose: str) -> str:
        request_id = f"{attempt}-model-0"
        self._trace.emit("model.request.start", session=key, attempt=attempt, requestId=request_id, purpose=purpose)
        try:
            reply = await self._model.complete(messages, None)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._trace.emit("model.request.end", session=key, attempt=attempt, requestId=request_id, ok=False,
                             error=error)
            raise _ModelError(error) from exc
        self._trace.emit("model.request.end", session=key, attempt=attempt, requestId=request_id, ok=True,
                         toolCalls=0)
        return reply.text


class _ModelError(Exception):
    """The post-turn model call failed; the work is skipped this time and tried again after the next turn."""
