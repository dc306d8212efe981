"""The E2EE steps (issue 15): devices that come and go, SAS verification, membership changes, which Megolm
session a message used and who holds its key, and decrypted text kept out of the artifacts.

Evidence, not waits: who holds a room key is read from each test device's crypto store after a to-device
barrier (a message the device sends itself: the inbox is ordered, so a room key sent before the message
existed has arrived by the time the barrier does); the bot's side of verification and the devices it knows
come from its trace.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    DeleteDevicesResponse,
    KeyVerificationAccept,
    KeyVerificationCancel,
    KeyVerificationKey,
    KeyVerificationMac,
    LoginError,
    ToDeviceError,
    ToDeviceMessage,
    UnknownToDeviceEvent,
)

from qa.actors import Actor
from qa.clock import mono_ms
from qa.e2ee import (
    BARRIER_TYPE,
    VerificationStalled,
    has_room_key,
    maintain_keys,
    sas_mismatch,
    sas_view,
    session_comparison,
)
from qa.harness.bot_process import describe_record
from qa.report.writer import sanitize_events
from qa.scenario.context import Ref, ScenarioContext, StepFailed
from qa.scenario.markers import expand
from qa.waiting import WaitTimeout

DEFAULT_TIMEOUT_S = 30.0
TRACE_GRACE_S = 2.0
VERIFICATION_RECORDS = ("verification.accepted", "verification.refused", "verification.sas", "verification.done",
                        "verification.cancelled", "verification.unknown-device")


def _timeout(step: Any) -> float:
    return float(getattr(step, "timeout", None) or DEFAULT_TIMEOUT_S)


def _device(ctx: ScenarioContext, actor: str, device: str | None = None) -> Actor:
    return ctx.actors[f"{actor}.{device}" if device else actor]


def _trace_lines(ctx: ScenarioContext, types: tuple[str, ...]) -> list[str]:
    return ["bot trace: " + describe_record(r) for r in ctx.bot.trace.items[ctx.trace_start:] if r.get("type") in types]


def bot_device_id(ctx: ScenarioContext) -> str | None:
    """The bot's current device, as its trace last named it (ready, a relogin, a store reset)."""
    device = None
    for record in ctx.bot.trace.items:
        if record.get("type") in ("ready", "device.relogin", "e2ee.store.reset") and record.get("deviceId"):
            device = str(record["deviceId"])
    return device


