"""The cassette format (qa.provider.cassette): round trip, and every malformed field named with file and line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from qa.provider.cassette import (
    FORMAT,
    Cassette,
    CassetteError,
    Exchange,
    ToolCall,
    assemble,
    dump,
    find,
    load,
    parse,
)

REQUEST = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "say {token}"}]}
CHUNKS = [{"at_ms": 10.0, "delta": {"role": "assistant", "content": ""}},
          {"at_ms": 12.0, "delta": {"content": "{token}"}},
          {"at_ms": 13.0, "delta": {}, "finish_reason": "stop"}]


def good() -> Cassette:
    response = {"status": 200, "at_ms": 10.0, "text": "{token}", "tool_calls": [], "finish_reason": "stop",
                "chunks": CHUNKS}
    return copy.deepcopy(Cassette("canary", "m", [Exchange(1, "abc", REQUEST, response)], {"status": "pass"}))


def text_of(cassette: Cassette) -> str:
    return dump(cassette)


def test_dump_and_parse_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(dump(good()))
    loaded = load(path)
    assert loaded.to_data() == good().to_data()
    assert loaded.exchanges[0].index == 1 and loaded.path == path


def test_json_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "canary.json"
    path.write_text(json.dumps(good().to_data()))
    assert find(tmp_path, "canary") == path
    assert load(path).to_data() == good().to_data()
    assert find(tmp_path, "other") is None


def test_multi_line_strings_are_block_scalars() -> None:
    c = good()
    c.exchanges[0].request = {**REQUEST, "messages": [{"role": "system", "content": "line one\nline two"}]}
    assert "content: |-\n        line one\n        line two" in dump(c)


def test_assemble_joins_text_and_tool_call_fragments() -> None:
    chunks = [{"delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "c1", "function":
                                                              {"name": "exec", "arguments": ""}}]}},
              {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}},
              {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}},
              {"delta": {}, "finish_reason": "tool_calls"}]
    assert assemble(chunks) == (None, [ToolCall("c1", "exec", '{"a": 1}')], "tool_calls")
    assert assemble(CHUNKS) == ("{token}", [], "stop")


def _broken(edit: Any) -> str:
    data = good().to_data()
    edit(data)
    return json.dumps(data, indent=1)


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.update(format="v0"), "format: expected 'matrix-qa.cassette/v1'"),
    (lambda d: d.pop("model"), "(top level): missing field 'model'"),
    (lambda d: d.update(exchanges={}), "exchanges: expected a list"),
    (lambda d: d["exchanges"][0].pop("session"), "exchanges[0]: missing field 'session'"),
    (lambda d: d["exchanges"][0]["request"].update(messages=[]), "exchanges[0].request.messages: expected a non"),
    (lambda d: d["exchanges"][0]["request"].update(stream="yes"), "exchanges[0].request.stream: expected true"),
    (lambda d: d["exchanges"][0]["response"].update(status=700), "exchanges[0].response.status: expected an HTTP"),
    (lambda d: d["exchanges"][0]["response"].update(status=True), "response.status: expected an HTTP"),
    (lambda d: d["exchanges"][0]["response"].update(at_ms=-1), "exchanges[0].response.at_ms: expected milli"),
    (lambda d: d["exchanges"][0]["response"].update(chunks=[]), "exchanges[0].response.chunks: a streamed"),
    (lambda d: d["exchanges"][0]["response"]["chunks"][1].pop("delta"), "response.chunks[1].delta: expected a"),
    (lambda d: d["exchanges"][0]["response"]["chunks"][1].update(at_ms="soon"), "chunks[1].at_ms: expected milli"),
    (lambda d: d["exchanges"][0]["response"].update(text="other"), "response.text: says 'other' but the chunks"),
    (lambda d: d["exchanges"][0]["response"].update(finish_reason="length"), "response.finish_reason: says"),
    (lambda d: d["exchanges"][0]["response"].update(status=500), "response.error: a status-500 response needs"),
    (lambda d: d["exchanges"][0]["request"]["messages"][0].update(content="{tokn}"),
     "request.messages[0].content: unknown placeholder {tokn}"),
    (lambda d: d["exchanges"][0]["request"]["messages"][0].update(content="a { b"),
     "request.messages[0].content: unmatched '{'"),
])
def test_each_broken_field_is_named(edit: Any, fragment: str) -> None:
    with pytest.raises(CassetteError) as info:
        parse(_broken(edit), Path("fixtures/cassettes/canary.json"))
    message = str(info.value)
    assert message.startswith("fixtures/cassettes/canary.json:"), message
    assert fragment in message, message


def test_the_line_is_the_fields_own(tmp_path: Path) -> None:
    text = dump(good()).replace("status: 200", "status: 999")
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "status: 999" in t)
    with pytest.raises(CassetteError, match=rf"canary.yaml:{line}: exchanges\[0\].response.status"):
        parse(text, Path("canary.yaml"))


def test_non_yaml_and_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match=r"x.yaml:2: not valid YAML or JSON"):
        parse("exchanges: [unclosed\n", Path("x.yaml"))
    with pytest.raises(CassetteError, match="cannot read the cassette"):
        load(tmp_path / "missing.yaml")
    with pytest.raises(CassetteError, match=r"\(top level\): expected a mapping"):
        parse("- a list\n", Path("x.yaml"))


def test_an_error_response_needs_no_chunks() -> None:
    c = good()
    c.exchanges[0].response = {"status": 429, "at_ms": 3, "error": {"message": "slow down"}}
    assert parse(dump(c), Path("x.yaml")).exchanges[0].status == 429


def test_format_constant_is_written() -> None:
    assert dump(good()).startswith(f"format: {FORMAT}\n")


def test_a_cassette_names_its_api_and_every_exchange_agrees(tmp_path: Path) -> None:
    c = good()
    c.api = "anthropic"
    c.exchanges[0].request = {"api": "anthropic", **REQUEST}
    text = dump(c)
    assert text.splitlines()[:4] == [f"format: {FORMAT}", "scenario: canary", "model: m", "api: anthropic"]
    assert parse(text, tmp_path / "canary.yaml").api == "anthropic"
    assert parse(dump(good()), tmp_path / "canary.yaml").api is None and "api:" not in dump(good())
    unknown = text.replace("api: anthropic\nrecorded", "api: gemini\nrecorded")
    with pytest.raises(CassetteError, match=r"canary.yaml:4: api: expected one of chat, responses, anthropic, "
                                            r"got 'gemini'"):
        parse(unknown, tmp_path / "canary.yaml")
    other = text.replace("  request:\n    api: anthropic", "  request:\n    api: responses")
    with pytest.raises(CassetteError, match=r"canary.yaml:\d+: exchanges\[0\].request.api: says 'responses' but "
                                            r"the cassette's api is 'anthropic'"):
        parse(other, tmp_path / "canary.yaml")
    chat = dump(good()).replace("model: m\nrecorded", "model: m\napi: responses\nrecorded")
    with pytest.raises(CassetteError, match="says 'chat' but the cassette's api is 'responses'"):
        parse(chat, tmp_path / "canary.yaml")
    # Without a cassette-wide api, each exchange says its own.
    mixed = dump(good()).replace("  request:\n    model: m", "  request:\n    api: responses\n    model: m")
    assert parse(mixed, tmp_path / "canary.yaml").exchanges[0].request["api"] == "responses"
