"""The device steps' Olm-session wait (qa.scenario.steps.devices.has_olm_session), against fake nio state.

Why it exists: nio's room_send shares a room key only with the devices it has an Olm session with and skips
the rest silently; a test user that knows the bot's new device before the server holds its one-time keys
would send its next message without the new device ever getting the key (the flaky
matrix-e2ee-bot-device-deleted-relogin)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from qa import actors
from qa.kernel.errors import InfraError
from qa.scenario.context import StepFailed
from qa.scenario.steps.devices import _everyone_knows_bot_device, has_olm_session

BOT = "@bot:test"


class FakeClient:
    """nio's AsyncClient as far as the wait reads it: a device store, a session store, keys_claim. The server
    has a one-time key for the device from claim number `key_from` on (None: never)."""

    def __init__(self, device: Any, key_from: int | None, *, olm: bool = True) -> None:
        self.sessions: dict[str, object] = {}
        self.olm = SimpleNamespace(session_store=self.sessions, users_for_key_query=set()) if olm else None
        self.claims: list[dict[str, list[str]]] = []
        self._device = device
        self._key_from = key_from
        self.device_store = SimpleNamespace(active_user_devices=lambda user_id: [device] if user_id == BOT else [])
        self.rooms = {"!room:test": object()}

    async def keys_claim(self, users: dict[str, list[str]]) -> object:
        self.claims.append(users)
        if self._key_from is not None and len(self.claims) >= self._key_from:
            self.sessions[self._device.curve25519] = object()  # nio's _handle_key_claiming opened a session
            return SimpleNamespace(one_time_keys={BOT: {self._device.id: {}}})
        return SimpleNamespace(one_time_keys={}, failures={})


def _device() -> Any:
    return SimpleNamespace(id="NEWDEV", user_id=BOT, curve25519="curve-of-NEWDEV")


def _actor(key_from: int | None, *, olm: bool = True) -> Any:
    return SimpleNamespace(name="driver", client=FakeClient(_device(), key_from, olm=olm))


async def test_a_session_already_there_costs_no_claim() -> None:
    actor = _actor(1)
    actor.client.sessions["curve-of-NEWDEV"] = object()
    await has_olm_session(actor, _device(), 5.0, "x")
    assert actor.client.claims == []


async def test_the_claim_is_retried_until_the_one_time_key_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors, "CLAIM_RETRY_S", (0.0,))
    actor = _actor(3)  # the bot's keys/upload stored its device keys, its one-time keys two claims later
    await has_olm_session(actor, _device(), 30.0, "x")
    assert actor.client.claims == [{BOT: ["NEWDEV"]}] * 3
    assert "curve-of-NEWDEV" in actor.client.sessions


async def test_no_key_ever_fails_naming_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors, "CLAIM_RETRY_S", (0.01,))
    actor = _actor(None)
    with pytest.raises(StepFailed) as failed:
        await has_olm_session(actor, _device(), 0.2, "driver to open an Olm session with bot device NEWDEV")
    text = failed.value.expected + " ".join(failed.value.seen)
    assert "NEWDEV" in text and "no Olm session" in text
    assert len(actor.client.claims) >= 2  # retried, not given up after one claim


async def test_without_encryption_nothing_is_claimed() -> None:
    actor = _actor(None, olm=False)
    await has_olm_session(actor, _device(), 0.1, "x")
    assert actor.client.claims == []


async def test_the_bot_device_steps_wait_for_the_session_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors, "CLAIM_RETRY_S", (0.0,))
    driver = _actor(2)
    ctx = SimpleNamespace(
        bot=SimpleNamespace(trace=SimpleNamespace(items=[{"type": "ready", "deviceId": "NEWDEV"}])),
        scenario=SimpleNamespace(rooms={"main": SimpleNamespace(encrypted=True)}),
        rooms={"main": "!room:test"}, actors={"driver": driver}, bot_user_id=BOT)
    line = await _everyone_knows_bot_device(ctx, 30.0, False, None)  # type: ignore[arg-type]
    assert "curve-of-NEWDEV" in driver.client.sessions
    assert line == "every test user knows bot device NEWDEV and has an Olm session with it"


class FakeSetupClient(FakeClient):
    """What Actor.know_devices adds to the wait's needs: nio's key-upkeep flags (nothing to do) and its queue."""

    should_upload_keys = should_query_keys = should_claim_keys = False

    async def send_to_device_messages(self) -> None:
        return None


async def _joined_actor(tmp_path: Any, key_from: int | None) -> actors.Actor:
    actor = actors.Actor("driver", "http://127.0.0.1:1", "@driver:test", "pw", tmp_path / "store")
    actor.client = FakeSetupClient(_device(), key_from)  # type: ignore[assignment]
    await actor.events.append({"type": "m.room.member", "state_key": BOT, "room_id": "!room:test",
                               "content": {"membership": "join"}})
    return actor


async def test_setup_waits_for_an_olm_session_with_every_member_device(tmp_path: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's start has the relogin race too: know_devices waited for the bot's device, not its one-time keys,
    so the first encrypted message could skip the bot's device. Now the setup claims until the session is there."""
    monkeypatch.setattr(actors, "CLAIM_RETRY_S", (0.0,))
    actor = await _joined_actor(tmp_path, 2)
    await actor.know_devices("!room:test", [BOT], 30.0)
    assert "curve-of-NEWDEV" in actor.client.sessions
    assert actor.client.claims == [{BOT: ["NEWDEV"]}] * 2


async def test_setup_without_a_one_time_key_is_refused_naming_the_device(tmp_path: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors, "CLAIM_RETRY_S", (0.01,))
    actor = await _joined_actor(tmp_path, None)
    with pytest.raises(InfraError, match="no Olm session with device NEWDEV of @bot:test"):
        await actor.know_devices("!room:test", [BOT], 0.2)


async def test_claims_go_out_together_and_only_for_devices_still_lacking() -> None:
    first = SimpleNamespace(id="A", user_id=BOT, curve25519="curve-A")
    second = SimpleNamespace(id="B", user_id="@other:test", curve25519="curve-B")
    claims: list[dict[str, list[str]]] = []
    sessions: dict[str, object] = {"curve-B": object()}

    async def keys_claim(users: dict[str, list[str]]) -> object:
        claims.append(users)
        sessions["curve-A"] = object()
        return SimpleNamespace()

    client = SimpleNamespace(olm=SimpleNamespace(session_store=sessions), keys_claim=keys_claim)
    assert await actors.open_olm_sessions(client, [first, second], 5.0) == ""  # type: ignore[arg-type]
    assert claims == [{BOT: ["A"]}]
