"""Rules of the mock provider: which reply a model request gets, whatever its API (the request in the common view of
qa.provider.apis.base). Pure logic; the only I/O is reading YAML.

A rule file is a mapping with one key, `rules`, a list tried in file order (first match wins):

    rules:
      - name: slow-marker                       # required, unique within the file
        match:                                  # every given condition must hold; no `match` = always
          latest_user: "slow reply with marker: (?P<marker>\\S+)"   # re.search on the latest user message
          any_message: "..."                    # re.search on each message, the most recent hit counts
          last_role: tool                       # role of the conversation's last message
          has_role: tool                        # some message has this role
          tool_offered: exec                    # the request offers a tool of this name
        reply: {text: "{marker}"}               # or {tool_call: {name, arguments}} / {tool_calls: [...]};
                                                # text and tool calls may be combined
        error: {status: 500, message: "..."}    # instead of `reply`: an error, in the request's API's shape
        latency_ms: 1500                        # simulated model latency before the response starts
        stream: {pieces: 12, delay_ms: 100}     # streamed replies: text in this many deltas, paced (default 3, 0);
                                                # hold_after: N holds (the rule's `hold`) after N pieces instead
        hold: true                              # or a name: stay in flight until MockProvider.release(name)
        hold_ms: 20000                          # a hold ends by itself this long after it began (journaled)
        every: 2                                # applies only to every 2nd request it matches (the 2nd, 4th,
                                                # …); the others fall through to the rules after it
        times: 2                                # only the first 2 requests with the same latest user message;
                                                # later ones fall through to the next rules (a retry succeeds)
        stream_fault: {kind: cut, after_chunks: 1}  # a reply that breaks mid-stream: `cut` closes the
                                                # connection, `malformed` sends a chunk that is not JSON

Provider faults: `error` (500, or 429 with `retry_after_s`, sent as a Retry-After header), `stream_fault`,
and a `latency_ms`/`hold` longer than the client waits (a hang); the journal records each fault served. Either
ends the moment the client's connection closes (the bot gave up, or the harness stopped it), which is the hang's
finishedAt.

Templates (`reply.text`, every string inside tool-call arguments, `error.message`) substitute `{name}` with
a named group of `match.latest_user` or `match.any_message`, or with `latest_user`, `last_content` (the last
message's text) or `tool_content` (the most recent tool message's text); `{{` and `}}` are literal braces.
Unknown names are rejected when the file is loaded, not when a request arrives.

The built-in rules (marker echo, slow marker, exec tool call, tool-result echo) are data in
fixtures/mock-provider/default.yaml, loaded by `load_default_rules()`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from yaml.nodes import Node

from qa import safe_yaml
from qa.kernel.errors import ConfigError
from qa.library import builtin_rules_dir
from qa.patterns import Regex

# The checkout's fixtures/, or their installed copy (qa.library): a plain `pip install .` must find them too.
DEFAULT_RULES_PATH = (builtin_rules_dir() or Path(__file__).resolve().parents[2] / "fixtures" / "mock-provider") \
    / "default.yaml"
DEFAULT_FALLBACK_TEXT = "mock: no rule matched"

# Names every template may use, whatever the rule's regexes capture.
BUILTIN_VARS = frozenset({"latest_user", "last_content", "tool_content"})

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)\}")


class RuleFileError(ConfigError, ValueError):
    """A rule file that cannot be used: one line per problem, each `file[:line]: rule and field: message`.

    A ConfigError, so the CLI reports it as a usage error (exit 2) without a traceback."""

    def __init__(self, path: Path | str, problems: Sequence[str | tuple[int | None, str]]) -> None:
        self.path = Path(path)
        located = [p if isinstance(p, tuple) else (None, p) for p in problems]
        self.problems = [text for _, text in located]
        lines = [f"{self.path}{f':{line}' if line else ''}: {' '.join(text.split())}" for line, text in located]
        super().__init__("\n".join(lines))





class _Strict(BaseModel):
    # A misspelt key (`latency: 100`) must fail loudly rather than silently do nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchSpec(_Strict):
    latest_user: Regex | None = None
    any_message: Regex | None = None
    last_role: str | None = None
    has_role: str | None = None
    tool_offered: str | None = None


class ToolCallSpec(_Strict):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ReplySpec(_Strict):
    text: str | None = None
    tool_call: ToolCallSpec | None = None
    tool_calls: list[ToolCallSpec] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> ReplySpec:
        if self.tool_call is not None and self.tool_calls is not None:
            raise ValueError("give either tool_call or tool_calls, not both")
        if self.text is None and self.tool_call is None and not self.tool_calls:
            raise ValueError("a reply needs text, tool_call or tool_calls")
        return self

    @property
    def calls(self) -> list[ToolCallSpec]:
        if self.tool_call is not None:
            return [self.tool_call]
        return list(self.tool_calls or [])


class ErrorSpec(_Strict):
    status: int = Field(ge=400, le=599)
    message: str = "mock provider error"
    type: str | None = None
    code: str | None = None
    param: str | None = None
    retry_after_s: float | None = Field(default=None, ge=0, le=600)  # the Retry-After header, in seconds

    def error_type(self) -> str:
        if self.type is not None:
            return self.type
        return "server_error" if self.status >= 500 else "invalid_request_error"


class StreamSpec(_Strict):
    # How a streamed reply's text is cut and paced, so a bot's streaming preview has something to show.
    pieces: int = Field(default=3, ge=1, le=500)
    delay_ms: int = Field(default=0, ge=0, le=10_000)
    hold_after: int | None = Field(default=None, ge=1)  # the rule's hold waits after this many pieces, not before


class StreamFault(_Strict):
    kind: Literal["cut", "malformed"]
    after_chunks: int = Field(default=1, ge=0)  # chunks of the reply that arrive intact before the fault


class Rule(_Strict):
    name: str = Field(min_length=1)
    match: MatchSpec = Field(default_factory=MatchSpec)
    reply: ReplySpec | None = None
    error: ErrorSpec | None = None
    latency_ms: int = Field(default=0, ge=0)
    stream: StreamSpec = Field(default_factory=StreamSpec)
    hold: bool | str | None = None
    hold_ms: int | None = Field(default=None, ge=1)
    # A flaky model on purpose (--repeat's pass rates are tested with it): the count is the provider's.
    every: int | None = Field(default=None, ge=2)
    times: int | None = Field(default=None, ge=1)
    stream_fault: StreamFault | None = None

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if (self.reply is None) == (self.error is None):
            raise ValueError("a rule needs exactly one of reply or error")
        if self.stream_fault is not None and self.reply is None:
            raise ValueError("stream_fault breaks a reply; a rule with `error` has no stream to break")
        if isinstance(self.hold, str) and not self.hold:
            raise ValueError("hold: a hold name must not be empty")
        if self.hold_ms is not None and self.hold_name is None:
            raise ValueError("hold_ms bounds a hold, and this rule has no `hold`")
        if self.stream.hold_after is not None and (self.hold_name is None or not self.stream.delay_ms
                                                   or self.stream.hold_after >= self.stream.pieces):
            raise ValueError("stream.hold_after holds a paced stream (delay_ms) under the rule's `hold`, before its "
                             "last piece (hold_after < pieces)")
        known = set(BUILTIN_VARS)
        for pattern in (self.match.latest_user, self.match.any_message):
            if pattern is not None:
                known.update(pattern.groupindex)
        for where, template in self._templates():
            unknown = sorted(set(_placeholders(template)) - known)
            if unknown:
                names = ", ".join("{" + n + "}" for n in unknown)
                raise ValueError(
                    f"{where} uses {names}: not a named group of match.latest_user/match.any_message "
                    f"nor one of {', '.join(sorted(BUILTIN_VARS))}"
                )
        return self

    def _templates(self) -> Iterable[tuple[str, str]]:
        if self.reply is not None:
            if self.reply.text is not None:
                yield "reply.text", self.reply.text
            for i, call in enumerate(self.reply.calls):
                yield from _strings_in(call.arguments, f"tool call {i} ({call.name}) arguments")
        if self.error is not None:
            yield "error.message", self.error.message

    @property
    def hold_name(self) -> str | None:
        if self.hold is True:
            return self.name
        if isinstance(self.hold, str):
            return self.hold
        return None

    def match_request(self, request: ChatRequest) -> dict[str, str] | None:
        """The template variables if this rule applies to the request, else None."""
        spec = self.match
        if spec.last_role is not None and request.last_role != spec.last_role:
            return None
        if spec.has_role is not None and all(m.role != spec.has_role for m in request.messages):
            return None
        if spec.tool_offered is not None and spec.tool_offered not in request.tools:
            return None
        variables = request.builtin_vars()
        if spec.any_message is not None:
            # The most recent hit, so a rule about "the last time X was said" sees the freshest value.
            hit = next(
                (m for m in (spec.any_message.search(msg.text) for msg in reversed(request.messages)) if m),
                None,
            )
            if hit is None:
                return None
            variables.update({k: v or "" for k, v in hit.groupdict().items()})
        if spec.latest_user is not None:
            latest = request.latest_user
            hit = spec.latest_user.search(latest) if latest is not None else None
            if hit is None:
                return None
            variables.update({k: v or "" for k, v in hit.groupdict().items()})
        return variables


class RuleFile(_Strict):
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_names(self) -> RuleFile:
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(
                    f"rules[{index}]: duplicate rule name {rule.name!r} (first used by rules[{seen[rule.name]}])"
                )
            seen[rule.name] = index
        return self


def _placeholders(template: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)]


def _strings_in(value: Any, where: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings_in(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings_in(item, f"{where}[{i}]")


def render(template: str, variables: Mapping[str, str]) -> str:
    def _sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        # Load-time validation guarantees the name is known; keep the text visible if it somehow is not.
        return variables.get(m.group(1), token)

    return _PLACEHOLDER.sub(_sub, template)


def _render_value(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, Mapping):
        return {k: _render_value(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, variables) for v in value]
    return value


# --- the request as rules see it -------------------------------------------------------------------------


_IMAGE_MAGIC = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
                "image/gif": (b"GIF87a", b"GIF89a"), "image/webp": (b"RIFF",)}


def is_image_data_url(url: object) -> bool:
    """A data URL whose bytes really are an image of the type it declares, as a vision API would insist."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return False
    head, _, data = url.partition(",")
    mimetype = head.removeprefix("data:").split(";")[0]
    if not head.endswith(";base64") or mimetype not in _IMAGE_MAGIC:
        return False
    try:
        raw = base64.b64decode(data[:64], validate=True)
    except (binascii.Error, ValueError):
        return False
    return raw.startswith(_IMAGE_MAGIC[mimetype])


