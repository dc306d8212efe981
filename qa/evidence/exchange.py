"""Pure: a bot-to-bot exchange as the room shows it: which messages after an opener belong to it, how many each
bot sent, and whether the exchange stopped within its bound (the loop guard's evidence, issue 27)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def in_exchange(event: Mapping[str, Any], room_id: str, speakers: Mapping[str, str]) -> bool:
    """A message of the exchange: a room message (an edit is not a new message) by one of the two bots, in the
    opener's room."""
    if event.get("type") != "m.room.message" or event.get("room_id") != room_id:
        return False
    if event.get("sender") not in speakers:
        return False
    content = event.get("content")
    relates = content.get("m.relates_to") if isinstance(content, Mapping) else None
    return not (isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace")


def opener_index(events: Sequence[Mapping[str, Any]], opener_id: str) -> int | None:
    """Where the opener stands in what the observer saw; None when it was not seen."""
    return next((i for i, e in enumerate(events) if e.get("event_id") == opener_id), None)


def exchange_counts(events: Sequence[Mapping[str, Any]], opener_id: str, room_id: str,
                    speakers: Mapping[str, str]) -> dict[str, int]:
    """Messages of the exchange after the opener, by speaker label (`speakers`: user id -> label, each label
    counted even at 0). Nothing counts before the opener is seen."""
    counts = dict.fromkeys(speakers.values(), 0)
    start = opener_index(events, opener_id)
    if start is None:
        return counts
    for event in events[start + 1:]:
        if in_exchange(event, room_id, speakers):
            counts[speakers[str(event["sender"])]] += 1
    return counts


def describe_counts(counts: Mapping[str, int]) -> str:
    """`9 messages (bot 4, peer 5)`."""
    total = sum(counts.values())
    parts = ", ".join(f"{label} {n}" for label, n in counts.items())
    return f"{total} message{'' if total == 1 else 's'} ({parts})"


def exchange_problem(counts: Mapping[str, int], most: int) -> str | None:
    """What is wrong with the exchange so far, or None: more than `most` messages of the two bots."""
    if sum(counts.values()) > most:
        return f"the bots sent {describe_counts(counts)} after the opener, more than {most}: the exchange went on"
    return None
