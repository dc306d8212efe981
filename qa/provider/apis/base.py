"""What every model API of the mock provider shares: the request as the rules see it, an answer's streamed pieces,
and the interface each API module fills in (qa.provider.apis.chat, .responses, .anthropic). Pure: no I/O.

The common view of a request is the Chat Completions message list, whatever the API: `system` first, then
`{"role", "content"}` messages whose content is a string, or a list of `text` / `image_url` parts when images
came with it; tool calls as an assistant message's `tool_calls`, tool results as `tool` messages. The rules
(qa.provider.rules), the journal, pairing by journal and `expect_model_request` all read that view, so a rule
matches the last user text whatever the API.

A streamed answer is a list of neutral chunks, the cassette's chunk format (qa.provider.cassette):
`{"delta": {"content": "..."}}`, `{"delta": {"tool_calls": [{"index", "id", "function": {"name", "arguments"}}]}}`,
`{"delta": {}, "finish_reason": "stop" | "tool_calls" | "length"}` and `{"usage": {...}}`; each API's stream
writer turns them into its own events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from qa.provider.rules import ErrorReply, Reply, tool_names

STREAM_PIECES = 3


@dataclass
class ParsedRequest:
    """A model request in the common view. `messages` is this request's own conversation; `system` (the
    Responses API's `instructions`, Anthropic's `system`) goes first, and a Responses request's stored
    conversation (`previous_response_id`) goes between the two once the provider has looked it up."""

    api: str
    model: str | None
    stream: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    raw_tools: list[Any] = field(default_factory=list)
    system: str | None = None
    previous: list[dict[str, Any]] = field(default_factory=list)
    previous_response_id: str | None = None
    store: bool = True
    include_usage: bool = False  # Chat Completions' stream_options.include_usage

    @property
    def tools(self) -> list[str]:
        return tool_names({"tools": self.raw_tools})

    def conversation(self) -> list[dict[str, Any]]:
        """What the model reads: system, the stored conversation, this request's messages."""
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*head, *self.previous, *self.messages]

    def chat_body(self) -> dict[str, Any]:
        """The request as a Chat Completions body: what the rules and a cassette compare."""
        body: dict[str, Any] = {"model": self.model, "stream": self.stream, "messages": self.conversation()}
        if self.raw_tools:
            body["tools"] = self.raw_tools
        return body

    def stored(self, reply: Reply) -> list[dict[str, Any]]:
        """The conversation a later `previous_response_id` continues: without `system` (the Responses API does not
        carry instructions over), with the answer."""
        return [*self.previous, *self.messages, *assistant_messages(reply.text, [c.to_json() for c in
                                                                                 reply.tool_calls])]


@dataclass(frozen=True)
class Usage:
    input: int
    output: int


def usage_from(recorded: Mapping[str, Any]) -> Usage:
    """Token counts from any API's usage object (OpenAI's `prompt_tokens`/`completion_tokens`, or the Responses and
    Anthropic `input_tokens`/`output_tokens`)."""
    def count(*names: str) -> int:
        value = next((recorded[n] for n in names if isinstance(recorded.get(n), int)), 0)
        return int(value)

    return Usage(count("input_tokens", "prompt_tokens"), count("output_tokens", "completion_tokens"))


@dataclass(frozen=True)
class AnswerContext:
    """Everything an API needs to render an answer besides the reply itself."""

    tag: str  # unique per answer ("mock-3": the journal entry's number): the answer's ids derive from it
    model: str
    created: int
    request: ParsedRequest
    usage: Usage
    finish: str | None = None  # as recorded (replay); None: from the reply


class StreamWriter(Protocol):
    """One streamed answer in one API's event format, fed the neutral chunks in order."""

    trailer: bytes  # written after the last event and never cut by a fault (Chat Completions' `[DONE]`)

    def start(self) -> list[bytes]: ...

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...

    def malformed(self) -> bytes: ...


class ModelApi(Protocol):
    """One model API: its path under /v1, its request parsing and validation, its answers, errors and streams, and
    the reading of a live endpoint's answers for the recording proxy."""

    name: str
    path: str

    def parse(self, body: Any) -> tuple[ParsedRequest | None, ErrorReply | None]: ...

    def parse_error(self) -> ErrorReply: ...

    def error_body(self, error: ErrorReply) -> dict[str, Any]: ...

    def call_id_prefix(self, number: str) -> str: ...

    def response_id(self, tag: str) -> str | None: ...

    def answer(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]: ...

    def usage(self, usage: Usage) -> dict[str, Any]: ...

    def stream(self, ctx: AnswerContext) -> StreamWriter: ...

    def read_answer(self, body: Any) -> dict[str, Any]: ...

    def event_reader(self) -> EventReader: ...


class EventReader(Protocol):
    """A live endpoint's stream, one `data:` payload at a time, as neutral chunks (for the recording proxy)."""

    response_id: str | None
    usage: dict[str, Any] | None

    def read(self, data: Mapping[str, Any]) -> list[dict[str, Any]]: ...


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ErrorReply:
    return ErrorReply(400, message, "invalid_request_error", code=code, param=param)


def split(text: str, pieces: int = STREAM_PIECES) -> list[str]:
    """A few deltas rather than one, so clients that only handle a single delta are caught."""
    if not text:
        return []
    size = math.ceil(len(text) / pieces)
    return [text[i : i + size] for i in range(0, len(text), size)]


def estimate_tokens(text: str) -> int:
    # Deterministic stand-in for a tokenizer: roughly four characters per token.
    return math.ceil(len(text) / 4) if text else 0


def reply_chunks(reply: Reply, pieces: int = STREAM_PIECES) -> list[dict[str, Any]]:
    """A reply as neutral chunks: the role, the text in `pieces` deltas, each tool call's head and argument
    fragments, then the finish reason."""
    chunks: list[dict[str, Any]] = []
    role_sent = False
    if reply.text is not None:
        chunks.append({"delta": {"role": "assistant", "content": "", "refusal": None}})
        role_sent = True
        chunks += [{"delta": {"content": piece}} for piece in split(reply.text, pieces)]
    for index, call in enumerate(reply.tool_calls):
        # The first delta of a call carries id, type and name; later ones only argument fragments.
        head: dict[str, Any] = {"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                                "function": {"name": call.name, "arguments": ""}}]}
        if not role_sent:
            head = {"role": "assistant", "content": None} | head
            role_sent = True
        chunks.append({"delta": head})
        chunks += [{"delta": {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}}
                   for piece in split(call.arguments)]
    chunks.append({"delta": {}, "finish_reason": reply.finish_reason})
    return chunks


def is_text_chunk(chunk: Mapping[str, Any]) -> bool:
    delta = chunk.get("delta")
    return isinstance(delta, Mapping) and bool(delta.get("content"))


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant_messages(text: str | None, calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An answer in the common view: one assistant message with its text and tool calls (`calls` as
    `{"id", "name", "arguments"}`)."""
    if text is None and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [tool_call(str(c["id"]), str(c["name"]), str(c["arguments"])) for c in calls]
    return [message]


def common_content(texts: Sequence[str], images: Sequence[str]) -> str | list[dict[str, Any]]:
    """Message content in the common view: the text alone, or text and `image_url` parts when images came."""
    if not images:
        return "\n".join(texts)
    parts: list[dict[str, Any]] = [{"type": "text", "text": t} for t in texts]
    return parts + [{"type": "image_url", "image_url": {"url": url}} for url in images]


def finish_from(reply: Reply, ctx: AnswerContext) -> str:
    return ctx.finish or reply.finish_reason
