"""The bot's room-key record (e2ee.room_key) and the test-only mutation late-crypto-save, against fakes; the
share_room_key step's validation and what it needs of a bot."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import RoomKeyEvent, UnknownToDeviceEvent
from nio.crypto import SessionStore

from qa.agent.config import AgentConfig
from qa.agent.matrix import MatrixBot
from qa.agent.room_keys import LateCryptoSaves, trace_room_keys
from qa.agent.verification import BotE2EE
from qa.harness.capabilities import MEANING, needs
from qa.scenario.context import StepFailed
from qa.scenario.loader import load_scenario
from qa.scenario.steps.encryption import ROOM_KEY_TRACE, ShareRoomKey, _send_key
from tests.unit.test_agent_boot import UploadingClient, _Stop
from tests.unit.test_e2ee_deep import FakeTrace

REPO = Path(__file__).resolve().parents[2]


class Trace:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def emit(self, type_: str, **fields: Any) -> None:
        self.records.append({"type": type_, **fields})


class Olm:
    """nio's Olm machine as far as the mutation touches it: the two writes, recorded."""

    def __init__(self) -> None:
        self.written: list[tuple[str, Any]] = []

    def save_session(self, curve_key: str, session: Any) -> None:
        self.written.append(("olm", (curve_key, session)))

    def save_inbound_group_session(self, session: Any) -> None:
        self.written.append(("megolm", session))


def _key(session_id: str) -> RoomKeyEvent:
    return RoomKeyEvent({"sender": "@h:x"}, "@h:x", "curve", "!r:x", session_id, "m.megolm.v1.aes-sha2")


def _config(*mutations: str, state_dir: str = "/s") -> AgentConfig:
    return AgentConfig.model_validate({"homeserver": "http://h", "userId": "@bot:x", "stateDir": state_dir, "rooms": {},
                                       "model": {"baseUrl": "http://m", "model": "m"},
                                       "testMutations": list(mutations)})


class _Held:
    """nio's inbound group store as far as the record reads it: which (room, sender key, session) it holds."""

    def __init__(self, *session_ids: str) -> None:
        self.session_ids = set(session_ids)

    def get(self, room_id: str, sender_key: str, session_id: str) -> Any:
        return object() if (room_id, sender_key) == ("!r:x", "curve") and session_id in self.session_ids else None


def test_each_room_key_of_a_batch_is_traced_and_nothing_else() -> None:
    trace = Trace()
    other = UnknownToDeviceEvent({"sender": "@h:x", "type": "x"}, "@h:x", "x")
    olm = SimpleNamespace(inbound_group_store=_Held("s1", "s2"))
    trace_room_keys(trace, olm, [other, _key("s1"), _key("s2")])  # type: ignore[arg-type]
    assert trace.records == [{"type": "e2ee.room_key", "roomId": "!r:x", "sender": "@h:x", "sessionId": s,
                              "algorithm": "m.megolm.v1.aes-sha2"} for s in ("s1", "s2")]


def test_a_key_the_olm_machine_refused_is_not_traced() -> None:
    """nio returns the RoomKeyEvent even when it did not take the key in (its session id does not match the key,
    an unknown algorithm): no record then, or the scenario would kill a bot that holds nothing."""
    trace = Trace()
    trace_room_keys(trace, SimpleNamespace(inbound_group_store=_Held("s1")), [_key("s1"), _key("refused")])
    assert [r["sessionId"] for r in trace.records] == ["s1"]
    trace_room_keys(trace, None, [_key("s1")])  # no crypto at all: nothing held, nothing traced
    assert len(trace.records) == 1


class _KeyBatchClient(UploadingClient):
    """One batch that brings a room key (to-device) and no invite; records the key upkeep's last request."""

    def __init__(self, trace: Any) -> None:
        super().__init__(trace)
        self.shared = True
        self.olm = SimpleNamespace(inbound_group_store=_Held("s1"))

    async def sync(self, **_: Any) -> Any:
        self.syncs += 1
        if self.syncs > 1:
            raise _Stop
        return SimpleNamespace(next_batch="s1-position", account_data_events=[], to_device_events=[_key("s1")],
                               rooms=SimpleNamespace(invite={}, join={}, leave={}))

    async def send_to_device_messages(self) -> Any:
        self.calls.append("to-device")  # maintain_keys' last request
        return []


async def test_the_room_key_is_traced_only_once_the_sync_position_is_saved_past_it(tmp_path: Path) -> None:
    """The record is what a hard-kill scenario kills at: a key traced before the batch's position is saved comes
    again after the restart (the kill then proves nothing about the crypto store). The trace reads the saved
    position at the moment of the record."""
    trace = FakeTrace()
    client = _KeyBatchClient(trace)
    bot = MatrixBot(_config(state_dir=str(tmp_path)), trace, "pw")  # type: ignore[arg-type]
    bot.client = client  # type: ignore[assignment]
    emit = trace.emit
    seen: list[tuple[Any, list[str]]] = []

    def reading(kind: str, **fields: Any) -> None:
        if kind == "e2ee.room_key":
            saved = bot._token_path.read_text() if bot._token_path.exists() else None
            seen.append((saved and json.loads(saved)["next_batch"], list(client.calls)))
        emit(kind, **fields)
    trace.emit = reading  # type: ignore[method-assign]
    with pytest.raises(_Stop):
        await bot.run()
    assert seen == [("s1-position", ["to-device"])], seen  # saved, and after the batch's key upkeep


