"""Steps about device verification: verify (a test user's device and the bot's verify each other by to-device
SAS), expect_verified (whether they have), send_verification_request (an in-room request, as Element sends in a
DM: a notice, never a question to answer). The bot's side of a verification comes from its trace."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from qa.harness.bot_process import describe_record
from qa.kernel.clock import mono_ms
from qa.scenario.context import Ref, StepFailed
from qa.scenario.fields import ActorName, DeviceName, Duration, RoomName, StepId
from qa.scenario.steps.base import SENT, ActorUse, InRoom, Problem, Scan, StepBase
from qa.scenario.steps.common import trace_lines
from qa.scenario.steps.devices import bot_device_id, device_of, knows_device, named_device_problems
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from collections.abc import Iterator

    from qa.actors import Actor
    from qa.scenario.context import ScenarioContext

TRACE_GRACE_S = 2.0
VERIFICATION_RECORDS = ("verification.accepted", "verification.refused", "verification.sas", "verification.done",
                        "verification.cancelled", "verification.unknown-device")
VERIFYING: tuple[str, ...] = ("e2ee", "verification", "trace")


class _Sas:
    """One to-device SAS verification that a test device starts with the bot's device, stage by stage; each
    stage that does not come raises VerificationStalled naming it."""

    def __init__(self, ctx: ScenarioContext, actor: Actor, device: Any, timeout_s: float) -> None:
        self.ctx, self.actor, self.device, self.timeout_s = ctx, actor, device, timeout_s
        self.client = actor.client
        self.mark = len(actor.to_device.items)
        self.tx = ""

    async def run(self) -> str:
        from nio import KeyVerificationAccept, KeyVerificationKey, KeyVerificationMac, ToDeviceError

        from qa.kernel.e2ee import VerificationStalled

        resp = await self.client.start_key_verification(self.device)
        if isinstance(resp, ToDeviceError):
            raise VerificationStalled("m.key.verification.start to be sent", [resp.message])
        self.tx = next(t for t, s in reversed(self.client.key_verifications.items())
                       if s.other_olm_device.id == self.device.id and s.we_started_it)
        await self._from_bot(KeyVerificationAccept, "the bot's m.key.verification.accept")
        await self._from_bot(KeyVerificationKey, "the bot's m.key.verification.key")
        await self._compare()
        await self.client.confirm_short_auth_string(self.tx)
        await self._from_bot(KeyVerificationMac, "the bot's m.key.verification.mac")
        await self._done()
        return self.tx

    async def _from_bot(self, kind: type, stage: str) -> Any:
        from nio import KeyVerificationCancel

        from qa.kernel.e2ee import VerificationStalled

        def about(e: Any) -> bool:
            return getattr(e, "transaction_id", None) == self.tx and isinstance(e, kind | KeyVerificationCancel)

        try:
            event = await self.actor.to_device.wait_for(about, self.timeout_s, stage, self.mark)
        except WaitTimeout as exc:
            raise VerificationStalled(stage, exc.seen[-8:]) from None
        if isinstance(event, KeyVerificationCancel):
            raise VerificationStalled(stage, [f"the bot cancelled: {event.code} {event.reason}"], self.tx)
        return event

    async def _compare(self) -> None:
        """Our short authentication string against the one the bot traced."""
        from qa.kernel.e2ee import VerificationStalled, sas_mismatch, sas_view

        sas = self.client.key_verifications[self.tx]
        if sas.canceled or not sas.established_sas:
            raise VerificationStalled("the bot's m.key.verification.key", [
                f"our side cancelled: {sas.cancel_code} {sas.cancel_reason}" if sas.canceled else f"SAS {sas.state}",
                *(f"to-device: {type(e).__name__} {getattr(e, 'transaction_id', '')}"
                  for e in self.actor.to_device.items[self.mark:])])
        problems = sas_mismatch(sas_view(sas), await self._bot_sas())
        if problems:
            await self.client.cancel_key_verification(self.tx, reject=True)
            raise VerificationStalled("matching short authentication strings", problems)

    async def _bot_sas(self) -> dict[str, Any]:
        from qa.kernel.e2ee import VerificationStalled

        ctx = self.ctx
        try:
            record = await ctx.bot.trace.wait_for(
                lambda r: r.get("type") in ("verification.sas", "verification.cancelled")
                and r.get("transactionId") == self.tx, self.timeout_s, "the bot's SAS in its trace", ctx.trace_start)
        except WaitTimeout as exc:
            raise VerificationStalled("the bot's SAS (trace verification.sas)", exc.seen[-8:]) from None
        if record.get("type") != "verification.sas":
            raise VerificationStalled("the bot's SAS (trace verification.sas)",
                                      ["bot trace: " + describe_record(record)])
        return record

    async def _done(self) -> None:
        """Both sides call it done: our store marks the bot's device verified, the bot traces verification.done."""
        from qa.kernel.e2ee import VerificationStalled

        ctx, tx = self.ctx, self.tx
        if not self.client.olm.is_device_verified(self.device):
            raise VerificationStalled("our side to mark the bot's device verified",
                                      [f"SAS state: {self.client.key_verifications[tx].state}"])
        try:
            await ctx.bot.trace.wait_for(lambda r: r.get("type") in ("verification.done", "verification.cancelled")
                                         and r.get("transactionId") == tx, self.timeout_s,
                                         "the bot's verification.done", ctx.trace_start)
        except WaitTimeout as exc:
            raise VerificationStalled("the bot's verification.done", exc.seen[-8:]) from None
        done = ctx.bot.trace.find(lambda r: r.get("type") == "verification.done" and r.get("transactionId") == tx)
        if done is None:
            raise VerificationStalled("the bot's verification.done", ["the bot traced the verification as cancelled"])


