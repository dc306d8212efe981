"""The cassette: every model exchange of one scenario, as recorded from a live model (qa.provider.recorder) and
served back by qa.provider.replay.

One YAML file per scenario, `<scenario-id>.yaml` (a `.json` file is read too), meant to be read and diffed:

    format: matrix-qa.cassette/v1
    scenario: canary
    model: gpt-5.4
    api: chat                    # the model API of every exchange: chat, responses or anthropic (absent: each
                                 # request says, `api:` first when it is not chat)
    recorded: {status: pass, at: 2026-12-01T22:15:59Z, endpoint: api.openai.com}
    exchanges:
    - session: 3f2a9c1e          # which conversation of the bot (qa.provider.matching.session_of)
      request: {model: gpt-5.4, stream: true, messages: [...], tools: [...]}
      response:
        status: 200
        at_ms: 412.5             # when the response was complete (streamed: the first chunk)
        text: '{token}'
        tool_calls: []
        finish_reason: stop
        chunks:                  # streamed only: the deltas as they came, with their time
        - {at_ms: 412.5, delta: {role: assistant, content: ''}}
        - {at_ms: 430.1, delta: {content: '{token}'}}
        - {at_ms: 431.0, delta: {}, finish_reason: stop}

A request is the one the model saw, in the common view of every API (qa.provider.apis.base): a Responses or
Anthropic request keeps `api` first and its conversation as Chat Completions messages (its `instructions` or
`system` first, a `previous_response_id` replaced by the conversation it continues); a response keeps text,
tool calls and finish reason in Chat Completions' words, and streamed chunks as Chat Completions deltas, which a
replay sends in the request's own API.

Strings are templates (qa.provider.placeholders): `{token}`, `{run}`, `{event1}`; literal braces doubled. For a
streamed response `text`, `tool_calls` and `finish_reason` are what the chunks add up to, kept for the reader;
a hand edit that makes them disagree is refused at load. Non-200 responses keep the endpoint's `error` body.

Headers are never stored, so neither the key nor any authorization header can be in a cassette.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node

from qa import safe_yaml
from qa.kernel.errors import ConfigError
from qa.provider.apis import NAMES as API_NAMES
from qa.provider.placeholders import RUN_NAME, is_known_name, template_names
from qa.shared.markers import TOKEN_NAMES, MarkerError

FORMAT = "matrix-qa.cassette/v1"
SUFFIXES = (".yaml", ".json")
_FIXED_NAMES = frozenset([*TOKEN_NAMES, RUN_NAME])


class CassetteError(ConfigError):
    """A cassette that cannot be used; the message names the file, line and field."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass
class Exchange:
    index: int  # 1-based, in the order the requests reached the model
    session: str
    request: dict[str, Any]
    response: dict[str, Any]

    @property
    def status(self) -> int:
        return int(self.response["status"])

    @property
    def chunks(self) -> list[dict[str, Any]] | None:
        chunks = self.response.get("chunks")
        return chunks if isinstance(chunks, list) else None

    def to_data(self) -> dict[str, Any]:
        return {"session": self.session, "request": self.request, "response": self.response}


@dataclass
class Cassette:
    scenario: str
    model: str
    exchanges: list[Exchange] = field(default_factory=list)
    recorded: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    api: str | None = None  # None: not said (a cassette from before the other APIs: Chat Completions)

    def to_data(self) -> dict[str, Any]:
        head: dict[str, Any] = {"format": FORMAT, "scenario": self.scenario, "model": self.model}
        if self.api is not None:
            head["api"] = self.api
        return head | {"recorded": self.recorded, "exchanges": [e.to_data() for e in self.exchanges]}


def chunk_problem(chunk: dict[str, Any]) -> tuple[list[str | int], str] | None:
    """Pure: (where in the chunk, what is wrong) for a field `assemble` could not use, else None. A hand-edited
    cassette may hold anything; replay must refuse it at load, not crash on it mid-scenario."""
    delta = chunk.get("delta") or {}
    if not isinstance(delta, dict):
        return ["delta"], "expected a mapping"
    if delta.get("content") is not None and not isinstance(delta["content"], str):
        return ["delta", "content"], f"expected a string or null, got {type(delta['content']).__name__}"
    if chunk.get("finish_reason") is not None and not isinstance(chunk["finish_reason"], str):
        return ["finish_reason"], f"expected a string or null, got {type(chunk['finish_reason']).__name__}"
    calls = delta.get("tool_calls") or []
    if not isinstance(calls, list):
        return ["delta", "tool_calls"], f"expected a list, got {type(calls).__name__}"
    for n, call in enumerate(calls):
        if not isinstance(call, dict):
            return ["delta", "tool_calls", n], f"expected a mapping, got {type(call).__name__}"
        index = call.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1000:
            return ["delta", "tool_calls", n, "index"], f"expected a whole number from 0 to 999, got {index!r:.40}"
        if call.get("id") is not None and not isinstance(call["id"], str):
            return ["delta", "tool_calls", n, "id"], f"expected a string, got {type(call['id']).__name__}"
        function = call.get("function") or {}
        if not isinstance(function, dict):
            return ["delta", "tool_calls", n, "function"], f"expected a mapping, got {type(function).__name__}"
        for name in ("name", "arguments"):
            if function.get(name) is not None and not isinstance(function[name], str):
                return (["delta", "tool_calls", n, "function", name],
                        f"expected a string, got {type(function[name]).__name__}")
    return None


