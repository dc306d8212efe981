"""Steps about the bot's exec approvals: expect_approval (the request the bot posts, or how it ended), approve
(a test user decides by reaction) and expect_exec_file (whether a command really ran, seen in the exec
directory). The steps gather events; qa.evidence.approvals judges them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

from qa.evidence.approvals import (
    APPROVAL_KEY,
    OPTIONS,
    commands_run,
    decision_key,
    exec_file_problems,
    is_option,
    is_outcome,
    outcome_problems,
    plain_file_name,
    request_or_turn_over,
    request_problems,
    thread_problems,
)
from qa.evidence.events import describe_event
from qa.harness.bot_process import describe_record
from qa.harness.launch import EXEC_DIR_NAME
from qa.scenario.context import StepFailed
from qa.scenario.fields import ActorName, Duration, MarkedText, StepId
from qa.scenario.steps.base import MESSAGES, SENT, ActorUse, Problem, Scan, StepBase, StepRef, opt_ref
from qa.scenario.steps.common import attempts, bot_messages, room_event, text, trace_about
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext


async def _approval_request(ctx: ScenarioContext, to: str, timeout_s: float) -> dict[str, Any]:
    """The bot's approval.request trace record for the turn that message `to` started."""
    trigger = ctx.refs[to]
    try:
        record = await ctx.bot.trace.wait_for(lambda r: request_or_turn_over(r, attempts(ctx, trigger.event_id)),
                                              timeout_s, f"an approval request for '{to}'", ctx.trace_start)
    except WaitTimeout:
        record = None
    if record is None or record.get("type") != "approval.request":
        raise StepFailed(f"the bot asks for approval of a command for '{to}'",
                         trace_about(ctx, trigger.event_id) + bot_messages(ctx, trigger.room_id))
    return record


class ExpectApproval(StepBase):
    """The bot's exec-approval request for the turn `to` started, or (state other than pending) its outcome.

    pending: the first chunk carries complete `org.matrix_qa.approval` metadata, later chunks carry none, and
    the bot's ✅/❌ option reactions are seen on the first chunk. approved|denied|expired: the outcome message
    says so; for denied and expired the command provably never ran (no exec.run in the bot's trace).
    `thread`: every chunk (pending) or the outcome message is in the thread on that message. `decided_by`:
    the outcome names this actor as the one who decided."""

    kind: ClassVar[str] = "expect_approval"
    does: ClassVar[str] = (
        "the bot's exec-approval request for `to` (`state: pending` checks metadata, chunks and option reactions; "
        "`approved`/`denied`/`expired` the outcome, and that a refused command never ran)")
    capabilities: ClassVar[tuple[str, ...]] = ("model", "approvals", "trace")

    to: StepId
    state: Literal["pending", "approved", "denied", "expired"] = "pending"
    chunked: bool | None = None  # None: either
    command_contains: MarkedText | None = None
    thread: StepId | None = None
    decided_by: ActorName | None = None
    timeout: Duration | None = None

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({SENT}), True), *opt_ref("thread", self.thread, MESSAGES)]

    def actor_uses(self) -> list[ActorUse]:
        return [] if self.decided_by is None else [ActorUse(("decided_by",), self.decided_by, False, False)]

    def check(self, scan: Scan) -> Iterator[Problem]:
        if self.decided_by is not None and self.state not in ("approved", "denied"):
            yield ("decided_by",), f"only an approved or denied request has a decider (state is {self.state})", \
                self.decided_by

    async def run(self, ctx: ScenarioContext) -> str:
        record = await _approval_request(ctx, self.to, self.wait_s(ctx))
        first_id = str(record.get("eventId"))
        chunk_ids = [str(c) for c in record.get("chunks") or [first_id]]
        first = await room_event(ctx, first_id, self.wait_s(ctx), "the approval request to appear in the room")
        if self.state != "pending":
            return await self._outcome(ctx, record, first_id)
        wait_s = self.wait_s(ctx)
        later = [await room_event(ctx, c, wait_s, "every chunk of the approval request") for c in chunk_ids[1:]]
        problems = request_problems(first, later, self.chunked,
                                    text(ctx, self.command_contains) if self.command_contains else None)
        if self.thread is not None:
            problems += thread_problems([first, *later], ctx.refs[self.thread].event_id)
        for key in OPTIONS:
            try:
                await ctx.observer().events.wait_for(lambda e, k=key: is_option(e, ctx.bot_ids, first_id, k),
                                                      self.wait_s(ctx), f"the bot's {key} option")
            except WaitTimeout:
                problems.append(f"the bot's {key} option reaction on the first chunk was not seen")
        if problems:
            raise StepFailed(f"an approval request for '{self.to}' with complete metadata on its first chunk",
                             [*problems, "request: " + describe_event(first),
                              *("chunk: " + describe_event(e) for e in later)])
        return f"approval {record.get('approvalId')} pending in {len(chunk_ids)} event(s), options offered"

    async def _outcome(self, ctx: ScenarioContext, record: dict[str, Any], first_id: str) -> str:
        try:
            event = await ctx.observer().events.wait_for(lambda e: is_outcome(e, first_id), self.wait_s(ctx),
                                                          "the approval's outcome message")
        except WaitTimeout as exc:
            raise StepFailed(f"the approval for '{self.to}' ends {self.state}", exc.seen[-10:]) from None
        ran = commands_run(ctx.bot.trace.items[ctx.trace_start:], record.get("approvalId"))
        decider = ctx.actors[self.decided_by].user_id if self.decided_by else None
        problems = outcome_problems(event, self.state, [describe_record(r) for r in ran], decider)
        if self.thread is not None:
            problems += thread_problems([event], ctx.refs[self.thread].event_id)
        if problems:
            raise StepFailed(f"the approval for '{self.to}' ends {self.state}",
                             [*problems, "outcome: " + describe_event(event)])
        state = event["content"][APPROVAL_KEY].get("state")
        refused = "" if self.state == "approved" else "; command not run"
        return f"approval {record.get('approvalId')} {state}{refused}"


