"""The approval conversation for one `exec` tool call: post the request, offer the options, wait for a
person's reaction (no lock held), announce the outcome, and run the command only when approved."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qa.agent.approvals import ALLOW, DENY, ApprovalState, build_request_messages, resolution_content
from qa.agent.exec_tool import DEFAULT_ALLOWED_PROGRAMS, ExecResult, run_command
from qa.agent.model import ToolCall
from qa.kernel.trace import Trace

# (room_id, content, thread_root) -> event id, or None when the send failed
Post = Callable[[str, dict[str, Any], str | None], Awaitable[str | None]]
# (room_id, target event id, key) -> event id or None
React = Callable[[str, str, str], Awaitable[str | None]]


@dataclass(frozen=True)
class ApprovalSettings:
    timeout_s: float = 120.0
    text_chunk_limit: int = 4000
    allowed_programs: tuple[str, ...] = DEFAULT_ALLOWED_PROGRAMS
    exec_timeout_s: float = 10.0
    exec_dir: str | None = None  # the commands' working directory ($MATRIX_QA_EXEC_DIR); None: the bot's own
    # Test-only mutation (testMutations: run-denied-exec): a refused command runs anyway, untraced, while the
    # room and the model are told it was not run: the cheat only a side effect outside the bot can catch.
    run_when_refused: bool = False
    # Test-only mutations: the approval request goes to the top level whatever the thread (approval-top-level);
    # a ✅ that comes after the request expired or was decided still runs the command (late-approval-runs).
    top_level_only: bool = False
    run_late_approvals: bool = False


class ApprovalFlow:
    def __init__(self, post: Post, react: React, trace: Trace, bot_user_id: str, settings: ApprovalSettings) -> None:
        self._post = post
        self._react = react
        self._trace = trace
        self._bot = bot_user_id
        self.settings = settings
        self._pending: dict[str, tuple[ApprovalState, asyncio.Event]] = {}
        # Requests that ended (first event id -> state, command): a decision that comes too late is refused, and
        # traced, not silently dropped.
        self._closed: dict[str, tuple[ApprovalState, str]] = {}
        self._late_runs: set[asyncio.Task[ExecResult]] = set()
        self._ids = itertools.count(1)

    def on_reaction(self, sender: str, key: str, target: str, event_id: str) -> bool:
        """Called by the sync loop for every reaction; True when it was about a pending approval."""
        entry = self._pending.get(target)
        if entry is None:
            return self._late(sender, key, target, event_id)
        state, decided = entry
        before = len(state.ignored)
        if state.offer(sender, key, target):
            self._trace.emit("approval.reaction", approvalId=state.approval_id, eventId=event_id, sender=sender,
                             key=key, decision="decided", outcome=state.outcome)
            decided.set()
        elif len(state.ignored) > before:
            why = state.ignored[-1][2]
            self._trace.emit("approval.reaction", approvalId=state.approval_id, eventId=event_id, sender=sender,
                             key=key, decision="ignored", reason=why)
        return True

    def _late(self, sender: str, key: str, target: str, event_id: str) -> bool:
        """A reaction on a request that already ended: refused, and traced with the outcome it came after."""
        closed = self._closed.get(target)
        if closed is None or sender == self._bot:
            return False
        state, command = closed
        self._trace.emit("approval.reaction", approvalId=state.approval_id, eventId=event_id, sender=sender,
                         key=key, decision="ignored", reason=f"already-{state.outcome}")
        if self.settings.run_late_approvals and key == ALLOW:
            task = asyncio.create_task(self._run(command))
            self._late_runs.add(task)
            task.add_done_callback(self._late_runs.discard)
        return True

    async def run_exec(
        self, session: str, attempt: str, room_id: str, thread_root: str | None,
        allowed: frozenset[str] | None, call: ToolCall,
    ) -> str:
        command = str(call.parsed_arguments().get("command", "")).strip()
        if self.settings.top_level_only:
            thread_root = None
        approval_id = f"ap-{attempt}-{next(self._ids)}"
        contents = build_request_messages(approval_id, command, self.settings.text_chunk_limit,
                                          datetime.now(UTC), self.settings.timeout_s)
        first = await self._post(room_id, contents[0], thread_root)
        if first is None:
            return f"could not post the approval request for {command!r}; it was not run"
        state = ApprovalState(approval_id, first, allowed, self._bot)
        decided = asyncio.Event()
        self._pending[first] = (state, decided)
        chunk_ids = [first]

        async def post_chunks() -> None:
            for content in contents[1:]:  # in order: the text reads on from chunk to chunk
                chunk_ids.append(await self._post(room_id, content, thread_root) or "")

        # The option reactions target the first event only, so they need not queue behind the later chunks or
        # each other: each Matrix send is a homeserver round trip inside the person's wait.
        await asyncio.gather(post_chunks(), *(self._react(room_id, first, key) for key in (ALLOW, DENY)))
        self._trace.emit("approval.request", session=session, attempt=attempt, approvalId=approval_id,
                         eventId=first, chunks=chunk_ids, command=command)
        self._trace.emit("approval.wait.start", session=session, attempt=attempt, requestId=approval_id)
        try:
            await asyncio.wait_for(decided.wait(), self.settings.timeout_s)
        except TimeoutError:
            state.expire()
        finally:
            self._pending.pop(first, None)
            self._closed[first] = (state, command)
            self._trace.emit("approval.wait.end", session=session, attempt=attempt, requestId=approval_id,
                             outcome=state.outcome)
        announce = self._post(room_id, resolution_content(approval_id, state.outcome, first, state.decided_by),
                              thread_root)
        if state.outcome != "approved":
            if self.settings.run_when_refused:
                await self._run(command)
            await announce
            return state.tool_result()
        # Approved: the command runs while the outcome is being announced (both finish before the model hears
        # the result, so the answer still comes after the announcement).
        _, result = await asyncio.gather(announce, self._run(command))
        self._trace.emit("exec.run", session=session, attempt=attempt, approvalId=approval_id, ran=result.ran,
                         exitCode=result.exit_code)
        # A command with no output (touch) still gives the model something to say.
        return state.tool_result(result.output or f"(no output; exit code {result.exit_code})")

    async def _run(self, command: str) -> ExecResult:
        return await run_command(command, self.settings.allowed_programs, self.settings.exec_timeout_s,
                                 self.settings.exec_dir)
