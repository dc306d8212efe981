"""OpenAI Chat Completions (`POST /v1/chat/completions`) for the mock provider: the request, its checks, the answer
plain and streamed (`data:` chunks, then `data: [DONE]`), the error shape, and the reading of a live answer.

Its messages already are the common view (qa.provider.apis.base), so they are journaled as sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qa.provider.apis.base import AnswerContext, ParsedRequest, Usage, bad_request, finish_from
from qa.provider.rules import ErrorReply, Reply


def validate(body: Any) -> ErrorReply | None:
    """The checks the real API makes that a client bug would trip; anything subtler is accepted."""
    if not isinstance(body, dict):
        return bad_request("The request body must be a JSON object.", code="invalid_type")
    for name in ("model", "messages"):
        if name not in body:
            return bad_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if not isinstance(body["model"], str):
        return bad_request("Invalid type for 'model': expected a string.", param="model", code="invalid_type")
    messages = body["messages"]
    if not isinstance(messages, list):
        return bad_request("Invalid type for 'messages': expected an array.", param="messages", code="invalid_type")
    if not messages:
        return bad_request("Invalid 'messages': empty array. Expected an array with minimum length 1.",
                           param="messages", code="empty_array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return bad_request(f"Invalid 'messages[{i}]': expected an object with a string 'role'.",
                               param=f"messages[{i}].role", code="invalid_type")
    if not isinstance(body.get("stream", False), bool | None):
        return bad_request("Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    return None


def openai_error_body(error: ErrorReply) -> dict[str, Any]:
    return error.body()


class ChatApi:
    name = "chat"
    path = "chat/completions"

    def parse(self, body: Any) -> tuple[ParsedRequest | None, ErrorReply | None]:
        """The request in the common view (as much of it as there is: a rejected request is journaled too, being
        itself a finding) and what is wrong with it, if anything."""
        problem = validate(body)
        if not isinstance(body, dict):
            return None, problem
        messages, tools, options = body.get("messages"), body.get("tools"), body.get("stream_options")
        parsed = ParsedRequest(
            api=self.name, model=body.get("model") if isinstance(body.get("model"), str) else None,
            stream=body.get("stream") is True,
            messages=[m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [],
            raw_tools=list(tools) if isinstance(tools, list) else [],
            include_usage=isinstance(options, dict) and options.get("include_usage") is True)
        return parsed, problem

    def parse_error(self) -> ErrorReply:
        return bad_request("We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.")

    def error_body(self, error: ErrorReply) -> dict[str, Any]:
        return openai_error_body(error)

    def call_id_prefix(self, number: str) -> str:
        return f"call_mock{number}"

    def response_id(self, tag: str) -> str | None:
        return None

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {"prompt_tokens": usage.input, "completion_tokens": usage.output,
                "total_tokens": usage.input + usage.output}

    def answer(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.tool_calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_from(reply, ctx)}
        return _envelope(ctx, "chat.completion") | {"choices": [choice], "usage": self.usage(ctx.usage)}

    def stream(self, ctx: AnswerContext) -> ChatStream:
        return ChatStream(ctx)

    def read_answer(self, body: Any) -> dict[str, Any]:
        """A live plain answer as the cassette keeps it: text, tool calls, finish reason (and usage)."""
        choice = (body.get("choices") or [{}])[0] if isinstance(body, dict) else {}
        message = choice.get("message") or {}
        calls = [{"id": c.get("id", ""), "name": (c.get("function") or {}).get("name", ""),
                  "arguments": (c.get("function") or {}).get("arguments", "")} for c in message.get("tool_calls") or []]
        out = {"text": message.get("content"), "tool_calls": calls, "finish_reason": choice.get("finish_reason")}
        if isinstance(body, dict) and isinstance(body.get("usage"), dict):
            out["usage"] = body["usage"]
        return out

    def event_reader(self) -> ChatEventReader:
        return ChatEventReader()


def _envelope(ctx: AnswerContext, obj: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{ctx.tag}", "object": obj, "created": ctx.created, "model": ctx.model,
            "system_fingerprint": None}


class ChatStream:
    """Each neutral chunk is one `data:` chunk of the wire format; usage, when asked for, on an extra last one."""

    trailer = b"data: [DONE]\n\n"

    def __init__(self, ctx: AnswerContext) -> None:
        self.base = _envelope(ctx, "chat.completion.chunk")
        if ctx.request.include_usage:
            self.base["usage"] = None  # as the real API does: usage only on the extra last chunk

    def start(self) -> list[bytes]:
        return []

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        out = dict(self.base)
        if "delta" in chunk:
            out["choices"] = [{"index": 0, "delta": chunk["delta"], "logprobs": None,
                               "finish_reason": chunk.get("finish_reason")}]
        else:
            out["choices"] = []
        if "usage" in chunk:
            out["usage"] = chunk["usage"]
        return [b"data: " + json.dumps(out, ensure_ascii=False).encode() + b"\n\n"]

    def finish(self) -> list[bytes]:
        return []

    def malformed(self) -> bytes:
        return b'data: {"choices": [{"delta": {"content": "unterminated\n\n'


class ChatEventReader:
    """One `data:` payload of a live stream as a cassette chunk: its delta and finish reason, or its usage."""

    response_id: str | None = None
    usage: dict[str, Any] | None = None

    def read(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        choices = data.get("choices") or []
        out: dict[str, Any] = {}
        if choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta") or {}
            out["delta"] = {k: v for k, v in delta.items() if v is not None or k == "content"}
            if choices[0].get("finish_reason"):
                out["finish_reason"] = choices[0]["finish_reason"]
        if isinstance(data.get("usage"), dict):
            out["usage"] = data["usage"]
        return [out] if out else []


CHAT = ChatApi()
