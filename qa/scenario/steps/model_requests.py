"""The step that checks what the model was told: expect_model_request (every round of the turn that answered a
message carried, or did not carry, these texts and images), from the mock provider's request journal. The
step finds the requests; qa.evidence.model_requests judges them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from qa.evidence.model_requests import (
    find_model_request,
    model_request_problems,
    model_request_windows,
    request_lines,
    rounds_carrying,
)
from qa.scenario.context import Ref, StepFailed
from qa.scenario.fields import Duration, MarkedText, StepId, error
from qa.scenario.steps.base import SENT, StepBase, StepRef
from qa.scenario.steps.common import text, trace_about
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext


class ExpectModelRequest(StepBase):
    """The model request the bot made to answer a sent message carried (`contains`) or did not carry
    (`excludes`) these texts — evidence from the mock provider's request journal, e.g. for session isolation."""

    kind: ClassVar[str] = "expect_model_request"
    does: ClassVar[str] = (
        "what the model was told while answering `to` (every round of the turn): `contains` / `excludes` texts, "
        "`images` (how many real image content parts), from the mock provider's journal")
    capabilities: ClassVar[tuple[str, ...]] = ("model",)

    to: StepId
    contains: list[MarkedText] = Field(default_factory=list)
    excludes: list[MarkedText] = Field(default_factory=list)
    images: int | None = Field(default=None, ge=0)  # exactly this many image content parts reached the model
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ExpectModelRequest:
        if not self.contains and not self.excludes and self.images is None:
            raise error("evidence", "expect_model_request needs `contains`, `excludes` and/or `images`")
        return self

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({SENT}), True)]

    def needs(self) -> list[tuple[str, str | None]]:
        return ([("media", None)] if self.images is not None else []) + super().needs()

    async def run(self, ctx: ScenarioContext) -> str:
        """What the model was told while answering a message (every round of its turn): evidence from the mock
        provider's journal."""
        trigger = ctx.refs[self.to]
        if ctx.provider is None or not hasattr(ctx.provider, "journal"):
            # A live provider keeps no journal; say so in the step detail instead of pretending to have checked.
            ctx.method = "not-checked"
            return "NOT CHECKED: the provider keeps no request journal"
        if not ctx.bot.has_trace:
            return await self._by_text(ctx, trigger)
        ctx.method = "trace"

        def windows() -> Any:
            return model_request_windows(ctx.bot.trace.items[ctx.trace_start:], trigger.event_id)

        try:
            await ctx.bot.trace.wait_for(lambda _: windows() is not None, self.wait_s(ctx),
                                         f"the bot's turn answering '{self.to}' to finish", ctx.trace_start)
        except WaitTimeout:
            raise StepFailed(f"a finished model request answering '{self.to}'",
                             trace_about(ctx, trigger.event_id)) from None
        entries = [find_model_request(ctx.provider.journal, float(start["t"]), float(end["t"]), trigger.body)
                   for start, end in windows() or []]
        found = [e for e in entries if e is not None]
        if not found:
            raise StepFailed(f"the provider journal holds the model request for '{self.to}'",
                             ["provider: " + e.summary() for e in ctx.provider.journal[-10:]])
        return self._judge(ctx, found)

    async def _by_text(self, ctx: ScenarioContext, trigger: Ref) -> str:
        """No trace to say which requests answered the trigger: the scenario's own journal scope, every finished
        request whose latest user message carries the trigger's text."""
        ctx.method = "journal"
        typed = trigger.text or trigger.body or ""
        try:
            await ctx.provider.wait_for(lambda _e: bool(rounds_carrying(ctx.provider.journal, typed)), self.wait_s(ctx))
        except TimeoutError:
            raise StepFailed(f"a model request carrying the text of '{self.to}' in the provider journal",
                             ["provider: " + e.summary() for e in ctx.provider.journal[-10:]]) from None
        return self._judge(ctx, rounds_carrying(ctx.provider.journal, typed))

    def _judge(self, ctx: ScenarioContext, found: list[Any]) -> str:
        problems = model_request_problems(found, [text(ctx, t) for t in self.contains],
                                          [text(ctx, t) for t in self.excludes], self.images)
        if problems:
            raise StepFailed(f"the model request(s) for '{self.to}' ({', '.join(e.id for e in found)})",
                             problems + request_lines(found))
        return f"request(s) {', '.join(e.id for e in found)} as expected"
