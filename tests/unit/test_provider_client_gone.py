"""A client that goes away while sending its request (a bot killed mid-send, as when a run is torn down under it)
is the client's doing: the mock provider journals it as a disconnect and prints no traceback. Regression: a
homeserver killed under an application-service bot printed the provider's "unexpected error" traceback on the
console (ConnectionResetError from reading the body) in a run that must end without one."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from qa.provider.answering import CLIENT_GONE, pause
from qa.provider.journal import JournalEntry
from qa.provider.mock import MockProvider
from qa.provider.rules import parse_rules


async def test_a_request_cut_off_mid_body_is_a_disconnect_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    provider = MockProvider(parse_rules("rules: []"), include_builtins=False)
    await provider.start()
    try:
        _reader, writer = await asyncio.open_connection(provider.host, provider.port)
        auth = f"Authorization: Bearer {provider.api_key}\r\n" if provider.api_key else ""
        writer.write(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"{auth}Content-Length: 1000\r\n\r\n{{\"model\": ").encode())
        await writer.drain()
        await provider.wait_for(lambda e: e.path == "/v1/chat/completions", 10)
        writer.transport.abort()  # gone before the rest of the body
        entry = await provider.wait_for(lambda e: e.state == "done", 10)
    finally:
        await provider.stop()
    assert entry.client_disconnected, entry
    assert entry.error is None, "no error served: nobody was left to serve it to"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def _abandoned(rules: str) -> JournalEntry:
    """A complete chat request to a provider with these rules, whose client goes away while it is in flight:
    the provider's journal entry once the request is done (held requests must notice the close themselves)."""
    provider = MockProvider(parse_rules(rules), include_builtins=False)
    await provider.start()
    try:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hang please"}]})
        _reader, writer = await asyncio.open_connection(provider.host, provider.port)
        auth = f"Authorization: Bearer {provider.api_key}\r\n" if provider.api_key else ""
        writer.write(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"{auth}Content-Length: {len(body)}\r\n\r\n{body}").encode())
        await writer.drain()
        await provider.wait_in_flight(lambda e: e.rule is not None, 10)
        writer.transport.abort()  # the bot gave up waiting
        # Well within the hold (never released) or the latency: only the close itself can end the request.
        return await provider.wait_for(lambda e: e.state == "done", 10)
    finally:
        await provider.stop()


async def test_a_held_request_ends_when_its_client_goes_not_when_the_hold_is_released() -> None:
    # Before the close was an event, a `hold` never looked for its client: it ended (and was filed as ended by
    # the harness) only when the run released it.
    entry = await _abandoned("rules:\n  - {name: held, match: {latest_user: hang}, reply: {text: x}, hold: h}")
    assert entry.client_disconnected and entry.fault == "hang: the connection closed while the request was held"
    assert entry.finished_at is not None and entry.held_ms is not None


async def test_a_slow_request_ends_when_its_client_goes() -> None:
    entry = await _abandoned("rules:\n  - {name: slow, match: {latest_user: hang}, reply: {text: x}, "
                             "latency_ms: 60000}")
    assert entry.client_disconnected and entry.fault == "hang: the connection closed while the request was held"


class _OpenTransport:
    def is_closing(self) -> bool:
        return False


class _Request(dict):  # type: ignore[type-arg]
    transport = _OpenTransport()


async def test_a_pause_wakes_on_the_close_event_without_looking_at_the_transport() -> None:
    # The close is the event the server sets when aiohttp reports the connection lost; a pause that polled the
    # transport every 20 ms would sleep out its whole latency here.
    request = _Request({CLIENT_GONE: asyncio.Event()})
    pausing = asyncio.ensure_future(pause(60.0, asyncio.Event(), request))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not pausing.done()
    request[CLIENT_GONE].set()
    await asyncio.wait_for(pausing, 10)
    stopping = asyncio.Event()
    stopping.set()
    await asyncio.wait_for(pause(60.0, stopping, _Request()), 10)  # type: ignore[arg-type]
    request[CLIENT_GONE].set()
    await asyncio.wait_for(pause(60.0, asyncio.Event(), request), 10)  # type: ignore[arg-type]  # already gone
