"""Steps about who is in a room: invite, kick, leave, join (test users, or the bot as `who`),
expect_membership (the room shows someone reaching a membership; the judgement is qa.evidence.membership) and
set_m_direct (which rooms an account's `m.direct` account data calls direct chats)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from qa.evidence.events import describe_event
from qa.evidence.membership import membership_of, settles
from qa.kernel.errors import HomeserverError
from qa.scenario.context import StepFailed
from qa.scenario.fields import BOT, ActorName, Duration, RoomName
from qa.scenario.steps.base import ActorUse, InRoom, Problem, Scan, StepBase
from qa.scenario.steps.common import trace_about
from qa.scenario.steps.devices import KNOW_DEVICE_TIMEOUT_S, bot_knows
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext


async def _change(step: Invite | Leave, ctx: ScenarioContext, who: str, call: Awaitable[Any]) -> None:
    """One membership change through the acting user's own client."""
    from nio import ErrorResponse

    resp = await call
    if isinstance(resp, ErrorResponse):
        actor = ctx.actors[step.actor]
        raise HomeserverError(f"{actor.name} could not {step.kind} {who} in {ctx.rooms[step.room]}: {resp.message}")


def _mark(ctx: ScenarioContext, room_id: str) -> None:
    # expect_membership looks only at what the room shows from here on: the bot's join before a kick is old news.
    ctx.membership_marks[room_id] = len(ctx.observer().events.items)


class Leave(InRoom):
    """A test actor leaves a room (in an encrypted room, the bot's next message must use a new Megolm session)."""

    kind: ClassVar[str] = "leave"
    does: ClassVar[str] = "`as` leaves `room` (in an encrypted room the bot's next message needs a new Megolm session)"

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]

    async def run(self, ctx: ScenarioContext) -> str:
        room_id, actor = ctx.rooms[self.room], ctx.actors[self.actor]
        _mark(ctx, room_id)
        await _change(self, ctx, actor.user_id, actor.client.room_leave(room_id))
        actor.left_rooms.add(room_id)  # no fence goes there after the bot's exit (qa.scenario.fence)
        return f"{self.actor}: {self.kind} {room_id}"


class Join(Leave):
    """The actor joins the room (invited first by the room's creator: scenario rooms are invite-only). The
    step waits until the bot's trace shows it knows the newcomer's devices."""

    kind: ClassVar[str] = "join"
    does: ClassVar[str] = "`as` joins `room` (invited by the room's creator) and waits until the bot knows its devices"

    async def run(self, ctx: ScenarioContext) -> str:
        actor = ctx.actors[self.actor]
        room_id = ctx.rooms[self.room]
        spec = ctx.scenario.rooms[self.room]
        inviter = next(a for n, a in ctx.actors.items() if n in spec.members and n != self.actor)
        await inviter.invite(room_id, actor.user_id)
        await actor.join(room_id)
        detail = f"{self.actor} joined {self.room}"
        if spec.encrypted:
            detail += await bot_knows(ctx, actor, KNOW_DEVICE_TIMEOUT_S)
        return detail


class Invite(InRoom):
    """Actor `as` invites `who` (the bot unless said otherwise) to a room it is not in."""

    kind: ClassVar[str] = "invite"
    does: ClassVar[str] = "actor `as` invites `who` (default `bot`) to `room`"

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    who: ActorName = BOT

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), ActorUse(("who",), self.who, True, False)]

    def needs(self) -> list[tuple[str, str | None]]:
        # The bot must join (or stop serving a room) at run time, as its settings say.
        return ([("membership", None)] if self.who == BOT else []) + super().needs()

    def _call(self, client: Any, room_id: str, who: str) -> Awaitable[Any]:
        return client.room_invite(room_id, who)

    async def run(self, ctx: ScenarioContext) -> str:
        room_id, who = ctx.rooms[self.room], ctx.user_id_of(self.who)
        _mark(ctx, room_id)
        await _change(self, ctx, who, self._call(ctx.actors[self.actor].client, room_id, who))
        return f"{self.actor}: {self.kind} {who} in {room_id}"


