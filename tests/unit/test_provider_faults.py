"""Provider faults: the mock's fault rules (times, Retry-After, broken streams, hangs) and the embedded agent's
model client that must ride them out (qa.agent.model): bounded retries, the wait it is told, no partial reply."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from qa.agent.config import FaultMutations, ModelConfig
from qa.agent.model import ModelClient, ModelFailed, classify, retry_after_s
from qa.provider.mock import MockProvider
from qa.provider.rules import ChatRequest, RuleFileError, decide, parse_rules

RULES = """
rules:
  - {name: e500, match: {latest_user: "e500"}, error: {status: 500}, times: 2}
  - {name: e500-always, match: {latest_user: "down"}, error: {status: 503}}
  - {name: e429, match: {latest_user: "e429"}, error: {status: 429, retry_after_s: 0.6}, times: 1}
  - {name: e429-long, match: {latest_user: "wait-long"}, error: {status: 429, retry_after_s: 90}}
  - {name: e400, match: {latest_user: "e400"}, error: {status: 400}}
  - {name: cut, match: {latest_user: "cut"}, reply: {text: "abcdefghijkl"}, stream_fault: {kind: cut, after_chunks: 2},
     times: 1}
  - {name: bad, match: {latest_user: "bad"}, reply: {text: "abcdefghijkl"},
     stream_fault: {kind: malformed, after_chunks: 2}, times: 1}
  - {name: hang, match: {latest_user: "hang"}, reply: {text: "late"}, latency_ms: 20000}
  - {name: ok, match: {latest_user: "."}, reply: {text: "fine {latest_user}"}}