def image_count(content: Any) -> int:
    """How many real images (OpenAI `image_url` parts with an image data URL) a message's content carries."""
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, Mapping) and p.get("type") == "image_url"
               and isinstance(p.get("image_url"), Mapping) and is_image_data_url(p["image_url"].get("url")))


def content_text(content: Any) -> str:
    """Text of a message's `content`: a string, or a list of parts of which the text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        return "\n".join(texts)
    return str(content)


@dataclass(frozen=True)
class Message:
    role: str
    text: str


@dataclass(frozen=True)
class ChatRequest:
    messages: list[Message]
    tools: list[str] = field(default_factory=list)
    model: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChatRequest:
        raw = body.get("messages") or []
        messages = [
            Message(role=str(m.get("role", "")), text=content_text(m.get("content")))
            for m in raw
            if isinstance(m, Mapping)
        ]
        return cls(messages=messages, tools=tool_names(body), model=str(body.get("model", "")))

    @property
    def latest_user(self) -> str | None:
        return next((m.text for m in reversed(self.messages) if m.role == "user"), None)

    @property
    def last_role(self) -> str | None:
        return self.messages[-1].role if self.messages else None

    def builtin_vars(self) -> dict[str, str]:
        return {
            "latest_user": self.latest_user or "",
            "last_content": self.messages[-1].text if self.messages else "",
            "tool_content": next((m.text for m in reversed(self.messages) if m.role == "tool"), ""),
        }


def tool_names(body: Mapping[str, Any]) -> list[str]:
    """Names of the tools a request offers (`tools`, and the legacy `functions`)."""
    names: list[str] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, Mapping):
            continue
        kind = tool.get("type", "function")
        inner = tool.get(kind) if isinstance(tool.get(kind), Mapping) else tool
        if isinstance(inner, Mapping) and isinstance(inner.get("name"), str):
            names.append(inner["name"])
    for fn in body.get("functions") or []:
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


# --- decisions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the wire format carries it

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Reply:
    text: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> Literal["stop", "tool_calls"]:
        return "tool_calls" if self.tool_calls else "stop"

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "toolCalls": [c.to_json() for c in self.tool_calls]}


@dataclass(frozen=True)
class ErrorReply:
    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after_s: float | None = None

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": f"{self.retry_after_s:g}"}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Decision:
    rule: Rule | None  # None: nothing matched and the fallback text was used
    reply: Reply | None
    error: ErrorReply | None
    latency_ms: int = 0
    hold: str | None = None
    stream: StreamSpec = field(default_factory=StreamSpec)
    stream_fault: StreamFault | None = None

    @property
    def rule_name(self) -> str | None:
        return self.rule.name if self.rule is not None else None

    def fault(self) -> str | None:
        """The fault this decision serves, in words for the journal and the report (None: a plain answer)."""
        if self.error is not None:
            after = f" retry-after {self.error.retry_after_s:g}s" if self.error.retry_after_s is not None else ""
            return f"error {self.error.status}{after}"
        if self.stream_fault is not None:
            kind = "stream cut" if self.stream_fault.kind == "cut" else "malformed chunk"
            return f"{kind} after {self.stream_fault.after_chunks} chunk(s)"
        return None


def decide(
    rules: Sequence[Rule],
    request: ChatRequest,
    *,
    fallback_text: str = DEFAULT_FALLBACK_TEXT,
    call_id_prefix: str = "call_mock",
    hits: MutableMapping[int, int] | None = None,
    counts: dict[tuple[str, str], int] | None = None,
) -> Decision:
    """First matching rule wins; no match is not an error, so the bot under test keeps a working model.

    `hits` is the caller's count of matches per rule (by id()), kept across requests: an `every: N` rule
    applies only to the Nth, 2Nth, … request it matches. Without it, such a rule applies to none.
    `counts` (kept by the caller across requests) is how often each `times` rule answered each latest user
    message; a rule that used up its times is passed over, so a client's retry meets the next rule."""
    for rule in rules:
        variables = rule.match_request(request)
        if variables is None:
            continue
        if rule.every is not None:
            if hits is None:
                continue
            hits[id(rule)] = hits.get(id(rule), 0) + 1
            if hits[id(rule)] % rule.every:
                continue
        if rule.times is not None and counts is not None:
            key = (rule.name, request.latest_user or "")
            if counts.get(key, 0) >= rule.times:
                continue
            counts[key] = counts.get(key, 0) + 1
        if rule.error is not None:
            err = rule.error
            error = ErrorReply(
                status=err.status,
                message=render(err.message, variables),
                type=err.error_type(),
                code=err.code,
                param=err.param,
                retry_after_s=err.retry_after_s,
            )
            return Decision(rule, None, error, rule.latency_ms, rule.hold_name)
        assert rule.reply is not None  # guaranteed by Rule._check
        calls = [
            ToolCall(
                id=f"{call_id_prefix}_{i}",
                name=spec.name,
                arguments=json.dumps(_render_value(spec.arguments, variables), ensure_ascii=False),
            )
            for i, spec in enumerate(rule.reply.calls)
        ]
        text = render(rule.reply.text, variables) if rule.reply.text is not None else None
        return Decision(rule, Reply(text, calls), None, rule.latency_ms, rule.hold_name, rule.stream,
                        rule.stream_fault)
    return Decision(None, Reply(fallback_text), None)


