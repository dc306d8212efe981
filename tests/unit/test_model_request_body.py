"""The embedded agent's model request (qa.agent.model): it goes through the SDK's generic `post` with a body of our
own and reads the stream's chunks as the JSON the SDK decoded. What goes out (body, byte for byte, and headers) is
what `chat.completions.create` sends for the same conversation and tools given as parameters, and what the agent
makes of a stream is what it made of the SDK's typed chunks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from qa.agent.config import ModelConfig
from qa.agent.model import ModelClient, ModelFailed, ModelReply, ToolCall, read_chunk
from qa.agent.tls import sdk_http_library

CHUNK = {"id": "p", "object": "chat.completion.chunk", "created": 0, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a bot."},
    {"role": "user", "content": "héllo \u2603 \"quoted\"", "name": "alice"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": "{\"cmd\": \"ls\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "a\nb"},
    {"role": "user", "content": [{"type": "text", "text": "look"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
]
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "exec", "description": "run", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                                                       "required": ["cmd"]}}}]
BASE = "http://sdk.invalid/v1"


def _events(chunks: list[Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _answering(events: bytes, requests: list[Any]) -> Any:
    http = sdk_http_library()

    def answer(request: Any) -> Any:
        requests.append(request)
        return http.Response(200, content=events, headers={"content-type": "text/event-stream"})

    return http.MockTransport(answer)


def _agent(events: bytes, requests: list[Any]) -> ModelClient:
    """The agent's model client, its SDK client talking to an in-memory transport instead of a provider."""
    model = ModelClient(ModelConfig(baseUrl=BASE, model="m", maxRetries=0), "k")
    http = sdk_http_library().AsyncClient(transport=_answering(events, requests))
    model._client = openai.AsyncOpenAI(api_key="k", base_url=BASE, max_retries=0, http_client=http)
    return model


async def _ask_agent(events: bytes, tools: list[dict[str, Any]] | None = None,
                     requests: list[Any] | None = None) -> ModelReply:
    model = _agent(events, requests if requests is not None else [])
    try:
        return await model.complete(MESSAGES, tools)
    finally:
        await model.close()


async def _ask_sdk(events: bytes, arguments: dict[str, Any], requests: list[Any]) -> ModelReply:
    """The reference: `chat.completions.create` with parameters, its typed chunks read as the agent read them
    before it took the JSON."""
    http = sdk_http_library()
    async with openai.AsyncOpenAI(api_key="k", base_url=BASE, max_retries=0,
                                  http_client=http.AsyncClient(transport=_answering(events, requests))) as client:
        reply, parts, calls = ModelReply(), [], {}
        async for chunk in await client.chat.completions.create(**arguments):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.delta.content:
                parts.append(choice.delta.content)
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, ToolCall(id="", name="", arguments=""))
                if call.id:
                    slot.id = call.id
                if call.function and call.function.name:
                    slot.name += call.function.name
                if call.function and call.function.arguments:
                    slot.arguments += call.function.arguments
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
        reply.text, reply.tool_calls = "".join(parts), [calls[i] for i in sorted(calls)]
        return reply


def test_the_request_is_the_one_the_sdk_sends_for_parameters() -> None:
    for tools in (TOOLS, None, []):
        as_parameters: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}
        if tools:
            as_parameters["tools"] = tools
        ours: list[Any] = []
        theirs: list[Any] = []
        asyncio.run(_ask_agent(_events([CHUNK]), tools, ours))
        asyncio.run(_ask_sdk(_events([CHUNK]), as_parameters, theirs))
        assert len(ours) == len(theirs) == 1
        assert ours[0].content == theirs[0].content, tools
        assert (ours[0].method, ours[0].url) == (theirs[0].method, theirs[0].url)
        # Only the per-request retry bookkeeping may differ; none does today.
        assert dict(ours[0].headers) == dict(theirs[0].headers), tools


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {**CHUNK, "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}


CALL_PIECES = [
    _chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "ex", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"name": "ec", "arguments": "{\"cmd\": "}}]}),
    _chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                            "function": {"name": "exec", "arguments": "{}"}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"ls\"}"}}]}),
    _chunk({}, "tool_calls"),
]
STREAMS = {
    "text in pieces": [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"}),
                       _chunk({"content": "lo"}), _chunk({}, "stop")],
    "tool calls in pieces, two calls": CALL_PIECES,
    "a usage chunk without choices": [_chunk({"content": "ok"}), _chunk({}, "stop"),
                                      {**CHUNK, "choices": [], "usage": {"prompt_tokens": 1}}],
    "text and a call": [_chunk({"content": "let me see"}), *CALL_PIECES],
    "finish with text in the same chunk": [_chunk({"content": "all at once"}, "length")],
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_stream_reads_as_the_sdk_typed_chunks_read(name: str) -> None:
    events = _events(STREAMS[name])
    reference = asyncio.run(_ask_sdk(events, {"model": "m", "messages": MESSAGES, "stream": True}, []))
    assert asyncio.run(_ask_agent(events)) == reference
    assert reference.finish_reason and (reference.text or reference.tool_calls)  # the case says something


def test_a_stream_without_a_finish_reason_is_cut_short_as_before() -> None:
    with pytest.raises(ModelFailed) as failed:
        asyncio.run(_ask_agent(_events([_chunk({"content": "half"})])))
    assert failed.value.reason == "the reply stream ended early after 1 attempt"


@pytest.mark.parametrize(("chunk", "reason"), [
    ([1, 2], "AttributeError after 1 attempt"),
    ({"choices": [{"index": 0}]}, "AttributeError after 1 attempt"),
    ({"choices": [{"index": 0, "delta": {"tool_calls": [{"id": "no-index"}]}}]},
     "the reply stream ended early after 1 attempt"),
])
def test_a_chunk_of_the_wrong_shape_fails_as_it_did_with_typed_chunks(chunk: Any, reason: str) -> None:
    """What the SDK's typed chunks made of these (read on main before the agent took the JSON): a missing field
    read as None."""
    with pytest.raises(ModelFailed) as failed:
        asyncio.run(_ask_agent(_events([chunk])))
    assert failed.value.reason == reason


def test_read_chunk_returns_the_finish_reason_and_folds_the_pieces() -> None:
    calls: dict[int, ToolCall] = {}
    parts: list[str] = []
    assert read_chunk(_chunk({"content": "a"}), calls, parts) is None
    assert read_chunk({"choices": None}, calls, parts) is None
    assert read_chunk(_chunk({"content": "b"}, "stop"), calls, parts) == "stop"
    assert parts == ["a", "b"] and calls == {}
