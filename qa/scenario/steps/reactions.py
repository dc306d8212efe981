"""Steps about reactions: react (a test user reacts to a message) and expect_reaction (someone sees a
reaction, and the bot records one made by a person). Removing a reaction is a redaction (messages.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from qa.kernel.clock import mono_ms
from qa.scenario.context import Ref, StepFailed
from qa.scenario.fields import BOT, ActorName, Duration, StepId
from qa.scenario.steps.base import MESSAGES, REACTION, ActorUse, StepBase, StepRef
from qa.scenario.steps.common import trace_about
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext


class React(StepBase):
    """An actor reacts to a message; `id` names the reaction event."""

    kind: ClassVar[str] = "react"
    does: ClassVar[str] = "an actor reacts with `key` to message `to`; `id` names the reaction"
    defines_kind: ClassVar[str | None] = REACTION

    actor: ActorName = Field(alias="as")
    to: StepId
    key: str = Field(min_length=1)
    id: StepId | None = None

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, MESSAGES, True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        target = ctx.refs[self.to]
        event_id = await ctx.actors[self.actor].react(target.room_id, target.event_id, self.key)
        if self.id:
            ctx.refs[self.id] = Ref(target.room_id, event_id, target.thread_root, mono_ms(), actor=self.actor)
        return f"{self.actor} reacted {self.key} to {target.event_id}"


class ExpectReaction(StepBase):
    """Actor `as` sees a reaction by `by` (the bot unless said otherwise) on a message."""

    kind: ClassVar[str] = "expect_reaction"
    does: ClassVar[str] = "actor `as` sees a reaction by `by` (default `bot`; `key`: which) on `to`, and the bot " \
        "records one made by a person"

    actor: ActorName = Field(alias="as")
    by: ActorName = BOT
    to: StepId
    key: str | None = Field(default=None, min_length=1)  # None: any key
    timeout: Duration | None = None

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, MESSAGES, True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), ActorUse(("by",), self.by, True, False)]

    def needs(self) -> list[tuple[str, str | None]]:
        # The bot records a person's reaction in its session, and says so in its trace.
        return ([("reactions", None), ("trace", None)] if self.by != BOT else []) + super().needs()

    def _matches(self, event: dict[str, Any], by_id: str, target_id: str) -> bool:
        rel = (event.get("content") or {}).get("m.relates_to") or {}
        return (event.get("type") == "m.reaction" and event.get("sender") == by_id
                and rel.get("event_id") == target_id and (self.key is None or rel.get("key") == self.key))

    async def run(self, ctx: ScenarioContext) -> str:
        """Another user sees the reaction, and (when the reactor is a person) the bot records it."""
        target = ctx.refs[self.to]
        by_id = ctx.user_id_of(self.by)
        watcher = ctx.actors[self.actor]
        try:
            seen = await watcher.events.wait_for(lambda e: self._matches(e, by_id, target.event_id), self.wait_s(ctx),
                                                 f"{self.by}'s {self.key} reaction")
        except WaitTimeout as exc:
            raise StepFailed(f"{watcher.name} sees {self.by} react {self.key} to '{self.to}'",
                             exc.seen[-10:]) from None
        if self.by != BOT:
            try:
                await ctx.bot.trace.wait_for(
                    lambda r: r.get("type") == "reaction" and r.get("eventId") == seen["event_id"]
                    and r.get("decision") == "recorded", self.wait_s(ctx), "the bot to record the reaction",
                    ctx.trace_start)
            except WaitTimeout:
                raise StepFailed("the bot records the reaction in its session",
                                 trace_about(ctx, seen["event_id"])) from None
        return f"{watcher.name} saw {seen['event_id']}"
