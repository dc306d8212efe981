"""The OpenAI Responses API of the mock provider (qa.provider.apis.responses), pure: request parsing into the common
view, checks, the answer plain and streamed, and the reading of a live answer. No server."""

from __future__ import annotations

from typing import Any

import pytest

from qa.provider.apis.base import AnswerContext, ParsedRequest, Usage, reply_chunks
from qa.provider.apis.responses import RESPONSES, ResponsesEventReader
from qa.provider.rules import ErrorReply, Reply, ToolCall
from tests.unit.test_api_streams import events

PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
       "RU5ErkJggg==")
EXEC = {"type": "function", "name": "exec", "parameters": {"type": "object"}}


def parse(body: Any) -> tuple[ParsedRequest | None, ErrorReply | None]:
    return RESPONSES.parse(body)


def ok(body: dict[str, Any]) -> ParsedRequest:
    parsed, problem = parse({"model": "m", **body})
    assert problem is None and parsed is not None
    return parsed


def ctx(request: ParsedRequest | None = None, finish: str | None = None, tag: str = "mock-7") -> AnswerContext:
    return AnswerContext(tag=tag, model="m", created=100, request=request or ParsedRequest("responses", "m"),
                         usage=Usage(11, 3), finish=finish)


# --- requests -----------------------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message() -> None:
    parsed = ok({"input": "hello", "instructions": "be brief", "stream": True})
    assert parsed.conversation() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert (parsed.api, parsed.model, parsed.stream, parsed.store, parsed.previous_response_id) == \
        ("responses", "m", True, True, None)