def assemble(chunks: Sequence[dict[str, Any]]) -> tuple[str | None, list[ToolCall], str | None]:
    """(text, tool calls, finish reason) a client makes of streamed deltas, as the openai SDK does."""
    text: list[str] = []
    saw_text = False
    calls: dict[int, ToolCall] = {}
    finish = None
    for chunk in chunks:
        delta = chunk.get("delta") or {}
        if isinstance(delta.get("content"), str):
            saw_text = True
            text.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            slot = calls.setdefault(int(call.get("index", 0)), ToolCall("", "", ""))
            slot.id = call.get("id") or slot.id
            function = call.get("function") or {}
            slot.name += function.get("name") or ""
            slot.arguments += function.get("arguments") or ""
        finish = chunk.get("finish_reason") or finish
    return ("".join(text) if saw_text else None), [calls[i] for i in sorted(calls)], finish


def response_summary(response: dict[str, Any]) -> tuple[str | None, list[ToolCall], str | None]:
    calls = [ToolCall(str(c.get("id", "")), str(c.get("name", "")), str(c.get("arguments", "")))
             for c in response.get("tool_calls") or []]
    return response.get("text"), calls, response.get("finish_reason")


# --- writing ---------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line messages (system prompts, tool output) as block scalars: one line of text per line of diff.
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) and "\r" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(cassette: Cassette) -> str:
    return yaml.dump(cassette.to_data(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def path_for(directory: Path, scenario_id: str) -> Path:
    return directory / f"{scenario_id}.yaml"


def find(directory: Path, scenario_id: str) -> Path | None:
    for suffix in SUFFIXES:
        candidate = directory / f"{scenario_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# --- reading ---------------------------------------------------------------------------------------------


def load(path: Path) -> Cassette:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CassetteError(f"{path}: cannot read the cassette: {getattr(exc, 'strerror', None) or exc}") from None
    return parse(text, path)


def parse(text: str, path: Path) -> Cassette:
    """A cassette from its text (YAML or JSON); CassetteError naming `path`, the line and the field."""
    try:
        root, data = safe_yaml.compose(text)
    except safe_yaml.YAMLProblem as exc:
        raise CassetteError(f"{path}:{exc.line or 1}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise CassetteError(f"{path}:{line} not valid YAML or JSON: {getattr(exc, 'problem', None) or exc}") from None
    return _Reader(path, root).cassette(data)


class _Reader:
    def __init__(self, path: Path, root: Node | None) -> None:
        self.path = path
        self.root = root

    def fail(self, where: list[str | int], problem: str) -> CassetteError:
        line = safe_yaml.line_of(self.root, tuple(where))
        shown = safe_yaml.field_path(tuple(where)) or "(top level)"
        return CassetteError(f"{self.path}:{line}: {shown}: {problem}")

    def cassette(self, data: object) -> Cassette:
        top = self.mapping(data, [], required=("format", "scenario", "model", "exchanges"))
        if top["format"] != FORMAT:
            raise self.fail(["format"], f"expected {FORMAT!r}, got {top['format']!r}")
        scenario = self.string(top["scenario"], ["scenario"])
        model = self.string(top["model"], ["model"])
        recorded = top.get("recorded") or {}
        if not isinstance(recorded, dict):
            raise self.fail(["recorded"], "expected a mapping")
        if not isinstance(top["exchanges"], list):
            raise self.fail(["exchanges"], "expected a list")
        api = top.get("api")
        if api is not None and api not in API_NAMES:
            raise self.fail(["api"], f"expected one of {', '.join(API_NAMES)}, got {api!r}")
        exchanges = [self.exchange(e, i, api) for i, e in enumerate(top["exchanges"])]
        return Cassette(scenario=scenario, model=model, exchanges=exchanges, recorded=recorded, path=self.path,
                        api=api)

    def exchange(self, data: object, i: int, api: str | None) -> Exchange:
        where: list[str | int] = ["exchanges", i]
        item = self.mapping(data, where, required=("session", "request", "response"))
        request = self.mapping(item["request"], [*where, "request"], required=("model", "stream", "messages"))
        if api is not None and request.get("api", "chat") != api:
            raise self.fail([*where, "request", "api"], f"says {request.get('api', 'chat')!r} but the cassette's "
                            f"api is {api!r}")
        if not isinstance(request["messages"], list) or not request["messages"]:
            raise self.fail([*where, "request", "messages"], "expected a non-empty list")
        if not isinstance(request["stream"], bool):
            raise self.fail([*where, "request", "stream"], "expected true or false")
        self.templates(request, [*where, "request"])
        response = self.response(item["response"], [*where, "response"], request["stream"])
        return Exchange(index=i + 1, session=self.string(item["session"], [*where, "session"]),
                        request=request, response=response)

    def response(self, data: object, where: list[str | int], stream: bool) -> dict[str, Any]:
        response = self.mapping(data, where, required=("status", "at_ms"))
        status = response["status"]
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise self.fail([*where, "status"], f"expected an HTTP status code, got {status!r}")
        self.millis(response["at_ms"], [*where, "at_ms"])
        self.templates(response, where)
        if status != 200:
            if not isinstance(response.get("error"), dict):
                raise self.fail([*where, "error"], f"a status-{status} response needs the endpoint's error body")
            return response
        if stream:
            chunks = response.get("chunks")
            if not isinstance(chunks, list) or not chunks:
                raise self.fail([*where, "chunks"], "a streamed response needs its chunks (a non-empty list)")
            for n, chunk in enumerate(chunks):
                c = self.mapping(chunk, [*where, "chunks", n], required=("at_ms",))
                self.millis(c["at_ms"], [*where, "chunks", n, "at_ms"])
                # A usage-only chunk (stream_options.include_usage) carries no delta.
                if not isinstance(c.get("delta"), dict) and not isinstance(c.get("usage"), dict):
                    raise self.fail([*where, "chunks", n, "delta"], "expected a mapping (or a usage-only chunk)")
                if (problem := chunk_problem(c)) is not None:
                    raise self.fail([*where, "chunks", n, *problem[0]], problem[1])
            text, calls, finish = assemble(chunks)
            for name, value in (("text", text), ("tool_calls", [c.to_data() for c in calls]),
                                ("finish_reason", finish)):
                if name in response and response[name] != value:
                    raise self.fail([*where, name], f"says {response[name]!r} but the chunks add up to {value!r}; "
                                    "edit the chunks, or re-record")
        calls_data = response.get("tool_calls") or []
        if not isinstance(calls_data, list):
            raise self.fail([*where, "tool_calls"], "expected a list")
        for n, call in enumerate(calls_data):
            self.mapping(call, [*where, "tool_calls", n], required=("id", "name", "arguments"))
            for name in ("id", "name", "arguments"):
                if not isinstance(call[name], str):
                    raise self.fail([*where, "tool_calls", n, name],
                                    f"expected a string, got {type(call[name]).__name__}")
        if response.get("text") is not None and not isinstance(response["text"], str):
            raise self.fail([*where, "text"], "expected a string or null")
        return response

    def templates(self, value: Any, where: list[str | int]) -> None:
        """Every string a valid template naming only known placeholders: a typo fails here, not mid-replay."""
        if isinstance(value, str):
            try:
                names = template_names(value)
            except MarkerError as exc:
                raise self.fail(where, f"{exc} (cassette strings are templates)") from None
            unknown = [n for n in names if not is_known_name(n, _FIXED_NAMES)]
            if unknown:
                raise self.fail(where, f"unknown placeholder {{{unknown[0]}}} (known: {{token}}…{{token9}}, "
                                "{run}, {eventN}, {roomN}; write '{{' and '}}' for literal braces)")
        elif isinstance(value, list):
            for n, v in enumerate(value):
                self.templates(v, [*where, n])
        elif isinstance(value, dict):
            for k, v in value.items():
                self.templates(v, [*where, str(k)])

    def mapping(self, data: object, where: list[str | int], required: Sequence[str] = ()) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected a mapping, got {type(data).__name__}")
        for name in required:
            if name not in data:
                raise self.fail(where, f"missing field '{name}'")
        return data

    def string(self, value: object, where: list[str | int]) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value

    def millis(self, value: object, where: list[str | int]) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise self.fail(where, f"expected milliseconds (a number, 0 or more), got {value!r}")
        return float(value)

