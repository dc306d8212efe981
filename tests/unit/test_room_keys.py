"""The bot's room-key record (e2ee.room_key) and the test-only mutation late-crypto-save, against fakes; the
share_room_key step's validation and what it needs of a bot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import RoomKeyEvent, UnknownToDeviceEvent

from qa.agent.config import AgentConfig
from qa.agent.room_keys import LateCryptoSaves, trace_room_keys
from qa.agent.verification import BotE2EE
from qa.harness.capabilities import MEANING, needs
from qa.scenario.context import StepFailed
from qa.scenario.loader import load_scenario
from qa.scenario.steps.encryption import ROOM_KEY_TRACE, ShareRoomKey, _send_key

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


def _config(*mutations: str) -> AgentConfig:
    return AgentConfig.model_validate({"homeserver": "http://h", "userId": "@bot:x", "stateDir": "/s", "rooms": {},
                                       "model": {"baseUrl": "http://m", "model": "m"},
                                       "testMutations": list(mutations)})


def test_each_room_key_of_a_batch_is_traced_and_nothing_else() -> None:
    trace = Trace()
    other = UnknownToDeviceEvent({"sender": "@h:x", "type": "x"}, "@h:x", "x")
    trace_room_keys(trace, [other, _key("s1"), _key("s2")])  # type: ignore[arg-type]
    assert trace.records == [{"type": "e2ee.room_key", "roomId": "!r:x", "sender": "@h:x", "sessionId": s,
                              "algorithm": "m.megolm.v1.aes-sha2"} for s in ("s1", "s2")]


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
