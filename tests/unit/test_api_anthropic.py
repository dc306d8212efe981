"""The Anthropic Messages API of the mock provider (qa.provider.apis.anthropic), pure: request parsing into the common
view, checks, error shapes, the answer plain and streamed, and the reading of a live answer. No server."""

from __future__ import annotations

from typing import Any

import pytest

from qa.provider.apis.anthropic import ANTHROPIC, ERROR_TYPES, AnthropicEventReader, error_type
from qa.provider.apis.base import AnswerContext, ParsedRequest, Usage, reply_chunks
from qa.provider.rules import ErrorReply, Reply, ToolCall
from tests.unit.test_api_streams import events

PNG_DATA = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
EXEC = {"name": "exec", "input_schema": {"type": "object"}}


def ok(body: dict[str, Any]) -> ParsedRequest:
    parsed, problem = ANTHROPIC.parse({"model": "m", "max_tokens": 10, **body})
    assert problem is None and parsed is not None
    return parsed


def problem_of(body: Any) -> str | None:
    _parsed, problem = ANTHROPIC.parse(body)
    return problem.message if problem else None


def ctx(finish: str | None = None) -> AnswerContext:
    return AnswerContext(tag="mock-5", model="claude-m", created=100, request=ParsedRequest("anthropic", "m"),
                         usage=Usage(20, 4), finish=finish)


# --- requests -----------------------------------------------------------------------------------------------


def test_system_and_string_messages() -> None:
    parsed = ok({"system": "be brief", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                 "tools": [EXEC]})
    assert parsed.conversation() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (parsed.api, parsed.model, parsed.stream, parsed.tools) == ("anthropic", "m", True, ["exec"])
    listed = ok({"system": [{"type": "text", "text": "a"}, {"type": "other"}, "x", {"type": "text", "text": "b"}],
                 "messages": [{"role": "user", "content": "hi"}]})
    assert listed.system == "a\nb" and ok({"messages": [{"role": "user", "content": "x"}]}).system is None


def test_blocks_become_the_common_view() -> None:
    parsed = ok({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": PNG_DATA}},
                                     {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}},
                                     {"type": "image", "source": {"type": "file", "file_id": "f"}},
                                     {"type": "image", "source": "nonsense"},
                                     {"type": "text", "text": "twice"}, "junk"]},
        {"role": "assistant", "content": [{"type": "text", "text": "running"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "exec",
                                           "input": {"command": "ls é"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"},
                                     {"type": "tool_result", "tool_use_id": "toolu_2",
                                      "content": [{"type": "text", "text": "x"}, {"type": "image"},
                                                  {"type": "text", "text": "y"}]},
                                     {"type": "tool_result", "tool_use_id": "toolu_3", "content": 5},
                                     {"type": "text", "text": "and now?"}]},
        {"role": "assistant", "content": [{"type": "tool_use"}]},
        {"role": "user", "content": [{"type": "tool_result"}]},
        {"role": "assistant", "content": []},
    ]})
    assert parsed.messages == [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "text", "text": "twice"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_DATA}"}},
                                     {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
        {"role": "assistant", "content": "running", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "exec", "arguments": '{"command": "ls é"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "x\ny"},
        {"role": "tool", "tool_call_id": "toolu_3", "content": ""},
        {"role": "user", "content": "and now?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "", "type": "function", "function": {"name": "", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "", "content": ""},
    ]


def test_an_image_without_its_media_type_is_still_an_image_url() -> None:
    parsed = ok({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]})
    assert parsed.messages == [{"role": "user", "content": [{"type": "image_url", "image_url": {"url":
                                                                                              "data:;base64,"}}]}]


@pytest.mark.parametrize(("body", "message"), [
    ([], "The request body must be a JSON object."),
    ({"max_tokens": 1, "messages": []}, "model: Field required"),
    ({"model": "m", "messages": []}, "max_tokens: Field required"),
    ({"model": "m", "max_tokens": 1}, "messages: Field required"),
    ({"model": 1, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
     "model: Input should be a valid string"),
    ({"model": "m", "max_tokens": "1", "messages": [{"role": "user", "content": "x"}]},
     "max_tokens: Input should be a valid integer greater than or equal to 1"),
    ({"model": "m", "max_tokens": True, "messages": [{"role": "user", "content": "x"}]},
     "max_tokens: Input should be a valid integer greater than or equal to 1"),
    ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
     "max_tokens: Input should be a valid integer greater than or equal to 1"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "stream": "y"},
     "stream: Input should be a valid boolean"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "system": 3},
     "system: Input should be a valid string or list"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": {}},
     "tools: Input should be a valid list"),
    ({"model": "m", "max_tokens": 1, "messages": "hi"}, "messages: Input should be a valid list"),
    ({"model": "m", "max_tokens": 1, "messages": []}, "messages: at least one message is required"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}, {"role": "system",
                                                                                      "content": "x"}]},
     "messages.1.role: Input should be 'user' or 'assistant'"),
    ({"model": "m", "max_tokens": 1, "messages": ["x"]}, "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": None}]},
     "messages.0.content: Input should be a valid string or list"),
])
def test_malformed_requests_get_anthropic_errors(body: Any, message: str) -> None:
    _parsed, problem = ANTHROPIC.parse(body)
    assert problem == ErrorReply(400, message, "invalid_request_error")
    assert ANTHROPIC.error_body(problem) == {"type": "error", "error": {"type": "invalid_request_error",
                                                                        "message": message}}