def test_items_become_the_common_view() -> None:
    parsed = ok({"input": [
        {"role": "user", "content": ["junk", {"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": PNG}, {"type": "input_text", "text": 5},
                                     {"text": "untyped"}, {"type": "input_image", "file_id": "file-1"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a cat"}]},
        {"type": "function_call", "call_id": "call_1", "name": "exec", "arguments": '{"command": "ls"}', "id": "fc"},
        {"type": "function_call_output", "call_id": "call_1", "output": "file.txt"},
        {"type": "function_call_output", "call_id": "call_2", "output": [
            {"type": "input_text", "text": "a"}, {"type": "input_image"}, "junk", {"type": "output_text"},
            {"type": "text", "text": "b"}]},
        {"type": "function_call_output", "call_id": "call_3", "output": {"ok": True}},
        {"type": "reasoning", "summary": []},
        {"role": "developer", "content": "rules"},
    ], "tools": [EXEC], "store": False, "previous_response_id": "resp_1"})
    assert parsed.messages == [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "a cat"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": '{"command": "ls"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "file.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": "a\n\nb"},
        {"role": "tool", "tool_call_id": "call_3", "content": '{"ok": true}'},
        {"role": "developer", "content": "rules"},
    ]
    assert parsed.tools == ["exec"] and parsed.raw_tools == [EXEC]
    assert parsed.store is False and parsed.previous_response_id == "resp_1" and parsed.system is None


def test_an_item_without_its_fields_still_reads() -> None:
    parsed = ok({"input": [{"type": "function_call"}, {"type": "function_call_output"}]})
    assert parsed.messages == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "", "content": ""},
    ]


def test_a_previous_response_alone_needs_no_input() -> None:
    parsed = ok({"previous_response_id": "resp_1"})
    assert parsed.messages == [] and parsed.previous_response_id == "resp_1"


@pytest.mark.parametrize(("body", "message", "param", "code"), [
    ([], "The request body must be a JSON object.", None, "invalid_type"),
    ({"input": "x"}, "Missing required parameter: 'model'.", "model", "missing_required_parameter"),
    ({"model": 1, "input": "x"}, "Invalid type for 'model': expected a string.", "model", "invalid_type"),
    ({"model": "m"}, "Missing required parameter: 'input'.", "input", "missing_required_parameter"),
    ({"model": "m", "input": 3}, "Invalid type for 'input': expected a string or an array of input items.",
     "input", "invalid_type"),
    ({"model": "m", "input": ["x"]}, "Invalid type for 'input[0]': expected an object.", "input[0]",
     "invalid_type"),
    ({"model": "m", "input": [{"content": "x"}]}, "Invalid 'input[0].role': expected a string.", "input[0].role",
     "invalid_type"),
    ({"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]},
     "Invalid type for 'input[1].content': expected a string or an array of content parts.", "input[1].content",
     "invalid_type"),
    ({"model": "m", "input": "x", "instructions": 1}, "Invalid type for 'instructions': expected a string.",
     "instructions", "invalid_type"),
    ({"model": "m", "input": "x", "previous_response_id": 1},
     "Invalid type for 'previous_response_id': expected a string.", "previous_response_id", "invalid_type"),
    ({"model": "m", "input": "x", "stream": "yes"}, "Invalid type for 'stream': expected a boolean.", "stream",
     "invalid_type"),
    ({"model": "m", "input": "x", "store": 0}, "Invalid type for 'store': expected a boolean.", "store",
     "invalid_type"),
    ({"model": "m", "input": "x", "tools": {}}, "Invalid type for 'tools': expected an array.", "tools",
     "invalid_type"),
])
def test_malformed_requests_get_openai_errors(body: Any, message: str, param: str | None, code: str) -> None:
    _parsed, problem = parse(body)
    assert problem == ErrorReply(400, message, "invalid_request_error", code=code, param=param)


def test_a_rejected_request_is_still_read_as_far_as_it_goes() -> None:
    parsed, problem = parse({"model": 5, "input": [{"role": "user", "content": "hi"}, 7], "stream": True,
                             "instructions": 9, "previous_response_id": 4, "tools": "x"})
    assert problem is not None and problem.param == "model"
    assert parsed == ParsedRequest("responses", None, stream=True, messages=[{"role": "user", "content": "hi"}])
    assert parse([]) [0] is None


def test_nulls_are_as_good_as_absent() -> None:
    parsed = ok({"input": "x", "instructions": None, "stream": None, "store": None, "tools": None,
                 "previous_response_id": None})
    assert parsed.system is None and parsed.stream is False and parsed.store is True and parsed.raw_tools == []


def test_errors_and_ids() -> None:
    error = ErrorReply(429, "slow down", "rate_limit_error", code="rate", param="p")
    assert RESPONSES.error_body(error) == {"error": {"message": "slow down", "type": "rate_limit_error", "param": "p",
                                                     "code": "rate"}}
    assert RESPONSES.unknown_previous("resp_x") == ErrorReply(
        400, "Previous response with id 'resp_x' not found.", "invalid_request_error",
        code="previous_response_not_found", param="previous_response_id")
    assert RESPONSES.parse_error() == ErrorReply(
        400, "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
        "invalid_request_error")
    assert RESPONSES.call_id_prefix("4") == "call_mock4" and RESPONSES.response_id("mock-4") == "resp_mock-4"
    assert (RESPONSES.name, RESPONSES.path) == ("responses", "responses")


# --- answers ------------------------------------------------------------------------------------------------


def test_the_plain_answer() -> None:
    request = ok({"input": "x", "instructions": "sys", "tools": [EXEC], "previous_response_id": "resp_0",
                  "store": False})
    reply = Reply("hi", [ToolCall("call_1", "exec", '{"a": 1}')])
    body = RESPONSES.answer(reply, ctx(request))
    assert body == {
        "id": "resp_mock-7", "object": "response", "created_at": 100, "status": "completed", "background": False,
        "error": None, "incomplete_details": None, "instructions": "sys", "max_output_tokens": None, "model": "m",
        "output": [
            {"id": "msg_mock-7", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}]},
            {"id": "fc_mock-7_0", "type": "function_call", "status": "completed", "call_id": "call_1",
             "name": "exec", "arguments": '{"a": 1}'}],
        "parallel_tool_calls": True, "previous_response_id": "resp_0", "reasoning": {"effort": None, "summary": None},
        "store": False, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [EXEC], "top_p": 1.0, "truncation": "disabled",
        "usage": {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14},
        "metadata": {}}


def test_a_cut_off_answer_is_incomplete() -> None:
    body = RESPONSES.answer(Reply("hi"), ctx(finish="length"))
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert RESPONSES.answer(Reply(None, [ToolCall("c", "exec", "{}")]), ctx())["output"][0]["id"] == "fc_mock-7_0"
    assert RESPONSES.answer(Reply(None), ctx())["output"] == []
    assert RESPONSES.response(ctx(), "in_progress", [])["usage"] is None


