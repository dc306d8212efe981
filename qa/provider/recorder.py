"""The recording proxy of `--provider live --record DIR`: between the bot and the live model, one cassette per
scenario (qa.provider.cassette).

Each scenario's bot gets its own base URL, `/scope/<scenario-id>/v1`, as with the mock provider. The proxy
forwards every request to the live endpoint with the run's key, relays the answer as it comes (a streamed one
chunk by chunk, so the bot sees the live pace) and records the chat exchanges, templated with the scenario's
run values (qa.provider.placeholders).

The bot is handed a stand-in key, not the real one: the proxy replaces whatever authorization the bot sends.
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

from qa.clock import utc_now_iso
from qa.provider.cassette import Cassette, CassetteError, Exchange, assemble, dump, parse, path_for
from qa.provider.matching import canonical_request, session_of
from qa.provider.placeholders import Placeholders
from qa.report.redact import redact, redact_data

log = logging.getLogger(__name__)

# What the bot sends as its key in a recording run; the proxy puts the real key in instead.
STAND_IN_KEY = "matrix-qa-recording-proxy"
_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class _Scope:
    values: dict[str, str]
    exchanges: list[Exchange] = field(default_factory=list)


class RecordingProxy:
    mode = "live"

    def __init__(self, *, base_url: str, api_key: str, model: str, timeout_s: float, directory: Path,
                 secrets: list[str], endpoint: str = "", host: str = "127.0.0.1") -> None:
        self.upstream = base_url.rstrip("/")
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
        cassette = Cassette(scenario=scope, model=self.model, exchanges=state.exchanges,
                            recorded={"status": status, "at": utc_now_iso(), "endpoint": self._endpoint})
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

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        scope = self._scopes.get(request.match_info["scope"])
        tail = request.match_info["tail"]
        url = f"{self.upstream}/{tail}" + (f"?{request.query_string}" if request.query_string else "")
        body = await request.read()
        # Only what the endpoint needs: the bot's own headers (its stand-in key among them) stay here.
        headers = {"Authorization": f"Bearer {self._key}", "Accept": request.headers.get("Accept", "*/*")}
        if body:
            headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        chat = request.method == "POST" and tail == "chat/completions" and scope is not None
        try:
            payload = json.loads(body) if chat else None
        except ValueError:
            payload = None
        started = time.monotonic()
        try:
            async with self._http.request(request.method, url, data=body or None, headers=headers) as upstream:
                if not isinstance(payload, dict) or scope is None:
                    return await _relay_plain(request, upstream)
                return await self._record(request, upstream, payload, scope, started)
        except (aiohttp.ClientError, TimeoutError) as exc:
            message = f"matrix-qa recording proxy: the live endpoint failed: {type(exc).__name__}"
            return web.json_response({"error": {"message": message, "type": "proxy_error"}}, status=502)

    async def _record(self, request: web.Request, upstream: aiohttp.ClientResponse, payload: dict[str, Any],
                      scope: _Scope, started: float) -> web.StreamResponse:
        placeholders = Placeholders(scope.values)
        # Secrets go before templating: a template doubles braces, and a doubled brace hides a secret.
        canonical = canonical_request(redact_data(payload, self._secrets), placeholders)
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
            chunks: list[dict[str, Any]] = []
            async for raw in upstream.content:
                await response.write(raw)
                chunk = _sse_chunk(raw)
                if chunk is not None:
                    chunks.append({"at_ms": since(), **chunk})
            await response.write_eof()
            _keep_values_whole(chunks, placeholders, self._secrets)
            chunks = redact_data(chunks, self._secrets)
            text, calls, finish = assemble(chunks)
            exchange.response = placeholders.template_data({
                "status": 200, "at_ms": chunks[0]["at_ms"] if chunks else since(), "text": text,
                "tool_calls": [c.to_data() for c in calls], "finish_reason": finish, "chunks": chunks})
            return response
        data = await upstream.read()
        plain = redact_data(_plain_response(upstream.status, data, since()), self._secrets)
        exchange.response = placeholders.template_data(plain)
        return web.Response(body=data, status=upstream.status,
                            content_type=upstream.headers.get("Content-Type", "application/json").split(";")[0])


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


def _sse_chunk(raw: bytes) -> dict[str, Any] | None:
    """One `data:` line of a stream as a cassette chunk: its delta and finish reason, or its usage."""
    line = raw.decode("utf-8", errors="replace").strip()
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    if not isinstance(chunk, dict):
        return None
    choices = chunk.get("choices") or []
    out: dict[str, Any] = {}
    if choices and isinstance(choices[0], dict):
        out["delta"] = {k: v for k, v in (choices[0].get("delta") or {}).items() if v is not None or k == "content"}
        if choices[0].get("finish_reason"):
            out["finish_reason"] = choices[0]["finish_reason"]
    if isinstance(chunk.get("usage"), dict):
        out["usage"] = chunk["usage"]
    return out or None


def _plain_response(status: int, data: bytes, at_ms: float) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if status != 200:
        error = body.get("error") if isinstance(body, dict) else None
        return {"status": status, "at_ms": at_ms,
                "error": error if isinstance(error, dict) else {"message": data.decode("utf-8", "replace")[:2000]}}
    choice = (body.get("choices") or [{}])[0] if isinstance(body, dict) else {}
    message = choice.get("message") or {}
    calls = [{"id": c.get("id", ""), "name": (c.get("function") or {}).get("name", ""),
              "arguments": (c.get("function") or {}).get("arguments", "")} for c in message.get("tool_calls") or []]
    response = {"status": 200, "at_ms": at_ms, "text": message.get("content"), "tool_calls": calls,
                "finish_reason": choice.get("finish_reason")}
    if isinstance(body, dict) and isinstance(body.get("usage"), dict):
        response["usage"] = body["usage"]
    return response
