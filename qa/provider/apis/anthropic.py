"""Anthropic Messages API (`POST /v1/messages`) for the mock provider: `system`, `messages` with text, image,
`tool_use` and `tool_result` blocks, tools; the answer plain and streamed (`message_start`, `ping`,
`content_block_start`, `content_block_delta` with `text_delta` / `input_json_delta`, `content_block_stop`,
`message_delta`, `message_stop`); Anthropic's error shape `{"type": "error", "error": {"type", "message"}}`.
Pure: no I/O. The `x-api-key` and `anthropic-version` headers are the provider's to check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qa.provider.apis.base import (
    AnswerContext,
    ParsedRequest,
    Usage,
    assistant_messages,
    bad_request,
    common_content,
    finish_from,
)
from qa.provider.rules import ErrorReply, Reply

VERSION_HEADER = "anthropic-version"
KEY_HEADER = "x-api-key"
# The error type Anthropic gives a status, where it is not the default (`api_error` for 5xx, else
# `invalid_request_error`); an OpenAI-style default type of a rule is translated with it.
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}
_OPENAI_DEFAULT_TYPES = ("invalid_request_error", "server_error")
# Stop reasons and the neutral finish reasons of the cassette (Chat Completions' words), where they are not the
# default (`end_turn`, `stop`).
_STOP = {"tool_calls": "tool_use", "length": "max_tokens"}
_FINISH = {"tool_use": "tool_calls", "max_tokens": "length"}


def error_type(error: ErrorReply) -> str:
    if error.type not in _OPENAI_DEFAULT_TYPES:
        return error.type  # a rule's own type, as written
    return ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")


def _image_url(source: Any) -> str | None:
    if not isinstance(source, Mapping):
        return None
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    return str(source["url"]) if source.get("type") == "url" and source.get("url") else None


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type") == "text")
    return content if isinstance(content, str) else ""


def _blocks(role: str, blocks: list[Any]) -> list[dict[str, Any]]:
    """One message's blocks in the common view: its tool results as `tool` messages first (Anthropic puts them
    first), then the text and images, with an assistant's `tool_use` blocks as its tool calls."""
    texts: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "image" and (url := _image_url(block.get("source"))) is not None:
            images.append(url)
        elif kind == "tool_use":
            calls.append({"id": block.get("id", ""), "name": block.get("name", ""),
                          "arguments": json.dumps(block.get("input", {}), ensure_ascii=False)})
        elif kind == "tool_result":
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")),
                        "content": _result_text(block.get("content"))})
    if role == "assistant":
        return out + assistant_messages("\n".join(texts) if texts else None, calls)
    if texts or images:
        out.append({"role": role, "content": common_content(texts, images)})
    return out


