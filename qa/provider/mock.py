"""The mock model provider: a real HTTP server speaking the OpenAI Chat Completions wire format.

The bot under test talks to it exactly as it would talk to a live provider, through its normal OpenAI
client. Replies come from rules (qa.provider.rules); every request is journaled with monotonic timestamps
(qa.clock) so the report can line model I/O up against the bot's lock holds.

The harness runs it in-process, on the harness's own event loop:

    provider = MockProvider(load_rule_files(paths))
    await provider.start()                      # bot config gets provider.base_url and provider.model
    entry = await provider.wait_in_flight(lambda e: e.contains(token), timeout=10)
    ...                                         # probe the session lock while the model call is open
    await provider.stop()

Standalone: `python -m qa.provider.mock --port 8089 --rules fixtures/mock-provider/x.yaml` prints the base
URL on stdout and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from qa.clock import mono_ms
from qa.provider.rules import (
    DEFAULT_FALLBACK_TEXT,
    ChatRequest,
    ErrorReply,
    Reply,
    Rule,
    RuleFileError,
    StreamFault,
    content_text,
    decide,
    image_count,
    load_default_rules,
    load_rule_files,
    tool_names,
)

log = logging.getLogger(__name__)

EntryState = Literal["in_flight", "done"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Transcripts grow; aiohttp's 1 MiB default would turn a long conversation into a 413.
_MAX_BODY_BYTES = 64 * 1024 * 1024
_STREAM_PIECES = 3
_DISCONNECT_CHECK_S = 0.25


@dataclass
class JournalEntry:
    id: str
    method: str
    path: str
    started_at: float
    state: EntryState = "in_flight"
    model: str | None = None
    stream: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    rule: str | None = None
    unmatched: bool = False  # a chat request no rule matched, answered with the fallback text
    reply: Reply | None = None
    error: ErrorReply | None = None
    status: int | None = None
    finished_at: float | None = None
    latency_ms: int = 0
    hold: str | None = None
    held_ms: float | None = None
    client_disconnected: bool = False
    pieces: int = _STREAM_PIECES
    chunk_delay_ms: int = 0
    fault: str | None = None  # the fault served on purpose (an error, a broken stream, a hang), in words

    @property
    def images(self) -> int:
        """Image content parts across the request's messages: evidence that an image reached the model."""
        return sum(image_count(m.get("content")) for m in self.messages)

    @property
    def is_chat(self) -> bool:
        return self.path.endswith("/chat/completions")

    @property
    def latest_user(self) -> str | None:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return None

    def texts(self) -> list[str]:
        """Every text the request carried: message contents and the arguments of earlier tool calls."""
        out: list[str] = []
        for message in self.messages:
            out.append(content_text(message.get("content")))
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    out.append(str(call["function"].get("arguments", "")))
        return out

    def contains(self, text: str) -> bool:
        return any(text in t for t in self.texts())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "state": self.state,
            "status": self.status,
            "model": self.model,
            "stream": self.stream,
            "messages": [_without_image_bytes(m) for m in self.messages],
            "images": self.images,
            "tools": self.tools,
            "rule": self.rule,
            "unmatched": self.unmatched,
            "reply": self.reply.to_json() if self.reply is not None else None,
            "error": (self.error.body()["error"] | {"status": self.error.status}) if self.error else None,
            "startedAt": round(self.started_at, 3),
            "finishedAt": round(self.finished_at, 3) if self.finished_at is not None else None,
            "latencyMs": self.latency_ms,
            "hold": self.hold,
            "heldMs": round(self.held_ms, 3) if self.held_ms is not None else None,
            "clientDisconnected": self.client_disconnected,
            "fault": self.fault,
        }

    def summary(self) -> str:
        latest = self.latest_user
        shown = "" if latest is None else f" latest user: {_shorten(latest)!r}"
        rule = f" rule={self.rule}" if self.rule else (" unmatched" if self.unmatched else "")
        return f"{self.id} {self.method} {self.path} {self.state} status={self.status}{rule}{shown}"


# The middleware and the handler run in the same task, so a context variable hands the journal entry over
# without aiohttp request storage (whose typed keys need a newer aiohttp than pyproject promises).
_current_entry: contextvars.ContextVar[JournalEntry] = contextvars.ContextVar("mock_provider_entry")


