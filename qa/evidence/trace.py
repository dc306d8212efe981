"""What the bot's trace says about one message: the attempts of the turns it started, the records about it, and
whether a record keeps within a step's bounds. Pure: over trace records (docs/trace-format.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def attempts_for(records: Iterable[dict[str, Any]], event_id: str) -> set[str]:
    """The bot's attempt ids for the turn(s) a message started, from its turn.start records."""
    return {str(r.get("attempt")) for r in records if r.get("type") == "turn.start" and r.get("eventId") == event_id}


def record_matches(record: dict[str, Any], kind: str, fields: Mapping[str, Any], event_id: str | None,
                   attempts: set[str]) -> bool:
    """A record of type `kind` with these field values, about `event_id` when one is given: records about a
    message name its event, or the attempt of a turn it started (lock records do)."""
    if record.get("type") != kind or any(record.get(k) != v for k, v in fields.items()):
        return False
    return event_id is None or record.get("eventId") == event_id or record.get("attempt") in attempts


def over_bounds(record: dict[str, Any], bounds: Mapping[str, float]) -> dict[str, Any]:
    """The bounded fields the record exceeds, or does not carry as a number."""
    return {k: record.get(k) for k, limit in bounds.items()
            if not isinstance(record.get(k), int | float) or record[k] > limit}


def describe_bounds(kind: str, bounds: Mapping[str, float]) -> str:
    return f"{kind} with {', '.join(f'{k} <= {v:g}' for k, v in bounds.items())}"