# --- loading ----------------------------------------------------------------------------------------------


def _known_fields(names: list[str]) -> list[str]:
    """Field names of the model at a location such as ["rules", "reply"] (list indexes left out)."""
    model: Any = RuleFile
    for name in names:
        info = model.model_fields.get(name) if isinstance(model, type) else None
        if info is None:
            return []
        candidates = [a for a in getattr(info.annotation, "__args__", ()) or (info.annotation,)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            inner = [a for c in candidates for a in getattr(c, "__args__", ())]
            model = next((c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _format_error(problem: safe_yaml.FieldError, raw: Any, root: Node | None) -> tuple[int | None, str]:
    """A problem of rule N is told at the line where rule N starts, with its name when it has one."""
    loc = list(problem.loc)
    msg = problem.message
    if problem.kind == "extra_forbidden":
        known = _known_fields([p for p in loc[:-1] if isinstance(p, str)])
        msg = f"unknown field (known: {', '.join(known)})" if known else "unknown field"
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        head = f"rules[{index}]"
        rules = raw.get("rules") if isinstance(raw, Mapping) else None
        if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], Mapping):
            name = rules[index].get("name")
            if name is not None:
                head += f" (name {name!r})"
        field_path = ".".join(str(p) for p in loc[2:])
        line = safe_yaml.line_of(root, ("rules", index))
        return line, f"{head}: {field_path + ': ' if field_path else ''}{msg}"
    return None, f"{'.'.join(str(p) for p in loc) or '<top level>'}: {msg}"


def parse_rules(text: str, source: Path | str = "<string>") -> list[Rule]:
    try:
        root, raw = safe_yaml.compose(text)
    except safe_yaml.YAMLProblem as err:
        raise RuleFileError(source, [(err.line, err.message)]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(p for p in (err.context, err.problem) if p)
        raise RuleFileError(source, [(mark.line + 1 if mark else None, f"not valid YAML: {problem}")]) from None
    except yaml.YAMLError as err:
        raise RuleFileError(source, [f"not valid YAML: {err}"]) from None
    if not isinstance(raw, Mapping):
        raise RuleFileError(source, ["expected a mapping with a `rules` list at the top level"])
    try:
        return list(RuleFile.model_validate(raw).rules)
    except ValidationError as err:
        problems = [_format_error(problem, raw, root) for problem in safe_yaml.field_errors(err, root)]
        raise RuleFileError(source, problems) from None


def load_rules(path: Path | str) -> list[Rule]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise RuleFileError(path, [f"cannot read: {err.strerror or err}"]) from None
    except UnicodeDecodeError as err:
        raise RuleFileError(path, [f"not UTF-8 text: {err.reason} at byte {err.start}"]) from None
    return parse_rules(text, path)


def load_rule_files(paths: Iterable[Path | str]) -> list[Rule]:
    rules: list[Rule] = []
    for path in paths:
        rules.extend(load_rules(path))
    return rules


@lru_cache(maxsize=1)
def _default_rules() -> tuple[Rule, ...]:
    return tuple(load_rules(DEFAULT_RULES_PATH))


def load_default_rules() -> list[Rule]:
    """The built-in rules; rules are frozen, so sharing the cached objects is safe."""
    return list(_default_rules())