class Verify(StepBase):
    """The actor's device and the bot's device verify each other interactively (to-device SAS: start,
    accept, keys, the short authentication string compared with the one the bot traces, MACs)."""

    kind: ClassVar[str] = "verify"
    does: ClassVar[str] = "`as` (optionally its `device`) and the bot's device verify each other (`method: sas`)"
    capabilities: ClassVar[tuple[str, ...]] = VERIFYING

    actor: ActorName = Field(alias="as")
    device: DeviceName | None = None  # None: the device the actor started with
    method: Literal["sas"]
    timeout: Duration | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]

    def check(self, scan: Scan) -> Iterator[Problem]:
        return named_device_problems(scan, [] if self.device is None else [(("device",),
                                                                            f"{self.actor}.{self.device}")])

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.kernel.e2ee import VerificationStalled

        actor = device_of(ctx, self.actor, self.device)
        bot_device = bot_device_id(ctx)
        if bot_device is None:
            raise StepFailed("the bot's trace names its device (ready deviceId)", trace_lines(ctx, ("ready",)))
        timeout_s = self.wait_s(ctx)
        device = await knows_device(actor, ctx.bot_user_id, bot_device, timeout_s,
                                    f"{actor.name} to know the bot's device")
        try:
            tx = await _Sas(ctx, actor, device, timeout_s).run()
        except VerificationStalled as exc:
            stalled_tx = exc.tx
            if stalled_tx:  # the bot's own account of why (a refusal) may trail its to-device answer by a moment
                with contextlib.suppress(WaitTimeout):
                    await ctx.bot.trace.wait_for(lambda r: r.get("transactionId") == stalled_tx and r.get("type") in (
                        "verification.refused", "verification.cancelled"), TRACE_GRACE_S, "why", ctx.trace_start)
            raise StepFailed(f"SAS verification between {actor.name} and the bot (stalled waiting for {exc.stage})",
                             [*exc.seen, *trace_lines(ctx, VERIFICATION_RECORDS)]) from None
        return f"{actor.name} and bot device {bot_device} verified each other by SAS (transaction {tx})"


class ExpectVerified(StepBase):
    """Whether the actor's device and the bot's current device have verified each other: on the actor's side
    its device store, on the bot's side its trace (verification.done); `by` narrows it to one side."""

    kind: ClassVar[str] = "expect_verified"
    does: ClassVar[str] = "whether `as` (optionally its `device`) and the bot's device are verified (`verified`, " \
        "`by: both\\|actor\\|bot`)"
    capabilities: ClassVar[tuple[str, ...]] = VERIFYING

    actor: ActorName = Field(alias="as")
    device: DeviceName | None = None
    verified: bool = True
    by: Literal["both", "actor", "bot"] = "both"

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]

    def check(self, scan: Scan) -> Iterator[Problem]:
        return named_device_problems(scan, [] if self.device is None else [(("device",),
                                                                            f"{self.actor}.{self.device}")])

    def _problems(self, ctx: ScenarioContext, actor: Actor, bot_device: str | None) -> list[str]:
        problems: list[str] = []
        if self.by in ("both", "actor"):
            device = next((d for d in actor.client.device_store.active_user_devices(ctx.bot_user_id)
                           if d.id == bot_device), None)
            ours = bool(device and actor.client.olm.is_device_verified(device))
            if ours != self.verified:
                problems.append(f"{actor.name} shows bot device {bot_device} as "
                                f"{'verified' if ours else 'unverified'}")
        if self.by in ("both", "bot"):
            done = [r for r in ctx.bot.trace.items if r.get("type") == "verification.done"
                    and r.get("deviceId") == actor.client.device_id and r.get("userId") == actor.user_id]
            if bool(done) != self.verified:
                problems.append(f"the bot's trace {'has' if done else 'has no'} verification.done for device "
                                f"{actor.client.device_id} of {actor.name}")
        return problems

    async def run(self, ctx: ScenarioContext) -> str:
        actor = device_of(ctx, self.actor, self.device)
        bot_device = bot_device_id(ctx)
        problems = self._problems(ctx, actor, bot_device)
        want = "verified" if self.verified else "not verified"
        if problems:
            raise StepFailed(f"{actor.name} and the bot's device {bot_device} {want} ({self.by})",
                             [*problems, *trace_lines(ctx, VERIFICATION_RECORDS)])
        return f"{actor.name} ({actor.client.device_id}) and bot device {bot_device}: {want} ({self.by})"


class SendVerificationRequest(InRoom):
    """An in-room verification request (msgtype m.key.verification.request, as Element sends in a DM) to the
    bot: a notice about verification, never a question to answer."""

    kind: ClassVar[str] = "send_verification_request"
    does: ClassVar[str] = "an in-room `m.key.verification.request` to the bot, as Element sends in a DM"
    defines_kind: ClassVar[str | None] = SENT
    capabilities: ClassVar[tuple[str, ...]] = ("e2ee",)

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    id: StepId | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        actor = ctx.actors[self.actor]
        room_id = ctx.rooms[self.room]
        content = {"msgtype": "m.key.verification.request", "to": ctx.bot_user_id,
                   "from_device": actor.client.device_id, "methods": ["m.sas.v1"], "timestamp": int(mono_ms()),
                   "body": f"{actor.user_id} is requesting to verify your key, but your client does not support "
                           "in-chat key verification. You will need to use legacy key verification to verify keys."}
        sent_at = mono_ms()
        event_id = await actor.send(room_id, content)
        if self.id:
            ctx.refs[self.id] = Ref(room_id, event_id, None, sent_at, actor=self.actor, body=content["body"])
        return f"{self.actor} sent an in-room verification request {event_id}"
