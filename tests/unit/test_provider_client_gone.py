"""A client that goes away while sending its request (a bot killed mid-send, as when a run is torn down under it)
is the client's doing: the mock provider journals it as a disconnect and prints no traceback. Regression: a
homeserver killed under an application-service bot printed the provider's "unexpected error" traceback on the
console (ConnectionResetError from reading the body) in a run that must end without one."""

from __future__ import annotations

import asyncio
import logging

import pytest

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