def test_a_rejected_request_is_still_read_as_far_as_it_goes() -> None:
    parsed, problem = ANTHROPIC.parse({"model": "m", "max_tokens": 1, "stream": True, "system": "s", "tools": [EXEC],
                                       "messages": [{"role": "user", "content": "hi"}, {"role": "bot"}]})
    assert problem is not None and problem.message.startswith("messages.1.role")
    assert parsed == ParsedRequest("anthropic", "m", stream=True, messages=[{"role": "user", "content": "hi"}],
                                   raw_tools=[EXEC], system="s")
    parsed, problem = ANTHROPIC.parse({"model": 3, "messages": [{"role": "user", "content": "x"}], "tools": 1})
    assert problem is not None and parsed is not None and parsed.model is None and parsed.raw_tools == []
    assert problem.message == "max_tokens: Field required"
    assert ANTHROPIC.parse({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                            "system": None, "tools": None})[1] is None


@pytest.mark.parametrize(("status", "given", "expected"), [
    (400, "invalid_request_error", "invalid_request_error"), (401, "invalid_request_error", "authentication_error"),
    (403, "invalid_request_error", "permission_error"), (404, "invalid_request_error", "not_found_error"),
    (413, "invalid_request_error", "request_too_large"), (429, "invalid_request_error", "rate_limit_error"),
    (500, "server_error", "api_error"), (529, "server_error", "overloaded_error"), (503, "server_error", "api_error"),
    (502, "invalid_request_error", "api_error"), (409, "invalid_request_error", "invalid_request_error"),
    (500, "my_own_type", "my_own_type"), (401, "authentication_error", "authentication_error"),
])
def test_error_types_are_anthropic_words(status: int, given: str, expected: str) -> None:
    assert error_type(ErrorReply(status, "m", given)) == expected


def test_the_other_errors_and_ids() -> None:
    assert ERROR_TYPES[529] == "overloaded_error"
    assert ANTHROPIC.missing_version() == ErrorReply(400, "anthropic-version: header is required",
                                                     "invalid_request_error")
    assert ANTHROPIC.parse_error() == ErrorReply(
        400, "There was an error parsing the body of your request: it is not valid JSON.", "invalid_request_error")
    assert ANTHROPIC.call_id_prefix("3") == "toolu_mock3" and ANTHROPIC.response_id("mock-3") is None
    assert (ANTHROPIC.name, ANTHROPIC.path) == ("anthropic", "messages")
    assert ANTHROPIC.usage(Usage(2, 5)) == {"input_tokens": 2, "output_tokens": 5}


# --- answers ------------------------------------------------------------------------------------------------


