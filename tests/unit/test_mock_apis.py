"""The mock provider speaking the OpenAI Responses API and the Anthropic Messages API over real HTTP: the same rules
answer both, the journal reads both alike, malformed requests get each API's error shape and a journal entry,
the key is checked as each API carries it, and provider faults come out in each API's own format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import pytest

from qa.provider.mock import MockProvider
from qa.provider.rules import parse_rules

if TYPE_CHECKING:  # imported where used: it is the heaviest import of the suite's collection, which
    import anthropic  # every xdist worker does (~2 s CPU each), and only the worker running these tests needs it

KEY = "sk-mock-key-0123456789"
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
FAULTS = """
rules:
  - {name: busy, match: {latest_user: "busy"}, error: {status: 429, message: "slow down", retry_after_s: 2}, times: 1}
  - {name: down, match: {latest_user: "down"}, error: {status: 500}}
  - {name: cut, match: {latest_user: "cut"}, reply: {text: "abcdefghijkl"}, stream_fault: {kind: cut, after_chunks: 4}}
  - {name: bad, match: {latest_user: "bad"}, reply: {text: "abcdefghijkl"},
     stream_fault: {kind: malformed, after_chunks: 4}}
  - {name: paced, match: {latest_user: "paced"}, reply: {text: "abcdef"}, stream: {pieces: 2, delay_ms: 1}}
