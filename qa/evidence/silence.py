"""Whether the bot's own account of a message proves it stayed silent about it. Pure: over the trace records
and the control message's answer that the expect_no_reply step gathers."""

from __future__ import annotations

from typing import Any

NOT_ANSWERED = ("dropped", "recorded", "ignored")  # decisions that mean "no reply will come"


def is_decision(record: dict[str, Any], event_id: str) -> bool:
    """The bot's decision on an event: an inbound record, or for a reaction (never a message) its record."""
    return record.get("type") in ("inbound", "reaction") and record.get("eventId") == event_id


def accepted(decision: dict[str, Any]) -> bool:
    return decision.get("decision") not in NOT_ANSWERED


def decision_problems(decision: dict[str, Any], to: str, reason: str | None) -> list[str]:
    """What is wrong with the bot's decision on step `to`'s event, against the expected `reason` (any when
    None). An accepted message is one problem here; the step adds what the bot then said."""
    if accepted(decision):
        return [f"the bot accepted '{to}' ({decision.get('reason')})"]
    if reason and decision.get("reason") != reason:
        return [f"dropped for {decision.get('reason')!r}, expected {reason!r}"]
    return []


def control_problems(reply: dict[str, Any], expected: str | None) -> list[str]:
    """The control message's answer must say `expected`, when the step says what it is."""
    got = str((reply.get("content") or {}).get("body", "")).strip()
    return [] if expected is None or got == expected else [f"control reply body {got!r} != expected {expected!r}"]
