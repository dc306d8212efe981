"""The fault proxy on real sockets: forwards and streams untouched traffic, serves each fault kind, records hits,
and stops within its bound with requests still open. The upstream is a small local aiohttp app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from qa.harness.fault_proxy import SHUTDOWN_TIMEOUT_S, FaultProxy
from qa.harness.fault_rules import FaultRule


@pytest.fixture
def first_part_read() -> asyncio.Event:
    """Set by a test once its client has the first part of /stream: only then does the upstream send the rest."""
    return asyncio.Event()


@pytest.fixture
async def upstream(first_part_read: asyncio.Event) -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs} {await request.text()}")
        return web.json_response({"path": request.path_qs, "auth": request.headers.get("Authorization")})

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first;")
        # The rest only once the client has the first part: so the proxy must pass that part on at once, and no
        # clock decides it (a loaded machine could hand a slow client both parts together).
        await asyncio.wait_for(first_part_read.wait(), 30)
        await response.write(b"second")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/stream", slow_stream)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


def rules(*items: dict[str, object]) -> list[FaultRule]:
    return [FaultRule.model_validate(item) for item in items]


async def test_untouched_requests_pass_through_with_query_and_headers(upstream: tuple[str, list[str]]) -> None:
    url, seen = upstream
    proxy = FaultProxy(url)
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http, http.put(f"{base}/_matrix/x?since=s1", data=b'{"a":1}',
                            headers={"Authorization": "Bearer t"}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"path": "/_matrix/x?since=s1", "auth": "Bearer t"}
    finally:
        await proxy.stop()
    assert seen == ['PUT /_matrix/x?since=s1 {"a":1}']
    assert proxy.hits == [] and [r["path"] for r in proxy.requests] == ["/_matrix/x"]


async def test_a_streamed_response_arrives_piece_by_piece(upstream: tuple[str, list[str]],
                                                         first_part_read: asyncio.Event) -> None:
    url, _ = upstream
    proxy = FaultProxy(url)
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/stream") as resp:
            # Were the first part held back for the whole body, this would wait for ever (bounded here).
            first = await asyncio.wait_for(resp.content.readexactly(6), 10)
            first_part_read.set()
            rest = await resp.content.read()
            assert (first, rest) == (b"first;", b"second")
    finally:
        await proxy.stop()


async def test_status_rule_answers_with_a_matrix_error_and_is_recorded(upstream: tuple[str, list[str]]) -> None:
    url, seen = upstream
    proxy = FaultProxy(url, rules({"name": "limit", "method": "PUT", "path": "/send/", "count": 2,
                                   "status": 429, "retry_after_ms": 250}))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(3):
                async with http.put(f"{base}/rooms/!r/send/m.room.message/txn1", data=b"{}") as resp:
                    statuses.append(resp.status)
                    body = await resp.json()
                    if resp.status == 429:
                        assert body == {"errcode": "M_LIMIT_EXCEEDED", "error": "matrix-qa fault 'limit'",
                                        "retry_after_ms": 250}
                        assert resp.headers["Retry-After"] == "1"
    finally:
        await proxy.stop()
    assert statuses == [429, 429, 200]
    assert len(seen) == 1, "a faulted request never reaches the homeserver"
    assert [(h["rule"], h["occurrence"], h["status"]) for h in proxy.hits] == [("limit", 1, 429), ("limit", 2, 429)]
    assert proxy.artifact()["requests"] == 3


@pytest.mark.parametrize(("action", "forwarded"), [("before", 0), ("after", 1)])
async def test_drop_closes_the_connection(upstream: tuple[str, list[str]], action: str, forwarded: int) -> None:
    # POST: aiohttp clients (nio's too) silently retry an idempotent request once on a dropped connection.
    url, seen = upstream
    proxy = FaultProxy(url, rules({"name": "cut", "path": "/send/", "drop": action}))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.post(f"{base}/send/1", data=b"{}") as resp:
                    await resp.read()
    finally:
        await proxy.stop()
    assert len(seen) == forwarded
    assert [h["action"] for h in proxy.hits] == [f"drop-{action}"]


async def test_stall_says_nothing_then_closes(upstream: tuple[str, list[str]]) -> None:
    url, seen = upstream
    proxy = FaultProxy(url, rules({"name": "stall", "path": "/sync", "stall_ms": 200}))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            began = time.monotonic()
            with pytest.raises(aiohttp.ClientError):
                async with http.post(f"{base}/sync") as resp:
                    await resp.read()
            assert time.monotonic() - began >= 0.15
    finally:
        await proxy.stop()
    assert seen == [] and [h["action"] for h in proxy.hits] == ["stall"]


async def test_set_rules_mid_way_and_cut_what_is_in_flight(upstream: tuple[str, list[str]]) -> None:
    url, _ = upstream
    proxy = FaultProxy(url, rules({"name": "hold", "path": "/sync", "delay_ms": 5000}))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            pending = asyncio.ensure_future(http.post(f"{base}/sync"))
            await proxy.wait_until(lambda: len(proxy.requests) == 1, 5)
            cut = proxy.set_rules(rules({"name": "bad-gateway", "path": "/sync", "status": 502}), drop_in_flight=True)
            with pytest.raises(aiohttp.ClientError):
                await pending
            async with http.get(f"{base}/sync") as resp:
                assert resp.status == 502
    finally:
        await proxy.stop()
    assert cut == 1
    assert [(h["rule"], h["action"]) for h in proxy.hits] == [("hold", "delay"), ("drop_in_flight", "drop-in-flight"),
                                                            ("bad-gateway", "status")]
    assert [i["by"] for i in proxy.artifact()["installed"]] == ["scenario", "set_faults"]


async def test_stop_is_bounded_with_a_stall_open(upstream: tuple[str, list[str]]) -> None:
    url, _ = upstream
    proxy = FaultProxy(url, rules({"name": "stall", "path": "/sync", "stall_ms": 60_000}))
    base = await proxy.start()
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(http.get(f"{base}/sync"))
        await proxy.wait_until(lambda: len(proxy.requests) == 1, 5)
        began = time.monotonic()
        await proxy.stop()
        assert time.monotonic() - began < SHUTDOWN_TIMEOUT_S + 5  # generous: a shared machine
        with pytest.raises(aiohttp.ClientError):
            await pending


async def test_an_unreachable_homeserver_is_a_502(upstream: tuple[str, list[str]]) -> None:
    proxy = FaultProxy("http://127.0.0.1:9")  # discard port: nothing listens
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/_matrix/client/versions") as resp:
            assert resp.status == 502
            assert (await resp.json())["errcode"] == "M_UNKNOWN"
    finally:
        await proxy.stop()


async def test_a_held_request_gets_no_answer_until_the_client_gives_up(upstream: tuple[str, list[str]]) -> None:
    url, seen = upstream
    proxy = FaultProxy(url, rules({"name": "silent", "path": "/sync", "hold_ms": 60_000}))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            pending = asyncio.ensure_future(http.get(f"{base}/sync"))
            # The client's patience is counted from when the proxy holds the request, not from when it was sent:
            # on a loaded machine the request can reach the proxy late, and the hold then looked too short.
            await proxy.wait_until(lambda: len(proxy.hits) == 1, 5)
            await asyncio.wait({pending}, timeout=0.3)
            assert not pending.done(), "no answer and no error: only the client giving up ends it"
            pending.cancel()  # the client gives up: it hangs up
            with pytest.raises(asyncio.CancelledError):
                await pending
            await proxy.wait_until(lambda: proxy.hits[0]["endedAt"] is not None, 5)
            # The next request is not held (count 1): it reaches the homeserver.
            async with http.get(f"{base}/sync") as resp:
                assert resp.status == 200
    finally:
        await proxy.stop()
    hit = proxy.hits[0]
    assert (hit["action"], hit["ending"]) == ("hold", "client-gave-up")
    assert hit["endedAt"] - hit["startedAt"] >= 250
    assert len(seen) == 1  # the held request never reached the homeserver


async def test_new_rules_release_a_held_request_to_the_homeserver(upstream: tuple[str, list[str]]) -> None:
    url, seen = upstream
    proxy = FaultProxy(url, rules({"name": "silent", "path": "/sync", "hold_ms": 60_000}))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            pending = asyncio.ensure_future(http.get(f"{base}/sync?since=s1"))
            await proxy.wait_until(lambda: len(proxy.hits) == 1, 5)
            assert not pending.done() and seen == []
            proxy.set_rules([], why="release")
            resp = await asyncio.wait_for(pending, 5)
            assert resp.status == 200 and (await resp.json())["path"] == "/sync?since=s1"
    finally:
        await proxy.stop()
    assert proxy.hits[0]["ending"] == "released"


async def test_a_hold_that_runs_out_forwards_and_stop_ends_one_at_once(upstream: tuple[str, list[str]]) -> None:
    url, seen = upstream
    proxy = FaultProxy(url, rules({"name": "silent", "path": "/sync", "hold_ms": 100, "count": "all"}))
    base = await proxy.start()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/sync") as resp:
            assert resp.status == 200
        assert proxy.hits[0]["ending"] == "timed-out" and len(seen) == 1
        proxy.set_rules(rules({"name": "long", "path": "/sync", "hold_ms": 60_000}))
        pending = asyncio.ensure_future(http.get(f"{base}/sync"))
        await proxy.wait_until(lambda: len(proxy.hits) == 2, 5)
        began = time.monotonic()
        await proxy.stop()
        assert time.monotonic() - began < SHUTDOWN_TIMEOUT_S + 5
        with pytest.raises(aiohttp.ClientError):
            await pending
    assert len(seen) == 1


async def test_a_rewrite_forwards_to_the_other_path_with_its_query(upstream: tuple[str, list[str]]) -> None:
    url, seen = upstream
    proxy = FaultProxy(url, rules({"name": "legacy", "path": "^/old/", "rewrite_to": "/new/"}))
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/old/a?x=1") as resp:
            assert resp.status == 200 and (await resp.json())["path"] == "/new/a?x=1"
    finally:
        await proxy.stop()
    assert seen == ["GET /new/a?x=1 "] and [h["action"] for h in proxy.hits] == ["rewrite"]
