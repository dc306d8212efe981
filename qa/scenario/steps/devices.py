"""Steps about the devices in an encrypted conversation: login_device (a test user's further device),
delete_bot_device (the bot loses its device and must log in anew), expect_bot_device (every test user knows
the bot's current device and has an Olm session with it). The bot's side comes from its trace; a test user's
from its own device and session stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from qa.scenario.context import StepFailed
from qa.scenario.fields import ActorName, DeviceName, Duration
from qa.scenario.steps.base import ActorUse, Loc, Problem, Scan, StepBase
from qa.scenario.steps.common import bot_trace, trace_lines
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.actors import Actor
    from qa.scenario.context import ScenarioContext

KNOW_DEVICE_TIMEOUT_S = 30.0
E2EE: tuple[str, ...] = ("e2ee",)


def named_device_problems(scan: Scan, named: list[tuple[Loc, str]]) -> Iterator[Problem]:
    """A device named as `actor.device` (or `device:` beside `as:`) must come from an earlier login_device."""
    for loc, name in named:
        if name not in scan.devices:
            known = ", ".join(sorted(scan.devices)) or "none"
            yield loc, f"unknown device {name!r}: add a login_device step before (devices so far: {known})", name


def device_of(ctx: ScenarioContext, actor: str, device: str | None = None) -> Actor:
    """An actor's first device, or the one a login_device step named."""
    return ctx.actors[f"{actor}.{device}" if device else actor]


def bot_device_id(ctx: ScenarioContext) -> str | None:
    """The bot's current device, as its trace last named it (ready, a relogin, a store reset)."""
    device = None
    for record in ctx.bot.trace.items:
        if record.get("type") in ("ready", "device.relogin", "e2ee.store.reset") and record.get("deviceId"):
            device = str(record["deviceId"])
    return device


async def knows_device(actor: Actor, user_id: str, device_id: str, timeout_s: float, what: str) -> Any:
    """Until the actor's device store has that device: a key query asked for, re-checked after each sync."""
    from qa.kernel.e2ee import maintain_keys

    def known(_: Any = None) -> bool:
        return any(d.id == device_id for d in actor.client.device_store.active_user_devices(user_id))

    if not known():
        if actor.client.olm:
            actor.client.olm.users_for_key_query.add(user_id)
        await maintain_keys(actor.client)
        if not known():
            try:
                await actor.syncs.wait_for(known, timeout_s, what, len(actor.syncs.items))
            except WaitTimeout:
                raise StepFailed(what, [f"{actor.name} knows devices of {user_id}: " + ", ".join(
                    d.id for d in actor.client.device_store.active_user_devices(user_id))]) from None
    return next(d for d in actor.client.device_store.active_user_devices(user_id) if d.id == device_id)


async def has_olm_session(actor: Actor, device: Any, timeout_s: float, what: str) -> None:
    """Until the actor has an Olm session with the device (qa.actors.open_olm_sessions says why it matters)."""
    from qa.actors import open_olm_sessions

    lacking = await open_olm_sessions(actor.client, [device], timeout_s)
    if lacking:
        raise StepFailed(what, [f"{actor.name} has no Olm session with {lacking}"])


async def bot_knows(ctx: ScenarioContext, actor: Actor, timeout_s: float) -> str:
    """Until the bot's trace shows it knows the actor's device: a detail for the step's line."""
    if not ctx.bot.has_trace:
        return "; NOT CHECKED that the bot knows it (no trace)"
    device = actor.client.device_id
    await bot_trace(ctx, lambda r: r.get("type") == "e2ee.device" and r.get("deviceId") == device
                    and r.get("userId") == actor.user_id, timeout_s,
                    f"the bot to learn device {device} of {actor.name}")
    return "; the bot knows it"


class LoginDevice(StepBase):
    """The actor logs in a further device (its own crypto store); later steps name it `actor.device`. The
    step waits until the bot's trace shows the bot knows the new device, so key sharing is not a race."""

    kind: ClassVar[str] = "login_device"
    does: ClassVar[str] = (
        "`as` logs in a further device (`device: phone`, later named `driver.phone`); waits until the bot's trace "
        "shows it knows the device")
    capabilities: ClassVar[tuple[str, ...]] = E2EE

    actor: ActorName = Field(alias="as")
    device: DeviceName
    timeout: Duration | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]

    def check(self, scan: Scan) -> Iterator[Problem]:
        name = f"{self.actor}.{self.device}"
        if name in scan.devices:
            yield ("device",), f"{name} is logged in already by an earlier login_device", self.device
        scan.devices.add(name)

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.kernel.e2ee import maintain_keys

        assert ctx.state_dir is not None
        first = ctx.actors[self.actor]
        device = first.second_device(self.device, ctx.state_dir / "actors" / f"{self.actor}.{self.device}")
        ctx.actors[device.name] = device  # the runner closes every actor; the first actor stays the observer
        await device.login()
        await device.start_sync()
        await maintain_keys(device.client)
        encrypted = any(spec.encrypted for spec in ctx.scenario.rooms.values())
        knows = await bot_knows(ctx, device, self.wait_s(ctx)) if encrypted else ""
        return f"{device.name} logged in as device {device.client.device_id}{knows}"


