"""The recording proxy of `--provider live --record DIR`: between the bot and the live model, one cassette per
scenario (qa.provider.cassette).

Each scenario's bot gets its own base URL, `/scope/<scenario-id>/v1`, as with the mock provider. The proxy
forwards every request to the live endpoint with the run's key, relays the answer as it comes (a streamed one
chunk by chunk, so the bot sees the live pace) and records the model exchanges of every API (qa.provider.apis:
Chat Completions, Responses, Anthropic Messages) in the common view, templated with the scenario's run values
(qa.provider.placeholders). A Responses request's `previous_response_id` is recorded as the conversation it
continues, which the proxy keeps from the answers it relayed.

The bot is handed a stand-in key, not the real one: the proxy replaces whatever authorization the bot sends, with
`Authorization: Bearer KEY` for OpenAI's APIs and `x-api-key: KEY` for Anthropic's (the `anthropic-version` the
bot sent is passed on).
Headers are never recorded; every recorded string is redacted with the run's secrets (a model may echo a
password) before it is templated, and a cassette that still holds one is not written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from qa.kernel.clock import utc_now_iso
from qa.provider import apis
from qa.provider.apis.anthropic import ANTHROPIC, KEY_HEADER, VERSION_HEADER
from qa.provider.apis.base import ModelApi, ParsedRequest
from qa.provider.cassette import Cassette, CassetteError, Exchange, assemble, dump, parse, path_for
from qa.provider.matching import canonical_request, session_of
from qa.provider.placeholders import Placeholders
from qa.provider.rules import Reply, ToolCall
from qa.shared.redact import redact, redact_data

log = logging.getLogger(__name__)

# What the bot sends as its key in a recording run; the proxy puts the real key in instead.
STAND_IN_KEY = "matrix-qa-recording-proxy"
_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


@dataclass
class _Scope:
    values: dict[str, str]
    exchanges: list[Exchange] = field(default_factory=list)


class RecordingProxy:
    mode = "live"

    def __init__(self, *, base_url: str, api_key: str, model: str, timeout_s: float, directory: Path,
                 secrets: list[str], endpoint: str = "", host: str = "127.0.0.1", api: str = "chat") -> None:
        self.upstream = base_url.rstrip("/")
        self.api = api  # the live endpoint's API: how requests that are not model requests (a model list) sign
        self._key = api_key
        self.model = model
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self.directory = directory
        self._secrets = secrets
        self._endpoint = endpoint
        self.host = host
        self._scopes: dict[str, _Scope] = {}
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._port = 0
        self.written: list[Path] = []
        # Every relayed Responses answer's conversation, by the live response id (not recorded: only used to
        # record a later `previous_response_id` as the conversation it continues).
        self._conversations: dict[str, list[dict[str, Any]]] = {}

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/scope/{scope}/v1/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._http = aiohttp.ClientSession(timeout=self._timeout)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}/v1"

    def scoped_base_url(self, scope: str) -> str:
        return f"http://{self.host}:{self._port}/scope/{scope}/v1"

    def bind_scope(self, scope: str, values: Mapping[str, str]) -> None:
        """A scenario starts: its requests are templated with its own run values from now on."""
        self._scopes[scope] = _Scope(values=dict(values))

    def finish_scope(self, scope: str, status: str | None) -> Path | None:
        """The scenario ended with `status`: its cassette is written (also when it failed: the file says so).
        None: it was skipped, and leaves no cassette (a replay would otherwise run it against nothing)."""
        state = self._scopes.pop(scope, None)
        if state is None or status is None:
            return None
        scope = scope.split("~", 1)[0]  # an infrastructure retry (`x~retry`) records scenario x's cassette
        used = {e.request.get("api", "chat") for e in state.exchanges}
        cassette = Cassette(scenario=scope, model=self.model, exchanges=state.exchanges,
                            recorded={"status": status, "at": utc_now_iso(), "endpoint": self._endpoint},
                            api=used.pop() if len(used) == 1 else None)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = path_for(self.directory, scope)
        text = dump(cassette)
        if redact(text, self._secrets) != text:  # every string was redacted before templating; never write one
            raise CassetteError(f"{path}: not written: a secret of the run is still in it (a recorder bug)")
        path.write_text(text, encoding="utf-8")
        self.written.append(path)
        # What replay will refuse is said now, while the live run that made it can still be looked at.
        parse(text, path)
        return path

    # --- HTTP ------------------------------------------------------------------------------------------

    def _headers(self, request: web.Request, api: ModelApi | None, body: bytes) -> dict[str, str]:
        """Only what the endpoint needs: the bot's own headers (its stand-in key among them) stay here."""
        headers = {"Accept": request.headers.get("Accept", "*/*")}
        if api is ANTHROPIC or (api is None and self.api == ANTHROPIC.name):
            headers[KEY_HEADER] = self._key
            headers[VERSION_HEADER] = request.headers.get(VERSION_HEADER, DEFAULT_ANTHROPIC_VERSION)
            if "anthropic-beta" in request.headers:
                headers["anthropic-beta"] = request.headers["anthropic-beta"]
        else:
            headers["Authorization"] = f"Bearer {self._key}"
        if body:
            headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        return headers

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        scope = self._scopes.get(request.match_info["scope"])
        tail = request.match_info["tail"]
        url = f"{self.upstream}/{tail}" + (f"?{request.query_string}" if request.query_string else "")
        body = await request.read()
        api = apis.for_path(f"/v1/{tail}") if request.method == "POST" else None
        parsed = self._parse(api, body) if api is not None and scope is not None else None
        started = time.monotonic()
        try:
            async with self._http.request(request.method, url, data=body or None,
                                          headers=self._headers(request, api, body)) as upstream:
                if parsed is None or api is None or scope is None:
                    return await _relay_plain(request, upstream)
                return await self._record(request, upstream, api, parsed, scope, started)
        except (aiohttp.ClientError, TimeoutError) as exc:
            message = f"matrix-qa recording proxy: the live endpoint failed: {type(exc).__name__}"
            if api is ANTHROPIC:
                return web.json_response({"type": "error", "error": {"type": "api_error", "message": message}},
                                         status=502)
            return web.json_response({"error": {"message": message, "type": "proxy_error"}}, status=502)

    def _parse(self, api: ModelApi, body: bytes) -> tuple[ParsedRequest, dict[str, Any]] | None:
        """The request in the common view, as a Chat Completions body to record (a Chat Completions request as
        sent), its stored conversation put in; None for what is not a request (it is relayed, not recorded)."""
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        parsed, _problem = api.parse(payload)
        if parsed is None:
            return None
        if api.name == "chat":
            return parsed, payload
        chat_body = parsed.chat_body()
        if parsed.previous_response_id is not None:
            stored = self._conversations.get(parsed.previous_response_id)
            if stored is None:  # not relayed by this proxy: recorded as sent, so it can only match itself
                chat_body["previous_response_id"] = parsed.previous_response_id
            parsed.previous = list(stored or [])
            chat_body["messages"] = parsed.conversation()
        return parsed, chat_body

    async def _record(self, request: web.Request, upstream: aiohttp.ClientResponse, api: ModelApi,
                      parsed_request: tuple[ParsedRequest, dict[str, Any]], scope: _Scope,
                      started: float) -> web.StreamResponse:
        parsed, payload = parsed_request
        placeholders = Placeholders(scope.values)
        # Secrets go before templating: a template doubles braces, and a doubled brace hides a secret.
        canonical = canonical_request(redact_data(payload, self._secrets), placeholders, api=api.name)
        if "previous_response_id" in payload:
            canonical["previous_response_id"] = placeholders.template_data(payload["previous_response_id"])
        exchange = Exchange(index=len(scope.exchanges) + 1, session=session_of(canonical), request=canonical,
                            response={"status": upstream.status, "at_ms": 0.0})
        scope.exchanges.append(exchange)  # in arrival order: the order a replay must follow within a session

        def since() -> float:
            return round((time.monotonic() - started) * 1000, 1)

        streamed = "text/event-stream" in upstream.headers.get("Content-Type", "")
        if upstream.status == 200 and streamed:
            response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                                "Cache-Control": "no-cache"})
            await response.prepare(request)
            reader = api.event_reader()
            chunks: list[dict[str, Any]] = []
            try:
                async for raw in upstream.content:
                    await response.write(raw)
                    chunks += [{"at_ms": since(), **chunk} for chunk in reader.read(_sse_data(raw) or {})]
            except (aiohttp.ClientError, TimeoutError) as exc:
                return _cut(request, response, exc)
            await response.write_eof()
            _keep_values_whole(chunks, placeholders, self._secrets)
            chunks = redact_data(chunks, self._secrets)
            text, calls, finish = assemble(chunks)
            recorded: dict[str, Any] = {
                "status": 200, "at_ms": chunks[0]["at_ms"] if chunks else since(), "text": text,
                "tool_calls": [c.to_data() for c in calls], "finish_reason": finish, "chunks": chunks}
            if reader.usage is not None:
                recorded["usage"] = reader.usage
            self._remember(parsed, reader.response_id, text, [c.to_data() for c in calls])
            exchange.response = placeholders.template_data(redact_data(recorded, self._secrets))
            return response
        data = await upstream.read()
        plain = _plain_response(api, upstream.status, data, since())
        if upstream.status == 200:
            self._remember(parsed, _answer_id(data), plain.get("text"), plain.get("tool_calls") or [])
        exchange.response = placeholders.template_data(redact_data(plain, self._secrets))
        return web.Response(body=data, status=upstream.status,
                            content_type=upstream.headers.get("Content-Type", "application/json").split(";")[0])

    def _remember(self, parsed: ParsedRequest, response_id: str | None, text: str | None,
                  calls: list[dict[str, Any]]) -> None:
        if parsed.api == "responses" and response_id and parsed.store:
            reply = Reply(text, [ToolCall(str(c["id"]), str(c["name"]), str(c["arguments"])) for c in calls])
            self._conversations[response_id] = parsed.stored(reply)


