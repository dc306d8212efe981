"""Steps about what end-to-end encryption protects: expect_encrypted (which Megolm session a message used and
which devices hold its key), expect_artifacts_clean (no decrypted text in what the run writes) and
rotate_session (a test user starts a new Megolm session of its own, as clients do on a schedule), and
share_room_key (a test user hands the bot a new Megolm session's key over a new Olm session, no message yet).

Evidence, not waits: who holds a room key is read from each test device's crypto store after a to-device
barrier (a message the device sends itself: the inbox is ordered, so a room key sent before the message
existed has arrived by the time the barrier does).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from qa.scenario.artifacts import strip_transcript_bodies
from qa.scenario.context import Ref, StepFailed
from qa.scenario.fields import ActorName, DeviceRef, Duration, MarkedText, RoomName, StepId, error
from qa.scenario.steps.base import MESSAGES, ActorUse, InRoom, Problem, Scan, StepBase, StepRef, opt_ref
from qa.scenario.steps.common import bot_trace, text, trace_lines
from qa.scenario.steps.devices import bot_device_id, knows_device, named_device_problems
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.actors import Actor
    from qa.scenario.context import ScenarioContext


def _device_uses(loc: tuple[str, ...], refs: list[str]) -> list[ActorUse]:
    return [ActorUse((*loc, i), r.split(".")[0], False, False) for i, r in enumerate(refs)]


async def _barrier(actor: Actor, timeout_s: float) -> None:
    """After this, every to-device message sent to the actor's device before it was sent has been processed."""
    from nio import ToDeviceError, ToDeviceMessage, UnknownToDeviceEvent

    from qa.kernel.e2ee import BARRIER_TYPE

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


class ExpectEncrypted(StepBase):
    """Which Megolm session message `event` used and who holds its room key, read from the crypto stores:
    `session: new|same` compares with message `than`; `readable_by` devices decrypt it, `unreadable_by`
    devices provably hold no key for it (a to-device barrier, not a wait)."""

    kind: ClassVar[str] = "expect_encrypted"
    does: ClassVar[str] = (
        "which Megolm session message `event` used (`session: new\\|same`, `than`) and which devices hold its key "
        "(`readable_by`, `unreadable_by`: `driver` or `driver.phone`)")
    capabilities: ClassVar[tuple[str, ...]] = ("e2ee",)

    event: StepId
    session: Literal["new", "same"] | None = None
    than: StepId | None = None
    readable_by: list[DeviceRef] = Field(default_factory=list)
    unreadable_by: list[DeviceRef] = Field(default_factory=list)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ExpectEncrypted:
        if (self.session is None) != (self.than is None):
            raise error("conflict", "session: new|same and than: <step id> go together")
        if self.session is None and not self.readable_by and not self.unreadable_by:
            raise error("evidence", "expect_encrypted needs session/than, readable_by and/or unreadable_by")
        both = sorted(set(self.readable_by) & set(self.unreadable_by))
        if both:
            raise error("conflict", f"{', '.join(both)} cannot be in both readable_by and unreadable_by")
        return self

    def refs(self) -> list[StepRef]:
        return [StepRef(("event",), self.event, MESSAGES, False), *opt_ref("than", self.than, MESSAGES, False)]

    def room_anchor(self) -> str | None:
        return self.event

    def actor_uses(self) -> list[ActorUse]:
        return _device_uses(("readable_by",), self.readable_by) + _device_uses(("unreadable_by",), self.unreadable_by)

    def check(self, scan: Scan) -> Iterator[Problem]:
        return named_device_problems(scan, [((field, j), ref) for field in ("readable_by", "unreadable_by")
                                            for j, ref in enumerate(getattr(self, field)) if "." in ref])

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.kernel.e2ee import has_room_key, session_comparison

        ref = ctx.refs[self.event]
        info = _megolm(ctx, ref)
        problems: list[str] = []
        if self.session is not None and self.than is not None:
            problem = session_comparison(_megolm(ctx, ctx.refs[self.than]).get("sessionId"), info.get("sessionId"),
                                         self.session)
            if problem:
                problems.append(f"'{self.than}' then '{self.event}': {problem}")
        session_id, sender_key = info.get("sessionId"), info.get("senderKey")
        for name, want in [*((n, True) for n in self.readable_by), *((n, False) for n in self.unreadable_by)]:
            actor = ctx.actors[name]
            if not session_id or not sender_key:
                problems.append(f"'{self.event}' carries no Megolm session to look for")
                break
            await _barrier(actor, self.wait_s(ctx))
            held = has_room_key(actor.client, ref.room_id, sender_key, session_id)
            if held != want:
                problems.append(f"{name} (device {actor.client.device_id}) {'holds' if held else 'lacks'} the room "
                                f"key of session {session_id}")
        if problems:
            lines = trace_lines(ctx, ("e2ee.withheld", "e2ee.device", "device.relogin"))
            raise StepFailed(f"'{self.event}' ({ref.event_id}) encrypted as the step says", [*problems, *lines])
        readers = f"; readable by {', '.join(self.readable_by)}" if self.readable_by else ""
        others = f"; not by {', '.join(self.unreadable_by)}" if self.unreadable_by else ""
        return f"{ref.event_id} in Megolm session {session_id}{readers}{others}"


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