def test_the_plain_answer() -> None:
    reply = Reply("hi", [ToolCall("toolu_1", "exec", '{"command": "ls"}'), ToolCall("toolu_2", "f", "not json"),
                         ToolCall("toolu_3", "g", "[1]")])
    assert ANTHROPIC.answer(reply, ctx()) == {
        "id": "msg_mock-5", "type": "message", "role": "assistant", "model": "claude-m",
        "content": [{"type": "text", "text": "hi"},
                    {"type": "tool_use", "id": "toolu_1", "name": "exec", "input": {"command": "ls"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {}},
                    {"type": "tool_use", "id": "toolu_3", "name": "g", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 4}}
    assert ANTHROPIC.answer(Reply("x"), ctx())["stop_reason"] == "end_turn"
    assert ANTHROPIC.answer(Reply("x"), ctx("length"))["stop_reason"] == "max_tokens"
    assert ANTHROPIC.answer(Reply("x"), ctx("content_filter"))["stop_reason"] == "end_turn"
    assert ANTHROPIC.answer(Reply(None), ctx())["content"] == []


def stream_of(reply: Reply, pieces: int = 3, finish: str | None = None) -> list[dict[str, Any]]:
    writer = ANTHROPIC.stream(ctx(finish))
    raw = writer.start() + [e for chunk in reply_chunks(reply, pieces) for e in writer.feed(chunk)] + writer.finish()
    assert writer.trailer == b""
    return events(raw)


def test_a_streamed_text_answer_follows_the_documented_sequence() -> None:
    out = stream_of(Reply("abcdef"), pieces=2)
    assert [e["type"] for e in out] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert out[0]["message"] == {"id": "msg_mock-5", "type": "message", "role": "assistant", "model": "claude-m",
                                 "content": [], "stop_reason": None, "stop_sequence": None,
                                 "usage": {"input_tokens": 20, "output_tokens": 1}}
    assert out[2] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert out[3] == {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "abc"}}
    assert out[5] == {"type": "content_block_stop", "index": 0}
    assert out[6] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                      "usage": {"output_tokens": 4}}
    assert out[7] == {"type": "message_stop"}


