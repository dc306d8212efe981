"""Reading a model request off the wire and writing its answer back, in whichever API it came (qa.provider.apis):
shared by the mock provider (rules answer) and the replay provider (a cassette answers).

The request side: the body read and parsed into the common view, the Anthropic version header and a Responses
`previous_response_id` checked, the API key checked. The answer side: an error in the API's own shape, a plain
answer, or a stream of the API's events written from neutral chunks at a given pace, with a fault on purpose
(a cut connection, an event that is not JSON) after a given number of events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from qa.provider.apis.anthropic import ANTHROPIC, KEY_HEADER, VERSION_HEADER
from qa.provider.apis.base import ModelApi, ParsedRequest, StreamWriter, Usage, estimate_tokens
from qa.provider.apis.responses import RESPONSES
from qa.provider.journal import JournalEntry
from qa.provider.rules import ChatRequest, ErrorReply, Reply, StreamFault

# Before a chunk of a stream: the seconds to wait first (0 or less: none). Asked, not awaited, so that the
# events up to a pause go out as one write: each write wakes the bot's reader, the harness's and the bot's
# turn on a loaded 2-core machine, and an unpaced reply came as ~5 writes.
Pace = Callable[[Mapping[str, Any]], float]
Pause = Callable[[float], Awaitable[None]]
# Where a request keeps the event set when its client's connection closes (qa.provider.server sets it the moment
# aiohttp reports the connection lost). A held request's finishedAt is when the close was seen, and the runner
# tells "the bot gave up" from "the harness stopped the bot" by it: a look at the transport every 0.25 s filed a
# bot that gave up and then finished the scenario's last steps within the interval as stopped by the harness (a
# CI flake); every 20 ms still left a window, and a `hold` looked only when it was released.
CLIENT_GONE = web.RequestKey("qa_client_gone", asyncio.Event)
_NO_BEARER = ("You didn't provide an API key. You need to provide your API key in an Authorization header using "
              "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


def check_auth(headers: Mapping[str, str], api: ModelApi, api_key: str | None) -> ErrorReply | None:
    """The key as each API carries it: a bearer token for OpenAI's; `x-api-key` (or, as the SDK sends an
    ANTHROPIC_AUTH_TOKEN, a bearer token) for Anthropic's. None when the key is right or none is required."""
    if api_key is None:
        return None
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if api is ANTHROPIC:
        key = headers.get(KEY_HEADER, "").strip() or bearer
        if not key:
            return ErrorReply(401, f"{KEY_HEADER} header is required", "authentication_error")
        return None if key == api_key else ErrorReply(401, f"invalid {KEY_HEADER}", "authentication_error")
    if not bearer:
        return ErrorReply(401, _NO_BEARER, "invalid_request_error")
    if bearer != api_key:
        return ErrorReply(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
    return None


def parse_request(raw: bytes, headers: Mapping[str, str], api: ModelApi,
                  conversations: Mapping[str, list[dict[str, Any]]]) -> tuple[ParsedRequest | None, ErrorReply | None]:
    """The request in the common view, with a Responses request's stored conversation put in, and what is wrong
    with it (the first problem), if anything. A rejected request still comes back as far as it could be read."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, api.parse_error()
    parsed, problem = api.parse(body)
    if api is ANTHROPIC and VERSION_HEADER not in headers:
        problem = problem or ANTHROPIC.missing_version()
    if parsed is not None and problem is None and parsed.previous_response_id is not None:
        stored = conversations.get(parsed.previous_response_id)
        if stored is None:
            problem = RESPONSES.unknown_previous(parsed.previous_response_id)
        parsed.previous = list(stored or [])
    return parsed, problem


def journal_request(entry: JournalEntry, parsed: ParsedRequest) -> None:
    entry.model, entry.stream = parsed.model, parsed.stream
    entry.messages, entry.tools = parsed.conversation(), list(parsed.tools)


def rules_view(parsed: ParsedRequest) -> ChatRequest:
    """The request as the rules read it: its whole conversation, and the tools it offers."""
    view = ChatRequest.from_body({"messages": parsed.conversation(), "model": parsed.model or ""})
    return ChatRequest(messages=view.messages, tools=list(parsed.tools), model=view.model)


def usage_of(entry: JournalEntry, reply: Reply) -> Usage:
    prompt = sum(estimate_tokens(t) + 4 for t in entry.texts())
    calls = sum(estimate_tokens(c.name + c.arguments) for c in reply.tool_calls)
    completion = estimate_tokens(reply.text or "") + calls
    return Usage(prompt, completion)


def error_response(api: ModelApi, error: ErrorReply, request_id: str) -> web.Response:
    """An error in the API's own shape, with Retry-After when the error says how long to wait."""
    headers = {"x-request-id": request_id, **error.headers()}
    if api is ANTHROPIC:
        headers["request-id"] = request_id
    return web.json_response(api.error_body(error), status=error.status, headers=headers)


def client_gone(request: web.Request) -> bool:
    """Whether the client's connection has closed (seen by aiohttp, or by the transport itself)."""
    gone = request.get(CLIENT_GONE)
    return (gone is not None and gone.is_set()) or request.transport is None or request.transport.is_closing()


async def until_any(seconds: float | None, *events: asyncio.Event) -> None:
    """Until one of `events` is set, or `seconds` pass (None: no time limit)."""
    if seconds is not None and seconds <= 0:
        return
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def pause(seconds: float, stopping: asyncio.Event, request: web.Request | None = None) -> None:
    """Simulated model latency, cut short when the provider stops or the client has gone (a client that
    timed out is the hang's evidence, journaled when it happens rather than when the latency would end)."""
    if request is not None and client_gone(request):
        return
    gone = request.get(CLIENT_GONE) if request is not None else None
    await until_any(seconds, stopping, *([gone] if gone is not None else []))


def plain(body: dict[str, Any], request: web.Request, fault: StreamFault | None) -> web.Response:
    if fault is None:
        return web.json_response(body)
    # Not streamed: the same fault as half a JSON body, then the connection closed.
    text = json.dumps(body)
    if fault.kind == "cut" and request.transport is not None:
        request.transport.close()
    return web.Response(text=text[: len(text) // 2], content_type="application/json")


async def stream(request: web.Request, entry: JournalEntry, writer: StreamWriter, chunks: Sequence[Mapping[str, Any]],
                 pace: Pace, pause: Pause, fault: StreamFault | None = None) -> web.StreamResponse:
    """The writer's events for `chunks`; a fault comes after `fault.after_chunks` events (the API's chunks):
    `cut` closes the connection there, `malformed` puts an event that is not JSON there and goes on. Events go
    out together up to each pause (`pace`), a fault, and the end (with the body's end); what came before a pause
    is out before it."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                       "Cache-Control": "no-cache", "x-request-id": entry.id})
    batches = [(None, writer.start()), *((c, writer.feed(c)) for c in chunks), (None, writer.finish())]
    written = 0
    pending: list[bytes] = []

    async def flush() -> None:
        if pending:
            data = b"".join(pending)
            pending.clear()
            await response.write(data)

    try:
        await response.prepare(request)
        for chunk, events in batches:
            if chunk is not None and (wait := pace(chunk)) > 0:
                await flush()
                await pause(wait)
            for event in events:
                if fault is not None and written == fault.after_chunks:
                    await flush()
                    if fault.kind == "cut":
                        # Flushed first, so the client has the intact part when the connection goes.
                        await response.write(b"")
                        if request.transport is not None:
                            request.transport.close()
                        return response
                    await response.write(writer.malformed())
                pending.append(event)
                written += 1
        if writer.trailer:
            pending.append(writer.trailer)
        # The last events and the end of the body (chunked encoding's last chunk) in one write: written apart, the
        # SDK's reader, which reads on to that end after the last event to keep the connection, can wake for the
        # events, find the end not there yet and wait for one more wake-up of its process.
        await response.write_eof(b"".join(pending))
    except ConnectionError:
        # The bot went away mid-stream (killed, or timed out); that is evidence, not a server fault.
        entry.client_disconnected = True
    return response
