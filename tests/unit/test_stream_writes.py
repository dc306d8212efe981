"""The provider's streamed answers (qa.provider.answering.stream): events go out together up to each pause, a
fault and the end, and what came before a pause is out before the pause; the bytes are the same either way. The
last events go with the end of the body (`write_eof`), so the client's reader finds both in one read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from qa.provider.answering import stream
from qa.provider.journal import JournalEntry
from qa.provider.rules import StreamFault


class Writer:
    trailer = b"data: [DONE]\n\n"

    def start(self) -> list[bytes]:
        return [b"data: start\n\n"]

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        return [b"data: " + chunk["text"].encode() + b"\n\n"]

    def finish(self) -> list[bytes]:
        return [b"data: finish\n\n"]

    def malformed(self) -> bytes:
        return b"data: {not json\n\n"


CHUNKS = [{"text": "a"}, {"text": "b"}, {"text": "c"}]
WHOLE = b"data: start\n\ndata: a\n\ndata: b\n\ndata: c\n\ndata: finish\n\ndata: [DONE]\n\n"


async def _serve(monkeypatch: pytest.MonkeyPatch, waits: dict[str, float],
                 fault: StreamFault | None = None) -> tuple[bytes, list[Any]]:
    log: list[Any] = []
    original = web.StreamResponse.write

    async def write(self: web.StreamResponse, data: bytes) -> None:
        log.append(bytes(data))
        await original(self, data)

    original_eof = web.StreamResponse.write_eof

    async def write_eof(self: web.StreamResponse, data: bytes = b"") -> None:
        if not self._eof_sent:  # aiohttp's own call after the handler returns finds the end already sent
            log.append(("eof", bytes(data)))
        await original_eof(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write)
    monkeypatch.setattr(web.StreamResponse, "write_eof", write_eof)

    async def pause(seconds: float) -> None:
        log.append(("pause", seconds))

    async def handler(request: web.Request) -> web.StreamResponse:
        entry = JournalEntry(id="req-1", method="POST", path="/", started_at=0.0)
        return await stream(request, entry, Writer(), CHUNKS, lambda c: waits.get(c["text"], 0.0), pause, fault)

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/")
        try:
            body = await response.read()
        except aiohttp.ClientPayloadError:
            body = b""
    return body, log


async def test_an_unpaced_answer_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    body, log = await _serve(monkeypatch, {})
    assert body == WHOLE
    assert log == [("eof", WHOLE)], "one write for the whole answer, the trailer and the body's end included"


async def test_what_came_before_a_pause_is_written_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    body, log = await _serve(monkeypatch, {"b": 0.5, "c": -1.0})
    assert body == WHOLE
    assert log == [b"data: start\n\ndata: a\n\n", ("pause", 0.5),
                   ("eof", b"data: b\n\ndata: c\n\ndata: finish\n\ndata: [DONE]\n\n")], "a wait of 0 or less is none"


async def test_a_fault_comes_after_the_intact_part(monkeypatch: pytest.MonkeyPatch) -> None:
    body, log = await _serve(monkeypatch, {}, StreamFault(kind="malformed", after_chunks=2))
    assert body == WHOLE.replace(b"data: b", b"data: {not json\n\ndata: b")
    assert log[:2] == [b"data: start\n\ndata: a\n\n", b"data: {not json\n\n"]
    _, log = await _serve(monkeypatch, {}, StreamFault(kind="cut", after_chunks=1))
    # (aiohttp ends the response itself after the handler, on the closed connection: nothing more is written)
    assert [e for e in log if e != ("eof", b"")] == [b"data: start\n\n", b""], "the intact part, flushed, then the cut"
