"""The mock provider as a real HTTP server, driven through the real openai SDK and raw aiohttp requests."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from qa.provider.mock import JournalEntry, MockProvider
from qa.provider.rules import DEFAULT_FALLBACK_TEXT, load_rules

EXEC_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "exec",
        "description": "run a shell command",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}


def new_token() -> str:
    return f"MQA-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def provider() -> AsyncIterator[MockProvider]:
    mock = MockProvider()
    await mock.start()
    yield mock
    await mock.stop()


def sdk(mock: MockProvider, api_key: str = "x") -> openai.AsyncOpenAI:
    # No retries: a retried 5xx would hide the journal's one-request-per-call shape from these tests.
    return openai.AsyncOpenAI(base_url=mock.base_url, api_key=api_key, max_retries=0, timeout=10)


@pytest.fixture
async def client(provider: MockProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(provider) as c:
        yield c


def only_chat(mock: MockProvider) -> JournalEntry:
    [entry] = [e for e in mock.journal if e.is_chat]
    return entry


async def test_marker_reply_non_streaming(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    token = new_token()
    result = await client.chat.completions.create(
        model=provider.model,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"reply with only this exact marker: {token}."},
        ],
    )
    assert result.object == "chat.completion"
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == token
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert result.usage is not None and result.usage.total_tokens > 0

    entry = only_chat(provider)
    assert (entry.id, entry.state, entry.status, entry.stream) == ("req-1", "done", 200, False)
    assert entry.rule == "exact-marker" and not entry.unmatched
    assert entry.reply is not None and entry.reply.text == token
    assert entry.model == provider.model
    assert entry.latest_user == f"reply with only this exact marker: {token}."
    assert entry.messages[0] == {"role": "system", "content": "You are terse."}
    assert entry.finished_at is not None and entry.finished_at >= entry.started_at


async def test_two_markers_get_their_own_replies(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    # Guards against a mock that replays a constant: each request must echo its own token.
    tokens = [new_token(), new_token()]
    replies = []
    for token in tokens:
        result = await client.chat.completions.create(
            model=provider.model, messages=[{"role": "user", "content": f"reply with only this exact marker: {token}"}]
        )
        replies.append(result.choices[0].message.content)
    assert replies == tokens


async def test_marker_reply_streaming(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    token = new_token()
    stream = await client.chat.completions.create(
        model=provider.model,
        messages=[{"role": "user", "content": f"reply with only this exact marker: {token}"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish_reasons: list[str] = []
    usage = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    assert "".join(pieces) == token
    assert len(pieces) > 1, "content should arrive as several deltas"
    assert finish_reasons == ["stop"]
    assert usage is not None and usage.completion_tokens > 0

    entry = only_chat(provider)
    assert entry.stream is True
    assert (entry.state, entry.status, entry.rule) == ("done", 200, "exact-marker")


async def test_tool_call_non_streaming(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    command = "echo 'MQA-1234abcd' && ls -la"
    result = await client.chat.completions.create(
        model=provider.model,
        messages=[{"role": "user", "content": f"run this exact command: {command}"}],
        tools=[EXEC_TOOL],
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "exec"
    assert json.loads(call.function.arguments) == {"command": command}

    entry = only_chat(provider)
    assert entry.tools == ["exec"]
    assert entry.rule == "exec-command"
    assert entry.reply is not None and entry.reply.tool_calls[0].id == call.id


async def test_tool_call_streaming_is_reassembled_by_the_sdk(
    provider: MockProvider, client: openai.AsyncOpenAI
) -> None:
    command = 'printf "%s\\n" "a b"'
    messages: Any = [{"role": "user", "content": f"run this exact command: {command}"}]
    async with client.chat.completions.stream(model=provider.model, messages=messages, tools=[EXEC_TOOL]) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "exec"
    assert json.loads(call.function.arguments) == {"command": command}

    # The raw chunks must look like the real API's: the id and name once, arguments in fragments.
    raw = await client.chat.completions.create(model=provider.model, messages=messages, tools=[EXEC_TOOL], stream=True)
    fragments: list[str] = []
    heads = []
    async for chunk in raw:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            assert delta_call.index == 0
            if delta_call.id is not None:
                heads.append((delta_call.id, delta_call.type, delta_call.function and delta_call.function.name))
            if delta_call.function and delta_call.function.arguments:
                fragments.append(delta_call.function.arguments)
    assert len(heads) == 1 and heads[0][1:] == ("function", "exec")
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"command": command}


async def test_tool_result_follow_up_echoes_the_output(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    messages: Any = [
        {"role": "user", "content": "run this exact command: echo MQA-5"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": '{"command": "x"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "MQA-5\nexit 0"},
    ]
    result = await client.chat.completions.create(model=provider.model, messages=messages, tools=[EXEC_TOOL])
    assert result.choices[0].message.content == "MQA-5\nexit 0"
    assert result.choices[0].finish_reason == "stop"
    assert only_chat(provider).rule == "exec-result"


async def test_unmatched_request_gets_the_fallback_and_is_marked(
    provider: MockProvider, client: openai.AsyncOpenAI
) -> None:
    result = await client.chat.completions.create(
        model=provider.model, messages=[{"role": "user", "content": "what is the weather?"}]
    )
    assert result.choices[0].message.content == DEFAULT_FALLBACK_TEXT
    entry = only_chat(provider)
    assert entry.unmatched is True and entry.rule is None
    assert entry.to_json()["unmatched"] is True


async def test_fallback_text_is_configurable() -> None:
    async with MockProvider(fallback_text="nope", include_builtins=False) as mock, sdk(mock) as c:
        result = await c.chat.completions.create(
            model=mock.model, messages=[{"role": "user", "content": "reply with only this exact marker: X"}]
        )
        assert result.choices[0].message.content == "nope"


async def raw_request(
    mock: MockProvider, method: str, path: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{mock.port}{path}", data=data, headers=headers or {}) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json()


def assert_openai_error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "param"),
    [
        ("POST", "/v1/nope", b"{}", 404, None),
        ("GET", "/", None, 404, None),
        ("GET", "/v1/chat/completions", None, 405, None),
        ("POST", "/v1/chat/completions", b"{not json", 400, None),
        ("POST", "/v1/chat/completions", b"", 400, None),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, None),
        ("POST", "/v1/chat/completions", b'{"model": "m"}', 400, "messages"),
        ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
        ("POST", "/v1/chat/completions", b'{"model": "m", "messages": "hi"}', 400, "messages"),
        ("POST", "/v1/chat/completions", b'{"model": "m", "messages": [{"content": "hi"}]}', 400, "messages[0].role"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(
    provider: MockProvider, method: str, path: str, data: bytes | None, status: int, param: str | None
) -> None:
    got_status, body = await raw_request(provider, method, path, data=data)
    assert got_status == status
    error = assert_openai_error(body)
    assert error["param"] == param
    [entry] = provider.journal
    assert (entry.state, entry.status, entry.path) == ("done", status, path)
    assert entry.error is not None and entry.error.message == error["message"]


async def test_sdk_raises_the_matching_error_classes(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=provider.model, messages=[])
    assert bad.value.status_code == 400
    assert bad.value.param == "messages"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
    assert (await client.models.retrieve(provider.model)).id == provider.model


async def test_error_rules_simulate_provider_failures(tmp_path: Path) -> None:
    rules_file = tmp_path / "failures.yaml"
    rules_file.write_text(
        """
