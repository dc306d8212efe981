"""The agent's sends under homeserver faults (qa.agent.sender.Sender._send), against a scripted client:
one transaction id for every try, the wait the homeserver asked for, a bound, and no retry of a refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import RoomSendError, RoomSendResponse

from qa.agent import sender
from qa.agent.config import AgentConfig
from qa.agent.matrix import MatrixBot
from qa.agent.sender import SEND_ATTEMPTS
from qa.kernel.trace import Trace, read_trace


class _Transport:
    def __init__(self, status: int) -> None:
        self.status = status


def refused(status: int, errcode: str, retry_after_ms: int | None = None) -> RoomSendError:
    error = RoomSendError("no", errcode, retry_after_ms)
    error.transport_response = _Transport(status)  # type: ignore[assignment]
    return error


class ScriptedClient:
    """room_send answers from a script: a response, or an exception to raise."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.txn_ids: list[str] = []

    async def room_send(self, room_id: str, event_type: str, content: dict[str, Any], tx_id: str,
                        ignore_unverified_devices: bool) -> Any:
        self.txn_ids.append(tx_id)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(sender.asyncio, "sleep", fake_sleep)
    return slept


def bot(tmp_path: Path, script: list[Any], **mutations: bool) -> tuple[MatrixBot, ScriptedClient, Path]:
    config = AgentConfig.model_validate({
        "homeserver": "http://127.0.0.1:1", "userId": "@bot:qa.invalid", "stateDir": str(tmp_path / "state"),
        "rooms": {}, "model": {"baseUrl": "http://127.0.0.1:1/v1", "model": "m"}, "mutations": mutations})
    trace_path = tmp_path / "trace.jsonl"
    matrix_bot = MatrixBot(config, Trace(trace_path), "pw")
    scripted = ScriptedClient(script)
    matrix_bot.client = scripted  # type: ignore[assignment]
    return matrix_bot, scripted, trace_path


OK = RoomSendResponse("$sent", "!r")


async def test_429s_are_retried_after_the_wait_under_one_transaction_id(tmp_path: Path, waits: list[float]) -> None:
    matrix_bot, client, trace = bot(tmp_path, [refused(429, "M_LIMIT_EXCEEDED", 700),
                                               refused(429, "M_LIMIT_EXCEEDED", 300), OK])
    assert await matrix_bot.sender.send_reply("!r", "hi", None, None) == "$sent"
    assert waits == [0.7, 0.3]
    assert len(set(client.txn_ids)) == 1 and len(client.txn_ids) == 3
    retries = [r for r in read_trace(trace) if r["type"] == "send.retry"]
    assert [(r["status"], r["retryInMs"]) for r in retries] == [(429, 700), (429, 300)]


async def test_a_dropped_connection_and_a_502_are_retried(tmp_path: Path, waits: list[float]) -> None:
    matrix_bot, client, _ = bot(tmp_path, [aiohttp.ServerDisconnectedError(), refused(502, "M_UNKNOWN"), OK])
    assert await matrix_bot.sender.send_reply("!r", "hi", None, None) == "$sent"
    assert len(waits) == 2 and len(set(client.txn_ids)) == 1


async def test_a_403_is_traced_and_not_retried(tmp_path: Path, waits: list[float]) -> None:
    matrix_bot, client, trace = bot(tmp_path, [refused(403, "M_FORBIDDEN")])
    assert await matrix_bot.sender.send_reply("!r", "hi", None, None) is None
    assert len(client.txn_ids) == 1 and waits == []
    errors = [r for r in read_trace(trace) if r["type"] == "error"]
    assert [(e["where"], e["status"], e["tries"]) for e in errors] == [("send m.room.message", 403, 1)]


async def test_retries_are_bounded(tmp_path: Path, waits: list[float]) -> None:
    matrix_bot, client, trace = bot(tmp_path, [refused(503, "M_UNKNOWN")] * (SEND_ATTEMPTS + 3))
    assert await matrix_bot.sender.send_reply("!r", "hi", None, None) is None
    assert len(client.txn_ids) == SEND_ATTEMPTS
    assert [r["tries"] for r in read_trace(trace) if r["type"] == "error"] == [SEND_ATTEMPTS]


async def test_a_wait_past_the_bound_is_not_waited_for(tmp_path: Path, waits: list[float]) -> None:
    matrix_bot, client, _ = bot(tmp_path, [refused(429, "M_LIMIT_EXCEEDED", 120_000), OK])
    assert await matrix_bot.sender.send_reply("!r", "hi", None, None) is None
    assert waits == [] and len(client.txn_ids) == 1


async def test_the_notice_is_an_m_notice(tmp_path: Path, waits: list[float]) -> None:
    sent: list[dict[str, Any]] = []
    matrix_bot, _, _ = bot(tmp_path, [OK])

    async def capture(room_id: str, event_type: str, content: dict[str, Any], tx_id: str,
                      ignore_unverified_devices: bool) -> Any:
        sent.append(content)
        return OK

    matrix_bot.client.room_send = capture  # type: ignore[method-assign]
    await matrix_bot.sender.send_notice("!r", "it failed", "$root", "$ask")
    assert sent[0]["msgtype"] == "m.notice" and sent[0]["body"] == "it failed"
    assert sent[0]["m.relates_to"]["m.in_reply_to"] == {"event_id": "$ask"}


@pytest.mark.parametrize(("mutation", "check"), [
    ("newTxnIdOnRetry", lambda client, waits: len(set(client.txn_ids)) == 2),
    ("ignoreRetryAfter", lambda client, waits: waits[0] < 0.7),
])
async def test_mutations_break_the_retry(tmp_path: Path, waits: list[float], mutation: str, check: Any) -> None:
    matrix_bot, client, _ = bot(tmp_path, [refused(429, "M_LIMIT_EXCEEDED", 700), OK], **{mutation: True})
    assert await matrix_bot.sender.send_reply("!r", "hi", None, None) == "$sent"
    assert check(client, waits)


async def test_crash_on_send_error_is_the_mutation(tmp_path: Path, waits: list[float]) -> None:
    matrix_bot, _, _ = bot(tmp_path, [refused(403, "M_FORBIDDEN")], crashOnSendError=True)
    with pytest.raises(SystemExit):
        await matrix_bot.sender.send_reply("!r", "hi", None, None)


def test_mutations_are_checked_like_any_bot_setting() -> None:
    from qa.agent.overrides import validate_agent_overrides

    assert validate_agent_overrides({"mutations.noModelRetry": True}) == []
    problems = validate_agent_overrides({"mutations.noModelRetr": True})
    assert len(problems) == 1 and problems[0].startswith("--bot-set mutations.noModelRetr: unknown key (known: ")