"""
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
async def mock() -> AsyncIterator[MockProvider]:
    provider = MockProvider(parse_rules(FAULTS), api_key=KEY)
    await provider.start()
    yield provider
    await provider.stop()


def openai_client(mock: MockProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock.scoped_base_url("s"), api_key=KEY, max_retries=0, timeout=10)


def anthropic_client(mock: MockProvider, key: str = KEY) -> anthropic.AsyncAnthropic:
    import anthropic
    return anthropic.AsyncAnthropic(base_url=mock.scoped_base_url("s").removesuffix("/v1"), api_key=key,
                                    max_retries=0, timeout=10)


async def post(mock: MockProvider, path: str, body: Any, headers: dict[str, str] | None = None,
               ) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as http, http.post(f"http://{mock.host}:{mock.port}{path}", data=data,
                                                          headers=headers or {}) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()


def sse(raw: bytes) -> list[tuple[str, str]]:
    """(event name, data) of each event in a stream, data left as text (a malformed one is not JSON)."""
    out = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            out.append((lines.get("event", ""), lines["data"]))
    return out


async def test_one_rule_answers_every_api_and_the_journal_reads_them_alike(mock: MockProvider) -> None:
    ask = "reply with only this exact marker: MQA-0000abcd"
    async with openai_client(mock) as client:
        first = await client.responses.create(model="m", input=ask, instructions="be brief")
        second = await client.responses.create(model="m", previous_response_id=first.id, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "reply with only this exact marker: MQA-1"},
                                         {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}])
    async with anthropic_client(mock) as claude:
        message = await claude.messages.create(model="m", max_tokens=9, system="sys", messages=[
            {"role": "user", "content": [{"type": "text", "text": ask},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": PNG}}]}])
    assert (first.output_text, second.output_text, message.content[0].text) == ("MQA-0000abcd", "MQA-1",
                                                                                "MQA-0000abcd")
    entries = mock.scoped("s").journal
    assert [(e.api, e.rule, e.images, e.latest_user) for e in entries] == [
        ("responses", "exact-marker", 0, ask), ("responses", "exact-marker", 1,
                                                "reply with only this exact marker: MQA-1"),
        ("anthropic", "exact-marker", 1, ask)]
    # The follow-up carries the stored conversation, without the first request's instructions.
    assert entries[1].contains("MQA-0000abcd") and not entries[1].contains("be brief")
    assert entries[0].messages[0] == {"role": "system", "content": "be brief"}
    assert [e.id for e in mock.entries_for("MQA-0000abcd")] == [entries[0].id, entries[1].id, entries[2].id]
    assert [e["api"] for e in mock.journal_as_json()] == ["responses", "responses", "anthropic"]
    assert all(e.is_chat for e in entries)


async def test_tool_calls_come_out_in_each_apis_shape(mock: MockProvider) -> None:
    exec_tool = {"type": "function", "name": "exec", "parameters": {"type": "object"}}
    async with openai_client(mock) as client:
        call = await client.responses.create(model="m", input="run this exact command: ls -l", tools=[exec_tool])
        [item] = call.output
        done = await client.responses.create(model="m", previous_response_id=call.id, tools=[exec_tool], input=[
            {"type": "function_call_output", "call_id": item.call_id, "output": "total 0"}])
    assert (item.type, item.name, item.arguments) == ("function_call", "exec", '{"command": "ls -l"}')
    assert done.output_text == "total 0" and mock.journal[-1].rule == "exec-result"
    async with anthropic_client(mock) as claude:
        tool = {"name": "exec", "input_schema": {"type": "object"}}
        ask = {"role": "user", "content": "run this exact command: ls -l"}
        use = (await claude.messages.create(model="m", max_tokens=9, tools=[tool], messages=[ask])).content[0]
        result = await claude.messages.create(model="m", max_tokens=9, tools=[tool], messages=[
            ask, {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "total 1"}]}])
    assert (use.type, use.name, use.input) == ("tool_use", "exec", {"command": "ls -l"})
    assert use.id.startswith("toolu_mock") and result.content[0].text == "total 1"
    assert mock.journal[-1].tools == ["exec"] and mock.journal[-1].messages[-1]["role"] == "tool"


@pytest.mark.parametrize(("path", "body", "headers", "status", "expected"), [
    ("/v1/responses", b"{nope", {"Authorization": f"Bearer {KEY}"}, 400,
     {"error": {"message": "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
                "type": "invalid_request_error", "param": None, "code": None}}),
    ("/v1/responses", {"model": "m"}, {"Authorization": f"Bearer {KEY}"}, 400,
     {"error": {"message": "Missing required parameter: 'input'.", "type": "invalid_request_error",
                "param": "input", "code": "missing_required_parameter"}}),
    ("/v1/responses", {"model": "m", "input": "x", "previous_response_id": "resp_gone"},
     {"Authorization": f"Bearer {KEY}"}, 400,
     {"error": {"message": "Previous response with id 'resp_gone' not found.", "type": "invalid_request_error",
                "param": "previous_response_id", "code": "previous_response_not_found"}}),
    ("/v1/responses", {"model": "m", "input": "x"}, {"Authorization": "Bearer wrong"}, 401,
     {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                "code": "invalid_api_key"}}),
    ("/v1/messages", b"{nope", ANTHROPIC_HEADERS, 400,
     {"type": "error", "error": {"type": "invalid_request_error",
                                 "message": "There was an error parsing the body of your request: it is not valid "
                                            "JSON."}}),
    ("/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, ANTHROPIC_HEADERS, 400,
     {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     {"x-api-key": KEY}, 400,
     {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"}}),
    ("/v1/messages", {}, {"anthropic-version": "2023-06-01"}, 401,
     {"type": "error", "error": {"type": "authentication_error", "message": "x-api-key header is required"}}),
    ("/v1/messages", {}, {"x-api-key": "wrong", "anthropic-version": "2023-06-01"}, 401,
     {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    ("/v1/messages/count_tokens", {}, ANTHROPIC_HEADERS, 404,
     {"type": "error", "error": {"type": "not_found_error",
                                 "message": "Invalid URL (POST /v1/messages/count_tokens)"}}),
])
async def test_malformed_requests_get_the_apis_error_shape_and_a_journal_entry(
        mock: MockProvider, path: str, body: Any, headers: dict[str, str], status: int, expected: Any) -> None:
    got, response_headers, raw = await post(mock, path, body, headers)
    assert (got, json.loads(raw)) == (status, expected)
    assert response_headers["x-request-id"] == mock.journal[-1].id
    entry = mock.journal[-1]
    assert (entry.path, entry.status, entry.state) == (path, status, "done") and entry.error is not None
    assert "Traceback" not in raw.decode()


async def test_a_bearer_token_is_as_good_as_x_api_key_and_rejected_requests_are_journaled(mock: MockProvider) -> None:
    status, _, _ = await post(mock, "/v1/messages", {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hello"}]}, {"Authorization": f"Bearer {KEY}", "anthropic-version": "x"})
    assert status == 200 and mock.journal[-1].reply is not None
    status, _, _ = await post(mock, "/v1/messages", {"model": "m", "max_tokens": 0, "stream": True, "messages": [
        {"role": "user", "content": "keep me"}]}, ANTHROPIC_HEADERS)
    entry = mock.journal[-1]
    assert status == 400 and entry.latest_user == "keep me" and entry.stream and entry.model == "m"


async def test_a_response_not_stored_cannot_be_continued(mock: MockProvider) -> None:
    async with openai_client(mock) as client:
        first = await client.responses.create(model="m", input="hello", store=False)
        with pytest.raises(openai.BadRequestError, match="not found"):
            await client.responses.create(model="m", input="again", previous_response_id=first.id)
    assert first.store is False and mock.journal[-1].status == 400


async def test_errors_of_a_rule_come_back_in_each_apis_shape_with_retry_after(mock: MockProvider) -> None:
    import anthropic
    async with openai_client(mock) as client:
        with pytest.raises(openai.RateLimitError) as limited:
            await client.responses.create(model="m", input="busy")
        assert limited.value.response.headers["Retry-After"] == "2"
        assert (await client.responses.create(model="m", input="busy")).output_text == "mock: no rule matched"
    async with anthropic_client(mock) as claude:
        with pytest.raises(anthropic.InternalServerError) as down:
            await claude.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "down"}])
        assert down.value.body == {"type": "error", "error": {"type": "api_error", "message": "mock provider error"}}
        with pytest.raises(anthropic.RateLimitError) as busy:
            await claude.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "busy too"}])
        assert busy.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    faults = [(e.api, e.status, e.fault) for e in mock.journal if e.fault]
    assert faults == [("responses", 429, "error 429 retry-after 2s"), ("anthropic", 500, "error 500"),
                      ("anthropic", 429, "error 429 retry-after 2s")]


@pytest.mark.parametrize(("path", "body", "headers", "first_events"), [
    ("/v1/responses", {"model": "m", "input": "cut", "stream": True}, {"Authorization": f"Bearer {KEY}"},
     ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "cut"}]},
     ANTHROPIC_HEADERS, ["message_start", "ping", "content_block_start", "content_block_delta"]),
])
async def test_a_cut_stream_stops_after_its_events_in_the_apis_format(
        mock: MockProvider, path: str, body: Any, headers: dict[str, str], first_events: list[str]) -> None:
    with pytest.raises(aiohttp.ClientError):
        await post(mock, path, body, headers)
    assert mock.journal[-1].fault == "stream cut after 4 chunk(s)"
    # What arrived before the cut, read the way a client that keeps what it got would.
    async with aiohttp.ClientSession() as http, http.post(f"http://{mock.host}:{mock.port}{path}", json=body,
                                                          headers=headers) as response:
        got = b""
        try:
            async for piece in response.content.iter_any():
                got += piece
        except aiohttp.ClientError:
            pass
    assert [name for name, _ in sse(got)] == first_events


@pytest.mark.parametrize(("path", "body", "headers", "last"), [
    ("/v1/responses", {"model": "m", "input": "bad", "stream": True}, {"Authorization": f"Bearer {KEY}"},
     "response.completed"),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "bad"}]},
     ANTHROPIC_HEADERS, "message_stop"),
])
async def test_a_malformed_event_sits_in_the_apis_stream(
        mock: MockProvider, path: str, body: Any, headers: dict[str, str], last: str) -> None:
    status, response_headers, raw = await post(mock, path, body, headers)
    assert status == 200 and response_headers["content-type"].startswith("text/event-stream")
    events = sse(raw)
    broken = [i for i, (_, data) in enumerate(events) if not data.endswith("}")]
    assert len(broken) == 1 and broken[0] == 4, events
    assert events[-1][0] == last and b"[DONE]" not in raw
    assert mock.journal[-1].fault == "malformed chunk after 4 chunk(s)"


async def test_the_sdks_see_the_broken_streams_as_errors(mock: MockProvider) -> None:
    async with openai_client(mock) as client:
        with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for a cut or a malformed stream
            async with client.responses.stream(model="m", input="cut") as events:
                await events.get_final_response()
    async with anthropic_client(mock) as claude:
        with pytest.raises(Exception):  # noqa: B017
            async with claude.messages.stream(model="m", max_tokens=5, messages=[
                    {"role": "user", "content": "bad"}]) as events:
                await events.get_final_message()


async def test_a_paced_stream_and_a_plain_fault(mock: MockProvider) -> None:
    async with anthropic_client(mock) as claude, claude.messages.stream(model="m", max_tokens=5, messages=[
            {"role": "user", "content": "paced"}]) as events:
        pieces = [text async for text in events.text_stream]
    assert pieces == ["abc", "def"] and mock.journal[-1].chunk_delay_ms == 1
    with pytest.raises(aiohttp.ClientError):
        await post(mock, "/v1/messages", {"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "cut"}]}, ANTHROPIC_HEADERS)
    status, _, raw = await post(mock, "/v1/responses", {"model": "m", "input": "bad"},
                                {"Authorization": f"Bearer {KEY}"})
    assert status == 200 and raw.startswith(b'{"id": "resp_mock-') and not raw.endswith(b"}")


async def test_the_model_list_is_in_the_asking_clients_shape(mock: MockProvider) -> None:
    import anthropic
    async with anthropic_client(mock) as claude:
        models = await claude.models.list()
        assert [m.id for m in models.data] == ["mock-model"] and models.data[0].type == "model"
        assert (await claude.models.retrieve("mock-model")).display_name == "mock-model"
        with pytest.raises(anthropic.NotFoundError) as missing:
            await claude.models.retrieve("other")
        assert missing.value.body["error"]["type"] == "not_found_error"
    async with openai_client(mock) as client:
        assert [m.owned_by for m in (await client.models.list()).data] == ["matrix-qa-mock"]