async def _bot_trace(ctx: ScenarioContext, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
    try:
        return await ctx.bot.trace.wait_for(predicate, timeout_s, what, ctx.trace_start)
    except WaitTimeout as exc:
        raise StepFailed(what, exc.seen[-12:]) from None


async def _knows_device(actor: Actor, user_id: str, device_id: str, timeout_s: float, what: str) -> Any:
    """Until the actor's device store has that device: a key query asked for, re-checked after each sync."""
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


async def _bot_knows(ctx: ScenarioContext, actor: Actor, timeout_s: float) -> str:
    if not ctx.bot.has_trace:
        return "; NOT CHECKED that the bot knows it (no trace)"
    device = actor.client.device_id
    await _bot_trace(ctx, lambda r: r.get("type") == "e2ee.device" and r.get("deviceId") == device
                     and r.get("userId") == actor.user_id, timeout_s,
                     f"the bot to learn device {device} of {actor.name}")
    return "; the bot knows it"


async def login_device(ctx: ScenarioContext, step: Any) -> str:
    first = ctx.actors[step.actor]
    device = first.second_device(step.device, ctx.state_dir / "actors" / f"{step.actor}.{step.device}")
    ctx.actors[device.name] = device  # the runner closes every actor; the first actor stays the observer
    await device.login()
    await device.start_sync()
    await maintain_keys(device.client)
    encrypted = any(spec.encrypted for spec in ctx.scenario.rooms.values())
    knows = await _bot_knows(ctx, device, _timeout(step)) if encrypted else ""
    return f"{device.name} logged in as device {device.client.device_id}{knows}"


async def verify(ctx: ScenarioContext, step: Any) -> str:
    actor = _device(ctx, step.actor, step.device)
    bot_device = bot_device_id(ctx)
    if bot_device is None:
        raise StepFailed("the bot's trace names its device (ready deviceId)", _trace_lines(ctx, ("ready",)))
    timeout_s = _timeout(step)
    device = await _knows_device(actor, ctx.bot_user_id, bot_device, timeout_s,
                                 f"{actor.name} to know the bot's device")
    try:
        tx = await _sas(ctx, actor, device, timeout_s)
    except VerificationStalled as exc:
        stalled_tx = exc.tx
        if stalled_tx:  # the bot's own account of why (a refusal) may trail its to-device answer by a moment
            with contextlib.suppress(WaitTimeout):
                await ctx.bot.trace.wait_for(lambda r: r.get("transactionId") == stalled_tx and r.get("type") in (
                    "verification.refused", "verification.cancelled"), TRACE_GRACE_S, "why", ctx.trace_start)
        raise StepFailed(f"SAS verification between {actor.name} and the bot (stalled waiting for {exc.stage})",
                         [*exc.seen, *_trace_lines(ctx, VERIFICATION_RECORDS)]) from None
    return f"{actor.name} and bot device {bot_device} verified each other by SAS (transaction {tx})"


async def _sas(ctx: ScenarioContext, actor: Actor, device: Any, timeout_s: float) -> str:
    client = actor.client
    mark = len(actor.to_device.items)
    resp = await client.start_key_verification(device)
    if isinstance(resp, ToDeviceError):
        raise VerificationStalled("m.key.verification.start to be sent", [resp.message])
    tx = next(t for t, s in reversed(client.key_verifications.items())
              if s.other_olm_device.id == device.id and s.we_started_it)

    async def from_bot(kind: type, stage: str) -> Any:
        def about(e: Any) -> bool:
            return getattr(e, "transaction_id", None) == tx and isinstance(e, kind | KeyVerificationCancel)
        try:
            event = await actor.to_device.wait_for(about, timeout_s, stage, mark)
        except WaitTimeout as exc:
            raise VerificationStalled(stage, exc.seen[-8:]) from None
        if isinstance(event, KeyVerificationCancel):
            raise VerificationStalled(stage, [f"the bot cancelled: {event.code} {event.reason}"], tx)
        return event

    await from_bot(KeyVerificationAccept, "the bot's m.key.verification.accept")
    await from_bot(KeyVerificationKey, "the bot's m.key.verification.key")
    sas = client.key_verifications[tx]
    if sas.canceled or not sas.established_sas:
        raise VerificationStalled("the bot's m.key.verification.key", [
            f"our side cancelled: {sas.cancel_code} {sas.cancel_reason}" if sas.canceled else f"SAS {sas.state}",
            *(f"to-device: {type(e).__name__} {getattr(e, 'transaction_id', '')}"
              for e in actor.to_device.items[mark:])])
    ours = sas_view(sas)
    shown = await _bot_trace_sas(ctx, tx, timeout_s)
    problems = sas_mismatch(ours, shown)
    if problems:
        await client.cancel_key_verification(tx, reject=True)
        raise VerificationStalled("matching short authentication strings", problems)
    await client.confirm_short_auth_string(tx)
    await from_bot(KeyVerificationMac, "the bot's m.key.verification.mac")
    if not client.olm.is_device_verified(device):
        raise VerificationStalled("our side to mark the bot's device verified",
                                  [f"SAS state: {client.key_verifications[tx].state}"])
    try:
        await ctx.bot.trace.wait_for(lambda r: r.get("type") in ("verification.done", "verification.cancelled")
                                     and r.get("transactionId") == tx, timeout_s, "the bot's verification.done",
                                     ctx.trace_start)
    except WaitTimeout as exc:
        raise VerificationStalled("the bot's verification.done", exc.seen[-8:]) from None
    done = ctx.bot.trace.find(lambda r: r.get("type") == "verification.done" and r.get("transactionId") == tx)
    if done is None:
        raise VerificationStalled("the bot's verification.done", ["the bot traced the verification as cancelled"])
    return tx


async def _bot_trace_sas(ctx: ScenarioContext, tx: str, timeout_s: float) -> dict[str, Any]:
    try:
        record = await ctx.bot.trace.wait_for(
            lambda r: r.get("type") in ("verification.sas", "verification.cancelled") and r.get("transactionId") == tx,
            timeout_s, "the bot's SAS in its trace", ctx.trace_start)
    except WaitTimeout as exc:
        raise VerificationStalled("the bot's SAS (trace verification.sas)", exc.seen[-8:]) from None
    if record.get("type") != "verification.sas":
        raise VerificationStalled("the bot's SAS (trace verification.sas)", ["bot trace: " + describe_record(record)])
    return record


async def expect_verified(ctx: ScenarioContext, step: Any) -> str:
    actor = _device(ctx, step.actor, step.device)
    bot_device = bot_device_id(ctx)
    problems: list[str] = []
    if step.by in ("both", "actor"):
        device = next((d for d in actor.client.device_store.active_user_devices(ctx.bot_user_id)
                       if d.id == bot_device), None)
        ours = bool(device and actor.client.olm.is_device_verified(device))
        if ours != step.verified:
            problems.append(f"{actor.name} shows bot device {bot_device} as {'verified' if ours else 'unverified'}")
    if step.by in ("both", "bot"):
        done = [r for r in ctx.bot.trace.items if r.get("type") == "verification.done"
                and r.get("deviceId") == actor.client.device_id and r.get("userId") == actor.user_id]
        if bool(done) != step.verified:
            problems.append(f"the bot's trace {'has' if done else 'has no'} verification.done for device "
                            f"{actor.client.device_id} of {actor.name}")
    want = "verified" if step.verified else "not verified"
    if problems:
        raise StepFailed(f"{actor.name} and the bot's device {bot_device} {want} ({step.by})",
                         [*problems, *_trace_lines(ctx, VERIFICATION_RECORDS)])
    return f"{actor.name} ({actor.client.device_id}) and bot device {bot_device}: {want} ({step.by})"


async def join(ctx: ScenarioContext, step: Any) -> str:
    actor = ctx.actors[step.actor]
    room_id = ctx.rooms[step.room]
    inviter = next(a for n, a in ctx.actors.items() if n in ctx.scenario.rooms[step.room].members and n != step.actor)
    await inviter.invite(room_id, actor.user_id)
    await actor.join(room_id)
    detail = f"{step.actor} joined {step.room}"
    if ctx.scenario.rooms[step.room].encrypted:
        detail += await _bot_knows(ctx, actor, DEFAULT_TIMEOUT_S)
    return detail


async def delete_bot_device(ctx: ScenarioContext, step: Any) -> str:
    old = bot_device_id(ctx)
    if old is None:
        raise StepFailed("the bot's trace names its device (ready deviceId)", _trace_lines(ctx, ("ready",)))
    await _delete_device(ctx, old)
    return await expect_bot_device(ctx, step, old) + f" (device {old} deleted on the server)"


async def _delete_device(ctx: ScenarioContext, device_id: str) -> None:
    """As the account's owner would from another session: the launch session, password auth (UIA)."""
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


async def expect_bot_device(ctx: ScenarioContext, step: Any, old: str | None = None) -> str:
    timeout_s = _timeout(step)
    first = old or next((str(r["deviceId"]) for r in ctx.bot.trace.items if r.get("type") == "ready"), None)
    if old is not None or step.new:
        await _bot_trace(ctx, lambda r: r.get("type") in ("device.relogin", "e2ee.store.reset")
                         and r.get("deviceId") not in (None, first), timeout_s,
                         f"the bot to log in as a new device (it was {first})")
    current = bot_device_id(ctx)
    assert current is not None
    encrypted = [ctx.rooms[n] for n, spec in ctx.scenario.rooms.items() if spec.encrypted]
    for actor in ctx.actors.values():
        if any(room_id in actor.client.rooms for room_id in encrypted):
            await _knows_device(actor, ctx.bot_user_id, current, timeout_s,
                                f"{actor.name} to know bot device {current}")
    return f"every test user knows bot device {current}"


async def _barrier(actor: Actor, timeout_s: float) -> None:
    """After this, every to-device message sent to the actor's device before it was sent has been processed."""
    nonce = uuid.uuid4().hex
    message = ToDeviceMessage(BARRIER_TYPE, actor.user_id, actor.client.device_id, {"nonce": nonce})
    resp = await actor.client.to_device(message)
    if isinstance(resp, ToDeviceError):
        raise StepFailed(f"a to-device barrier for {actor.name}", [resp.message])
    try:
        await actor.to_device.wait_for(lambda e: isinstance(e, UnknownToDeviceEvent)
                                       and e.source.get("content", {}).get("nonce") == nonce, timeout_s,
                                       f"{actor.name}'s to-device barrier")
    except WaitTimeout as exc:
        raise StepFailed(f"{actor.name}'s to-device barrier to arrive", exc.seen[-5:]) from None


def _megolm(ctx: ScenarioContext, ref: Ref) -> dict[str, Any]:
    event = ctx.observer().events.find(lambda e: e.get("event_id") == ref.event_id) or {}
    info = dict(event.get("_megolm") or {})
    content = event.get("content") or {}
    if not info and content.get("session_id"):  # the observer could not decrypt it: the wire fields
        info = {"sessionId": content.get("session_id"), "senderKey": content.get("sender_key")}
    return info


async def expect_encrypted(ctx: ScenarioContext, step: Any) -> str:
    ref = ctx.refs[step.event]
    info = _megolm(ctx, ref)
    problems: list[str] = []
    if step.session is not None:
        problem = session_comparison(_megolm(ctx, ctx.refs[step.than]).get("sessionId"), info.get("sessionId"),
                                     step.session)
        if problem:
            problems.append(f"'{step.than}' then '{step.event}': {problem}")
    session_id, sender_key = info.get("sessionId"), info.get("senderKey")
    for name, want in [*((n, True) for n in step.readable_by), *((n, False) for n in step.unreadable_by)]:
        actor = ctx.actors[name]
        if not session_id or not sender_key:
            problems.append(f"'{step.event}' carries no Megolm session to look for")
            break
        await _barrier(actor, _timeout(step))
        held = has_room_key(actor.client, ref.room_id, sender_key, session_id)
        if held != want:
            problems.append(f"{name} (device {actor.client.device_id}) {'holds' if held else 'lacks'} the room key "
                            f"of session {session_id}")
    if problems:
        lines = _trace_lines(ctx, ("e2ee.withheld", "e2ee.device", "device.relogin"))
        raise StepFailed(f"'{step.event}' ({ref.event_id}) encrypted as the step says", [*problems, *lines])
    readers = f"; readable by {', '.join(step.readable_by)}" if step.readable_by else ""
    others = f"; not by {', '.join(step.unreadable_by)}" if step.unreadable_by else ""
    return f"{ref.event_id} in Megolm session {session_id}{readers}{others}"


async def send_verification_request(ctx: ScenarioContext, step: Any) -> str:
    actor = ctx.actors[step.actor]
    room_id = ctx.rooms[step.room]
    content = {"msgtype": "m.key.verification.request", "to": ctx.bot_user_id,
               "from_device": actor.client.device_id, "methods": ["m.sas.v1"], "timestamp": int(mono_ms()),
               "body": f"{actor.user_id} is requesting to verify your key, but your client does not support "
                       "in-chat key verification. You will need to use legacy key verification to verify keys."}
    sent_at = mono_ms()
    event_id = await actor.send(room_id, content)
    if step.id:
        ctx.refs[step.id] = Ref(room_id, event_id, None, sent_at, actor=step.actor, body=content["body"])
    return f"{step.actor} sent an in-room verification request {event_id}"


def leaks(texts: dict[str, str], files: list[Path]) -> list[str]:
    """Which files hold which texts (label -> text), as 'file: holds label': the label, since repeating the
    text in the report would be the very leak it reports."""
    found = []
    for path in files:
        try:
            data = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found += [f"{path}: holds {label}" for label, text in texts.items() if text and text in data]
    return found


async def expect_artifacts_clean(ctx: ScenarioContext, step: Any) -> str:
    texts = {m: expand(m, ctx.markers) for m in step.markers}
    if ctx.include_bodies:
        return "NOT CHECKED: the run has --include-bodies"
    from qa.scenario.runner import strip_transcript_bodies

    run_dir = ctx.artifact_dir.parent.parent
    preview = ctx.artifact_dir / ".artifact-preview"
    preview.mkdir(exist_ok=True)
    # What this scenario writes at its end, written now the same way, so the scan covers it too.
    (preview / "observed.json").write_text(json.dumps(sanitize_events(ctx.observer().events.items)))
    sessions = ctx.state_dir / "bot" / "sessions"
    for path in sorted(sessions.glob("*.jsonl")) if sessions.is_dir() else []:
        (preview / path.name).write_text(strip_transcript_bodies(path.read_text(encoding="utf-8", errors="replace")))
    try:
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        found = leaks(texts, files)
    finally:
        for path in preview.iterdir():
            path.unlink()
        preview.rmdir()
    if found:
        about_to = str(preview) + "/"
        raise StepFailed("no decrypted text in the run's artifacts", [
            f"(about to be written) {f.replace(about_to, '')}" if f.startswith(about_to)
            else f.replace(str(run_dir) + "/", "") for f in found])
    return f"{len(texts)} marker(s) in none of {len(files)} artifact file(s)"


E2EE_STEPS = {
    "login_device": login_device, "verify": verify, "expect_verified": expect_verified, "join": join,
    "delete_bot_device": delete_bot_device, "expect_bot_device": expect_bot_device,
    "expect_encrypted": expect_encrypted, "send_verification_request": send_verification_request,
    "expect_artifacts_clean": expect_artifacts_clean,
}