def test_late_crypto_save_writes_a_batch_late_and_in_order() -> None:
    olm = Olm()
    late = LateCryptoSaves(olm)
    olm.save_session("k", "olm-1")
    olm.save_inbound_group_session("megolm-1")
    assert olm.written == [] and late.held == 2
    late.batch_done()  # the end of the batch that brought them: still held
    assert olm.written == [] and late.held == 2
    olm.save_inbound_group_session("megolm-2")
    late.batch_done()  # the next batch's end: the first batch's writes are done, the second's wait
    assert olm.written == [("olm", ("k", "olm-1")), ("megolm", "megolm-1")] and late.held == 1
    late.batch_done()
    assert olm.written[-1] == ("megolm", "megolm-2") and late.held == 0


async def test_the_bot_holds_writes_back_only_with_the_mutation() -> None:
    for mutations, written_at_once in (((), True), (("late-crypto-save",), False)):
        olm = Olm()
        client = SimpleNamespace(olm=olm)
        e2ee = BotE2EE(_config(*mutations), Trace())  # type: ignore[arg-type]
        e2ee.install(client)  # type: ignore[arg-type]
        olm.save_session("k", "olm-1")
        await e2ee.on_to_device(client, [])  # type: ignore[arg-type]
        assert bool(olm.written) is written_at_once, mutations
        await e2ee.on_to_device(client, [])  # type: ignore[arg-type]
        assert olm.written == [("olm", ("k", "olm-1"))], mutations


def test_the_hard_kill_scenario_shares_a_key_then_kills_and_needs_no_new_capability() -> None:
    scenario = load_scenario(REPO / "scenarios" / "matrix-e2ee-crypto-store-hard-kill.yaml")
    kinds = [s.kind for s in scenario.steps]
    share = kinds.index("share_room_key")
    assert kinds[share + 1] == "restart_bot" and scenario.steps[share + 1].mode == "kill"
    # A bot without room-key-trace still runs it (the wait is NOT CHECKED), so it is no skip reason.
    assert ROOM_KEY_TRACE in MEANING and ROOM_KEY_TRACE not in {n.capability for n in needs(scenario)}
    assert ShareRoomKey.capabilities == ("e2ee",)
    assert ROOM_KEY_TRACE in (REPO / "qa" / "agent" / "bot.yaml").read_text()


class _Session:
    def __init__(self) -> None:
        self.users_shared_with: set[tuple[str, str]] = set()


class _SharingOlm:
    """nio's share_group_session_parallel as far as _send_key reads it: one chunk for the devices it knows."""

    def __init__(self, kinds: dict[str, int]) -> None:
        self.kinds = kinds
        self.outbound_group_sessions = {"!r:x": _Session()}

    def share_group_session_parallel(self, room_id: str, users: list[str], ignore_unverified_devices: bool) -> Any:
        assert ignore_unverified_devices and users == ["@bot:x"]
        messages = {"@bot:x": {d: {"ciphertext": {"c": {"type": t}}} for d, t in self.kinds.items()}}
        yield {("@bot:x", d) for d in self.kinds}, {"messages": messages}


class _Client:
    def __init__(self, olm: _SharingOlm) -> None:
        self.olm = olm
        self.sent: list[Any] = []

    async def to_device(self, message: Any) -> Any:
        self.sent.append(message)
        return object()


async def test_the_key_goes_to_the_named_devices_alone_as_pre_key_messages() -> None:
    olm = _SharingOlm({"NEW": 0, "OLD": 0})
    client = _Client(olm)
    actor = SimpleNamespace(client=client, name="helper")
    device = SimpleNamespace(user_id="@bot:x", id="NEW")
    assert await _send_key(actor, "!r:x", [device], "w") == ["NEW"]  # type: ignore[arg-type]
    assert [(m.recipient, m.recipient_device, m.type) for m in client.sent] == [("@bot:x", "NEW", "m.room.encrypted")]
    # Only the device it went to is marked: the next room message shares the key with every other device.
    assert olm.outbound_group_sessions["!r:x"].users_shared_with == {("@bot:x", "NEW")}
    # An ordinary Olm message (type 1) is no new session's first: refused, nothing sent.
    client = _Client(_SharingOlm({"NEW": 1}))
    with pytest.raises(StepFailed) as failed:
        await _send_key(SimpleNamespace(client=client, name="helper"), "!r:x", [device], "w")  # type: ignore[arg-type]
    assert "not a pre-key message" in failed.value.seen[0] and client.sent == []