def _cut(request: web.Request, response: web.StreamResponse, exc: BaseException) -> web.StreamResponse:
    """The live stream broke (or the bot went away) after its headers and part of it were relayed: the bot's
    connection is cut, so it sees a broken stream as it would from the endpoint. An error answer now would land
    inside the stream it has begun (a 502 written into the event stream). The exchange is not completed."""
    log.warning("recording proxy: the stream broke after it began (%s); cut the connection", type(exc).__name__)
    if request.transport is not None:
        request.transport.close()
    return response


def _answer_id(data: bytes) -> str | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return str(body["id"]) if isinstance(body, dict) and body.get("id") else None


async def _relay_plain(request: web.Request, upstream: aiohttp.ClientResponse) -> web.Response:
    """Everything but a scenario's chat request (the model list a bot warms up with): passed on, not recorded."""
    data = await upstream.read()
    return web.Response(body=data, status=upstream.status,
                        content_type=upstream.headers.get("Content-Type", "application/json").split(";")[0])


def _keep_values_whole(chunks: list[dict[str, Any]], placeholders: Placeholders, secrets: list[str]) -> None:
    """Re-cut the streamed text and each tool call's arguments so no run value spans two chunks (it could not
    be templated, and would land in the cassette as itself); secrets too, so that redaction finds them."""
    def recut(slots: list[tuple[dict[str, Any], str]]) -> None:
        pieces = placeholders.unsplit([str(holder[key]) for holder, key in slots], secrets)
        for (holder, key), piece in zip(slots, pieces, strict=True):
            holder[key] = piece

    recut([(c["delta"], "content") for c in chunks if isinstance((c.get("delta") or {}).get("content"), str)])
    calls: dict[int, list[tuple[dict[str, Any], str]]] = {}
    for chunk in chunks:
        for call in (chunk.get("delta") or {}).get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                calls.setdefault(int(call.get("index", 0)), []).append((function, "arguments"))
    for slots in calls.values():
        recut(slots)


def _sse_data(raw: bytes) -> dict[str, Any] | None:
    """The JSON payload of one `data:` line of a stream (None for `event:` lines, `[DONE]`, anything else)."""
    line = raw.decode("utf-8", errors="replace").strip()
    if not line.startswith("data:"):
        return None
    try:
        data = json.loads(line[5:].strip())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _plain_response(api: ModelApi, status: int, data: bytes, at_ms: float) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if status != 200:
        error = body.get("error") if isinstance(body, dict) else None
        return {"status": status, "at_ms": at_ms,
                "error": error if isinstance(error, dict) else {"message": data.decode("utf-8", "replace")[:2000]}}
    return {"status": 200, "at_ms": at_ms, **api.read_answer(body)}
