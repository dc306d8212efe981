"""The step that looks in the bot's own account of what it did: expect_trace (a record of a type, with these
fields, about a message, within bounds). A new check that reads the trace alone goes here; one that compares
the trace with what the model was sent goes in model_requests.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from qa.evidence.trace import (
    contention_during,
    contention_slack_ms,
    describe_bounds,
    over_bounds,
    record_matches,
    series_problems,
    under_bounds,
)
from qa.harness.bot_process import describe_record
from qa.scenario.context import StepFailed
from qa.scenario.fields import Duration, StepId, TraceType
from qa.scenario.steps.base import SENT, Problem, Scan, StepBase, StepRef, opt_ref
from qa.scenario.steps.common import attempts, trace_about
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext

# A trace record's field name, e.g. retryInS.
TraceField = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class ExpectTrace(StepBase):
    """A record of `type` whose fields include `match` appears in the bot's trace (see qa.agent.trace); with
    `at_least`, a series of them (one per failed sync, say), each within `min` and `max`, `growing` never
    shrinking."""

    kind: ClassVar[str] = "expect_trace"
    does: ClassVar[str] = "a bot trace record of `type` with `match` fields, optionally about message `to`, with " \
        "`max` (and `min`) bounds; `at_least: N` waits for N such records and holds every one to them, " \
        "`growing: FIELD` to a value that never shrinks from one to the next (a backoff); " \
        "`arrived_during: STEP`: the bounds count only if `to` reached the bot while that message's model request " \
        "was in flight (else NOT CHECKED, saying why), and the bounded record must come before that request " \
        "ended (else it waited for the other turn: a fail, or NOT CHECKED within the `max` ms bounds' slack)"
    capabilities: ClassVar[tuple[str, ...]] = ("trace",)

    type: TraceType
    match: dict[str, Any] = Field(default_factory=dict)
    # Upper bounds on numeric fields, e.g. {waitMs: 250}: the first matching record must respect them.
    max: dict[str, float] = Field(default_factory=dict)
    # Lower bounds, e.g. {retryInS: 0.04}: a backoff that waits (a retry at once traces 0, which never shrinks).
    min: dict[str, float] = Field(default_factory=dict)
    to: StepId | None = None  # only records about that sent message's event (or its turn's attempt)
    # A series: wait for this many matching records, then judge all that match (each within `max`).
    at_least: int | None = Field(default=None, ge=2)
    growing: TraceField | None = None  # with at_least: a numeric field that never shrinks along the series
    # With `to`: the bounds prove something only if `to` reached the bot while this message's model request was in
    # flight (a contention check); a `to` that came after it ended leaves the step NOT CHECKED, saying so. One that
    # came during it but whose bounded record came only after it ended waited for that turn (a queue): a fail.
    arrived_during: StepId | None = None
    timeout: Duration | None = None

    def check(self, scan: Scan) -> Iterator[Problem]:
        if self.growing is not None and self.at_least is None:
            yield ("growing",), "`growing` judges a series: give `at_least` (how many records make one)", self.growing
        if self.arrived_during is not None and self.to is None:
            yield ("arrived_during",), "`arrived_during` is about the message `to` names: give `to`", \
                self.arrived_during
        for name, floor in self.min.items():
            if name in self.max and floor > self.max[name]:
                yield ("min", name), f"min {floor:g} is above max {self.max[name]:g}: no record could pass", floor

    def refs(self) -> list[StepRef]:
        return opt_ref("to", self.to, frozenset({SENT}), same_room=False) \
            + opt_ref("arrived_during", self.arrived_during, frozenset({SENT}), same_room=False)

    def needs(self) -> list[tuple[str, str | None]]:
        # Lock records come from a bot that keeps its transcripts under a session write lock.
        return super().needs() + ([("lock", None)] if str(self.type).startswith("lock.") else [])

    async def run(self, ctx: ScenarioContext) -> str:
        wanted = dict(self.match or {})
        event_id = ctx.refs[self.to].event_id if self.to else None
        what = f"trace {self.type} {wanted}" + (f" about '{self.to}'" if self.to else "")

        def matches(record: dict[str, Any]) -> bool:
            return record_matches(record, self.type, wanted, event_id,
                                  attempts(ctx, event_id) if event_id is not None else set())

        counted: set[int] = set()  # the matching records seen so far (a wake re-judges the held ones)

        def enough(record: dict[str, Any]) -> bool:
            # Only a matching record can end the wait: once enough were counted, a re-judged record that does not
            # match (the trace's first, on a wake) must not be taken for the one found.
            if not matches(record):
                return False
            counted.add(id(record))
            return len(counted) >= (self.at_least or 1)

        try:
            record = await ctx.bot.trace.wait_for(enough, self.wait_s(ctx), what, ctx.trace_start)
        except WaitTimeout as exc:
            # About one message: what the bot did with it says more than the last records of the whole trace.
            seen = trace_about(ctx, event_id) if event_id else exc.seen[-15:]
            expected = f"at least {self.at_least} bot trace records" if self.at_least else "a bot trace record"
            bounds = f" ({describe_bounds(self.type, self.max, self.min)})" if self.max or self.min else ""
            raise StepFailed(f"{expected} {self.type} matching {wanted}{bounds}", seen) from None
        if self.at_least is not None:
            return self._judge_series(ctx.bot.trace.matching(matches, ctx.trace_start))
        if over_bounds(record, self.max) or under_bounds(record, self.min):
            raise StepFailed(describe_bounds(self.type, self.max, self.min),
                             ["bot trace: " + describe_record(record)])
        if self.arrived_during is not None and event_id is not None:
            contention = contention_during(ctx.bot.trace.items[ctx.trace_start:], event_id,
                                           ctx.refs[self.arrived_during].event_id, record,
                                           contention_slack_ms(self.max))
            if contention.verdict == "no-contention":
                return f"{describe_record(record)}; bounds NOT CHECKED: '{self.to}' {contention.why} of " \
                    f"'{self.arrived_during}': no contention to bound"
            if contention.verdict == "waited":
                raise StepFailed(f"{describe_bounds(self.type, self.max, self.min)}, while '{self.arrived_during}' "
                                 "is in model I/O", [f"'{self.to}': its {self.type} {contention.why}",
                                                     "bot trace: " + describe_record(record)])
            if contention.verdict == "unsure":
                return f"{describe_record(record)}; bounds NOT CHECKED: its {self.type} {contention.why}"
        return describe_record(record)

    def _judge_series(self, records: list[dict[str, Any]]) -> str:
        assert self.at_least is not None
        problems = series_problems(records, self.at_least, self.max, self.growing, self.min)
        if problems:
            bounds = f", each {describe_bounds(self.type, self.max, self.min)}" if self.max or self.min else ""
            growing = f", {self.growing} never shrinking" if self.growing else ""
            raise StepFailed(f"at least {self.at_least} bot trace records {self.type}{bounds}{growing}",
                             [*problems, *("bot trace: " + describe_record(r) for r in records[-10:])])
        shown = f": {self.growing} " + ", ".join(f"{r.get(self.growing)}" for r in records) if self.growing else ""
        return f"{len(records)} {self.type} records{shown}"
