"""OpenAI Chat Completions in the mock provider (qa.provider.apis.chat) and what every API shares
(qa.provider.apis.base, the registry in qa.provider.apis), pure: no server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qa.provider import apis
from qa.provider.apis.anthropic import ANTHROPIC
from qa.provider.apis.base import (
    AnswerContext,
    ParsedRequest,
    Usage,
    assistant_messages,
    common_content,
    estimate_tokens,
    is_text_chunk,
    reply_chunks,
    split,
    usage_from,
)
from qa.provider.apis.chat import CHAT, validate
from qa.provider.apis.responses import RESPONSES
from qa.provider.cassette import assemble
from qa.provider.rules import ErrorReply, Reply, ToolCall

EXEC = {"type": "function", "function": {"name": "exec", "parameters": {}}}


def ctx(request: ParsedRequest | None = None, finish: str | None = None) -> AnswerContext:
    return AnswerContext(tag="mock-2", model="gpt-x", created=100, request=request or ParsedRequest("chat", "m"),
                         usage=Usage(9, 2), finish=finish)


# --- the registry -------------------------------------------------------------------------------------------


def test_paths_name_their_api() -> None:
    assert apis.NAMES == ("chat", "responses", "anthropic") and apis.DEFAULT == "chat"
    assert apis.for_path("/v1/chat/completions") is CHAT
    assert apis.for_path("/scope/s/v1/responses") is RESPONSES
    assert apis.for_path("/scope/s/v1/messages") is ANTHROPIC
    for other in ("/v1/models", "/v1/responses/resp_1", "/v1/messages/count_tokens", "/messages", "/v2/messages"):
        assert apis.for_path(other) is None, other
    assert apis.for_request("/v1/models", {"anthropic-version": "2023-06-01"}) is ANTHROPIC
    assert apis.for_request("/v1/models", {}) is CHAT
    assert apis.for_request("/v1/responses", {"anthropic-version": "x"}) is RESPONSES


# --- the common view ----------------------------------------------------------------------------------------


def test_the_conversation_puts_system_and_the_stored_one_first() -> None:
    parsed = ParsedRequest("responses", "m", messages=[{"role": "user", "content": "now"}], system="sys",
                           previous=[{"role": "user", "content": "before"}], raw_tools=[EXEC])
    assert parsed.conversation() == [{"role": "system", "content": "sys"}, {"role": "user", "content": "before"},
                                     {"role": "user", "content": "now"}]
    assert parsed.chat_body() == {"model": "m", "stream": False, "messages": parsed.conversation(), "tools": [EXEC]}
    assert "tools" not in ParsedRequest("chat", "m").chat_body()
    assert parsed.tools == ["exec"]
    reply = Reply("t", [ToolCall("c1", "exec", "{}")])
    assert parsed.stored(reply) == [
        {"role": "user", "content": "before"}, {"role": "user", "content": "now"},
        {"role": "assistant", "content": "t", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "exec", "arguments": "{}"}}]}]
    assert ParsedRequest("responses", "m", messages=[{"role": "user", "content": "x"}]).stored(Reply(None)) == [
        {"role": "user", "content": "x"}]


def test_shared_helpers() -> None:
    assert assistant_messages("x", []) == [{"role": "assistant", "content": "x"}]
    assert assistant_messages(None, []) == []
    assert assistant_messages(None, [{"id": 1, "name": "f", "arguments": "{}"}]) == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]
    assert common_content(["a", "b"], []) == "a\nb"
    assert common_content(["a"], ["u"]) == [{"type": "text", "text": "a"},
                                            {"type": "image_url", "image_url": {"url": "u"}}]
    assert split("") == [] and split("abcdefg") == ["abc", "def", "g"] and split("abcd", 2) == ["ab", "cd"]
    assert split("ab", 5) == ["a", "b"]
    assert estimate_tokens("") == 0 and estimate_tokens("abcde") == 2 and estimate_tokens("abcd") == 1
    assert is_text_chunk({"delta": {"content": "x"}}) and not is_text_chunk({"delta": {"content": ""}})
    assert not is_text_chunk({"usage": {}}) and not is_text_chunk({"delta": "x"})
    assert usage_from({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(3, 4)
    assert usage_from({"input_tokens": 5, "output_tokens": 6, "prompt_tokens": 1}) == Usage(5, 6)
    assert usage_from({"input_tokens": "5", "output_tokens": None}) == Usage(0, 0)


def test_reply_chunks() -> None:
    assert reply_chunks(Reply("abcdef"), 2) == [
        {"delta": {"role": "assistant", "content": "", "refusal": None}}, {"delta": {"content": "abc"}},
        {"delta": {"content": "def"}}, {"delta": {}, "finish_reason": "stop"}]
    calls = reply_chunks(Reply(None, [ToolCall("c1", "exec", '{"a": 1}'), ToolCall("c2", "g", "")]))
    assert calls[0] == {"delta": {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "exec", "arguments": ""}}]}}
    assert calls[1:4] == [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}}
                          for p in ('{"a', '": ', "1}")]
    assert calls[4] == {"delta": {"tool_calls": [
        {"index": 1, "id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}]}}
    assert calls[5] == {"delta": {}, "finish_reason": "tool_calls"} and len(calls) == 6
    both = reply_chunks(Reply("t", [ToolCall("c1", "f", "{}")]), 1)
    assert "role" not in both[2]["delta"]


# --- Chat Completions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message", "param", "code"), [
    ([], "The request body must be a JSON object.", None, "invalid_type"),
    ({"messages": []}, "Missing required parameter: 'model'.", "model", "missing_required_parameter"),
    ({"model": "m"}, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"),
    ({"model": 1, "messages": []}, "Invalid type for 'model': expected a string.", "model", "invalid_type"),
    ({"model": "m", "messages": {}}, "Invalid type for 'messages': expected an array.", "messages", "invalid_type"),
    ({"model": "m", "messages": []}, "Invalid 'messages': empty array. Expected an array with minimum length 1.",
     "messages", "empty_array"),
    ({"model": "m", "messages": [{"role": "user"}, {"content": "x"}]},
     "Invalid 'messages[1]': expected an object with a string 'role'.", "messages[1].role", "invalid_type"),
    ({"model": "m", "messages": ["x"]}, "Invalid 'messages[0]': expected an object with a string 'role'.",
     "messages[0].role", "invalid_type"),
    ({"model": "m", "messages": [{"role": "user"}], "stream": 1}, "Invalid type for 'stream': expected a boolean.",
     "stream", "invalid_type"),
])
def test_malformed_requests(body: Any, message: str, param: str | None, code: str) -> None:
    assert validate(body) == ErrorReply(400, message, "invalid_request_error", code=code, param=param)
    assert CHAT.parse(body)[1] == validate(body)


def test_requests_are_journaled_as_sent() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, "tools": [EXEC],
            "stream_options": {"include_usage": True}}
    parsed, problem = CHAT.parse(body)
    assert problem is None
    assert parsed == ParsedRequest("chat", "m", stream=True, messages=[{"role": "user", "content": "hi"}],
                                   raw_tools=[EXEC], include_usage=True)
    assert validate({"model": "m", "messages": [{"role": "u"}], "stream": None}) is None
    partial, problem = CHAT.parse({"model": 2, "messages": "x", "tools": 1, "stream_options": {"include_usage": 1}})
    assert problem is not None and partial == ParsedRequest("chat", None)
    partial, problem = CHAT.parse({"model": "m", "messages": [{"role": "user", "content": "a"}, "junk"]})
    assert problem is not None and partial is not None and partial.messages == [{"role": "user", "content": "a"}]
    assert CHAT.parse("x") == (None, validate("x"))


def test_chat_answers_errors_and_ids() -> None:
    reply = Reply("hi", [ToolCall("c1", "exec", "{}")])
    assert CHAT.answer(reply, ctx()) == {
        "id": "chatcmpl-mock-2", "object": "chat.completion", "created": 100, "model": "gpt-x",
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "exec", "arguments": "{}"}}]},
            "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
    assert "tool_calls" not in CHAT.answer(Reply("x"), ctx())["choices"][0]["message"]
    assert CHAT.answer(Reply("x"), ctx(finish="length"))["choices"][0]["finish_reason"] == "length"
    error = ErrorReply(500, "down", "server_error")
    assert CHAT.error_body(error) == {"error": {"message": "down", "type": "server_error", "param": None,
                                                "code": None}}
    assert CHAT.parse_error().message.startswith("We could not parse the JSON body")
    assert CHAT.call_id_prefix("7") == "call_mock7" and CHAT.response_id("mock-7") is None
    assert (CHAT.name, CHAT.path) == ("chat", "chat/completions")


def data(raw: bytes) -> dict[str, Any]:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    return json.loads(raw[6:])


def test_chat_stream_chunks() -> None:
    plain = CHAT.stream(ctx())
    assert plain.start() == [] and plain.finish() == [] and plain.trailer == b"data: [DONE]\n\n"
    [first] = plain.feed({"delta": {"content": "x"}, "at_ms": 3})
    assert data(first) == {"id": "chatcmpl-mock-2", "object": "chat.completion.chunk", "created": 100,
                           "model": "gpt-x", "system_fingerprint": None,
                           "choices": [{"index": 0, "delta": {"content": "x"}, "logprobs": None,
                                        "finish_reason": None}]}
    assert data(plain.feed({"delta": {}, "finish_reason": "stop"})[0])["choices"][0]["finish_reason"] == "stop"
    counted = CHAT.stream(ctx(ParsedRequest("chat", "m", include_usage=True)))
    assert data(counted.feed({"delta": {}})[0])["usage"] is None
    assert data(counted.feed({"usage": {"total_tokens": 1}})[0]) | {"created": 0} == {
        "id": "chatcmpl-mock-2", "object": "chat.completion.chunk", "created": 0, "model": "gpt-x",
        "system_fingerprint": None, "usage": {"total_tokens": 1}, "choices": []}
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain.malformed()[6:])


def test_reading_chat_answers() -> None:
    body = CHAT.answer(Reply("hi", [ToolCall("c1", "exec", "{}")]), ctx())
    assert CHAT.read_answer(body) == {"text": "hi", "tool_calls": [{"id": "c1", "name": "exec", "arguments": "{}"}],
                                      "finish_reason": "tool_calls", "usage": body["usage"]}
    assert CHAT.read_answer({"choices": []}) == {"text": None, "tool_calls": [], "finish_reason": None}
    assert CHAT.read_answer(None) == {"text": None, "tool_calls": [], "finish_reason": None}
    assert CHAT.read_answer({"choices": [{"message": {"tool_calls": [{}]}}]})["tool_calls"] == [
        {"id": "", "name": "", "arguments": ""}]
    reader = CHAT.event_reader()
    assert reader.read({"choices": [{"delta": {"content": None, "role": "assistant", "refusal": None},
                                     "finish_reason": None}]}) == [{"delta": {"content": None, "role": "assistant"}}]
    assert reader.read({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"t": 1}}) == [
        {"delta": {}, "finish_reason": "stop", "usage": {"t": 1}}]
    assert reader.read({"choices": [], "usage": {"t": 2}}) == [{"usage": {"t": 2}}]
    assert reader.read({"choices": ["x"]}) == [] and reader.read({}) == []
    assert reader.response_id is None and reader.usage is None


def test_our_chat_stream_reads_back() -> None:
    reply = Reply("abc", [ToolCall("c1", "f", '{"k": 1}')])
    writer = CHAT.stream(ctx())
    chunks = [c for chunk in reply_chunks(reply) for e in writer.feed(chunk) for c in CHAT.event_reader().read(
        data(e))]
    text, calls, finish = assemble(chunks)
    assert (text, [(c.id, c.name, c.arguments) for c in calls], finish) == ("abc", [("c1", "f", '{"k": 1}')],
                                                                           "tool_calls")


def test_a_chat_chunk_keeps_text_unescaped_and_the_malformed_one_is_cut_in_a_string() -> None:
    writer = CHAT.stream(ctx())
    assert "é ☃".encode() in writer.feed({"delta": {"content": "é ☃"}})[0]
    assert writer.malformed() == b'data: {"choices": [{"delta": {"content": "unterminated\n\n'


def test_usage_and_an_answer_context_cannot_change_under_an_answer() -> None:
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        Usage(1, 2).input = 3  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        ctx().finish = "stop"  # type: ignore[misc]
    assert len({Usage(1, 2), Usage(1, 2)}) == 1
