"""The fault proxy: an HTTP proxy between the bot and the homeserver that breaks requests on purpose.

One per scenario that declares faults, on 127.0.0.1 with an OS-chosen port. The bot is given its URL as the
homeserver (MATRIX_QA_HOMESERVER_URL), the test users keep the real one, so only the bot sees the faults.
Responses are streamed through as they come, so a /sync long-poll behaves as it does without the proxy.
Rules (qa.harness.fault_rules) can be replaced mid-scenario; every hit is recorded with monotonic times.
A `hold_to_device` rule forwards the /sync but keeps that type of to-device event out of its answers until new
rules are set; the open /sync is then cut and the next answer carries them (hits `hold-to-device` and
`release-to-device`).
A held request (`hold_ms`) ends one of three ways, recorded as the hit's `ending`: the client gave up (its
handler is cancelled when it hangs up), a release (new rules), or the hold ran out; the last two forward it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from qa.harness.fault_rules import FaultRule, FaultState
from qa.harness.to_device_hold import ToDeviceHold
from qa.kernel.clock import mono_ms
from qa.waiting import Changes

log = logging.getLogger(__name__)

# Headers that describe one hop, not the message: never copied across the proxy.
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer",
                  "host"})
_MAX_BODY_BYTES = 64 * 1024 * 1024
SHUTDOWN_TIMEOUT_S = 1.0
# Only a summary of the unfaulted traffic is kept: enough to measure retry gaps, not a full HTTP log.
MAX_REQUESTS_KEPT = 5000


class FaultProxy:
    def __init__(self, upstream: str, rules: Sequence[FaultRule] = ()) -> None:
        self.upstream = upstream.rstrip("/")
        self.state = FaultState()
        self.state.install(rules)
        self.installed: list[dict[str, Any]] = [_installation(rules, "scenario")]
        self.hits: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._in_flight: dict[int, tuple[web.Request, dict[str, Any]]] = {}
        self._counter = 0
        self._changes = Changes()  # notified on every hit and request
        # Set when new rules are installed: every held request is let go. Replaced each time, so none is missed.
        self._release = asyncio.Event()
        self._to_device = ToDeviceHold()
        self.url = ""

    def note_room_keys(self, bodies: Iterable[str]) -> None:
        """The Olm ciphertexts of room keys a test user just shared (qa.actors): `hold_to_device: m.room_key`."""
        self._to_device.note_room_keys(bodies)

    async def start(self) -> str:
        # No total timeout: a /sync long-poll is legitimately long; the bot's own timeout bounds it.
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that hangs up cancels its handler, so a held request learns of it.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                               handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._session.close()
            raise
        self._runner = runner
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        """Bounded: stalls wake at once, in-flight requests get SHUTDOWN_TIMEOUT_S, then are cut."""
        self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            for request, _ in list(self._in_flight.values()):
                if request.transport is not None:
                    request.transport.close()
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def set_rules(self, rules: Sequence[FaultRule], *, drop_in_flight: bool = False, why: str = "set_faults") -> int:
        """Install new rules; with drop_in_flight, cut the open requests they match (e.g. the current long-poll),
        so the next requests meet the new rules. Returns how many were cut."""
        self.state.install(rules)
        self.installed.append(_installation(rules, why))
        release, self._release = self._release, asyncio.Event()
        release.set()
        # Kept to-device events go back at once: the open /sync is cut, and the bot's next one carries them.
        cutting = [*(rules if drop_in_flight else []), *self._to_device.releasing(rules)]
        cut = 0
        for request, record in list(self._in_flight.values()):
            rule = next((r for r in cutting if r.matches(request.method, request.path)), None)
            if rule is None or request.transport is None:
                continue
            request.transport.close()
            # Filed under its own name: the new rules' counts are about the requests that come next.
            self.hits.append({"rule": "drop_in_flight", "occurrence": cut + 1, "action": "drop-in-flight",
                              "method": request.method, "path": request.path, "status": None,
                              "startedAt": round(record["startedAt"], 1), "endedAt": round(mono_ms(), 1),
                              "what": f"open request cut by set_faults (matched {rule.name})"})
            cut += 1
        self._changes.notify()
        return cut

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Until `condition()` holds (re-checked on every hit and request); TimeoutError past timeout_s."""
        await self._changes.until(condition, timeout_s)

    def artifact(self) -> dict[str, Any]:
        return {"upstream": self.upstream, "installed": self.installed, "hits": self.hits,
                "requests": len(self.requests)}

    # --- the request path ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._counter += 1
        record = {"id": self._counter, "method": request.method, "path": request.path, "startedAt": mono_ms(),
                  "endedAt": None, "status": None}
        if len(self.requests) < MAX_REQUESTS_KEPT:
            self.requests.append(record)
        self._in_flight[self._counter] = (request, record)
        self._changes.notify()
        try:
            return await self._serve(request, record)
        finally:
            self._in_flight.pop(record["id"], None)
            record["endedAt"] = mono_ms()

    async def _serve(self, request: web.Request, record: dict[str, Any]) -> web.StreamResponse:
        decided = self.state.decide(request.method, request.path)
        if decided is not None and decided[0].hold_to_device is not None:
            return await self._forward_to_device(request, record, decided[0])
        if decided is None and self._to_device.gives_back(request.method, request.path):
            return await self._forward_to_device(request, record, None)
        if decided is None:
            return await self._forward(request, record)
        rule, occurrence = decided
        hit = self._record_hit(rule, occurrence, rule.action, record, rule.status)
        try:
            if rule.status is not None:
                record["status"] = rule.status
                return web.json_response(rule.error_body(), status=rule.status, headers=rule.headers())
            if rule.delay_ms is not None:
                await self._pause(rule.delay_ms / 1000)
                if request.transport is None or request.transport.is_closing():
                    return _Severed()  # the client gave up (or the request was cut) while it waited
                return await self._forward(request, record)
            if rule.hold_ms is not None:
                return await self._hold(request, record, rule.hold_ms, hit)
            if rule.rewrite_to is not None:
                query = f"?{request.query_string}" if request.query_string else ""
                return await self._forward(request, record, path_qs=rule.rewritten(request.path) + query)
            if rule.stall_ms is not None:
                await self._pause(rule.stall_ms / 1000)
            elif rule.drop == "after":
                # The homeserver does the work; the bot never learns the answer.
                await self._forward(request, record, deliver=False)
            if request.transport is not None:
                request.transport.close()
            return _Severed()
        finally:
            # When the faulty answer ended: a retry is measured from here.
            hit["endedAt"] = round(mono_ms(), 1)
            self._changes.notify()

    async def _pause(self, seconds: float, release: asyncio.Event | None = None) -> str:
        """Wait `seconds`, less when the proxy stops (or `release` is set): which of them ended the wait."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if release is not None:
            waits.append(asyncio.ensure_future(release.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if not done:
            return "timed-out"
        return "stopped" if self._stopping.is_set() else "released"

    async def _hold(self, request: web.Request, record: dict[str, Any], hold_ms: int, hit: dict[str, Any]
                    ) -> web.StreamResponse:
        """No answer and no error: the connection stays open until the client hangs up (this handler is then
        cancelled), the rules change, or the hold runs out; then the request goes on to the homeserver."""
        try:
            ending = await self._pause(hold_ms / 1000, self._release)
        except asyncio.CancelledError:
            hit["ending"] = "client-gave-up"
            raise
        hit["ending"] = ending
        if ending == "stopped" or request.transport is None or request.transport.is_closing():
            return _Severed()
        return await self._forward(request, record)

    async def _forward(self, request: web.Request, record: dict[str, Any], *, deliver: bool = True,
                       path_qs: str | None = None) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = self.upstream + (path_qs or request.path_qs)
        try:
            upstream = await self._session.request(request.method, url, data=body or None, headers=headers,
                                                   allow_redirects=False)
        except aiohttp.ClientError as exc:
            # The homeserver itself is down (a restart step): answer as a real reverse proxy would.
            record["status"] = 502
            return web.json_response({"errcode": "M_UNKNOWN", "error": f"fault proxy: upstream: {exc}"}, status=502)
        async with upstream:
            record["status"] = upstream.status
            if not deliver:
                await upstream.read()
                return web.Response(status=upstream.status)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response

    async def _forward_to_device(self, request: web.Request, record: dict[str, Any], rule: FaultRule | None
                                 ) -> web.StreamResponse:
        """Forward a /sync and answer with its body rewritten: to-device events kept back while `rule` is still
        installed when the answer comes, or (rule None, or released meanwhile) the kept ones given back."""
        assert self._session is not None
        body = await request.read()
        # Uncompressed, so the answer can be read and rewritten.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in (*_HOP, "accept-encoding")}
        # Giving kept events back: the answer has news, so the homeserver is not to wait out its long-poll.
        path_qs = request.path_qs if rule is not None else str(request.rel_url.update_query(timeout="0"))
        try:
            upstream = await self._session.request(request.method, self.upstream + path_qs,
                                                   data=body or None, headers=headers, allow_redirects=False)
        except aiohttp.ClientError as exc:
            record["status"] = 502
            return web.json_response({"errcode": "M_UNKNOWN", "error": f"fault proxy: upstream: {exc}"}, status=502)
        async with upstream:
            record["status"] = upstream.status
            raw = await upstream.read()
            out = {k: v for k, v in upstream.headers.items()
                   if k.lower() not in (*_HOP, "content-length", "content-encoding")}
        try:
            answer = json.loads(raw) if upstream.status == 200 else None
        except ValueError:
            answer = None
        if answer is None:
            return web.Response(status=upstream.status, body=raw, headers=out)
        answer = self._to_device.answer(answer, rule, self.state.rules, record, self.hits)
        self._changes.notify()
        return web.Response(status=200, body=json.dumps(answer).encode(), headers=out)

    def _record_hit(self, rule: FaultRule, occurrence: int, action: str, record: dict[str, Any],
                    status: int | None) -> dict[str, Any]:
        hit = {"rule": rule.name, "occurrence": occurrence, "action": action, "method": record["method"],
               "path": record["path"], "status": status, "startedAt": round(record["startedAt"], 1),
               "endedAt": None, "what": rule.describe()}
        self.hits.append(hit)
        self._changes.notify()
        log.info("fault %s hit %s %s (%s)", rule.name, record["method"], record["path"], action)
        return hit


class _Severed(web.StreamResponse):
    """What a handler returns for a connection it closed: aiohttp needs a response, and writing one to a closed
    transport would only log an error."""

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _installation(rules: Sequence[FaultRule], why: str) -> dict[str, Any]:
    return {"at": round(mono_ms(), 1), "by": why, "rules": [{"name": r.name, "what": r.describe()} for r in rules]}
