"""A thread the bot did not record from its start: what was said in it before, as the model's context.

A thread can be older than the bot's first sync of its room (the bot joined later, or started after it was
written): its messages then never reached the bot's transcript. A thread session whose first recorded message
is not the thread's root is missing that past (`history_anchor`): each of its turns, the first and every later
one, hands the model the thread's root and its messages from before the session's first recorded message,
ahead of the transcript, so the second question in such a thread is answered with the same past as the first.
The turn asks the homeserver once per thread and process (`/relations/{root}/m.thread`, Matrix 1.4; no lock is
held, it is I/O like the model call; later turns reuse the answer), traced `thread.history {session, attempt,
root, messages, fetched}`. What is already in the transcript is not repeated. Encrypted and non-text events
are left out: a context is text someone wrote. Pure; the fetch itself is qa.agent.turn_io.fetch_thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_MESSAGES = 50  # a thread's context is its recent past, not an unbounded download


def first_turn_of_thread(records: Sequence[Mapping[str, Any]], event_id: str) -> bool:
    """True when the transcript holds no user message but this one: the session has just begun."""
    return all(r.get("eventId") == event_id for r in records if r.get("kind") == "user")


def history_anchor(records: Sequence[Mapping[str, Any]], event_id: str, thread_root: str) -> str | None:
    """The message the thread's unrecorded past ends before: the session's first recorded user message (this
    trigger, on a first turn). None when that message is the thread's root: the bot recorded the thread from
    its start, and nothing of it is missing."""
    first = next((str(r["eventId"]) for r in records if r.get("kind") == "user" and r.get("eventId")), event_id)
    return None if first == thread_root else first


def history_records(events: Sequence[Mapping[str, Any]], root: Mapping[str, Any] | None, before: str,
                    bot_user_id: str, known: set[str]) -> list[dict[str, Any]]:
    """The thread's text messages before `before` (the trigger), oldest first, root first, as user records
    `{kind: user, content: "sender: body", eventId, history: true}`; the bot's own messages, events the
    transcript has (`known`) and anything from the trigger on are left out. Pure."""
    ordered = sorted(events, key=lambda e: (int(e.get("origin_server_ts") or 0), str(e.get("event_id"))))
    cut = next((i for i, e in enumerate(ordered) if e.get("event_id") == before), len(ordered))
    records = []
    for event in ([root] if root else []) + list(ordered[:cut]):
        content = event.get("content") or {}
        event_id, sender = str(event.get("event_id", "")), str(event.get("sender", ""))
        if event.get("type") != "m.room.message" or content.get("msgtype") not in ("m.text", "m.emote"):
            continue
        if sender == bot_user_id or event_id in known or event_id == before or not isinstance(content.get("body"), str):
            continue
        records.append({"kind": "user", "content": f"{sender}: {content['body']}", "eventId": event_id,
                        "history": True})
    return records[-MAX_MESSAGES:]
