"""The recording proxy and the replay provider over real HTTP, driven with the openai SDK: record against the
stand-in model of tests/openai_standin.py, stop it, replay with new markers. No homeserver, no bot."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import openai
import pytest

from qa.provider import cassette as cassettes
from qa.provider.placeholders import scope_values
from qa.provider.recorder import STAND_IN_KEY, RecordingProxy
from qa.provider.replay import ReplayProvider, load_cassettes, parse_speed
from qa.shared.markers import TOKEN_RE, MarkerFactory
from qa.shared.redact import scan_for_secrets
from tests.openai_standin import OpenAIStandIn

PARAMETERS = {"type": "object", "properties": {"command": {"type": "string"}}}
EXEC = {"type": "function", "function": {"name": "exec", "description": "run it", "parameters": PARAMETERS}}
RUN_ONE, RUN_TWO = "20261201T000000Z-aaaaaa", "20261202T000000Z-bbbbbb"


# The proxy's and the SDK's timeouts only stop a hang (see test_record_replay_apis: one process's event loop runs
# the stand-in, the proxy and the SDK, and a loaded machine can starve it for longer than 10 s).
PATIENCE_S = 120


def values(run_id: str, scope: str) -> dict[str, str]:
    return scope_values(MarkerFactory(run_id).child(scope), run_id)


async def converse(base_url: str, v: dict[str, str], *, prompt: str = "reply with only this exact marker: {token}",
                   stream: bool = True) -> list[Any]:
    """A bot's conversation: a marker turn, then an exec tool call and its result."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=STAND_IN_KEY, max_retries=0, timeout=PATIENCE_S)
    out: list[Any] = []
    try:
        user = f"mqa-bot-x-{v['run']}: " + prompt.replace("{token}", v["token"])
        out.append(await _ask(client, [{"role": "user", "content": user}], None, stream))
        command = [{"role": "user", "content": f"run this exact command: printf {v['token2']}"}]
        call = await _ask(client, command, [EXEC], stream)
        out.append(call)
        tool_call = {"id": call["calls"][0][0], "type": "function",
                     "function": {"name": "exec", "arguments": call["calls"][0][2]}}
        out.append(await _ask(client, [*command, {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                                       {"role": "tool", "tool_call_id": tool_call["id"], "content": v["token2"]}],
                              [EXEC], stream))
    finally:
        await client.close()
    return out


async def _ask(client: openai.AsyncOpenAI, messages: list[Any], tools: Any, stream: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": "standin-1", "messages": messages, "stream": stream}
    if tools:
        kwargs["tools"] = tools
    if not stream:
        done = await client.chat.completions.create(**kwargs)
        message = done.choices[0].message
        return {"text": message.content, "pieces": None, "finish": done.choices[0].finish_reason,
                "calls": [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]}
    pieces, calls, finish = [], {}, None
    async for chunk in await client.chat.completions.create(**kwargs):
        choice = chunk.choices[0]
        if choice.delta.content is not None:
            pieces.append(choice.delta.content)
        for c in choice.delta.tool_calls or []:
            slot = calls.setdefault(c.index, ["", "", ""])
            slot[0] = c.id or slot[0]
            slot[1] += (c.function.name or "") if c.function else ""
            slot[2] += (c.function.arguments or "") if c.function else ""
        finish = choice.finish_reason or finish
    return {"text": "".join(pieces) if pieces else None, "pieces": len(pieces), "finish": finish,
            "calls": [tuple(calls[i]) for i in sorted(calls)]}


@pytest.fixture
async def recorded(tmp_path: Path) -> dict[str, Any]:
    """One scope recorded streaming and one not, through the proxy; the stand-in is stopped afterwards."""
    key = "sk-standin-" + secrets.token_hex(16)
    standin = OpenAIStandIn(key)
    await standin.start()
    proxy = RecordingProxy(base_url=standin.base_url, api_key=key, model="standin-1", timeout_s=PATIENCE_S,
                           directory=tmp_path / "cassettes", secrets=[key], endpoint="standin")
    await proxy.start()
    answers = {}
    try:
        for scope, stream in (("streamed", True), ("plain", False)):
            proxy.bind_scope(scope, values(RUN_ONE, scope))
            answers[scope] = await converse(proxy.scoped_base_url(scope), values(RUN_ONE, scope), stream=stream)
            proxy.finish_scope(scope, "pass")
    finally:
        await proxy.stop()
        await standin.stop()
    return {"dir": tmp_path / "cassettes", "key": key, "answers": answers, "standin": standin}


async def test_the_proxy_relays_and_the_bot_never_holds_the_key(recorded: dict[str, Any]) -> None:
    standin = recorded["standin"]
    # Every request reached the model with the real key, though the client sent only the stand-in key.
    assert standin.auth_seen and set(standin.auth_seen) == {f"Bearer {recorded['key']}"}
    v = values(RUN_ONE, "streamed")
    marker_turn, call_turn, result_turn = recorded["answers"]["streamed"]
    assert marker_turn["text"] == v["token"] and marker_turn["pieces"] > 2
    assert call_turn["calls"][0][1] == "exec" and call_turn["finish"] == "tool_calls"
    assert result_turn["text"] == v["token2"]


async def test_cassettes_hold_no_key_and_no_run_value(recorded: dict[str, Any]) -> None:
    directory = recorded["dir"]
    assert sorted(p.name for p in directory.iterdir()) == ["plain.yaml", "streamed.yaml"]
    assert scan_for_secrets(directory, [recorded["key"], STAND_IN_KEY]) == []
    for scope in ("plain", "streamed"):
        text = (directory / f"{scope}.yaml").read_text()
        assert not TOKEN_RE.search(text), scope
        assert "aaaaaa" not in text and "Bearer" not in text and "uthorization" not in text
        assert "{token}" in text and "{run}" in text


async def test_streamed_chunks_keep_their_boundaries(recorded: dict[str, Any]) -> None:
    loaded = cassettes.load(recorded["dir"] / "streamed.yaml")
    first = loaded.exchanges[0]
    assert first.request["stream"] is True and first.response["text"] == "{token}"
    assert len(first.chunks or []) >= 3  # role, the marker (whole, in one piece), the finish
    assert [c["at_ms"] for c in first.chunks or []] == sorted(c["at_ms"] for c in first.chunks or [])
    plain = cassettes.load(recorded["dir"] / "plain.yaml")
    assert plain.exchanges[1].response["tool_calls"][0]["name"] == "exec" and plain.exchanges[0].chunks is None


async def test_replay_answers_a_new_run_with_its_own_markers(recorded: dict[str, Any]) -> None:
    loaded = load_cassettes(recorded["dir"], ["streamed", "plain", "absent"])
    assert sorted(loaded) == ["plain", "streamed"]
    provider = ReplayProvider(loaded, recorded["dir"], speed=None)
    await provider.start()
    try:
        assert provider.skip_reason("absent") is not None and provider.skip_reason("plain") is None
        for scope, stream in (("streamed", True), ("plain", False)):
            v = values(RUN_TWO, scope)
            provider.bind_scope(scope, v)
            marker_turn, call_turn, result_turn = await converse(provider.scoped_base_url(scope), v, stream=stream)
            assert marker_turn["text"] == v["token"]
            assert call_turn["calls"][0][1:] == ("exec", '{"command": "printf ' + v["token2"] + '"}')
            assert result_turn["text"] == v["token2"]
            assert provider.misses(scope) == [] and provider.unused(scope) == 0
            # The journal says which exchange answered each request, as the mock's names its rule.
            journal = [e for e in provider.scoped(scope).journal if e.is_chat]
            assert [e.rule for e in journal] == [f"{scope}.yaml #1", f"{scope}.yaml #2", f"{scope}.yaml #3"]
            assert journal[1].reply is not None and journal[1].reply.tool_calls[0].name == "exec"
        # Streamed answers keep their piece count on replay.
        assert marker_turn is not None
    finally:
        await provider.stop()


async def test_a_changed_prompt_is_a_miss_with_the_diff(recorded: dict[str, Any]) -> None:
    provider = ReplayProvider(load_cassettes(recorded["dir"], ["streamed"]), recorded["dir"], speed=None)
    await provider.start()
    try:
        v = values(RUN_TWO, "streamed")
        provider.bind_scope("streamed", v)
        with pytest.raises(openai.BadRequestError, match="matches no recorded exchange"):
            await converse(provider.scoped_base_url("streamed"), v, prompt="say only this marker: {token}")
        (miss,) = provider.misses("streamed")
        assert miss.nearest is not None and miss.nearest.index == 1
        assert "-  content: 'mqa-bot-x-{run}: reply with only this exact marker: {token}'" in miss.diff
        assert "+  content: 'mqa-bot-x-{run}: say only this marker: {token}'" in miss.diff
        assert provider.scoped("streamed").journal[-1].unmatched
        assert provider.unused("streamed") == 3
    finally:
        await provider.stop()


async def test_replay_keeps_the_recorded_pace_unless_told_otherwise(recorded: dict[str, Any]) -> None:
    loaded = load_cassettes(recorded["dir"], ["streamed"])

    def stretch(at_ms: float) -> None:
        for chunk in loaded["streamed"].exchanges[0].chunks or []:
            chunk["at_ms"] = at_ms if chunk["delta"].get("content") else chunk["at_ms"]

    async def first_turn(speed: float | None) -> float:
        provider = ReplayProvider(loaded, recorded["dir"], speed=speed)
        await provider.start()
        try:
            v = values(RUN_TWO, "streamed")
            provider.bind_scope("streamed", v)
            loop = asyncio.get_running_loop()
            began = loop.time()
            client = openai.AsyncOpenAI(base_url=provider.scoped_base_url("streamed"), api_key="x", max_retries=0)
            await _ask(client, [{"role": "user", "content": f"mqa-bot-x-{v['run']}: reply with only this exact "
                                 f"marker: {v['token']}"}], None, True)
            await client.close()
            return loop.time() - began
        finally:
            await provider.stop()

    # Paced: the marker's chunk recorded at 0.8 s comes no sooner (a lower bound: a busy machine only adds).
    stretch(800.0)
    assert await first_turn(1.0) >= 0.8
    # Unpaced: a recording whose marker came after ten minutes replays at once. Not "under 0.8 s", which a loaded
    # machine can exceed with no pacing at all: the bound only catches a replay that keeps the recorded pace.
    stretch(600_000.0)
    await asyncio.wait_for(first_turn(None), 60)


async def test_a_secret_the_model_echoes_is_redacted_from_the_cassette(tmp_path: Path) -> None:
    key, password = "sk-standin-" + secrets.token_hex(16), "bot-password-" + secrets.token_hex(8)
    standin = OpenAIStandIn(key)
    await standin.start()
    proxy = RecordingProxy(base_url=standin.base_url, api_key=key, model="standin-1", timeout_s=PATIENCE_S,
                           directory=tmp_path, secrets=[key, password])
    await proxy.start()
    try:
        proxy.bind_scope("echo", values(RUN_ONE, "echo"))
        answer = await converse(proxy.scoped_base_url("echo"), values(RUN_ONE, "echo"),
                                prompt=f"reply with only this exact marker: {password}")
        path = proxy.finish_scope("echo", "pass")
    finally:
        await proxy.stop()
        await standin.stop()
    assert answer[0]["text"] == password  # the bot saw it: it was the model's answer
    assert path is not None and scan_for_secrets(tmp_path, [key, password]) == []


def test_parse_speed() -> None:
    assert parse_speed("recorded") == 1.0 and parse_speed("fast") is None and parse_speed("2") == 2.0
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(Exception, match="--replay-speed"):
            parse_speed(bad)