class _OlmSession:
    def __init__(self, name: str, age_s: float) -> None:
        self.name, self.use_time = name, datetime(2026, 1, 1) + timedelta(seconds=age_s)


class _ShareOlm(_SharingOlm):
    """The actor's Olm machine: a real nio session store, the bot's one device, and the outbound sessions."""

    def __init__(self) -> None:
        super().__init__({"BOTDEV": 0})
        self.outbound_group_sessions = {}
        self.device = SimpleNamespace(user_id="@bot:x", id="BOTDEV", curve25519="curve-bot")
        self.device_store = SimpleNamespace(active_user_devices=lambda user_id: [self.device])
        self.session_store = SessionStore()
        self.session_store.add("curve-bot", _OlmSession("old", 1))

    def create_outbound_group_session(self, room_id: str) -> None:
        self.outbound_group_sessions[room_id] = SimpleNamespace(id="megolm-new", users_shared_with=set())


class _ShareClient(_Client):
    """keys_claim as nio's: each one-time key claimed opens a new session (_handle_key_claiming); `empty` claims
    first find the server out of one-time keys."""

    def __init__(self, olm: _ShareOlm, empty: int = 0) -> None:
        super().__init__(olm)  # type: ignore[arg-type]
        self.empty = empty
        self.claims: list[list[str]] = []  # the sessions the store held at each claim

    async def keys_claim(self, wanted: dict[str, list[str]]) -> Any:
        assert wanted == {"@bot:x": ["BOTDEV"]}, wanted
        self.claims.append([s.name for s in self.olm.session_store["curve-bot"]])
        if len(self.claims) > self.empty:
            self.olm.session_store.add("curve-bot", _OlmSession(f"new{len(self.claims)}", 10 + len(self.claims)))
        return SimpleNamespace(one_time_keys={})


class _BotTrace:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def wait_for(self, predicate: Any, timeout_s: float, what: str, start: int = 0) -> dict[str, Any]:
        return next(r for r in self.items[start:] if predicate(r))


def _share_ctx(client: _ShareClient, *, claims: bool = True, traces: bool = True) -> Any:
    items = [{"type": "e2ee.room_key", "sessionId": "megolm-new", "roomId": "!r:x", "sender": "@h:x"}]
    bot = SimpleNamespace(bot=SimpleNamespace(has=lambda c: claims and c == ROOM_KEY_TRACE), has_trace=traces,
                          name="thebot", trace=_BotTrace(items))
    return SimpleNamespace(actors={"helper": SimpleNamespace(client=client, name="helper")}, rooms={"main": "!r:x"},
                           bot=bot, bot_user_id="@bot:x", step_timeout_cap_s=None, trace_start=0,
                           after_exit_notes=[])


async def test_share_room_key_opens_a_new_olm_session_beside_the_old_ones() -> None:
    """The old sessions stay in the store while the new one is claimed (the actor's client keeps syncing: a bot
    message it could not decrypt would have nio open, and use, yet another), the claim is retried while the
    server has no one-time key, and the key goes over the newest, new session."""
    olm = _ShareOlm()
    client = _ShareClient(olm, empty=1)
    detail = await ShareRoomKey.model_validate({"as": "helper"}).run(_share_ctx(client))
    assert client.claims == [["old"], ["old"]], client.claims
    assert [s.name for s in olm.session_store["curve-bot"]] == ["new2", "old"]
    assert "over a new Olm session" in detail and "the bot took it in" in detail


async def test_share_room_key_says_why_it_did_not_wait() -> None:
    for claims, traces, why in ((False, True, "does not claim room-key-trace"), (True, False, "writes no trace")):
        detail = await ShareRoomKey.model_validate({"as": "helper"}).run(
            _share_ctx(_ShareClient(_ShareOlm()), claims=claims, traces=traces))
        assert detail.endswith(f"NOT CHECKED that the bot took it in (bot thebot {why})"), detail


async def test_a_key_traced_again_after_the_restart_leaves_the_kill_not_checked() -> None:
    """A bot that traces the key before its sync position is saved past it is killed before the position moves:
    the server sends the key again after the restart, and the bot decrypts without its store. The second record
    for the same session makes the scenario's end say NOT CHECKED, with that reason."""
    ctx = _share_ctx(_ShareClient(_ShareOlm()))
    await ShareRoomKey.model_validate({"as": "helper"}).run(ctx)
    assert len(ctx.after_exit_notes) == 1
    [note] = ctx.after_exit_notes
    ctx.bot.trace.items += [{"type": "start"}, {"type": "e2ee.room_key", "sessionId": "other"}]
    assert note(0) is None  # another session's key: nothing to say
    ctx.bot.trace.items.append(dict(ctx.bot.trace.items[0]))
    assert note(0) is None  # the same line read again (a trace the bot rewrote on its restart): no second key
    ctx.bot.trace.items.append({"type": "e2ee.room_key", "sessionId": "megolm-new"})
    assert note(0) == ("key sent again after restart: the bot traced the room key of Megolm session megolm-new a "
                       "second time, so the kill did not test its crypto store")
