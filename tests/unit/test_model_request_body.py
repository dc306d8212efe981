"""The embedded agent's model request (qa.agent.model.request_arguments): the body the SDK sends is the one it
would send for the same conversation and tools given as parameters, byte for byte."""

from __future__ import annotations

import json
from typing import Any

import openai

from qa.agent.model import request_arguments
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


def _sent(arguments: dict[str, Any]) -> bytes:
    http = sdk_http_library()
    bodies: list[bytes] = []

    def answer(request: Any) -> Any:
        bodies.append(request.content)
        body = b"data: " + json.dumps(CHUNK).encode() + b"\n\ndata: [DONE]\n\n"
        return http.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with openai.OpenAI(api_key="k", base_url="http://sdk.invalid/v1", max_retries=0,
                       http_client=http.Client(transport=http.MockTransport(answer))) as client:
        for _ in client.chat.completions.create(**arguments):
            pass
    assert len(bodies) == 1
    return bodies[0]


def test_the_body_is_the_one_the_sdk_sends_for_parameters() -> None:
    for tools in (TOOLS, None, []):
        as_parameters: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}
        if tools:
            as_parameters["tools"] = tools
        assert _sent(request_arguments("m", MESSAGES, tools)) == _sent(as_parameters), tools
