"""The step that looks in the bot's own account of what it did: expect_trace (a record of a type, with these
fields, about a message, within bounds). A new check that reads the trace alone goes here; one that compares
the trace with what the model was sent goes in model_requests.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from qa.evidence.trace import describe_bounds, over_bounds, record_matches
from qa.harness.bot_process import describe_record
from qa.scenario.context import StepFailed
from qa.scenario.fields import Duration, StepId, TraceType
from qa.scenario.steps.base import SENT, StepBase, StepRef, opt_ref
from qa.scenario.steps.common import attempts, trace_about
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext


class ExpectTrace(StepBase):
    """A record of `type` whose fields include `match` appears in the bot's trace (see qa.agent.trace)."""

    kind: ClassVar[str] = "expect_trace"
    does: ClassVar[str] = "a bot trace record of `type` with `match` fields, optionally about message `to`, with " \
        "`max` bounds"
    capabilities: ClassVar[tuple[str, ...]] = ("trace",)

    type: TraceType
    match: dict[str, Any] = Field(default_factory=dict)
    # Upper bounds on numeric fields, e.g. {waitMs: 25}: the first matching record must respect them.
    max: dict[str, float] = Field(default_factory=dict)
    to: StepId | None = None  # only records about that sent message's event (or its turn's attempt)
    timeout: Duration | None = None

    def refs(self) -> list[StepRef]:
        return opt_ref("to", self.to, frozenset({SENT}), same_room=False)

    def needs(self) -> list[tuple[str, str | None]]:
        # Lock records come from a bot that keeps its transcripts under a session write lock.
        return super().needs() + ([("lock", None)] if str(self.type).startswith("lock.") else [])

    async def run(self, ctx: ScenarioContext) -> str:
        wanted = dict(self.match or {})
        event_id = ctx.refs[self.to].event_id if self.to else None
        what = f"trace {self.type} {wanted}" + (f" about '{self.to}'" if self.to else "")
        try:
            record = await ctx.bot.trace.wait_for(
                lambda r: record_matches(r, self.type, wanted, event_id,
                                         attempts(ctx, event_id) if event_id is not None else set()),
                self.wait_s(), what, ctx.trace_start)
        except WaitTimeout as exc:
            # About one message: what the bot did with it says more than the last records of the whole trace.
            seen = trace_about(ctx, event_id) if event_id else exc.seen[-15:]
            raise StepFailed(f"a bot trace record {self.type} matching {wanted}", seen) from None
        if over_bounds(record, self.max):
            raise StepFailed(describe_bounds(self.type, self.max), ["bot trace: " + describe_record(record)])
        return describe_record(record)
