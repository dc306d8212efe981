"""Model I/O through the official openai SDK, streaming. No lock is ever held in here: the caller's job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI, AsyncStream, DefaultAsyncHttpxClient

from qa.agent.config import FaultMutations, ModelConfig
from qa.agent.tls import sdk_http_library, shared_tls_context


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class ModelReply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None


def build_messages(
    system_prompt: str, records: Iterable[Mapping[str, Any]],
    parts_for: Mapping[str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Turn transcript records into Chat Completions messages, oldest first. `parts_for` gives some user
    messages (by event id) content parts instead of their text: the current turn's image (qa.agent.media)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    for record in records:
        kind = record.get("kind")
        content = record.get("content")
        if kind == "user":
            parts = (parts_for or {}).get(str(record.get("eventId")))
            messages.append({"role": "user", "content": parts if parts else str(content)})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": str(content)})
        elif kind == "tool" and isinstance(content, Mapping):
            # One record holds the call and its result, so a crash can never leave a call without an answer.
            call_id = str(content.get("callId") or "call")
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": str(content.get("name", "")), "arguments": str(content.get("arguments", ""))},
            }]})
            messages.append({"role": "tool", "tool_call_id": call_id, "content": str(content.get("result", ""))})
        elif kind == "summary" and isinstance(content, Mapping):
            # Folded older turns (qa.agent.compaction): context the model still needs, not a new instruction.
            summary = f"Summary of the earlier conversation: {content.get('text', '')}"
            messages.append({"role": "system", "content": summary})
        elif kind == "memory":
            messages.append({"role": "system", "content": f"Notes from earlier turns: {content}"})
        elif kind == "notice":
            # Reactions and other room happenings reach the model as context, not as instructions.
            messages.append({"role": "user", "content": f"[notice] {content}"})
    return messages


WARM_UP_TIMEOUT_S = 5.0
# Statuses worth another try: the provider is overloaded, rate-limiting or briefly broken.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# Pacing between tries when the provider does not say how long to wait (a backoff, not a synchronization).
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)
# A provider asking for a longer wait than this is not waited for: the person is told instead.
MAX_RETRY_AFTER_S = 30.0
NO_TIMEOUT_S = 3600.0  # the noModelTimeout mutation: a client that waits for a hung model (nearly) forever

# (try number, the error, seconds until the next try): how the caller traces a retry
OnRetry = Callable[[int, str, float], None]


class ModelFailed(Exception):
    """The model gave no usable answer within the retry bound. `reason` is said to the person in the room."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(error)
        self.reason = reason


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The wait a response asks for: `retry-after-ms`, else `Retry-After` in seconds (an HTTP date is ignored)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None


def classify(exc: BaseException) -> tuple[str, bool, float | None]:
    """(what went wrong in a few words, whether another try may help, the wait the provider asked for)."""
    if isinstance(exc, openai.APITimeoutError):
        return "no answer in time", True, None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return f"HTTP {status}", status in RETRYABLE_STATUSES, retry_after_s(exc.response.headers)
    if isinstance(exc, openai.APIConnectionError | ConnectionError) or _from_transport(exc):
        return "the connection broke", True, None
    if isinstance(exc, StreamEndedEarly):
        return "the reply stream ended early", True, None
    if isinstance(exc, ValueError | openai.APIError):  # a stream chunk that is not JSON, or a broken event
        return "a malformed reply", True, None
    return type(exc).__name__, False, None


class StreamEndedEarly(ValueError):
    """A reply stream that ended (however cleanly) without saying why it finished."""


def _from_transport(exc: BaseException) -> bool:
    """An error raised by the HTTP stack under the SDK mid-stream (which the SDK does not wrap)."""
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "h11", "anyio")


class _BrokenStream(Exception):
    def __init__(self, cause: BaseException, partial: ModelReply) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.partial = partial


CHAT_PATH = "/chat/completions"


