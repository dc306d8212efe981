"""The embedded agent's wait for a late room key (qa.agent.matrix): an encrypted message is held for
`decryptRetryS` (30 s by default), dropped as undecryptable after it, and a key that comes after the drop is
traced, so a drop tells a key that came too late from one that never came."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import RoomKeyEvent

from qa.agent import matrix
from qa.agent.config import AgentConfig
from qa.agent.matrix import MatrixBot
from qa.kernel.trace import Trace, read_trace

SESSION = "megolm-session-1"


class NoKeyClient:
    """Decrypts nothing: the room key never came."""

    def decrypt_event(self, event: Any) -> Any:
        raise RuntimeError("no session for " + event.session_id)


def bot(tmp_path: Path, **settings: Any) -> tuple[MatrixBot, Path]:
    config = AgentConfig.model_validate({
        "homeserver": "http://127.0.0.1:1", "userId": "@bot:qa.invalid", "stateDir": str(tmp_path / "state"),
        "rooms": {}, "model": {"baseUrl": "http://127.0.0.1:1/v1", "model": "m"}, **settings})
    trace_path = tmp_path / "trace.jsonl"
    matrix_bot = MatrixBot(config, Trace(trace_path), "pw")
    matrix_bot.client = NoKeyClient()  # type: ignore[assignment]
    return matrix_bot, trace_path


def encrypted(event_id: str = "$m", session_id: str = SESSION) -> Any:
    return SimpleNamespace(event_id=event_id, sender="@driver:qa.invalid", session_id=session_id)


def room_key(session_id: str) -> RoomKeyEvent:
    return RoomKeyEvent({}, "@driver:qa.invalid", "curve", "!r", session_id, "m.megolm.v1.aes-sha2")


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [1_000_000.0]
    monkeypatch.setattr(matrix, "mono_ms", lambda: clock[0])
    return clock


def types(trace_path: Path) -> list[str]:
    return [r["type"] for r in read_trace(trace_path)]


def test_the_default_wait_is_30_s() -> None:
    assert AgentConfig.model_fields["decrypt_retry_s"].default == 30.0


async def test_a_message_is_held_for_the_whole_wait_then_dropped(tmp_path: Path, now: list[float]) -> None:
    matrix_bot, trace = bot(tmp_path)
    matrix_bot._undecryptable(encrypted(), "!r", history=False)
    [pending] = [r for r in read_trace(trace) if r["type"] == "decrypt.pending"]
    assert pending["retryS"] == 30.0 and pending["sessionId"] == SESSION
    now[0] += 29_999  # 3 s was the old wait: a key this late must still be waited for
    await matrix_bot._retry_decryption()
    assert "inbound" not in types(trace) and "$m" in matrix_bot._undecrypted
    now[0] += 2
    await matrix_bot._retry_decryption()
    [dropped] = [r for r in read_trace(trace) if r["type"] == "inbound"]
    assert dropped["reason"] == "undecryptable" and dropped["sessionId"] == SESSION
    assert not matrix_bot._undecrypted


async def test_a_scenario_shortens_the_wait(tmp_path: Path, now: list[float]) -> None:
    matrix_bot, trace = bot(tmp_path, decryptRetryS=3)
    matrix_bot._undecryptable(encrypted(), "!r", history=False)
    now[0] += 3_001
    await matrix_bot._retry_decryption()
    assert [r["reason"] for r in read_trace(trace) if r["type"] == "inbound"] == ["undecryptable"]


async def test_a_key_after_the_drop_is_traced_once_and_only_for_a_dropped_session(tmp_path: Path,
                                                                                  now: list[float]) -> None:
    matrix_bot, trace = bot(tmp_path, decryptRetryS=1)
    matrix_bot._keys_after_drop([room_key(SESSION)])  # nothing was dropped yet: not a late key
    assert "decrypt.key-after-drop" not in types(trace)
    matrix_bot._undecryptable(encrypted(), "!r", history=False)
    now[0] += 1_001
    await matrix_bot._retry_decryption()
    matrix_bot._keys_after_drop([room_key("another-session"), SimpleNamespace(session_id=SESSION)])
    assert "decrypt.key-after-drop" not in types(trace), "only a room key event of the dropped session counts"
    matrix_bot._keys_after_drop([room_key(SESSION)])
    matrix_bot._keys_after_drop([room_key(SESSION)])
    late = [r for r in read_trace(trace) if r["type"] == "decrypt.key-after-drop"]
    assert len(late) == 1, late
    assert late[0]["sessionId"] == SESSION and late[0]["roomId"] == "!r" and late[0]["retryS"] == 1