class Approve(StepBase):
    """An actor answers the bot's exec-approval request message."""

    kind: ClassVar[str] = "approve"
    does: ClassVar[str] = "an actor decides the bot's exec-approval request for `to` (`decision: allow-once\\|deny`)"
    capabilities: ClassVar[tuple[str, ...]] = ("model", "approvals", "trace")

    actor: ActorName = Field(alias="as")
    to: StepId
    decision: Literal["allow-once", "deny"]

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, MESSAGES, True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        record = await _approval_request(ctx, self.to, self.wait_s(ctx))
        key = decision_key(self.decision)
        event_id = await ctx.actors[self.actor].react(ctx.refs[self.to].room_id, str(record.get("eventId")), key)
        return f"{self.actor} reacted {key} to approval {record.get('approvalId')} ({event_id})"


class ExpectExecFile(StepBase):
    """A file a command makes (`touch NAME`) is, or is not, in the exec directory ($MATRIX_QA_EXEC_DIR).

    The directory is outside the bot's state and is looked at directly, so a bot that runs a refused command
    without tracing it and says it did not is caught. Checked at once, with no wait: place it after the
    reply that ends the turn (the command runs before the model hears its result). An absence is evidence only
    beside a presence for an approved command in the same scenario: it shows the bot runs commands there."""

    kind: ClassVar[str] = "expect_exec_file"
    does: ClassVar[str] = ("a file a command makes (`touch NAME`) is (`present: true`) or is not in the exec "
                           "directory, seen by the harness, not reported by the bot")
    capabilities: ClassVar[tuple[str, ...]] = ("approvals", "exec-dir")

    file: Annotated[MarkedText, AfterValidator(plain_file_name)]
    present: bool

    async def run(self, ctx: ScenarioContext) -> str:
        if ctx.state_dir is None:
            raise StepFailed("an exec directory to look into", ["this run has no scenario state directory"])
        directory = ctx.state_dir / EXEC_DIR_NAME
        name = text(ctx, self.file)
        names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        problems = exec_file_problems(names, name, self.present)
        if problems:
            where = "present" if self.present else "absent"
            raise StepFailed(f"{name!r} {where} in the exec directory", problems)
        return f"{name} {'present' if self.present else 'absent'} in the exec directory"