class ExpectArtifactsClean(StepBase):
    """None of these texts (markers expanded: decrypted bodies) is in the run's artifacts so far, nor in what
    this scenario is about to write (transcripts, observed events) — unless the run has --include-bodies."""

    kind: ClassVar[str] = "expect_artifacts_clean"
    does: ClassVar[str] = "none of `markers` (expanded) is in the run's artifacts or in what the scenario is " \
        "about to write"

    markers: list[MarkedText] = Field(min_length=1)

    def _preview(self, ctx: ScenarioContext, preview: Path) -> None:
        """What this scenario writes at its end, written now the same way, so the scan covers it too."""
        from qa.report.writer import sanitize_events

        assert ctx.state_dir is not None
        (preview / "observed.json").write_text(json.dumps(sanitize_events(ctx.observer().events.items)))
        sessions = ctx.state_dir / "bot" / "sessions"
        for path in sorted(sessions.glob("*.jsonl")) if sessions.is_dir() else []:
            (preview / path.name).write_text(strip_transcript_bodies(path.read_text(encoding="utf-8",
                                                                                    errors="replace")))

    async def run(self, ctx: ScenarioContext) -> str:
        texts = {m: text(ctx, m) for m in self.markers}
        if ctx.include_bodies:
            return "NOT CHECKED: the run has --include-bodies"
        run_dir = ctx.artifact_dir.parent.parent
        preview = ctx.artifact_dir / ".artifact-preview"
        preview.mkdir(exist_ok=True)
        try:
            self._preview(ctx, preview)
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


class RotateSession(InRoom):
    """The actor discards its outbound Megolm session of the room: its next message there starts a new session,
    whose key goes to every member's devices over Olm (clients rotate after N messages or a week; a bot must
    take the new key as it comes, not only the one it saw first)."""

    kind: ClassVar[str] = "rotate_session"
    does: ClassVar[str] = "`as` discards its Megolm session of `room`: its next message there uses a new one"
    capabilities: ClassVar[tuple[str, ...]] = ("e2ee",)

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        room_id, client = ctx.rooms[self.room], ctx.actors[self.actor].client
        if client.olm is None:
            raise StepFailed(f"{self.actor} rotates its Megolm session", [f"{self.actor} has no crypto (the room "
                                                                          f"{self.room} is not encrypted)"])
        had = client.olm.outbound_group_sessions.get(room_id)
        client.olm.outbound_group_sessions.pop(room_id, None)
        old = had.id if had is not None else "none yet"
        return f"{self.actor} dropped its Megolm session {old} of {self.room}: the next message starts a new one"


ROOM_KEY_TRACE = "room-key-trace"


class ShareRoomKey(InRoom):
    """The actor starts a new Olm session with each of the bot's devices (a fresh one-time key claimed, its old
    sessions kept: the key goes as a pre-key message over the new one) and a new Megolm session of the room, and
    sends that session's key to the bot's devices alone — no room message. It passes once the bot traces
    `e2ee.room_key` for that session (capability room-key-trace): the bot holds the key and its sync position is
    saved past it, so the key lives in its crypto store alone and a kill right after it loses whatever the bot
    had not written. Should the bot trace the key again later (the server sent it again: the bot traced it too
    early), the scenario's end says NOT CHECKED. The actor's next message in the room uses that session (its key
    then goes to the other members; the bot's devices are marked as having it)."""

    kind: ClassVar[str] = "share_room_key"
    does: ClassVar[str] = (
        "`as` sends the key of a new Megolm session of `room` to the bot's devices only, over a new Olm session "
        "(a pre-key message), no room message; passes when the bot traces `e2ee.room_key` for it (capability "
        "`room-key-trace`; without it: NOT CHECKED, the step ends when the key is sent; traced again later, the "
        "key was sent again and the scenario's end says NOT CHECKED). The actor's next message there uses that "
        "session")
    capabilities: ClassVar[tuple[str, ...]] = ("e2ee",)

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    timeout: Duration | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        actor, room_id, timeout_s = ctx.actors[self.actor], ctx.rooms[self.room], self.wait_s(ctx)
        olm, what = actor.client.olm, f"{self.actor} shares a new room key with the bot"
        if olm is None:
            raise StepFailed(what, [f"{self.actor} has no crypto (the room {self.room} is not encrypted)"])
        device_id = bot_device_id(ctx)
        if device_id is not None:
            await knows_device(actor, ctx.bot_user_id, device_id, timeout_s, f"{self.actor} to know the bot's "
                               f"device {device_id}")
        devices = [d for d in olm.device_store.active_user_devices(ctx.bot_user_id)
                   if device_id is None or d.id == device_id]
        if not devices:
            raise StepFailed(what, [f"{self.actor} knows no device of the bot ({ctx.bot_user_id})"])
        fresh, lacking = await _new_olm_sessions(actor.client, devices, timeout_s)
        if lacking:
            raise StepFailed(what, [f"{self.actor} could not open a new Olm session with {lacking}"])
        reused = [key for key, session in fresh.items() if olm.session_store.get(key) is not session]
        if reused:
            raise StepFailed(what, [f"{self.actor}'s newest Olm session with the bot's device (key {k}) is not the "
                                    f"one just opened" for k in reused])
        olm.create_outbound_group_session(room_id)
        session = olm.outbound_group_sessions[room_id]
        sent = await _send_key(actor, room_id, devices, what)
        line = (f"{self.actor} sent the key of Megolm session {session.id} to the bot's device(s) "
                f"{', '.join(sorted(sent))} over a new Olm session (pre-key message)")
        if not ctx.bot.bot.has(ROOM_KEY_TRACE):
            return f"{line}; NOT CHECKED that the bot took it in (bot {ctx.bot.name} does not claim {ROOM_KEY_TRACE})"
        if not ctx.bot.has_trace:
            return f"{line}; NOT CHECKED that the bot took it in (bot {ctx.bot.name} writes no trace)"
        record = await bot_trace(ctx, lambda r: r.get("type") == "e2ee.room_key" and r.get("sessionId") == session.id,
                                 timeout_s, f"the bot to take in the room key of session {session.id} (trace "
                                 f"e2ee.room_key)")
        ctx.after_exit_notes.append(_sent_again(ctx, session.id, record))
        return f"{line}; the bot took it in ({record.get('roomId')} from {record.get('sender')})"