def _messages(value: Any) -> tuple[list[dict[str, Any]], ErrorReply | None]:
    if not isinstance(value, list):
        return [], bad_request("messages: Input should be a valid list")
    if not value:
        return [], bad_request("messages: at least one message is required")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("user", "assistant"):
            return out, bad_request(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            out += _blocks(role, content)
        else:
            return out, bad_request(f"messages.{i}.content: Input should be a valid string or list")
    return out, None


def _system(value: Any) -> str | None:
    if isinstance(value, list):
        return "\n".join(str(b.get("text", "")) for b in value if isinstance(b, Mapping) and b.get("type") == "text")
    return value if isinstance(value, str) else None


def _check(body: dict[str, Any]) -> ErrorReply | None:
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return bad_request(f"{name}: Field required")
    if not isinstance(body["model"], str):
        return bad_request("model: Input should be a valid string")
    if isinstance(body["max_tokens"], bool) or not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return bad_request("max_tokens: Input should be a valid integer greater than or equal to 1")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        return bad_request("stream: Input should be a valid boolean")
    if body.get("system") is not None and not isinstance(body["system"], str | list):
        return bad_request("system: Input should be a valid string or list")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        return bad_request("tools: Input should be a valid list")
    return None


def _tool_input(arguments: str) -> Any:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class AnthropicApi:
    name = "anthropic"
    path = "messages"

    def parse(self, body: Any) -> tuple[ParsedRequest | None, ErrorReply | None]:
        if not isinstance(body, dict):
            return None, bad_request("The request body must be a JSON object.")
        problem = _check(body)
        messages, bad_messages = _messages(body.get("messages", []))
        tools = body.get("tools")
        parsed = ParsedRequest(api=self.name, model=body.get("model") if isinstance(body.get("model"), str) else None,
                               stream=body.get("stream") is True, messages=messages,
                               raw_tools=list(tools) if isinstance(tools, list) else [],
                               system=_system(body.get("system")))
        return parsed, problem or bad_messages

    def parse_error(self) -> ErrorReply:
        return bad_request("There was an error parsing the body of your request: it is not valid JSON.")

    def error_body(self, error: ErrorReply) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error_type(error), "message": error.message}}

    def missing_version(self) -> ErrorReply:
        return bad_request(f"{VERSION_HEADER}: header is required")

    def call_id_prefix(self, number: str) -> str:
        return f"toolu_mock{number}"

    def response_id(self, tag: str) -> str | None:
        return None

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {"input_tokens": usage.input, "output_tokens": usage.output}

    def message(self, ctx: AnswerContext, content: list[dict[str, Any]], stop: str | None,
                usage: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"msg_{ctx.tag}", "type": "message", "role": "assistant", "model": ctx.model,
                "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}

    def answer(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        content: list[dict[str, Any]] = [] if reply.text is None else [{"type": "text", "text": reply.text}]
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
                    for c in reply.tool_calls]
        stop = _STOP.get(finish_from(reply, ctx), "end_turn")
        return self.message(ctx, content, stop, self.usage(ctx.usage))

    def stream(self, ctx: AnswerContext) -> AnthropicStream:
        return AnthropicStream(self, ctx)

    def read_answer(self, body: Any) -> dict[str, Any]:
        """A live plain answer as the cassette keeps it: text, tool calls, finish reason, usage."""
        blocks = [b for b in (body.get("content") if isinstance(body, dict) else None) or [] if isinstance(b, dict)]
        texts = [str(b.get("text", "")) for b in blocks if b.get("type") == "text"]
        calls = [{"id": b.get("id", ""), "name": b.get("name", ""),
                  "arguments": json.dumps(b.get("input", {}), ensure_ascii=False)}
                 for b in blocks if b.get("type") == "tool_use"]
        stop = body.get("stop_reason") if isinstance(body, dict) else None
        out: dict[str, Any] = {"text": "".join(texts) if texts else None, "tool_calls": calls,
                               "finish_reason": _FINISH.get(str(stop), "stop")}
        if isinstance(body, dict) and isinstance(body.get("usage"), dict):
            out["usage"] = body["usage"]
        return out

    def event_reader(self) -> AnthropicEventReader:
        return AnthropicEventReader()


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n".encode()


class AnthropicStream:
    """A streamed message: `message_start` and a `ping`, one content block per text or tool call, each started,
    filled by deltas and stopped, then `message_delta` (stop reason, output tokens) and `message_stop`."""

    trailer = b""

    def __init__(self, api: AnthropicApi, ctx: AnswerContext) -> None:
        self.api = api
        self.ctx = ctx
        self.blocks = 0  # content blocks started so far
        self.open: str | None = None  # the type of the block being streamed
        self.finish_reason: str | None = None

    def start(self) -> list[bytes]:
        usage = {"input_tokens": self.ctx.usage.input, "output_tokens": 1}
        return [_sse("message_start", {"message": self.api.message(self.ctx, [], None, usage)}), _sse("ping", {})]

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        delta = chunk.get("delta") if isinstance(chunk.get("delta"), Mapping) else {}
        out: list[bytes] = []
        if isinstance(delta.get("content"), str):
            out = self._open("text", {"type": "text", "text": ""})
            if delta["content"]:
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
        for call in delta.get("tool_calls") or []:
            function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
            if call.get("id"):
                out += self._close()
                out += self._open("tool_use", {"type": "tool_use", "id": str(call["id"]),
                                               "name": str(function.get("name") or ""), "input": {}})
            if function.get("arguments") and self.open == "tool_use":
                out.append(self._delta({"type": "input_json_delta", "partial_json": str(function["arguments"])}))
        if chunk.get("finish_reason"):
            self.finish_reason = str(chunk["finish_reason"])
        return out

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        if self.open == kind == "text":
            return []
        out = self._close()
        self.open = kind
        self.blocks += 1
        return [*out, _sse("content_block_start", {"index": self.blocks - 1, "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _sse("content_block_delta", {"index": self.blocks - 1, "delta": delta})

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [_sse("content_block_stop", {"index": self.blocks - 1})]

    def finish(self) -> list[bytes]:
        stop = _STOP.get(str(self.ctx.finish or self.finish_reason), "end_turn")
        return [*self._close(),
                _sse("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                       "usage": {"output_tokens": self.ctx.usage.output}}),
                _sse("message_stop", {})]

    def malformed(self) -> bytes:
        return (b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                b'"delta": {"type": "text_delta", "text": "unterminated\n\n')


class AnthropicEventReader:
    """A live Messages stream, event by event, as neutral chunks; the message id and usage on the side."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.usage: dict[str, Any] | None = None
        self.calls: dict[int, int] = {}  # content block index -> the tool call's index

    def read(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), Mapping):
            self.response_id = str(data["message"].get("id", "")) or None
            usage = data["message"].get("usage")
            self.usage = dict(usage) if isinstance(usage, Mapping) else None
            return []
        block = data.get("content_block") if isinstance(data.get("content_block"), Mapping) else {}
        if kind == "content_block_start" and block.get("type") == "text":
            return [{"delta": {"role": "assistant", "content": str(block.get("text", ""))}}]
        if kind == "content_block_start" and block.get("type") == "tool_use":
            index = self.calls.setdefault(int(data.get("index", 0)), len(self.calls))
            return [{"delta": {"tool_calls": [{"index": index, "id": block.get("id", ""), "type": "function",
                                               "function": {"name": block.get("name", ""), "arguments": ""}}]}}]
        delta = data.get("delta") if isinstance(data.get("delta"), Mapping) else {}
        if kind == "content_block_delta" and delta.get("type") == "text_delta":
            return [{"delta": {"content": str(delta.get("text", ""))}}]
        if kind == "content_block_delta" and delta.get("type") == "input_json_delta":
            index = self.calls.get(int(data.get("index", 0)), 0)
            return [{"delta": {"tool_calls": [{"index": index,
                                               "function": {"arguments": str(delta.get("partial_json", ""))}}]}}]
        if kind == "message_delta":
            if isinstance(data.get("usage"), Mapping):
                self.usage = {**(self.usage or {}), **data["usage"]}
            return [{"delta": {}, "finish_reason": _FINISH.get(str(delta.get("stop_reason")), "stop")}]
        return []


ANTHROPIC = AnthropicApi()
