"""The bot's crypto store binds its tables once (qa.agent.store_binding): a store call after the first rebinds no
model, and two stores of one process (a relogin's) still each read and write their own database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee
import pytest

from qa.agent import store_binding
from qa.agent.config import AgentConfig
from qa.agent.crypto_store import CryptoIdentity
from tests.unit.test_e2ee_deep import FakeTrace

pytestmark = pytest.mark.skipif(store_binding.STORE is None, reason="no E2EE libraries: nio makes no store")


def _client(tmp_path: Path, device: str) -> Any:
    config = AgentConfig.model_validate({"homeserver": "http://127.0.0.1:1", "userId": "@bot:x",
                                         "stateDir": str(tmp_path / device), "rooms": {}, "encryption": True,
                                         "model": {"baseUrl": "http://m", "model": "m"}})
    client = CryptoIdentity(config, FakeTrace(), "pw").new_client(device)  # type: ignore[arg-type]
    client.restore_login("@bot:x", device, "tok")  # opens (and creates) the store
    return client


def test_the_bot_s_client_uses_the_bound_once_store(tmp_path: Path) -> None:
    client = _client(tmp_path, "DEV")
    assert type(client.store) is store_binding.STORE


def test_a_store_call_after_the_first_binds_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(tmp_path, "DEV")
    client.store.load_encrypted_rooms()
    binds: list[Any] = []
    real = peewee.Model.bind.__func__  # type: ignore[attr-defined]

    def counting(cls: Any, *args: Any, **kwargs: Any) -> Any:
        binds.append(cls)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(peewee.Model, "bind", classmethod(counting))
    for _ in range(3):
        client.store.save_encrypted_rooms(["!r:x"])
        assert client.store.load_encrypted_rooms() == {"!r:x"}
    assert binds == []  # nio's own store: 2 binds per model per call (in and back out)


def test_two_stores_of_one_process_each_keep_to_their_own_database(tmp_path: Path) -> None:
    first, second = _client(tmp_path, "ONE"), _client(tmp_path, "TWO")
    first.store.save_encrypted_rooms(["!one:x"])
    second.store.save_encrypted_rooms(["!two:x"])
    assert first.store.load_encrypted_rooms() == {"!one:x"}
    assert second.store.load_encrypted_rooms() == {"!two:x"}
    first.store.save_encrypted_rooms(["!three:x"])
    assert (first.store.load_encrypted_rooms(), second.store.load_encrypted_rooms()) == (
        {"!one:x", "!three:x"}, {"!two:x"})
