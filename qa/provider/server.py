"""The model server that the mock and the replay provider share: an aiohttp server on every model API's path
(qa.provider.apis), under `/v1` and under each scenario's `/scope/<name>/v1`; the request journal
(qa.provider.journal) and waits on it; the key check; and one way to answer, plain or streamed, in the
request's own API. Subclasses say what the answer is (`_answer`): rules (qa.provider.mock) or a cassette
(qa.provider.replay).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from qa.kernel.clock import mono_ms
from qa.provider import apis
from qa.provider.answering import (
    CLIENT_GONE,
    Pace,
    Pause,
    check_auth,
    client_gone,
    error_response,
    journal_request,
    parse_request,
    pause,
    plain,
    stream,
)
from qa.provider.apis.anthropic import ANTHROPIC
from qa.provider.apis.base import AnswerContext, ModelApi, ParsedRequest, Usage
from qa.provider.journal import Journal, JournalEntry
from qa.provider.rules import ErrorReply, Reply, StreamFault

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Transcripts grow; aiohttp's 1 MiB default would turn a long conversation into a 413.
_MAX_BODY_BYTES = 64 * 1024 * 1024

# The middleware and the handler run in the same task, so a context variable hands the journal entry over
# without aiohttp request storage (whose typed keys need a newer aiohttp than pyproject promises).
current_entry: contextvars.ContextVar[JournalEntry] = contextvars.ContextVar("mock_provider_entry")


def scope_prefix(scope: str) -> str:
    if not scope or "/" in scope:
        raise ValueError(f"a provider scope is one URL path segment, got {scope!r}")
    return f"/scope/{scope}"


class ScopedProvider:
    """One client's view of a shared provider: its base URL, and only its own journal entries.

    Everything else (rules, holds, waiting) is the shared provider's, reached through attribute delegation.
    """

    def __init__(self, provider: ModelServer, scope: str) -> None:
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

    def owns(self, entry: JournalEntry) -> bool:
        """Whether `entry` is one of this client's requests (a wait's predicate tests the entry it is given)."""
        return entry.path.startswith(self._prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


async def watching_the_client(request: web.Request,
                              serve: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """The request served in a task of its own. aiohttp cancels this one when the client's connection closes
    (`handler_cancellation`): that moment is set as the request's CLIENT_GONE event, which a held request waits
    on, and the answer runs on as before (it finds the client gone when it writes). Any other cancellation (the
    server stopping) cancels the answer too."""
    gone = request[CLIENT_GONE] = asyncio.Event()
    serving = asyncio.ensure_future(serve())
    while True:
        try:
            return await asyncio.shield(serving)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if gone.is_set() or not client_gone(request) or task is None:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
                raise
            gone.set()
            task.uncancel()


class ModelServer:
    tag = "model"  # answers' ids are `<tag>-<request number>`

    def __init__(self, *, model: str, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = model
        self.api_key = api_key
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._journal = Journal()
        self._counter = 0
        self._stopping = asyncio.Event()
        # The Responses API's stored conversations, by response id: what a `previous_response_id` continues.
        self._conversations: dict[str, list[dict[str, Any]]] = {}

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("mock provider already started")
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=_MAX_BODY_BYTES)
        # The same API under /scope/<name>/v1 too: a client given `scoped_base_url(name)` is told apart in the
        # journal by its request path, so scenarios running side by side each see only their own requests.
        for prefix in ("", "/scope/{scope}"):
            for api in apis.APIS.values():
                app.router.add_post(f"{prefix}/v1/{api.path}", self._handler(api))
            app.router.add_get(f"{prefix}/v1/models", self._list_models)
            app.router.add_get(f"{prefix}/v1/models/{{model_id}}", self._get_model)
        # A short shutdown timeout: handlers wake on _stopping, so nothing legitimately needs longer.
        # handler_cancellation: aiohttp's one signal of a client gone (see _middleware).
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                               handler_cancellation=True)
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
        self._wake()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    def _wake(self) -> None:
        """Anything a subclass keeps waiting (held requests) lets go: the server is stopping."""

    async def __aenter__(self) -> ModelServer:
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
        """The OpenAI SDKs' base URL; Anthropic's SDK takes it without the `/v1` (the launch contract's
        ANTHROPIC_BASE_URL)."""
        return f"http://{self.host}:{self.port}/v1"

    def scoped_base_url(self, scope: str) -> str:
        return f"http://{self.host}:{self.port}{scope_prefix(scope)}/v1"

    def scoped(self, scope: str) -> ScopedProvider:
        return ScopedProvider(self, scope)

    # --- journal ---------------------------------------------------------------------------------------

    @property
    def journal(self) -> list[JournalEntry]:
        """The live journal, oldest first. Entries are updated in place as requests progress."""
        return self._journal.entries

    def entries_for(self, text: str) -> list[JournalEntry]:
        """Model requests whose messages contain `text` (e.g. a scenario's run token)."""
        return [e for e in self.journal if e.is_chat and e.contains(text)]

    def owns(self, entry: JournalEntry) -> bool:
        """Every request is the unscoped provider's own (a ScopedProvider answers for its scope)."""
        return True

    def journal_as_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.journal]

    async def wait_for(self, predicate: Callable[[JournalEntry], bool], timeout: float) -> JournalEntry:
        """The first journal entry (old or new, in any state) satisfying `predicate`."""
        return await self._journal.wait(predicate, timeout, "a matching request")

    async def wait_in_flight(self, predicate: Callable[[JournalEntry], bool], timeout: float) -> JournalEntry:
        """A matching request that has been received and whose response has not finished yet.

        A request that came and went before this was called does not count (it would be too late to act
        "during" it); the timeout message lists such requests so the cause is visible.
        """

        def in_flight(entry: JournalEntry) -> bool:
            return entry.state == "in_flight" and entry.is_chat and predicate(entry)

        return await self._journal.wait(in_flight, timeout, "a matching request in flight", predicate)

    def _notify(self) -> None:
        self._journal.notify()

    # --- HTTP ------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        return await watching_the_client(request, lambda: self._serve(request, handler))

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._counter += 1
        entry = JournalEntry(id=f"req-{self._counter}", method=request.method, path=request.path, started_at=mono_ms())
        self._journal.entries.append(entry)
        self._notify()  # a wait for "a request came" sees it now, not when the request ends
        current_entry.set(entry)
        api = apis.for_request(request.path, request.headers)
        response: web.StreamResponse | None = None
        try:
            auth_error = check_auth(request.headers, api, self.api_key)
            if auth_error is not None:
                entry.error = auth_error
                response = error_response(api, auth_error, entry.id)
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            # Router misses (404/405) and body-size limits (413) arrive here; answered in the API's own shape.
            message = (
                f"Invalid URL ({request.method} {request.path})"
                if exc.status in (404, 405)
                else (exc.reason or "request rejected")
            )
            entry.error = ErrorReply(exc.status, message, "invalid_request_error")
            response = error_response(api, entry.error, entry.id)
        except ConnectionError:
            # The client went away before its request was read (a bot stopped or killed mid-send, as when the run
            # is torn down): the client's doing and evidence of it, not a provider fault to print a traceback
            # for. Nobody is left to answer.
            entry.client_disconnected = True
            response = web.Response(status=499, reason="Client Closed Request")
        except Exception as exc:
            log.exception("mock provider: unexpected error handling %s %s", request.method, request.path)
            entry.error = ErrorReply(500, f"mock provider internal error: {type(exc).__name__}: {exc}", "server_error")
            response = error_response(api, entry.error, entry.id)
        finally:
            # Also runs on cancellation, so the journal never keeps a phantom in-flight request.
            entry.status = response.status if response is not None else None
            entry.finished_at = mono_ms()
            entry.state = "done"
            self._notify()
        if not response.prepared:
            response.headers.setdefault("x-request-id", entry.id)
        return response

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        if apis.for_request(request.path, request.headers) is ANTHROPIC:
            return web.json_response({"data": [self._model_object(request)], "has_more": False,
                                      "first_id": self.model, "last_id": self.model})
        return web.json_response({"object": "list", "data": [self._model_object(request)]})

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["model_id"]
        if model_id != self.model:
            error = ErrorReply(
                404,
                f"The model '{model_id}' does not exist or you do not have access to it.",
                "invalid_request_error",
                code="model_not_found",
            )
            entry = current_entry.get()
            entry.error = error
            return error_response(apis.for_request(request.path, request.headers), error, entry.id)
        return web.json_response(self._model_object(request))

    def _model_object(self, request: web.Request) -> dict[str, Any]:
        """The served model, as the asking client's API describes one."""
        if apis.for_request(request.path, request.headers) is ANTHROPIC:
            return {"type": "model", "id": self.model, "display_name": self.model,
                    "created_at": "1970-01-01T00:00:00Z"}
        return {"id": self.model, "object": "model", "created": 0, "owned_by": "matrix-qa-mock"}

    def _handler(self, api: ModelApi) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._model_request(request, api)

        return handle

    async def _model_request(self, request: web.Request, api: ModelApi) -> web.StreamResponse:
        """Any API's model request: read, check and journal it in the common view, then answer it."""
        entry = current_entry.get()
        parsed, problem = parse_request(await request.read(), request.headers, api, self._conversations)
        if parsed is not None:
            journal_request(entry, parsed)  # even when it is rejected: a malformed request is itself a finding
        if problem is not None or parsed is None:
            entry.error = problem
            assert problem is not None  # parse() says what is wrong whenever it has no request to give
            return error_response(api, problem, entry.id)
        return await self._answer(request, entry, api, parsed)

    async def _answer(self, request: web.Request, entry: JournalEntry, api: ModelApi,
                      parsed: ParsedRequest) -> web.StreamResponse:
        raise NotImplementedError

    def _context(self, entry: JournalEntry, parsed: ParsedRequest, usage: Usage,
                 finish: str | None = None) -> AnswerContext:
        return AnswerContext(tag=f"{self.tag}-{entry.id.removeprefix('req-')}", model=entry.model or self.model,
                             created=int(time.time()), request=parsed, usage=usage, finish=finish)

    async def _send(self, request: web.Request, entry: JournalEntry, api: ModelApi, ctx: AnswerContext, reply: Reply,
                    chunks: list[Mapping[str, Any]] | None, pace: Pace,
                    fault: StreamFault | None = None, paused: Pause | None = None) -> web.StreamResponse:
        """An answer in the API's shape: plain, or streamed from neutral chunks (`chunks`, each after `pace`,
        waited out by `paused`, by default a plain pause)."""
        self._remember(api, ctx, reply)
        if chunks is None:
            return plain(api.answer(reply, ctx), request, fault)
        return await stream(request, entry, api.stream(ctx), chunks, pace, paused or self._pause, fault)

    def _remember(self, api: ModelApi, ctx: AnswerContext, reply: Reply) -> None:
        """A stored Responses answer's conversation, for a later request's `previous_response_id`."""
        response_id = api.response_id(ctx.tag)
        if response_id is not None and ctx.request.store:
            self._conversations[response_id] = ctx.request.stored(reply)

    async def _pause(self, seconds: float, request: web.Request | None = None) -> None:
        await pause(seconds, self._stopping, request)