class Kick(Invite):
    """Actor `as` (the room's creator has the power) removes `who` from a room."""

    kind: ClassVar[str] = "kick"
    does: ClassVar[str] = "actor `as` kicks `who` (default `bot`) from `room`, with an optional `reason`"

    reason: str | None = Field(default=None, min_length=1)

    def _call(self, client: Any, room_id: str, who: str) -> Awaitable[Any]:
        return client.room_kick(room_id, who, self.reason)


class ExpectMembership(InRoom):
    """The room's timeline shows `who` (the bot by default) reaching `membership`: the bot joined an invite,
    or declined it (leave), seen by the room's first member."""

    kind: ClassVar[str] = "expect_membership"
    does: ClassVar[str] = (
        "the room shows `who` (default `bot`) reaching `membership` (`join`, `leave`, `invite`) after the last "
        "invite/kick/leave there; a different answer (a declined invite) fails at once")

    room: RoomName = "main"
    who: ActorName = BOT
    membership: Literal["join", "leave", "invite"]
    timeout: Duration | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("who",), self.who, True, False)]

    async def run(self, ctx: ScenarioContext) -> str:
        room_id = ctx.rooms[self.room]
        who = ctx.user_id_of(self.who)
        expected = f"{self.who} reaches membership {self.membership!r} in room {self.room!r}"
        try:
            event = await ctx.observer().events.wait_for(
                lambda e: settles(e, who, room_id, self.membership), self.wait_s(ctx),
                f"{self.who} {self.membership} {room_id}", ctx.membership_marks.get(room_id, 0))
        except WaitTimeout as exc:
            seen = [line for line in exc.seen if "m.room.member" in line][-8:]
            raise StepFailed(expected, seen + trace_about(ctx)[-8:]) from None
        ctx.method = "room"
        reached = membership_of(event, who, room_id)
        if reached != self.membership:
            raise StepFailed(expected, [f"{who} reached {reached!r} instead: " + describe_event(event),
                                        *trace_about(ctx)[-8:]])
        return f"{who} {self.membership} in {room_id} ({event.get('event_id')})"


class SetMDirect(StepBase):
    """Writes an account's `m.direct` account data: a test user's through its own client, the bot's through the
    session the harness made for it. The whole map is replaced, as every client's PUT does. Clients never prune
    m.direct, so an entry outliving the person's stay in the room (a stale one) is what real accounts carry."""

    kind: ClassVar[str] = "set_m_direct"
    does: ClassVar[str] = (
        "writes the `m.direct` account data of `as` (a test actor, or `bot`: the bot's own account): `rooms` maps "
        "each other user (an actor or `bot`) to the rooms listed as direct chats with them; replaces the whole map")

    actor: ActorName = Field(alias="as")
    rooms: dict[ActorName, list[RoomName]]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, True, False),
                *(ActorUse(("rooms", other), other, True, False) for other in self.rooms)]

    def check(self, scan: Scan) -> Iterator[Problem]:
        for other, names in self.rooms.items():
            if other == self.actor:
                yield ("rooms", other), f"{other!r} cannot have a direct chat with itself; name the other user", other
            if not names:
                yield ("rooms", other), "lists no room; leave the user out instead", names
            for j, name in enumerate(names):
                if name not in scan.rooms:
                    yield ("rooms", other, j), scan.unknown_room(name), name

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.actors import put_direct_as

        content = {ctx.user_id_of(other): [ctx.rooms[name] for name in names] for other, names in self.rooms.items()}
        if self.actor == BOT:
            if not ctx.bot_access_token:
                raise HomeserverError("set_m_direct as bot: the harness holds no session of the bot's account")
            await put_direct_as(str(ctx.homeserver.base_url), ctx.bot_user_id, ctx.bot_access_token, content)
        else:
            await ctx.actors[self.actor].set_direct(content)
        listed = ", ".join(f"{other}: [{', '.join(names)}]" for other, names in self.rooms.items()) or "nothing"
        return f"{self.actor}'s m.direct now lists {listed}"
