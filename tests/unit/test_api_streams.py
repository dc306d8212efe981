"""What the Responses and Anthropic streams of the mock provider share, one test for both: every event is an SSE
`event:` line naming the JSON's type, a malformed event is not JSON, and the recording proxy's reader of each API
reads the mock's own stream back into the answer it streamed. Each API's own shapes are in test_api_responses.py
and test_api_anthropic.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qa.provider.apis.anthropic import ANTHROPIC
from qa.provider.apis.base import AnswerContext, ParsedRequest, Usage, reply_chunks
from qa.provider.apis.responses import RESPONSES
from qa.provider.cassette import assemble
from qa.provider.rules import Reply, ToolCall


def events(raw: list[bytes]) -> list[dict[str, Any]]:
    """The JSON of each SSE event, checked to carry its type on its `event:` line (both APIs do)."""
    out = []
    for event in raw:
        head, data = event.decode().removesuffix("\n\n").split("\n")
        body = json.loads(data.removeprefix("data: "))
        assert head == f"event: {body['type']}"
        out.append(body)
    return out


# (the API, its context, the malformed event's start, the reader's response id and usage)
APIS = [
    pytest.param(RESPONSES, AnswerContext(tag="mock-7", model="m", created=100, request=ParsedRequest("responses", "m"),
                                          usage=Usage(11, 3)),
                 b"event: response.output_text.delta\ndata: {", "resp_mock-7", RESPONSES.usage(Usage(11, 3)),
                 id="responses"),
    pytest.param(ANTHROPIC, AnswerContext(tag="mock-5", model="claude-m", created=100,
                                          request=ParsedRequest("anthropic", "m"), usage=Usage(20, 4)),
                 b"event: content_block_delta\ndata: {", "msg_mock-5", {"input_tokens": 20, "output_tokens": 4},
                 id="anthropic"),
]


@pytest.mark.parametrize(("api", "ctx", "start", "response_id", "usage"), APIS)
def test_a_malformed_event_is_not_json(api: Any, ctx: AnswerContext, start: bytes, response_id: str,
                                       usage: Any) -> None:
    raw = api.stream(ctx).malformed()
    assert raw.startswith(start)
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.split(b"data: ", 1)[1])


@pytest.mark.parametrize(("api", "ctx", "start", "response_id", "usage"), APIS)
@pytest.mark.parametrize("reply", [Reply("abcdefg"), Reply(None, [ToolCall("call_9", "exec", '{"x": "yz"}')]),
                                   Reply("t", [ToolCall("c1", "a", "{}"), ToolCall("c2", "b", '{"q": 1}')]),
                                   Reply("")])
def test_reading_our_own_stream_gives_the_answer_back(api: Any, ctx: AnswerContext, start: bytes, response_id: str,
                                                      usage: Any, reply: Reply) -> None:
    writer = api.stream(ctx)
    raw = writer.start() + [e for c in reply_chunks(reply, 4) for e in writer.feed(c)] + writer.finish()
    reader = api.event_reader()
    chunks = [c for e in events(raw) for c in reader.read(e)]
    text, calls, finish = assemble(chunks)
    assert (text, [(c.id, c.name, c.arguments) for c in calls], finish) == (
        reply.text, [(c.id, c.name, c.arguments) for c in reply.tool_calls], reply.finish_reason)
    assert reader.response_id == response_id and reader.usage == usage