"""


def user(text: str) -> ChatRequest:
    return ChatRequest.from_body({"messages": [{"role": "user", "content": text}]})


@pytest.fixture
async def mock() -> AsyncIterator[MockProvider]:
    provider = MockProvider(parse_rules(RULES), include_builtins=False)
    await provider.start()
    yield provider
    await provider.stop()


def client(mock: MockProvider, retries: int = 2, timeout_s: float = 1.0, **mutations: bool) -> ModelClient:
    config = ModelConfig(baseUrl=mock.base_url, model="mock-model", timeoutS=timeout_s, maxRetries=retries)
    return ModelClient(config, "key", FaultMutations(**mutations))


async def ask(model: ModelClient, text: str) -> tuple[str, list[tuple[int, str, float]]]:
    retries: list[tuple[int, str, float]] = []
    try:
        reply = await model.complete([{"role": "user", "content": text}],
                                     on_retry=lambda n, error, delay: retries.append((n, error, delay)))
    finally:
        await model.close()
    return reply.text, retries


# --- the rules ---------------------------------------------------------------------------------------------


def test_times_passes_a_rule_over_once_a_message_used_it_up() -> None:
    rules = parse_rules(RULES)
    counts: dict[tuple[str, str], int] = {}
    names = [decide(rules, user("e500 one"), counts=counts).rule_name for _ in range(3)]
    assert names == ["e500", "e500", "ok"]
    # Counted per latest user message: another message starts afresh.
    assert decide(rules, user("e500 two"), counts=counts).rule_name == "e500"
    # Without counts (a caller that keeps none) the rule always applies.
    assert [decide(rules, user("e500 one")).rule_name for _ in range(3)] == ["e500"] * 3


def test_fault_words_for_the_journal() -> None:
    rules = parse_rules(RULES)
    assert decide(rules, user("e429")).fault() == "error 429 retry-after 0.6s"
    assert decide(rules, user("down")).fault() == "error 503"
    assert decide(rules, user("cut")).fault() == "stream cut after 2 chunk(s)"
    assert decide(rules, user("bad")).fault() == "malformed chunk after 2 chunk(s)"
    assert decide(rules, user("hello")).fault() is None
    assert decide(rules, user("e429")).error.headers() == {"Retry-After": "0.6"}  # type: ignore[union-attr]


def test_a_stream_fault_needs_a_reply() -> None:
    with pytest.raises(RuleFileError, match="a rule with `error` has no stream to break"):
        parse_rules("rules:\n  - {name: x, error: {status: 500}, stream_fault: {kind: cut}}\n")


# --- the mock serves them ------------------------------------------------------------------------------------


async def test_429_carries_retry_after_and_the_journal_says_what_was_served(mock: MockProvider) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{mock.base_url}/chat/completions", json={
            "model": "mock-model", "messages": [{"role": "user", "content": "e429"}]}) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "0.6"
    assert [(e.rule, e.fault) for e in mock.journal] == [("e429", "error 429 retry-after 0.6s")]
    assert mock.journal_as_json()[0]["fault"] == "error 429 retry-after 0.6s"


@pytest.mark.parametrize("word", ["cut", "bad"])
async def test_a_broken_stream_breaks_the_sdk_after_the_intact_part(mock: MockProvider, word: str) -> None:
    sdk = openai.AsyncOpenAI(base_url=mock.base_url, api_key="k", max_retries=0)
    parts: list[str] = []
    try:
        stream = await sdk.chat.completions.create(model="mock-model", stream=True,
                                                   messages=[{"role": "user", "content": word}])
        # Either an error mid-way, or (a cut that closes cleanly) a stream that never says it finished.
        finished = None
        with pytest.raises(Exception):  # noqa: B017 - what breaks depends on the HTTP stack
            async for chunk in stream:
                parts.append(chunk.choices[0].delta.content or "")
                finished = chunk.choices[0].finish_reason or finished
            assert finished is not None
    finally:
        await sdk.close()
    assert "".join(parts) == "abcd"
    assert mock.journal[0].fault.endswith("after 2 chunk(s)")  # type: ignore[union-attr]


# --- the agent's model client ---------------------------------------------------------------------------------


async def test_5xx_is_retried_into_the_answer(mock: MockProvider) -> None:
    text, retries = await ask(client(mock), "e500")
    assert text == "fine e500"
    assert [n for n, _, _ in retries] == [1, 2] and "500" in retries[0][1]


async def test_a_model_that_keeps_failing_fails_after_the_bound(mock: MockProvider) -> None:
    with pytest.raises(ModelFailed) as failed:
        await ask(client(mock, retries=2), "down")
    assert failed.value.reason == "HTTP 503 after 3 attempts"
    assert len([e for e in mock.journal if e.is_chat]) == 3


async def test_retry_after_is_waited_for(mock: MockProvider) -> None:
    began = time.monotonic()
    text, retries = await ask(client(mock), "e429")
    assert text == "fine e429" and retries[0][2] == pytest.approx(0.6)
    chat = [e for e in mock.journal if e.is_chat]
    assert chat[1].started_at - chat[0].finished_at >= 600  # type: ignore[operator]
    assert time.monotonic() - began >= 0.6


async def test_ignoring_retry_after_is_the_mutation(mock: MockProvider) -> None:
    _, retries = await ask(client(mock, ignore_retry_after=True), "e429")
    assert retries[0][2] < 0.6


async def test_a_wait_longer_than_the_bound_is_not_waited_for(mock: MockProvider) -> None:
    with pytest.raises(ModelFailed) as failed:
        await ask(client(mock), "wait-long")
    assert failed.value.reason == "HTTP 429, asked to wait 90s"


async def test_a_client_error_is_not_retried(mock: MockProvider) -> None:
    with pytest.raises(ModelFailed) as failed:
        await ask(client(mock), "e400")
    assert failed.value.reason == "HTTP 400 after 1 attempt"


@pytest.mark.parametrize("word", ["cut", "bad"])
async def test_a_broken_stream_is_retried_and_never_half_returned(mock: MockProvider, word: str) -> None:
    text, retries = await ask(client(mock), word)
    assert text == f"fine {word}" and len(retries) == 1


@pytest.mark.parametrize("word", ["cut", "bad"])
async def test_keeping_the_partial_reply_is_the_mutation(mock: MockProvider, word: str) -> None:
    text, retries = await ask(client(mock, keep_partial_reply=True), word)
    assert text == "abcd" and retries == []


async def test_no_retry_is_the_mutation(mock: MockProvider) -> None:
    with pytest.raises(ModelFailed) as failed:
        await ask(client(mock, no_model_retry=True), "e500")
    assert failed.value.reason == "HTTP 500 after 1 attempt"


async def test_a_hang_times_out_and_the_journal_records_the_client_giving_up(mock: MockProvider) -> None:
    with pytest.raises(ModelFailed) as failed:
        await ask(client(mock, retries=0, timeout_s=0.3), "hang")
    assert failed.value.reason == "no answer in time after 1 attempt"
    entry = await mock.wait_for(lambda e: e.state == "done", 5)
    assert entry.fault == "hang: the connection closed while the request was held"
    assert entry.finished_at - entry.started_at < 5000  # type: ignore[operator]  # not the 20 s latency


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after-ms": "250"}, 0.25), ({"retry-after": "2"}, 2.0), ({"retry-after": "Wed, 21 Oct 2015"}, None),
    ({"retry-after": "-1"}, None), ({}, None), (None, None),
])
def test_retry_after_headers(headers: dict[str, str] | None, seconds: float | None) -> None:
    assert retry_after_s(headers) == seconds


def test_classify_unknown_errors_as_not_retryable() -> None:
    assert classify(RuntimeError("x")) == ("RuntimeError", False, None)
    assert classify(ValueError("not json"))[:2] == ("a malformed reply", True)
    assert classify(ConnectionResetError())[:2] == ("the connection broke", True)




async def test_a_stream_that_ends_cleanly_without_finishing_is_broken_too() -> None:
    """A proxy that closes a reply stream politely (no error, no finish_reason, no [DONE]) still cut it."""
    from aiohttp import web

    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": None}]}
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", truncated)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    config = ModelConfig(baseUrl=f"http://127.0.0.1:{runner.addresses[0][1]}/v1", model="m", maxRetries=1)
    try:
        with pytest.raises(ModelFailed) as failed:
            await ask(ModelClient(config, "k"), "hi")
        assert failed.value.reason == "the reply stream ended early after 2 attempts"
    finally:
        await runner.cleanup()