def stream_of(reply: Reply, pieces: int = 3, finish: str | None = None) -> list[dict[str, Any]]:
    writer = RESPONSES.stream(ctx(finish=finish))
    raw = writer.start() + [e for chunk in reply_chunks(reply, pieces) for e in writer.feed(chunk)] + writer.finish()
    assert writer.trailer == b""
    return events(raw)


def test_a_streamed_text_answer_follows_the_documented_sequence() -> None:
    out = stream_of(Reply("abcdef"), pieces=2)
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in out] == list(range(10))
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    assert out[2]["item"] == {"id": "msg_mock-7", "type": "message", "status": "in_progress", "role": "assistant",
                              "content": []}
    assert out[2]["output_index"] == 0
    assert out[3] | {"sequence_number": 0} == {"type": "response.content_part.added", "item_id": "msg_mock-7",
                                               "output_index": 0, "content_index": 0, "sequence_number": 0,
                                               "part": {"type": "output_text", "text": "", "annotations": [],
                                                        "logprobs": []}}
    assert [e["delta"] for e in out[4:6]] == ["abc", "def"] and out[4]["item_id"] == "msg_mock-7"
    assert out[4]["logprobs"] == [] and out[4]["content_index"] == 0
    assert out[6]["text"] == "abcdef" and out[7]["part"]["text"] == "abcdef"
    assert [(e["item_id"], e["output_index"], e["content_index"]) for e in out[6:8]] == [("msg_mock-7", 0, 0)] * 2
    done_item = out[8]["item"]
    assert done_item["status"] == "completed" and done_item["content"][0]["text"] == "abcdef"
    final = out[9]["response"]
    assert final["status"] == "completed" and final["output"] == [done_item] and final["usage"]["total_tokens"] == 14