rules:
  - name: overloaded
    match: {latest_user: "overload"}
    error: {status: 500, message: "simulated outage"}
  - name: limited
    match: {latest_user: "limit"}
    error: {status: 429, message: "slow down", type: requests, code: rate_limit_exceeded}
""",
        encoding="utf-8",
    )
    async with MockProvider(load_rules(rules_file)) as mock, sdk(mock) as c:
        with pytest.raises(openai.InternalServerError, match="simulated outage"):
            await c.chat.completions.create(model=mock.model, messages=[{"role": "user", "content": "overload"}])
        with pytest.raises(openai.RateLimitError) as limited:
            await c.chat.completions.create(
                model=mock.model, messages=[{"role": "user", "content": "limit"}], stream=True
            )
        assert limited.value.code == "rate_limit_exceeded"
        assert [(e.rule, e.status) for e in mock.journal] == [("overloaded", 500), ("limited", 429)]
        assert mock.journal_as_json()[0]["error"]["status"] == 500


async def test_api_key_is_enforced_when_configured() -> None:
    async with MockProvider(api_key="sekrit") as mock:
        async with sdk(mock, api_key="wrong") as bad:
            with pytest.raises(openai.AuthenticationError) as denied:
                await bad.models.list()
            assert denied.value.code == "invalid_api_key"
        status, body = await raw_request(mock, "GET", "/v1/models")
        assert status == 401
        assert_openai_error(body)
        async with sdk(mock, api_key="sekrit") as good:
            models = await good.models.list()
            assert [m.id for m in models.data] == [mock.model]
        assert [e.status for e in mock.journal] == [401, 401, 200]


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [(m.id, m.object) for m in page.data] == [("mock-model", "model")]


async def test_latency_rule_is_observable_in_flight(tmp_path: Path) -> None:
    rules_file = tmp_path / "slow.yaml"
    rules_file.write_text(
        """
rules:
  - name: slowish
    match: {latest_user: "take your time: (?P<t>\\\\S+)"}
    reply: {text: "done {t}"}
    latency_ms: 300
