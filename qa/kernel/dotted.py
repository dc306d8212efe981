"""Dotted keys (`session.writeLock.scope`, `rooms.*.requireMention`) set in a JSON-like config: the one
implementation behind `--bot-set`, used both to apply overrides (qa.harness.launch) and to check them first
(qa.agent.overrides), so what is checked is exactly what is applied."""

from __future__ import annotations

from typing import Any


def set_dotted(config: dict[str, Any], key: str, value: object) -> list[str] | None:
    """Set `key` in `config` in place; a `*` part means every entry of that mapping (room ids are only known once
    a scenario has made its rooms). Returns the path to the value that is not a mapping, or None when set."""
    return _set(config, key.split("."), value, [])


def _set(config: dict[str, Any], parts: list[str], value: object, done: list[str]) -> list[str] | None:
    node: Any = config
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            return [*done, *parts[:i]]
        if part == "*":
            for child in node.values():
                blocked = _set(child, parts[i + 1:], value, [*done, *parts[:i + 1]])
                if blocked:
                    return blocked
            return None
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        return [*done, *parts[:-1]]
    node[parts[-1]] = value
    return None