def _sent_again(ctx: ScenarioContext, session_id: str, first: dict[str, Any]) -> Any:
    """Judged once the bot has exited (qa.scenario.fence): a second e2ee.room_key for the session means the
    server delivered the key again (a bot that traced it before its sync position moved past it, then was
    killed), so what came after the kill was decrypted with a key sent anew, not one kept in the crypto store."""

    def note(_mark: int) -> str | None:
        items = ctx.bot.trace.items
        at = next((i for i, r in enumerate(items) if r is first), len(items))
        # A record equal to the first (its time too) is the same line read again (a trace rewritten on a restart).
        if any(r.get("type") == "e2ee.room_key" and r.get("sessionId") == session_id and r != first
               for r in items[at + 1:]):
            return (f"key sent again after restart: the bot traced the room key of Megolm session {session_id} a "
                    f"second time, so the kill did not test its crypto store")
        return None
    return note


async def _new_olm_sessions(client: Any, devices: list[Any], timeout_s: float) -> tuple[dict[str, Any], str]:
    """A new Olm session with each device, beside the old ones (never set aside: the actor's client keeps syncing
    meanwhile, and a bot message it could not decrypt over them would mark the device wedged and have nio open,
    and use, yet another). nio's _handle_key_claiming opens a session for every one-time key claimed, whether one
    exists or not, so a claim is all it takes (qa.actors.open_olm_sessions: bounded, retried while the server has
    no one-time key left). Returns each device's newest session that was not there before (by curve key), and
    what is still missing."""
    from qa.actors import open_olm_sessions

    olm = client.olm
    old = {d.curve25519: {id(s) for s in olm.session_store[d.curve25519]} for d in devices}

    def new(device: Any) -> Any:  # the store keeps a device's sessions newest first
        return next((s for s in olm.session_store[device.curve25519] if id(s) not in old[device.curve25519]), None)

    lacking = await open_olm_sessions(client, devices, timeout_s, has=lambda d: new(d) is not None)
    if lacking:
        return {}, lacking
    return {d.curve25519: new(d) for d in devices}, ""


async def _send_key(actor: Actor, room_id: str, devices: list[Any], what: str) -> list[str]:
    """The room key of the actor's (unshared) outbound session, Olm-encrypted to these devices and sent; they are
    marked as having it, so the actor's next room message shares it with the room's other devices only."""
    from nio import ToDeviceError, ToDeviceMessage

    olm = actor.client.olm
    assert olm is not None
    session = olm.outbound_group_sessions[room_id]
    users = sorted({d.user_id for d in devices})
    wanted = {(d.user_id, d.id) for d in devices}
    sent: list[str] = []
    for sharing_with, to_device in olm.share_group_session_parallel(room_id, users, ignore_unverified_devices=True):
        for user_id, by_device in to_device["messages"].items():
            for device_id, content in by_device.items():
                if (user_id, device_id) not in wanted:
                    continue
                kinds = {c.get("type") for c in content.get("ciphertext", {}).values()}
                if kinds != {0}:
                    raise StepFailed(what, [f"the key to device {device_id} is not a pre-key message (Olm message "
                                            f"type {sorted(kinds)}), as a new Olm session's first message is"])
                resp = await actor.client.to_device(ToDeviceMessage("m.room.encrypted", user_id, device_id, content))
                if isinstance(resp, ToDeviceError):
                    raise StepFailed(what, [f"to-device to {device_id}: {resp.message}"])
                sent.append(device_id)
        session.users_shared_with.update(s for s in sharing_with if s in wanted)
    if not sent:
        raise StepFailed(what, [f"{actor.name} had nothing to send: no device of the bot without the key"])
    return sent