""",
        encoding="utf-8",
    )
    token = new_token()
    async with MockProvider(load_rules(rules_file)) as mock, sdk(mock) as c:
        call = asyncio.create_task(
            c.chat.completions.create(
                model=mock.model, messages=[{"role": "user", "content": f"take your time: {token}"}]
            )
        )
        entry = await mock.wait_in_flight(lambda e: e.contains(token), timeout=5)
        # Checked synchronously on wake-up: the request cannot finish before we look.
        assert entry.state == "in_flight"
        assert entry.finished_at is None
        assert entry.rule == "slowish" and entry.latency_ms == 300
        assert not call.done()

        result = await asyncio.wait_for(call, timeout=5)
        assert result.choices[0].message.content == f"done {token}"
        assert entry.state == "done"
        assert entry.finished_at is not None
        assert entry.finished_at - entry.started_at >= 300
        assert await mock.wait_for(lambda e: e.id == entry.id and e.state == "done", timeout=1) is entry


async def test_held_request_waits_for_release(tmp_path: Path) -> None:
    rules_file = tmp_path / "hold.yaml"
    rules_file.write_text(
        "rules:\n  - name: gated\n    match: {latest_user: gate}\n    reply: {text: released}\n    hold: true\n",
        encoding="utf-8",
    )
    async with MockProvider(load_rules(rules_file)) as mock, sdk(mock) as c:
        call = asyncio.create_task(
            c.chat.completions.create(model=mock.model, messages=[{"role": "user", "content": "gate"}], stream=True)
        )
        entry = await mock.wait_in_flight(lambda e: e.rule == "gated", timeout=5)
        assert entry.hold == "gated"
        assert entry.state == "in_flight" and not call.done()
        mock.release("gated")
        stream = await asyncio.wait_for(call, timeout=5)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        assert text == "released"
        assert entry.state == "done" and entry.held_ms is not None and entry.held_ms > 0


async def test_stop_does_not_hang_on_a_held_request(tmp_path: Path) -> None:
    rules_file = tmp_path / "hold.yaml"
    rules_file.write_text("rules:\n  - name: forever\n    reply: {text: late}\n    hold: never\n", encoding="utf-8")
    mock = MockProvider(load_rules(rules_file))
    await mock.start()
    async with sdk(mock) as c:
        call = asyncio.create_task(
            c.chat.completions.create(model=mock.model, messages=[{"role": "user", "content": "hi"}])
        )
        entry = await mock.wait_in_flight(lambda e: True, timeout=5)
        await asyncio.wait_for(mock.stop(), timeout=5)
        assert entry.state == "done"
        await asyncio.wait_for(asyncio.gather(call, return_exceptions=True), timeout=5)


async def test_wait_for_wakes_on_a_later_request(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    token = new_token()
    waiter = asyncio.create_task(provider.wait_for(lambda e: e.contains(token) and e.state == "done", timeout=5))
    await client.chat.completions.create(
        model=provider.model, messages=[{"role": "user", "content": f"reply with only this exact marker: {token}"}]
    )
    entry = await asyncio.wait_for(waiter, timeout=5)
    assert entry.reply is not None and entry.reply.text == token


async def test_wait_timeouts_say_what_was_seen(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    token = new_token()
    await client.chat.completions.create(
        model=provider.model, messages=[{"role": "user", "content": f"reply with only this exact marker: {token}"}]
    )
    with pytest.raises(TimeoutError) as never:
        await provider.wait_for(lambda e: False, timeout=0.05)
    assert "1 request(s) seen" in str(never.value)
    assert token in str(never.value)
    # A request that finished before anyone looked is not "in flight", and the message says so.
    with pytest.raises(TimeoutError, match="matching but already finished: req-1"):
        await provider.wait_in_flight(lambda e: e.contains(token), timeout=0.05)


async def test_journal_helpers(provider: MockProvider, client: openai.AsyncOpenAI) -> None:
    first, second = new_token(), new_token()
    for token in (first, second):
        await client.chat.completions.create(
            model=provider.model,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": f"reply with only this exact marker: {token}"}]}
            ],
            stream=True,
        )
    await client.models.list()
    assert [e.id for e in provider.entries_for(first)] == ["req-1"]
    assert [e.id for e in provider.entries_for(second)] == ["req-2"]
    assert provider.entries_for("MQA-absent") == []
    dumped = json.loads(json.dumps(provider.journal_as_json()))
    assert [d["id"] for d in dumped] == ["req-1", "req-2", "req-3"]
    assert dumped[1]["reply"] == {"text": second, "toolCalls": []}
    assert dumped[1]["stream"] is True
    assert dumped[2]["path"] == "/v1/models" and dumped[2]["messages"] == []
    for record in dumped:
        assert record["state"] == "done"
        assert record["finishedAt"] >= record["startedAt"]
        assert record["latencyMs"] == 0


async def test_standalone_entry_point_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qa.provider.mock",
        "--port",
        "0",
        "--model",
        "cli-model",
        "--journal",
        str(journal),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        base_url = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as c:
            assert [m.id for m in (await c.models.list()).data] == ["cli-model"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
        assert [e["path"] for e in json.loads(journal.read_text())] == ["/v1/models"]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_standalone_entry_point_rejects_a_bad_rule_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qa.provider.mock",
        "--rules",
        str(bad),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 2
    assert str(bad) in stderr.decode() and "rules[0]" in stderr.decode()