async def _delete_device(ctx: ScenarioContext, device_id: str) -> None:
    """As the account's owner would from another session: the launch session, password auth (UIA)."""
    from nio import AsyncClient, DeleteDevicesResponse, LoginError

    assert ctx.state_dir is not None
    password = (ctx.state_dir / "bot-password").read_text()
    client = AsyncClient(ctx.homeserver.base_url, ctx.bot_user_id)
    login = await client.login(password, device_name="matrix-qa device deletion")
    if isinstance(login, LoginError):
        raise StepFailed("the harness logs in as the bot to delete its device", [login.message])
    try:
        first = await client.delete_devices([device_id])
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": ctx.bot_user_id},
                "password": password, "session": getattr(first, "session", None)}
        resp = first if isinstance(first, DeleteDevicesResponse) else await client.delete_devices([device_id], auth)
    finally:
        await client.logout()  # this helper session is not a device the bot should see
        await client.close()
    if not isinstance(resp, DeleteDevicesResponse):
        raise StepFailed(f"the homeserver deletes bot device {device_id}", [str(getattr(resp, "message", resp))])


async def _everyone_knows_bot_device(ctx: ScenarioContext, timeout_s: float, new: bool, old: str | None) -> str:
    first = old or next((str(r["deviceId"]) for r in ctx.bot.trace.items if r.get("type") == "ready"), None)
    if old is not None or new:
        await bot_trace(ctx, lambda r: r.get("type") in ("device.relogin", "e2ee.store.reset")
                        and r.get("deviceId") not in (None, first), timeout_s,
                        f"the bot to log in as a new device (it was {first})")
    current = bot_device_id(ctx)
    assert current is not None
    encrypted = [ctx.rooms[n] for n, spec in ctx.scenario.rooms.items() if spec.encrypted]
    for actor in ctx.actors.values():
        if any(room_id in actor.client.rooms for room_id in encrypted):
            device = await knows_device(actor, ctx.bot_user_id, current, timeout_s,
                                        f"{actor.name} to know bot device {current}")
            await has_olm_session(actor, device, timeout_s, f"{actor.name} to open an Olm session with bot device "
                                  f"{current}")
    return f"every test user knows bot device {current} and has an Olm session with it"


class DeleteBotDevice(StepBase):
    """The bot's current device is deleted on the server (as from another session of the bot's account); the
    bot must notice, log in as a new device, and every test user must then know that device and have an Olm
    session with it (so the room key of its next message reaches the new device)."""

    kind: ClassVar[str] = "delete_bot_device"
    does: ClassVar[str] = "the bot's device is deleted on the server and the bot must log in anew as a device " \
        "every test user then knows"
    capabilities: ClassVar[tuple[str, ...]] = ("e2ee", "trace")

    timeout: Duration | None = None

    async def run(self, ctx: ScenarioContext) -> str:
        old = bot_device_id(ctx)
        if old is None:
            raise StepFailed("the bot's trace names its device (ready deviceId)", trace_lines(ctx, ("ready",)))
        await _delete_device(ctx, old)
        known = await _everyone_knows_bot_device(ctx, self.wait_s(ctx), True, old)
        return known + f" (device {old} deleted on the server)"


class ExpectBotDevice(StepBase):
    """Every test user knows the device the bot's trace last named (`new`: one other than it started with) and has
    an Olm session with it."""

    kind: ClassVar[str] = "expect_bot_device"
    does: ClassVar[str] = "every test user knows the bot's current device (`new: true`: not the one it started with)"
    capabilities: ClassVar[tuple[str, ...]] = ("e2ee", "trace")

    new: bool = False
    timeout: Duration | None = None

    async def run(self, ctx: ScenarioContext) -> str:
        return await _everyone_knows_bot_device(ctx, self.wait_s(ctx), self.new, None)
