"""Record and replay for the OpenAI Responses API and the Anthropic Messages API, over real HTTP with the real SDKs:
record through the proxy against the stand-in model of tests/openai_standin.py, stop it, replay with new markers.
No homeserver, no bot."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
import pytest_asyncio

from qa.provider import cassette as cassettes
from qa.provider.placeholders import scope_values
from qa.provider.recorder import STAND_IN_KEY, RecordingProxy
from qa.provider.replay import ReplayProvider, load_cassettes, rerecord_hint
from qa.shared.markers import TOKEN_RE, MarkerFactory
from qa.shared.redact import scan_for_secrets
from tests.openai_standin import OpenAIStandIn

if TYPE_CHECKING:  # imported where used: it is the heaviest import of the suite's collection, which
    import anthropic  # every xdist worker does (~2 s CPU each), and only the worker running these tests needs it

PARAMETERS = {"type": "object", "properties": {"command": {"type": "string"}}}
EXEC_RESPONSES = {"type": "function", "name": "exec", "description": "run it", "parameters": PARAMETERS}
EXEC_ANTHROPIC = {"name": "exec", "description": "run it", "input_schema": PARAMETERS}
RUN_ONE, RUN_TWO = "20261201T000000Z-aaaaaa", "20261202T000000Z-bbbbbb"
SCOPES = [("responses", True), ("responses", False), ("anthropic", True), ("anthropic", False)]
# One recording serves the module: the tests read it, and replay it on their own providers.
# The proxy's and the SDKs' timeouts only stop a hang; nothing here checks timing. The stand-in, the proxy and the
# SDKs share this one process's event loop, and a loaded machine can starve it for seconds: with 10 s the proxy's
# read timeout fired mid-stream (1-2 of 3 runs at load ~17), and the SDK saw its 502 inside the streamed body.
PATIENCE_S = 120
pytestmark = pytest.mark.asyncio(loop_scope="module")


def values(run_id: str, scope: str) -> dict[str, str]:
    return scope_values(MarkerFactory(run_id).child(scope), run_id)


def scope_name(api: str, stream: bool) -> str:
    return f"{api}-{'streamed' if stream else 'plain'}"


async def _respond(client: openai.AsyncOpenAI, stream: bool, **kwargs: Any) -> Any:
    if not stream:
        return await client.responses.create(model="standin-1", **kwargs)
    async with client.responses.stream(model="standin-1", **kwargs) as events:
        async for _event in events:
            pass
        return await events.get_final_response()


async def converse_responses(base_url: str, v: dict[str, str], stream: bool) -> list[Any]:
    """A Responses bot: a marker turn, a follow-up on `previous_response_id`, an exec call and its output."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=STAND_IN_KEY, max_retries=0, timeout=PATIENCE_S)
    try:
        first = await _respond(client, stream, instructions="Answer briefly.",
                               input=f"mqa-bot-x-{v['run']}: reply with only this exact marker: {v['token']}")
        again = {"type": "input_text", "text": f"reply with only this exact marker: {v['token3']}"}
        second = await _respond(client, stream, previous_response_id=first.id, instructions="Answer briefly.",
                                input=[{"role": "user", "content": [again]}])
        call = await _respond(client, stream, input=f"run this exact command: printf {v['token2']}",
                              tools=[EXEC_RESPONSES])
        [item] = call.output
        output = {"type": "function_call_output", "call_id": item.call_id, "output": v["token2"]}
        result = await _respond(client, stream, previous_response_id=call.id, tools=[EXEC_RESPONSES], input=[output])
    finally:
        await client.close()
    return [first.output_text, second.output_text, (item.type, item.name, item.arguments), result.output_text]


async def _message(client: anthropic.AsyncAnthropic, stream: bool, **kwargs: Any) -> Any:
    if not stream:
        return await client.messages.create(model="standin-1", max_tokens=200, **kwargs)
    async with client.messages.stream(model="standin-1", max_tokens=200, **kwargs) as events:
        return await events.get_final_message()


