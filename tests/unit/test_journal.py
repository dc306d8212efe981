"""The mock provider's journal (qa.provider.journal): an entry in the common view whatever the API, its JSON form
without media bytes, its one-line summary, and waits that say what they saw. No server."""

from __future__ import annotations

import asyncio

import pytest

from qa.provider.journal import Journal, JournalEntry, shorten, without_image_bytes
from qa.provider.rules import ErrorReply, Reply, ToolCall

PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
       "RU5ErkJggg==")


def entry(path: str = "/v1/responses", **fields: object) -> JournalEntry:
    return JournalEntry(id="req-1", method="POST", path=path, started_at=1.0, **fields)  # type: ignore[arg-type]


def test_the_api_comes_from_the_path() -> None:
    assert [entry(p).api for p in ("/v1/chat/completions", "/scope/s/v1/responses", "/v1/messages",
                                   "/v1/models")] == ["chat", "responses", "anthropic", None]
    assert entry("/v1/messages").is_chat and not entry("/v1/models").is_chat


def test_the_common_view_is_read_alike() -> None:
    e = entry(messages=[
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "exec", "arguments": '{"command": "MQA-1"}'}},
            "junk", {"function": "x"}]},
        {"role": "tool", "content": "done"}])
    assert e.images == 1 and e.latest_user == "look"
    assert e.texts() == ["sys", "look", "", '{"command": "MQA-1"}', "done"]
    assert e.contains("MQA-1") and e.contains("done") and not e.contains("exec")
    assert entry(messages=[{"role": "assistant", "content": "x"}]).latest_user is None


def test_the_json_form_keeps_no_media_and_names_the_api() -> None:
    e = entry(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],
              reply=Reply("hi", [ToolCall("c", "f", "{}")]), error=ErrorReply(429, "slow", "rate", code="c"),
              finished_at=2.34567, held_ms=1.23456, status=429, model="m", tools=["f"], rule="r")
    data = e.to_json()
    assert data["api"] == "responses" and data["images"] == 1
    assert data["messages"][0]["content"][0]["image_url"]["url"] == f"data:image/png;base64,<{len(PNG) - 22} chars>"
    assert data["reply"] == {"text": "hi", "toolCalls": [{"id": "c", "name": "f", "arguments": "{}"}]}
    assert data["error"] == {"message": "slow", "type": "rate", "param": None, "code": "c", "status": 429}
    assert (data["startedAt"], data["finishedAt"], data["heldMs"]) == (1.0, 2.346, 1.235)
    assert list(data) == ["id", "method", "path", "api", "state", "status", "model", "stream", "messages", "images",
                          "tools", "rule", "unmatched", "reply", "error", "startedAt", "finishedAt", "latencyMs",
                          "hold", "heldMs", "holdEnd", "clientDisconnected", "fault"]
    bare = entry().to_json()
    assert (bare["reply"], bare["error"], bare["finishedAt"], bare["heldMs"]) == (None, None, None, None)


def test_media_is_shortened_only_where_it_is_a_data_url() -> None:
    kept = {"role": "user", "content": "text"}
    assert without_image_bytes(kept) is kept
    parts = [{"type": "image_url", "image_url": {"url": "https://x"}}, {"type": "text", "text": "data:x,y"},
             {"type": "image_url", "image_url": "data:x,y"}, "junk"]
    assert without_image_bytes({"role": "user", "content": parts})["content"] == parts


def test_summaries_and_shortening() -> None:
    e = entry(messages=[{"role": "user", "content": "x" * 150}], rule="exact-marker", status=200)
    assert e.summary() == f"req-1 POST /v1/responses in_flight status=200 rule=exact-marker latest user: " \
                          f"{'x' * 99 + '…'!r}"
    assert entry(unmatched=True).summary() == "req-1 POST /v1/responses in_flight status=None unmatched"
    assert shorten("abc", 3) == "abc" and shorten("abcd", 3) == "ab…"


async def test_waits_wake_on_a_change_and_say_what_they_saw() -> None:
    journal = Journal()
    waiting = asyncio.ensure_future(journal.wait(lambda e: e.rule == "r", 5, "a thing"))
    await asyncio.sleep(0)
    journal.entries.append(entry(rule="r"))
    journal.notify()
    assert (await waiting).rule == "r"
    journal.entries.append(entry("/v1/messages", state="done", rule="late"))
    with pytest.raises(TimeoutError) as caught:
        await journal.wait(lambda e: False, 0.01, "a model request", loose=lambda e: e.rule == "late")
    lines = str(caught.value).splitlines()
    assert lines[0] == "mock provider: no a model request within 0.01s; 2 request(s) seen"
    assert lines[1].startswith("  req-1 POST /v1/responses") and lines[-1] == "  matching but already finished: req-1"
    with pytest.raises(TimeoutError) as caught:
        await journal.wait(lambda e: False, 0, "x", loose=lambda e: False)
    assert "matching but already finished" not in str(caught.value)


def test_a_fresh_entry_says_nothing_happened_yet() -> None:
    from qa.provider.apis.base import STREAM_PIECES

    fresh = entry()
    assert (fresh.error, fresh.reply, fresh.pieces, fresh.chunk_delay_ms) == (None, None, STREAM_PIECES, 0)
    data = fresh.to_json()
    assert {k: data[k] for k in ("state", "status", "model", "stream", "tools", "rule", "unmatched", "latencyMs",
                                 "hold", "clientDisconnected", "fault")} == {
        "state": "in_flight", "status": None, "model": None, "stream": False, "tools": [], "rule": None,
        "unmatched": False, "latencyMs": 0, "hold": None, "clientDisconnected": False, "fault": None}
    assert fresh.summary() == "req-1 POST /v1/responses in_flight status=None"
    assert JournalEntry(id="r", method="GET", path="/", started_at=1.23456).to_json()["startedAt"] == 1.235


def test_a_tool_call_without_arguments_adds_an_empty_text() -> None:
    e = entry(messages=[{"role": "assistant", "content": "a", "tool_calls": [{"function": {"name": "f"}}]}])
    assert e.texts() == ["a", ""]


async def test_a_short_wait_still_sees_a_change_and_a_timeout_lists_the_last_twenty() -> None:
    journal = Journal()
    waiting = asyncio.ensure_future(journal.wait(lambda e: e.rule == "r", 0.5, "a thing"))
    await asyncio.sleep(0)
    journal.entries.append(entry(rule="r"))
    journal.notify()
    assert (await waiting).rule == "r"
    journal.entries[:] = [JournalEntry(id=f"req-{i}", method="POST", path="/v1/messages", started_at=1.0,
                                       state="done") for i in range(25)]
    with pytest.raises(TimeoutError) as caught:
        await journal.wait(lambda e: False, 0, "x", loose=lambda e: e.id in ("req-1", "req-2"))
    lines = str(caught.value).splitlines()
    assert len(lines) == 22 and lines[1].startswith("  req-5 ") and lines[20].startswith("  req-24 ")
    assert lines[-1] == "  matching but already finished: req-1, req-2"