def test_a_streamed_tool_call_is_a_tool_use_block() -> None:
    out = stream_of(Reply("ok", [ToolCall("toolu_1", "exec", '{"command": "ls -la /tmp"}'),
                                 ToolCall("toolu_2", "f", "{}")]))
    starts = [e for e in out if e["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "text"), (1, "tool_use"),
                                                                          (2, "tool_use")]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "exec", "input": {}}
    json_deltas = [e for e in out if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"]
    assert "".join(d["delta"]["partial_json"] for d in json_deltas if d["index"] == 1) == '{"command": "ls -la /tmp"}'
    assert [e["index"] for e in out if e["type"] == "content_block_stop"] == [0, 1, 2]
    assert out[-2]["delta"]["stop_reason"] == "tool_use"
    assert stream_of(Reply("x"), finish="length")[-2]["delta"]["stop_reason"] == "max_tokens"


def test_text_after_a_call_opens_a_new_block_and_stray_arguments_are_dropped() -> None:
    writer = ANTHROPIC.stream(ctx())
    out = events(writer.feed({"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "lost"}}]}})
                 + writer.feed({"delta": {"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "f"}}]}})
                 + writer.feed({"delta": {"content": "a"}}) + writer.feed({"delta": {"content": "b"}})
                 + writer.feed({"delta": {}, "finish_reason": "tool_calls"}) + writer.finish())
    assert [(e["type"], e.get("index")) for e in out] == [
        ("content_block_start", 0), ("content_block_stop", 0), ("content_block_start", 1),
        ("content_block_delta", 1), ("content_block_delta", 1), ("content_block_stop", 1), ("message_delta", None),
        ("message_stop", None)]
    assert out[-2]["delta"]["stop_reason"] == "tool_use"


# --- reading a live answer (the recording proxy) -------------------------------------------------------------


def test_reading_a_plain_answer() -> None:
    body = ANTHROPIC.answer(Reply("hi", [ToolCall("toolu_1", "exec", '{"a": "é"}')]), ctx())
    assert ANTHROPIC.read_answer(body) == {"text": "hi", "tool_calls": [{"id": "toolu_1", "name": "exec",
                                                                         "arguments": '{"a": "é"}'}],
                                           "finish_reason": "tool_calls", "usage": body["usage"]}
    assert ANTHROPIC.read_answer({"content": [{"type": "text", "text": "a"}, "x", {"type": "text", "text": "b"}],
                                  "stop_reason": "max_tokens"}) == {"text": "ab", "tool_calls": [],
                                                                    "finish_reason": "length"}
    assert ANTHROPIC.read_answer({"content": [], "stop_reason": "stop_sequence"}) == {
        "text": None, "tool_calls": [], "finish_reason": "stop"}
    assert ANTHROPIC.read_answer(None) == {"text": None, "tool_calls": [], "finish_reason": "stop"}
    assert ANTHROPIC.read_answer({"content": [{"type": "tool_use"}]})["tool_calls"] == [
        {"id": "", "name": "", "arguments": "{}"}]


def read_stream(raw: list[bytes]) -> tuple[list[dict[str, Any]], AnthropicEventReader]:
    reader = ANTHROPIC.event_reader()
    return [c for e in events(raw) for c in reader.read(e)], reader


def test_the_reader_leaves_other_events_alone() -> None:
    reader = ANTHROPIC.event_reader()
    assert reader.read({"type": "ping"}) == [] and reader.read({"type": "message_stop"}) == []
    assert reader.read({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}}) == []
    assert reader.read({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta"}}) == []
    assert reader.read({"type": "content_block_delta", "index": 4, "delta": {"type": "input_json_delta",
                                                                              "partial_json": "{"}}) == [
        {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]
    assert reader.read({"type": "message_start", "message": {"id": ""}}) == []
    assert reader.response_id is None and reader.usage is None
    assert reader.read({"type": "message_delta", "delta": {"stop_reason": "refusal"}}) == [
        {"delta": {}, "finish_reason": "stop"}]
    assert reader.usage is None


def test_missing_fields_read_as_empty() -> None:
    parsed = ok({"system": [{"type": "text"}], "messages": [
        {"role": "user", "content": [{"type": "text"}, {"type": "tool_result", "content": [{"type": "text"}]}]}]})
    assert parsed.system == "" and parsed.messages == [{"role": "tool", "tool_call_id": "", "content": ""},
                                                       {"role": "user", "content": ""}]
    assert ANTHROPIC.read_answer({"content": [{"type": "text"}], "stop_reason": "end_turn"})["text"] == ""
    reader = ANTHROPIC.event_reader()
    assert reader.read({"type": "content_block_start", "content_block": {"type": "text"}}) == [
        {"delta": {"role": "assistant", "content": ""}}]
    assert reader.read({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use"}}) == [
        {"delta": {"tool_calls": [{"index": 0, "id": "", "type": "function", "function": {"name": "",
                                                                                          "arguments": ""}}]}}]
    assert reader.read({"type": "content_block_start", "content_block": {"type": "tool_use", "id": "t2"}}) == [
        {"delta": {"tool_calls": [{"index": 1, "id": "t2", "type": "function", "function": {"name": "",
                                                                                            "arguments": ""}}]}}]
    assert reader.read({"type": "content_block_delta", "delta": {"type": "text_delta"}}) == [
        {"delta": {"content": ""}}]
    assert reader.read({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta"}}) == [
        {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}}]
    assert reader.read({"type": "content_block_delta", "delta": {"type": "input_json_delta",
                                                                 "partial_json": "x"}}) == [
        {"delta": {"tool_calls": [{"index": 1, "function": {"arguments": "x"}}]}}]
    assert reader.read({"type": "message_start", "message": {"usage": {"input_tokens": 3}}}) == []
    assert reader.response_id is None and reader.usage == {"input_tokens": 3}
    reader.read({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 2}})
    assert reader.usage == {"input_tokens": 3, "output_tokens": 2}


def test_one_chunk_may_carry_text_and_calls_and_the_header_names() -> None:
    from qa.provider.apis.anthropic import KEY_HEADER, VERSION_HEADER

    assert (KEY_HEADER, VERSION_HEADER) == ("x-api-key", "anthropic-version")
    writer = ANTHROPIC.stream(ctx())
    raw = writer.feed({"delta": {"content": "café", "tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}, {"index": 1, "id": "c2"}]}})
    assert [(e["type"], e["index"]) for e in events(raw)] == [
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2)]
    assert "café".encode() in raw[1]


def test_more_shapes_read_exactly() -> None:
    parsed = ok({"stream": None, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "file", "url": "https://x"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert parsed.stream is False
    assert parsed.messages == [{"role": "assistant", "content": "a\nb"}]
    raw = ANTHROPIC.stream(ctx()).malformed()
    assert raw == (b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                   b'"delta": {"type": "text_delta", "text": "unterminated\n\n')
    writer = ANTHROPIC.stream(ctx())
    [start] = events(writer.feed({"delta": {"tool_calls": [{"index": 0, "id": "t1"}]}}))
    assert start["content_block"] == {"type": "tool_use", "id": "t1", "name": "", "input": {}}
    fresh = ANTHROPIC.event_reader()
    assert (fresh.response_id, fresh.usage, fresh.calls) == (None, None, {})
    assert fresh.read({"type": "message_delta_other", "message": {"id": "x"}}) == []
    assert fresh.response_id is None


def test_a_text_block_may_start_with_text() -> None:
    assert ANTHROPIC.event_reader().read({"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": "pre"}}) == [
        {"delta": {"role": "assistant", "content": "pre"}}]
