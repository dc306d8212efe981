"""How a room event is shown as evidence: one line, with decrypted bodies left out. Pure."""

from __future__ import annotations

from typing import Any


def describe_event(event: dict[str, Any]) -> str:
    content = event.get("content") or {}
    rel = content.get("m.relates_to") or {}
    parts = [event.get("type", "?"), f"from={event.get('sender')}", f"id={event.get('event_id')}"]
    if "body" in content and event.get("decrypted"):
        parts.append(f"body=<{len(str(content['body']))} chars, decrypted>")  # what E2EE protected stays out
    elif "body" in content:
        body = str(content["body"])
        parts.append(f"body={body[:80]!r}")
    if rel:
        others = {k: v for k, v in rel.items() if k != "m.in_reply_to"}
        if others:
            parts.append(f"relates_to={others}")
        target = (rel.get("m.in_reply_to") or {}).get("event_id") if isinstance(rel, dict) else None
        if target:
            parts.append(f"in_reply_to={target}")
    return " ".join(parts)