def test_a_streamed_tool_call_is_a_function_call_item() -> None:
    out = stream_of(Reply("ok", [ToolCall("call_1", "exec", '{"command": "ls -la"}'),
                                 ToolCall("call_2", "read", "{}")]))
    kinds = [e["type"] for e in out]
    assert kinds.count("response.output_item.added") == 3 and kinds.count("response.output_item.done") == 3
    added = [e for e in out if e["type"] == "response.output_item.added"]
    assert [(a["output_index"], a["item"]["type"]) for a in added] == [(0, "message"), (1, "function_call"),
                                                                        (2, "function_call")]
    assert added[1]["item"] == {"id": "fc_mock-7_0", "type": "function_call", "status": "in_progress",
                                "call_id": "call_1", "name": "exec", "arguments": ""}
    args = [e for e in out if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(a["delta"] for a in args if a["item_id"] == "fc_mock-7_0") == '{"command": "ls -la"}'
    assert {a["output_index"] for a in args if a["item_id"] == "fc_mock-7_1"} == {2}
    arg_done = [e for e in out if e["type"] == "response.function_call_arguments.done"]
    assert [(d["name"], d["arguments"], d["output_index"]) for d in arg_done] == [
        ("exec", '{"command": "ls -la"}', 1), ("read", "{}", 2)]
    final = out[-1]["response"]["output"]
    assert [i["status"] for i in final] == ["completed"] * 3 and final[2]["call_id"] == "call_2"


def test_a_streamed_answer_keeps_the_recorded_finish() -> None:
    assert stream_of(Reply("x"), finish="length")[-1]["type"] == "response.incomplete"
    writer = RESPONSES.stream(ctx())
    writer.feed({"delta": {"content": "x"}, "finish_reason": "length"})
    assert events(writer.finish())[-1]["type"] == "response.incomplete"


def test_text_after_a_call_is_a_new_message_and_empty_text_opens_one() -> None:
    writer = RESPONSES.stream(ctx())
    writer.start()
    out = events(writer.feed({"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}})
                 + writer.feed({"delta": {"content": ""}}) + writer.feed({"delta": {"content": "t"}})
                 + writer.feed({"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}})
                 + writer.finish())
    assert [e["type"] for e in out] == [
        "response.output_item.added", "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert out[1]["arguments"] == "" and out[3]["output_index"] == 1


# --- reading a live answer (the recording proxy) -------------------------------------------------------------


def test_reading_a_plain_answer() -> None:
    body = RESPONSES.answer(Reply("hi", [ToolCall("call_1", "exec", "{}")]), ctx())
    assert RESPONSES.read_answer(body) == {"text": "hi", "tool_calls": [{"id": "call_1", "name": "exec",
                                                                         "arguments": "{}"}],
                                           "finish_reason": "tool_calls", "usage": body["usage"]}
    assert RESPONSES.read_answer({"output": [{"type": "message", "content": [
        {"type": "output_text", "text": "a"}, {"type": "refusal"}, {"type": "output_text", "text": "b"}, 3]},
        "junk"], "status": "incomplete"}) == {"text": "ab", "tool_calls": [], "finish_reason": "length"}
    assert RESPONSES.read_answer({"output": []}) == {"text": None, "tool_calls": [], "finish_reason": "stop"}
    assert RESPONSES.read_answer({"output": [{"type": "message", "content": [{"type": "output_text"}]},
                                             {"type": "function_call"}]}) == {
        "text": "", "tool_calls": [{"id": "", "name": "", "arguments": ""}], "finish_reason": "tool_calls"}
    assert RESPONSES.read_answer(None) == {"text": None, "tool_calls": [], "finish_reason": "stop"}


def read_stream(raw: list[bytes]) -> tuple[list[dict[str, Any]], ResponsesEventReader]:
    reader = RESPONSES.event_reader()
    return [c for e in events(raw) for c in reader.read(e)], reader


def test_the_reader_leaves_other_events_alone() -> None:
    reader = RESPONSES.event_reader()
    assert reader.read({"type": "response.output_item.added", "item": {"type": "reasoning"}}) == []
    assert reader.read({"type": "response.content_part.added"}) == []
    assert reader.read({"type": "response.function_call_arguments.delta", "item_id": "nope", "delta": "x"}) == [
        {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "x"}}]}}]
    assert reader.read({"type": "response.incomplete", "response": {"status": "incomplete", "usage": 3}}) == [
        {"delta": {}, "finish_reason": "length"}]
    assert reader.usage is None and reader.response_id is None


def test_the_reader_reads_missing_fields_as_empty() -> None:
    reader = RESPONSES.event_reader()
    assert reader.read({"type": "response.output_item.added", "item": {"type": "function_call", "id": "a"}}) == [
        {"delta": {"tool_calls": [{"index": 0, "id": "", "type": "function", "function": {"name": "",
                                                                                          "arguments": ""}}]}}]
    assert reader.read({"type": "response.output_item.added", "item": {"type": "function_call", "id": "b",
                                                                        "arguments": "{}"}}) == [
        {"delta": {"tool_calls": [{"index": 1, "id": "", "type": "function", "function": {"name": "",
                                                                                          "arguments": "{}"}}]}}]
    assert reader.read({"type": "response.function_call_arguments.delta", "item_id": "b"}) == [
        {"delta": {"tool_calls": [{"index": 1, "function": {"arguments": ""}}]}}]
    assert reader.read({"type": "response.output_text.delta"}) == [{"delta": {"content": ""}}]
    assert reader.read({"type": "response.completed", "response": {"id": "r", "usage": {"total_tokens": 1}}}) == [
        {"delta": {}, "finish_reason": "tool_calls"}]
    assert (reader.response_id, reader.usage) == ("r", {"total_tokens": 1})


def test_one_chunk_may_carry_text_and_calls_and_text_stays_unescaped() -> None:
    writer = RESPONSES.stream(ctx())
    raw = writer.feed({"delta": {"content": "café", "tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}},
        {"index": 1, "id": "c2", "function": {"name": "g"}}, {"index": 2, "id": "c3"}]}})
    assert [e["type"] for e in events(raw)] == [
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.done", "response.output_item.done", "response.output_item.added"]
    assert "café".encode() in raw[2] and events(raw)[-1]["item"]["name"] == ""


def test_a_fresh_reader_and_the_message_it_opens() -> None:
    reader = RESPONSES.event_reader()
    assert (reader.response_id, reader.usage, reader.calls) == (None, None, {})
    assert reader.read({"type": "response.output_item.added", "item": {"type": "message"}}) == [
        {"delta": {"role": "assistant", "content": ""}}]
    assert reader.read({"type": "response.output_item.done", "item": {"type": "message"}}) == []