def request_body(model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Pure: the chat completion request's JSON body, as `chat.completions.create` writes it for these parameters
    (the same keys in the same order; a unit test compares the bytes sent). It goes through the SDK's generic
    `post`: as parameters, the SDK first walks every message and tool against its TypedDicts, a transform that
    changes nothing in plain JSON like ours and took ~0.6 ms of each reply's turn for a short conversation."""
    body: dict[str, Any] = {"model": model, "stream": True, "messages": messages}
    if tools:
        body["tools"] = tools
    return body


def read_chunk(chunk: Any, calls: dict[int, ToolCall], parts: list[str]) -> str | None:
    """Fold one stream chunk, as the SDK decoded it from the event's JSON, into the reply so far: its text piece
    into `parts`, its tool-call pieces into `calls`; returns its finish reason. The chunk stays the plain JSON the
    SDK read (`AsyncStream[object]`): building the SDK's pydantic chunk types took ~0.2 ms a chunk, five or more
    chunks a reply, and the fields read here are the same. A field the chunk lacks reads as None, as it did from
    the SDK's types, so a chunk of the wrong shape fails as it did (a unit test compares)."""
    choices = chunk.get("choices")
    if not choices:
        return None
    choice = choices[0]
    delta = choice.get("delta")
    content = delta.get("content")
    if content:
        parts.append(content)
    for call in delta.get("tool_calls") or []:
        slot = calls.setdefault(call.get("index"), ToolCall(id="", name="", arguments=""))
        if call.get("id"):
            slot.id = call["id"]
        function = call.get("function")
        if function and function.get("name"):
            slot.name += function["name"]
        if function and function.get("arguments"):
            slot.arguments += function["arguments"]
    return choice.get("finish_reason")


def prime_sdk() -> None:
    """Run one streamed chat completion through the SDK, as ModelClient asks for one, against an in-memory
    transport (no network, no provider, nothing journaled): the SDK's request building, its stream decoding and
    their lazy imports otherwise cost the first reply of every bot process its first-time CPU. Done at import,
    it is paid at start-up, once in a pre-importing fork server. Only an optimization: whatever goes wrong here
    shows up, if at all, in the real request."""
    chunks = [
        {"id": "p", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "x", "tool_calls": [
                {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
             "finish_reason": None}]},
        {"id": "p", "object": "chat.completion.chunk", "created": 0, "model": "m",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"

    try:
        http = sdk_http_library()

        def answer(request: Any) -> Any:
            return http.Response(200, content=events, headers={"content-type": "text/event-stream"})

        with openai.OpenAI(api_key="prime", base_url="http://prime.invalid/v1", max_retries=0,
                           http_client=http.Client(transport=http.MockTransport(answer))) as client:
            body = request_body("m", [{"role": "user", "content": "x"}],
                                [{"type": "function", "function": {"name": "f"}}])
            for chunk in client.post(CHAT_PATH, body=body, cast_to=object, stream=True,
                                     stream_cls=openai.Stream[object]):
                read_chunk(chunk, {}, [])
    except Exception:  # an optimization only (see above)
        pass


prime_sdk()


class ModelClient:
    def __init__(self, config: ModelConfig, api_key: str, mutations: FaultMutations | None = None) -> None:
        self._config = config
        self._mutations = mutations or FaultMutations()
        # The SDK's own retries stay off: ours are bounded the same way, honour Retry-After, cover a stream
        # that breaks half-way (which the SDK never retries), and are traced.
        tls = shared_tls_context()
        self._client = AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or "unset",
            timeout=NO_TIMEOUT_S if self._mutations.no_model_timeout else config.timeout_s,
            max_retries=0,
            **({"http_client": DefaultAsyncHttpxClient(verify=tls)} if tls is not None else {}),
        )

    async def warm_up(self) -> str | None:
        """Open the connection and load the SDK's lazy parts before the first message needs them: the first
        request otherwise pays ~35 ms of set-up inside a user's reply. Returns the error, if any; a server
        without /models is still a working chat endpoint, so a failure here is only reported."""
        try:
            # The request `models.list()` sends, its answer left as JSON: building the SDK's page type for it (a
            # pydantic generic, made anew in every forked bot) cost ~10 ms of CPU beside the first sync (issue 29).
            await asyncio.wait_for(self._client.get("/models", cast_to=object,
                                                    options={"security": {"bearer_auth": True}}), WARM_UP_TIMEOUT_S)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        on_text: Callable[[str], Awaitable[None]] | None = None,
        on_retry: OnRetry | None = None,
    ) -> ModelReply:
        """The model's answer, retrying what may pass (within maxRetries); ModelFailed once it will not."""
        retries = 0 if self._mutations.no_model_retry else self._config.max_retries
        tries = 0
        while True:
            tries += 1
            try:
                return await self._complete_once(messages, tools, on_text)
            except _BrokenStream as broken:
                if self._mutations.keep_partial_reply and broken.partial.text:
                    return broken.partial  # the mutation: half a reply sent as if it were whole
                exc: BaseException = broken.cause
            except Exception as caught:
                exc = caught
            what, retryable, asked = classify(exc)
            error = f"{type(exc).__name__}: {exc}"
            if not retryable or tries > retries:
                attempts = f" after {tries} attempt{'s' if tries > 1 else ''}"
                raise ModelFailed(error, what + attempts) from exc
            if asked is not None and asked > MAX_RETRY_AFTER_S:
                raise ModelFailed(error, f"{what}, asked to wait {asked:g}s") from exc
            delay = BACKOFF_S[min(tries - 1, len(BACKOFF_S) - 1)]
            if asked is not None and not self._mutations.ignore_retry_after:
                delay = asked
            if on_retry is not None:
                on_retry(tries, error, delay)
            await asyncio.sleep(delay)

    async def _complete_once(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                             on_text: Callable[[str], Awaitable[None]] | None = None) -> ModelReply:
        stream = await self._client.post(CHAT_PATH, body=request_body(self._config.model, messages, tools),
                                         cast_to=object, stream=True, stream_cls=AsyncStream[object])
        reply = ModelReply()
        parts: list[str] = []
        calls: dict[int, ToolCall] = {}
        try:
            async for chunk in stream:
                before = len(parts)
                finish = read_chunk(chunk, calls, parts)
                if len(parts) > before and on_text is not None:  # a streaming preview: the text so far
                    await on_text("".join(parts))
                if finish:
                    reply.finish_reason = finish
        except Exception as exc:
            # What came before the break is kept only for the keepPartialReply mutation to misuse.
            raise _BrokenStream(exc, ModelReply(text="".join(parts))) from exc
        if reply.finish_reason is None:
            # A stream that ends without saying why was cut short, however cleanly the connection closed.
            raise _BrokenStream(StreamEndedEarly("the reply stream ended without a finish reason"),
                                ModelReply(text="".join(parts)))
        reply.text = "".join(parts)
        reply.tool_calls = [calls[i] for i in sorted(calls)]
        return reply

    async def close(self) -> None:
        await self._client.close()
