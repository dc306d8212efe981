"""The recording proxy, when the live endpoint's stream breaks after it has begun: the bot's connection is cut
(a broken stream, as the endpoint gave it), never an error answer written into the stream the bot is reading.
A fake upstream that dies mid-stream, a raw client that keeps every byte; no homeserver, no bot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from qa.provider.cassette import CassetteError
from qa.provider.recorder import STAND_IN_KEY, RecordingProxy
from tests.unit.test_record_replay_http import RUN_ONE, values

FIRST = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'


async def _dies_mid_stream(request: web.Request) -> web.StreamResponse:
    """Headers, one chunk, then the connection dropped: the endpoint died mid-answer."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(FIRST)
    assert request.transport is not None
    request.transport.abort()
    return response


async def _raw_exchange(host: str, port: int, path: str, body: bytes) -> bytes:
    """Every byte the proxy sends back, until it closes the connection (it need not keep it for another request)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                  f"Authorization: Bearer {STAND_IN_KEY}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), 60)
    finally:
        writer.close()


async def test_a_stream_that_breaks_after_it_began_is_cut_not_answered_with_a_502(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _dies_mid_stream)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    proxy = RecordingProxy(base_url=upstream, api_key="sk-upstream", model="m", timeout_s=60, directory=tmp_path,
                           secrets=["sk-upstream"])
    await proxy.start()
    try:
        proxy.bind_scope("cut", values(RUN_ONE, "cut"))
        body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
        url = urlsplit(proxy.scoped_base_url("cut"))
        raw = await _raw_exchange(proxy.host, int(url.port or 0), f"{url.path}/chat/completions", body)
        # The exchange never completed: a replay cannot play a cut, so the cassette is refused, saying why.
        with pytest.raises(CassetteError, match="a streamed response needs its chunks"):
            proxy.finish_scope("cut", "fail")
    finally:
        await proxy.stop()
        await runner.cleanup()
    head, _, stream = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    assert b'"delta":{"content":"par"}' in stream, raw  # what came was relayed as it came
    assert b"502" not in stream and b"proxy_error" not in stream and b"HTTP/1.1" not in stream, raw
    assert not stream.endswith(b"0\r\n\r\n"), raw  # no last chunk: the bot sees the stream broken, not ended
    assert "stream broke after it began" in caplog.text