async def converse_anthropic(base_url: str, v: dict[str, str], stream: bool) -> list[Any]:
    """An Anthropic bot: a marker turn with a system prompt, an exec `tool_use` and its `tool_result`."""
    import anthropic
    client = anthropic.AsyncAnthropic(base_url=base_url.removesuffix("/v1"), api_key=STAND_IN_KEY, max_retries=0,
                                      timeout=PATIENCE_S)
    try:
        first = await _message(client, stream, system="Answer briefly.", messages=[
            {"role": "user", "content": f"mqa-bot-x-{v['run']}: reply with only this exact marker: {v['token']}"}])
        ask = {"role": "user", "content": f"run this exact command: printf {v['token2']}"}
        call = await _message(client, stream, tools=[EXEC_ANTHROPIC], messages=[ask])
        [use] = call.content
        result = await _message(client, stream, tools=[EXEC_ANTHROPIC], messages=[
            ask, {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": v["token2"]}]}])
    finally:
        await client.close()
    return [first.content[0].text, (use.type, use.name, use.input), call.stop_reason, result.content[0].text]


async def converse(api: str, base_url: str, v: dict[str, str], stream: bool) -> list[Any]:
    talk = converse_responses if api == "responses" else converse_anthropic
    return await talk(base_url, v, stream)


def expected(api: str, v: dict[str, str]) -> list[Any]:
    command = {"command": f"printf {v['token2']}"}
    if api == "responses":
        return [v["token"], v["token3"], ("function_call", "exec", '{"command": "printf ' + v["token2"] + '"}'),
                v["token2"]]
    return [v["token"], ("tool_use", "exec", command), "tool_use", v["token2"]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each API recorded streamed and plain, each in its own scope; the stand-in is stopped afterwards."""
    directory = tmp_path_factory.mktemp("cassettes")
    key = "sk-standin-" + secrets.token_hex(16)
    standin = OpenAIStandIn(key)
    await standin.start()
    proxy = RecordingProxy(base_url=standin.base_url, api_key=key, model="standin-1", timeout_s=PATIENCE_S,
                           directory=directory, secrets=[key], endpoint="standin")
    await proxy.start()
    answers = {}
    try:
        for api, stream in SCOPES:
            scope = scope_name(api, stream)
            proxy.bind_scope(scope, values(RUN_ONE, scope))
            answers[scope] = await converse(api, proxy.scoped_base_url(scope), values(RUN_ONE, scope), stream)
            proxy.finish_scope(scope, "pass")
    finally:
        await proxy.stop()
        await standin.stop()
    return {"dir": directory, "key": key, "answers": answers, "standin": standin}


async def test_the_proxy_signs_each_api_its_own_way_and_relays_the_answers(recorded: dict[str, Any]) -> None:
    standin = recorded["standin"]
    assert set(standin.auth_seen) == {f"Bearer {recorded['key']}", f"x-api-key {recorded['key']}"}
    assert set(standin.apis_seen) == {"responses", "anthropic"}
    for api, stream in SCOPES:
        scope = scope_name(api, stream)
        assert recorded["answers"][scope] == expected(api, values(RUN_ONE, scope)), scope


async def test_cassettes_name_the_api_and_hold_no_key_and_no_run_value(recorded: dict[str, Any]) -> None:
    directory = recorded["dir"]
    assert scan_for_secrets(directory, [recorded["key"], STAND_IN_KEY]) == []
    for api, stream in SCOPES:
        scope = scope_name(api, stream)
        text = (directory / f"{scope}.yaml").read_text()
        assert not TOKEN_RE.search(text) and "aaaaaa" not in text and "x-api-key" not in text, scope
        loaded = cassettes.load(directory / f"{scope}.yaml")
        assert loaded.api == api and all(e.request["api"] == api for e in loaded.exchanges)
        assert all((e.chunks is not None) == stream for e in loaded.exchanges)
        # The system prompt (instructions / system) comes first, in the common view.
        assert loaded.exchanges[0].request["messages"][0] == {"role": "system", "content": "Answer briefly."}


async def test_a_previous_response_id_is_recorded_as_the_conversation_it_continues(recorded: dict[str, Any]) -> None:
    loaded = cassettes.load(recorded["dir"] / "responses-streamed.yaml")
    follow_up = loaded.exchanges[1].request
    assert "previous_response_id" not in follow_up
    assert [m["role"] for m in follow_up["messages"]] == ["system", "user", "assistant", "user"]
    assert follow_up["messages"][2]["content"] == "{token}"
    tool_result = loaded.exchanges[3].request["messages"]
    assert tool_result[-1] == {"role": "tool", "tool_call_id": tool_result[-2]["tool_calls"][0]["id"],
                               "content": "{token2}"}
    assert loaded.exchanges[1].session == loaded.exchanges[0].session, "a continued conversation is one session"


async def test_replay_answers_a_new_run_in_each_api(recorded: dict[str, Any]) -> None:
    names = [scope_name(api, stream) for api, stream in SCOPES]
    provider = ReplayProvider(load_cassettes(recorded["dir"], names), recorded["dir"], speed=None)
    await provider.start()
    try:
        for api, stream in SCOPES:
            scope = scope_name(api, stream)
            v = values(RUN_TWO, scope)
            provider.bind_scope(scope, v)
            assert await converse(api, provider.scoped_base_url(scope), v, stream) == expected(api, v), scope
            assert provider.misses(scope) == [] and provider.unused(scope) == 0, provider.misses(scope)
            journal = provider.scoped(scope).journal
            assert {e.api for e in journal} == {api} and all(e.status == 200 for e in journal)
            assert [e.rule for e in journal] == [f"{scope}.yaml #{n}" for n in range(1, len(journal) + 1)]
            assert provider.api_of(scope) == api
    finally:
        await provider.stop()


async def test_a_request_in_another_api_misses_with_the_api_in_the_diff(recorded: dict[str, Any]) -> None:
    provider = ReplayProvider(load_cassettes(recorded["dir"], ["anthropic-plain"]), recorded["dir"], speed=None)
    await provider.start()
    try:
        v = values(RUN_TWO, "anthropic-plain")
        provider.bind_scope("anthropic-plain", v)
        with pytest.raises(openai.BadRequestError, match="matches no recorded exchange"):
            await converse_responses(provider.scoped_base_url("anthropic-plain"), v, stream=False)
        (miss, *_) = provider.misses("anthropic-plain")
        assert "-api: anthropic" in miss.diff and "+api: responses" in miss.diff
    finally:
        await provider.stop()


async def test_the_rerecord_hint_names_the_api_and_its_key() -> None:
    hint = rerecord_hint(Path("c"), "s", "claude-x", "anthropic")
    assert "--provider live --api anthropic --model claude-x --record c --scenario s" in hint
    assert "(key in ANTHROPIC_API_KEY)" in hint
    assert "--api responses" in rerecord_hint(Path("c"), "s", "m", "responses")
    chat = rerecord_hint(Path("c"), "s", "m")
    assert "--api" not in chat and "(key in OPENAI_API_KEY)" in chat
