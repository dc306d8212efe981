"""JSON Schemas of the files an author writes (scenario, bot file, mock-provider rules, cassette), for editors
(yaml-language-server's `$schema` line) and CI: `matrix-qa schema KIND`, kept in docs/schema/ by a test.

Derived from the models that read the files, so they cannot drift: the scenario's steps from the step registry,
each in its `{kind: {...}}` wrapper as written (the model sees them unwrapped), and durations as the strings a
file may write (qa.scenario.fields.Duration). The cassette has a hand-written reader (qa.provider.cassette), so
its schema is written here, to that reader's rules. A schema accepts every file the reader accepts; the reader
still checks more (references between steps, placeholders), which no schema can say.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://matrix-qa.invalid/schema/"  # no published address yet: the id only names the schema
KINDS = ("scenario", "bot", "rules", "cassette")


def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema of one kind of file; ValueError for a kind there is none of."""
    makers = {"scenario": _scenario, "bot": _bot, "rules": _rules, "cassette": _cassette}
    if kind not in makers:
        raise ValueError(f"no schema {kind!r}; one of: {', '.join(KINDS)}")
    body = makers[kind]()
    _yaml_booleans(body)
    return {"$schema": SCHEMA_DIALECT, "$id": f"{BASE_ID}{kind}.json", **body}


def schema_text(kind: str) -> str:
    """As printed and as kept in docs/schema/<kind>.json: stable key order, a newline at the end."""
    return json.dumps(schema_for(kind), indent=2, ensure_ascii=False) + "\n"


def _scenario() -> dict[str, Any]:
    from qa.scenario.schema import Scenario
    from qa.scenario.steps.registry import STEP_TYPES

    schema = Scenario.model_json_schema()
    defs = schema["$defs"]
    unwrapped = schema["properties"]["steps"]["items"]["oneOf"]
    refs = [item["$ref"] for item in unwrapped]
    if len(refs) != len(STEP_TYPES):  # the union is built from the registry, in its order
        raise AssertionError("the Step union and the step registry disagree")
    wrapped = [_wrapped(kind, cls.does, ref, defs[ref.rsplit("/", 1)[1]])
               for (kind, cls), ref in zip(STEP_TYPES.items(), refs, strict=True)]
    _replace(schema, unwrapped, wrapped)
    schema["description"] = ("A matrix-qa scenario: who talks to the bot in which rooms, and what must be seen. "
                              "Steps are single-key mappings naming their kind, e.g. {send: {as: driver, body: hi}}.")
    return schema


def _wrapped(kind: str, does: str, ref: str, definition: dict[str, Any]) -> dict[str, Any]:
    """`{kind: {...}}`; a kind with no required field may be written bare (`- restart_homeserver:`)."""
    inner: dict[str, Any] = {"$ref": ref}
    if not definition.get("required"):
        inner = {"anyOf": [inner, {"type": "null"}]}
    return {"type": "object", "description": does, "properties": {kind: inner}, "required": [kind],
            "additionalProperties": False}


def _replace(node: Any, old: list[Any], new: list[Any]) -> None:
    """Every place the unwrapped step union appears (steps nested in other models too) gets the wrapped one."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "oneOf" and value == old:
                node[key] = new
            else:
                _replace(value, old, new)
    elif isinstance(node, list):
        for value in node:
            _replace(value, old, new)


def _yaml_booleans(node: Any) -> None:
    """YAML 1.1 (PyYAML, which matrix-qa reads with) turns a bare off/on into false/true, and the models take
    them back as the words: a schema that refused them would refuse files that run."""
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list):
            added = [b for word, b in (("off", False), ("on", True)) if word in enum and b not in enum]
            node["enum"] = enum + added
            if added and node.get("type") == "string":
                node["type"] = ["string", "boolean"]
        for value in node.values():
            _yaml_booleans(value)
    elif isinstance(node, list):
        for value in node:
            _yaml_booleans(value)


def _bot() -> dict[str, Any]:
    from qa.harness.botfile import BotFile

    schema = BotFile.model_json_schema()
    schema["description"] = "A matrix-qa bot file: how to start the bot under test and when it is ready."
    return schema


def _rules() -> dict[str, Any]:
    from qa.provider.rules import RuleFile

    schema = RuleFile.model_json_schema()
    schema["description"] = "A matrix-qa mock-provider rule file: which request gets which answer."
    return schema


def _cassette() -> dict[str, Any]:
    from qa.provider.apis import NAMES
    from qa.provider.cassette import FORMAT

    millis = {"type": "number", "minimum": 0}
    response = {
        "type": "object", "required": ["status", "at_ms"],
        "properties": {
            "status": {"type": "integer", "minimum": 100, "maximum": 599}, "at_ms": millis,
            "text": {"type": ["string", "null"]},
            "tool_calls": {"type": ["array", "null"], "items": {
                "type": "object", "required": ["id", "name", "arguments"]}},
            "finish_reason": {"type": ["string", "null"]},
            "chunks": {"type": "array", "items": {"type": "object", "required": ["at_ms"],
                                                  "properties": {"at_ms": millis}}},
            "error": {"type": "object"},
        },
    }
    exchange = {
        "type": "object", "required": ["session", "request", "response"],
        "properties": {
            "session": {"type": "string"},
            "request": {"type": "object", "required": ["model", "stream", "messages"],
                        "properties": {"api": {"enum": list(NAMES)}, "model": {"type": "string"},
                                       "stream": {"type": "boolean"}, "messages": {"type": "array", "minItems": 1}}},
            "response": response,
        },
    }
    return {
        "title": "Cassette", "type": "object", "required": ["format", "scenario", "model", "exchanges"],
        "description": "A matrix-qa cassette: one scenario's model exchanges, recorded live, served by a replay.",
        "properties": {
            "format": {"const": FORMAT}, "scenario": {"type": "string"}, "model": {"type": "string"},
            "api": {"enum": list(NAMES)}, "recorded": {"type": ["object", "null"]},
            "exchanges": {"type": "array", "items": exchange},
        },
    }