def _without_image_bytes(message: dict[str, Any]) -> dict[str, Any]:
    """A message for the journal file: data URLs shortened to their type and size, so no artifact holds media."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = []
    for part in content:
        url = part.get("image_url", {}).get("url") if isinstance(part, dict) and part.get("type") == "image_url" \
            and isinstance(part.get("image_url"), dict) else None
        if isinstance(url, str) and url.startswith("data:"):
            head = url.split(",", 1)[0]
            part = {**part, "image_url": {**part["image_url"], "url": f"{head},<{len(url) - len(head) - 1} chars>"}}
        parts.append(part)
    return {**message, "content": parts}


def _shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_response(error: ErrorReply, request_id: str) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers={"x-request-id": request_id,
                                                                         **error.headers()})


def _bad_request(message: str, param: str | None = None, code: str | None = None) -> ErrorReply:
    return ErrorReply(400, message, "invalid_request_error", code=code, param=param)


def _validate_chat_body(body: Any) -> ErrorReply | None:
    """The checks the real API makes that a client bug would trip; anything subtler is accepted."""
    if not isinstance(body, dict):
        return _bad_request("The request body must be a JSON object.", code="invalid_type")
    for name in ("model", "messages"):
        if name not in body:
            return _bad_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if not isinstance(body["model"], str):
        return _bad_request("Invalid type for 'model': expected a string.", param="model", code="invalid_type")
    messages = body["messages"]
    if not isinstance(messages, list):
        return _bad_request("Invalid type for 'messages': expected an array.", param="messages", code="invalid_type")
    if not messages:
        return _bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return _bad_request(
                f"Invalid 'messages[{i}]': expected an object with a string 'role'.",
                param=f"messages[{i}].role",
                code="invalid_type",
            )
    if not isinstance(body.get("stream", False), bool | None):
        return _bad_request("Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    return None


def _split(text: str, pieces: int = _STREAM_PIECES) -> list[str]:
    """A few deltas rather than one, so clients that only handle a single delta are caught."""
    if not text:
        return []
    size = math.ceil(len(text) / pieces)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _is_text_delta(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def _estimate_tokens(text: str) -> int:
    # Deterministic stand-in for a tokenizer: roughly four characters per token.
    return math.ceil(len(text) / 4) if text else 0


def scope_prefix(scope: str) -> str:
    if not scope or "/" in scope:
        raise ValueError(f"a provider scope is one URL path segment, got {scope!r}")
    return f"/scope/{scope}"


class ScopedProvider:
    """One client's view of a shared MockProvider: its base URL, and only its own journal entries.

    Everything else (rules, holds, waiting) is the shared provider's, reached through attribute delegation.
    """

    def __init__(self, provider: MockProvider, scope: str) -> None:
        self._provider = provider
        self.scope = scope
        self._prefix = scope_prefix(scope) + "/"

    @property
    def base_url(self) -> str:
        return self._provider.scoped_base_url(self.scope)

    @property
    def journal(self) -> list[JournalEntry]:
        return [e for e in self._provider.journal if e.path.startswith(self._prefix)]

    def entries_for(self, text: str) -> list[JournalEntry]:
        return [e for e in self.journal if e.is_chat and e.contains(text)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


class MockProvider:
    def __init__(
        self,
        rules: Sequence[Rule] | None = None,
        *,
        model: str = "mock-model",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        include_builtins: bool = True,
        fallback_text: str = DEFAULT_FALLBACK_TEXT,
    ) -> None:
        # Given rules first, built-ins last: a scenario's rules can override any built-in by matching first.
        self.rules: list[Rule] = list(rules or []) + (load_default_rules() if include_builtins else [])
        self.model = model
        self.api_key = api_key
        self.host = host
        self.fallback_text = fallback_text
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._journal: list[JournalEntry] = []
        self._counter = 0
        self._rule_hits: dict[int, int] = {}  # matches per `every: N` rule (qa.provider.rules.decide)
        # Replaced on every journal change; waiters hold the old one, so no wake-up is ever lost.
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._holds: dict[str, asyncio.Event] = {}
        self._times: dict[tuple[str, str], int] = {}  # how often each `times` rule answered (qa.provider.rules)

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("mock provider already started")
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=_MAX_BODY_BYTES)
        # The same API under /scope/<name>/v1 too: a client given `scoped_base_url(name)` is told apart in the
        # journal by its request path, so scenarios running side by side each see only their own requests.
        for prefix in ("", "/scope/{scope}"):
            app.router.add_post(f"{prefix}/v1/chat/completions", self._chat_completions)
            app.router.add_get(f"{prefix}/v1/models", self._list_models)
            app.router.add_get(f"{prefix}/v1/models/{{model_id}}", self._get_model)
        # A short shutdown timeout: handlers wake on _stopping, so nothing legitimately needs longer.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("mock provider listening on %s", self.base_url)

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping.set()
        for hold in self._holds.values():
            hold.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> MockProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("mock provider not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def scoped_base_url(self, scope: str) -> str:
        return f"http://{self.host}:{self.port}{scope_prefix(scope)}/v1"

    def scoped(self, scope: str) -> ScopedProvider:
        return ScopedProvider(self, scope)

    # --- journal ---------------------------------------------------------------------------------------

    @property
    def journal(self) -> list[JournalEntry]:
        """The live journal, oldest first. Entries are updated in place as requests progress."""
        return self._journal

    def entries_for(self, text: str) -> list[JournalEntry]:
        """Chat requests whose messages contain `text` (e.g. a scenario's run token)."""
        return [e for e in self._journal if e.is_chat and e.contains(text)]

    def journal_as_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self._journal]

    async def wait_for(self, predicate: Callable[[JournalEntry], bool], timeout: float) -> JournalEntry:
        """The first journal entry (old or new, in any state) satisfying `predicate`."""
        return await self._wait(predicate, timeout, "a matching request")

    async def wait_in_flight(self, predicate: Callable[[JournalEntry], bool], timeout: float) -> JournalEntry:
        """A matching request that has been received and whose response has not finished yet.

        A request that came and went before this was called does not count (it would be too late to act
        "during" it); the timeout message lists such requests so the cause is visible.
        """

        def in_flight(entry: JournalEntry) -> bool:
            return entry.state == "in_flight" and entry.is_chat and predicate(entry)

        return await self._wait(in_flight, timeout, "a matching request in flight", predicate)

    async def _wait(
        self,
        test: Callable[[JournalEntry], bool],
        timeout: float,
        what: str,
        loose: Callable[[JournalEntry], bool] | None = None,
    ) -> JournalEntry:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed  # taken before the scan: a change during the scan sets this one
            for entry in self._journal:
                if test(entry):
                    return entry
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_message(what, timeout, loose))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    def _timeout_message(self, what: str, timeout: float, loose: Callable[[JournalEntry], bool] | None) -> str:
        lines = [f"mock provider: no {what} within {timeout:g}s; {len(self._journal)} request(s) seen"]
        lines += [f"  {e.summary()}" for e in self._journal[-20:]]
        if loose is not None:
            missed = [e.id for e in self._journal if e.state == "done" and e.is_chat and loose(e)]
            if missed:
                lines.append(f"  matching but already finished: {', '.join(missed)}")
        return "\n".join(lines)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- holds -----------------------------------------------------------------------------------------

    def _hold_event(self, name: str) -> asyncio.Event:
        return self._holds.setdefault(name, asyncio.Event())

    def release(self, name: str) -> None:
        """Let requests held under `name` proceed. Sticky: later requests for the hold pass straight
        through until `rearm_hold`, so a release that races ahead of the request cannot deadlock."""
        self._hold_event(name).set()

    def rearm_hold(self, name: str) -> None:
        self._hold_event(name).clear()

    # --- HTTP ------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._counter += 1
        entry = JournalEntry(id=f"req-{self._counter}", method=request.method, path=request.path, started_at=mono_ms())
        self._journal.append(entry)
        _current_entry.set(entry)
        response: web.StreamResponse | None = None
        try:
            auth_error = self._check_auth(request)
            if auth_error is not None:
                entry.error = auth_error
                response = _error_response(auth_error, entry.id)
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            # Router misses (404/405) and body-size limits (413) arrive here; answer them OpenAI-style.
            message = (
                f"Invalid URL ({request.method} {request.path})"
                if exc.status in (404, 405)
                else (exc.reason or "request rejected")
            )
            entry.error = ErrorReply(exc.status, message, "invalid_request_error")
            response = _error_response(entry.error, entry.id)
        except Exception as exc:
            log.exception("mock provider: unexpected error handling %s %s", request.method, request.path)
            entry.error = ErrorReply(500, f"mock provider internal error: {type(exc).__name__}: {exc}", "server_error")
            response = _error_response(entry.error, entry.id)
        finally:
            # Also runs on cancellation, so the journal never keeps a phantom in-flight request.
            entry.status = response.status if response is not None else None
            entry.finished_at = mono_ms()
            entry.state = "done"
            self._notify()
        if not response.prepared:
            response.headers.setdefault("x-request-id", entry.id)
        return response

    def _check_auth(self, request: web.Request) -> ErrorReply | None:
        if self.api_key is None:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return ErrorReply(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        if token.strip() != self.api_key:
            return ErrorReply(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        return None

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [self._model_object()]})

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["model_id"]
        if model_id != self.model:
            error = ErrorReply(
                404,
                f"The model '{model_id}' does not exist or you do not have access to it.",
                "invalid_request_error",
                code="model_not_found",
            )
            entry = _current_entry.get()
            entry.error = error
            return _error_response(error, entry.id)
        return web.json_response(self._model_object())

    def _model_object(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": 0, "owned_by": "matrix-qa-mock"}

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        entry = _current_entry.get()
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            entry.error = _bad_request(
                "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload."
            )
            return _error_response(entry.error, entry.id)
        problem = _validate_chat_body(body)
        if isinstance(body, dict):
            # Journal what was sent even when it is rejected: a malformed request is itself a finding.
            entry.model = body.get("model") if isinstance(body.get("model"), str) else None
            entry.stream = body.get("stream") is True
            if isinstance(body.get("messages"), list):
                entry.messages = [m for m in body["messages"] if isinstance(m, dict)]
            entry.tools = tool_names(body)
        if problem is not None:
            entry.error = problem
            return _error_response(problem, entry.id)

        number = entry.id.removeprefix("req-")
        decision = decide(
            self.rules,
            ChatRequest.from_body(body),
            fallback_text=self.fallback_text,
            call_id_prefix=f"call_mock{number}",
            hits=self._rule_hits,
            counts=self._times,
        )
        entry.rule = decision.rule_name
        entry.unmatched = decision.rule is None
        entry.latency_ms = decision.latency_ms
        entry.hold = decision.hold
        entry.pieces, entry.chunk_delay_ms = decision.stream.pieces, decision.stream.delay_ms
        self._notify()  # now the in-flight entry carries its messages, so predicates can see it

        if decision.hold is not None:
            held_from = mono_ms()
            await self._hold_event(decision.hold).wait()
            entry.held_ms = mono_ms() - held_from
        if decision.latency_ms:
            await self._pause(decision.latency_ms / 1000, request)
        if request.transport is None or request.transport.is_closing():
            entry.client_disconnected = True
            if decision.hold is not None or decision.latency_ms:
                entry.fault = "hang: the client gave up waiting"  # when: the entry's finishedAt
        entry.fault = entry.fault or decision.fault()

        if decision.error is not None:
            entry.error = decision.error
            return _error_response(decision.error, entry.id)
        assert decision.reply is not None  # decide() returns a reply or an error
        entry.reply = decision.reply
        usage = self._usage(entry, decision.reply)
        if entry.stream:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, entry, decision.reply, usage if include_usage else None,
                                      decision.stream_fault)
        if decision.stream_fault is not None:
            # Not streamed: the same fault as half a JSON body, then the connection closed.
            text = json.dumps(self._completion(entry, decision.reply, usage))
            if decision.stream_fault.kind == "cut" and request.transport is not None:
                request.transport.close()
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        return web.json_response(self._completion(entry, decision.reply, usage))

    async def _pause(self, seconds: float, request: web.Request | None = None) -> None:
        """Simulated model latency, cut short when the provider stops or the client has gone (a client that
        timed out is the hang's evidence, journaled when it happens rather than when the latency would end)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                # aiohttp signals no disconnect to a handler, so a long pause looks at the transport now and then.
                async with asyncio.timeout(min(left, _DISCONNECT_CHECK_S)):
                    await self._stopping.wait()
                    return
            if request is not None and (request.transport is None or request.transport.is_closing()):
                return

    def _usage(self, entry: JournalEntry, reply: Reply) -> dict[str, int]:
        prompt = sum(_estimate_tokens(t) + 4 for t in entry.texts())
        completion = _estimate_tokens(reply.text or "") + sum(
            _estimate_tokens(c.name + c.arguments) for c in reply.tool_calls
        )
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _envelope(self, entry: JournalEntry, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-mock-{entry.id.removeprefix('req-')}",
            "object": obj,
            "created": int(time.time()),
            "model": entry.model or self.model,
            "system_fingerprint": None,
        }

    def _completion(self, entry: JournalEntry, reply: Reply, usage: dict[str, int]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.tool_calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        return self._envelope(entry, "chat.completion") | {"choices": [choice], "usage": usage}

    def _chunks(self, entry: JournalEntry, reply: Reply, usage: dict[str, int] | None) -> list[dict[str, Any]]:
        base = self._envelope(entry, "chat.completion.chunk")
        if usage is not None:
            base["usage"] = None  # as the real API does: usage only on the extra last chunk

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        chunks: list[dict[str, Any]] = []
        role_sent = False
        if reply.text is not None:
            chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            role_sent = True
            chunks += [chunk({"content": piece}) for piece in _split(reply.text, entry.pieces)]
        for index, call in enumerate(reply.tool_calls):
            # The first delta of a call carries id, type and name; later ones only argument fragments.
            head: dict[str, Any] = {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
            if not role_sent:
                head = {"role": "assistant", "content": None} | head
                role_sent = True
            chunks.append(chunk(head))
            chunks += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _split(call.arguments)
            ]
        chunks.append(chunk({}, reply.finish_reason))
        if usage is not None:
            chunks.append(base | {"choices": [], "usage": usage})
        return chunks

    async def _stream(
        self, request: web.Request, entry: JournalEntry, reply: Reply, usage: dict[str, int] | None,
        fault: StreamFault | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": entry.id,
            },
        )
        try:
            await response.prepare(request)
            for number, chunk in enumerate(self._chunks(entry, reply, usage)):
                if fault is not None and number == fault.after_chunks:
                    if fault.kind == "cut":
                        # Flushed first, so the client has the intact part when the connection goes.
                        await response.write(b"")
                        if request.transport is not None:
                            request.transport.close()
                        return response
                    await response.write(b'data: {"choices": [{"delta": {"content": "unterminated\n\n')
                if entry.chunk_delay_ms and _is_text_delta(chunk):
                    await self._pause(entry.chunk_delay_ms / 1000)  # paced: a streaming preview can show it
                await response.write(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            # The bot went away mid-stream (killed, or timed out); that is evidence, not a server fault.
            entry.client_disconnected = True
        return response


# --- standalone entry point -------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m qa.provider.mock", description="Serve the matrix-qa mock OpenAI-compatible provider."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose a free port")
    parser.add_argument(
        "--rules", action="append", default=[], type=Path, metavar="FILE", help="rule file (repeatable)"
    )
    parser.add_argument("--no-builtins", action="store_true", help="do not append the built-in rules")
    parser.add_argument("--model", default="mock-model")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--fallback-text", default=DEFAULT_FALLBACK_TEXT)
    parser.add_argument("--journal", type=Path, default=None, help="write the request journal here on exit")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> int:
    try:
        rules = load_rule_files(args.rules)
        provider = MockProvider(
            rules,
            model=args.model,
            api_key=args.api_key,
            host=args.host,
            port=args.port,
            include_builtins=not args.no_builtins,
            fallback_text=args.fallback_text,
        )
    except RuleFileError as err:
        print(err, file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await provider.start()
    print(provider.base_url, flush=True)
    try:
        await stop.wait()
    finally:
        await provider.stop()
        if args.journal is not None:
            args.journal.write_text(json.dumps(provider.journal_as_json(), indent=2), encoding="utf-8")
        print(f"mock provider stopped after {len(provider.journal)} request(s)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
