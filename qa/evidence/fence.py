"""The room as the bot left it: once the bot's process has exited it can send nothing more, so what a test user's
client receives up to a fence (an event the test user sends after the exit, in each room) is all the bot ever
sent there, and the final checks judge that (qa.scenario.fence). Here: whether the fences give that complete
view, how a verdict the late events changed is told, and whether the bot took back (redacted) a reply a check
passed on. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from qa.evidence.events import BotIds, describe_event, is_bot_sender
from qa.evidence.pairing import latest_body

# A state-less custom type, sent unencrypted even in an encrypted room: no bot answers it, none needs its text.
FENCE_TYPE = "org.matrix_qa.fence"


def fence_shortfall(fences: Mapping[str, str], events: Sequence[Mapping[str, Any]], cut_rooms: Iterable[str]
                    ) -> list[str]:
    """Why the client's view is not yet the whole of what the bot sent: a fence (room id -> its event id) it has not
    received, a fenced room whose timeline one of its syncs cut short (`limited`: the events before the cut never
    reached it, the bot's among them perhaps). Empty: the view is complete."""
    seen = {e.get("event_id") for e in events}
    problems = [f"the fence {event_id} in {room_id} did not reach the observer in time" for room_id, event_id
                in fences.items() if event_id not in seen]
    cut = sorted({room for room in cut_rooms if room in fences})
    problems += [f"a sync of the observer skipped part of {room}'s timeline (limited)" for room in cut]
    return problems


def rooms_joined(events: Iterable[Mapping[str, Any]], user_id: str, rooms: Iterable[str], unknown: Iterable[str],
                 left: Iterable[str] = ()) -> list[str]:
    """Which of `rooms` (each once, in order) the user is in: not one it is known to have left (`left`: its own
    leave never reaches the timelines of the rooms it is in), else by its own latest membership event in the
    stream; a room with none seen counts as joined when it is among `unknown` (what the client says it is in)."""
    latest: dict[str, Any] = {}
    for e in events:
        if e.get("type") == "m.room.member" and e.get("state_key") == user_id:
            latest[str(e.get("room_id"))] = (e.get("content") or {}).get("membership")
    fallback, gone = set(unknown), set(left)
    return [room for room in dict.fromkeys(rooms)
            if room not in gone and (latest[room] == "join" if room in latest else room in fallback)]


def late_bot_events(events: Sequence[Mapping[str, Any]], mark: int, bot: BotIds) -> list[Mapping[str, Any]]:
    """The bot's events the client received from `mark` on (after the final checks' first look)."""
    return [e for e in events[mark:] if is_bot_sender(e.get("sender"), bot)]


def unreadable(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ids of the events among these that the client could not decrypt: an edit in one is not judged."""
    return [str(e.get("event_id")) for e in events if e.get("type") == "m.room.encrypted"]


def not_checked(shortfall: Sequence[str], undecrypted: Sequence[str]) -> str | None:
    """What the result says instead of a verdict on the final checks, or None when they saw everything."""
    if undecrypted:
        shortfall = [*shortfall, f"{len(undecrypted)} bot event(s) received after the bot exited could not be "
                                 f"decrypted: {', '.join(undecrypted[:5])}"]
    return "; ".join(shortfall) or None


def late_verdict(problems: Sequence[str], late: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """A final check that held at the first look and fails on the room as the bot left it: the scenario's
    details (the first problem) and the evidence (every problem, then the bot's events that came late)."""
    details = f"after the bot exited: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                                         else "")
    return details, [*problems, *(f"late: {describe_event(dict(e))}" for e in late)]


def redacted_id(event: Mapping[str, Any]) -> str | None:
    """What a redaction removes: `content.redacts` (room version 11 on), else the top-level `redacts`."""
    target = (event.get("content") or {}).get("redacts") or event.get("redacts")
    return str(target) if target else None


def redaction_problems(to: str, reply_ids: Sequence[str], events: Iterable[Mapping[str, Any]], bot: BotIds,
                       trigger_id: str | None = None, passed: Mapping[str, str] | None = None) -> list[str]:
    """The bot's redactions of a checked reply (`reply_ids`: the reply, its parts): each a problem naming the
    redaction; and its redactions of its own edits of one that leave the reply saying something else than the
    text the check passed on (`passed`: reply id -> that text; else what its latest edit says): one problem per
    reply naming them. A redaction by anyone else (a test user's step, a moderator) is the scenario's own doing,
    not the bot's; and once someone else has redacted the trigger (`trigger_id`: the question is gone), the bot's
    later redactions of its answer are its honest clean-up, not a reply taken back."""
    events = list(events)
    replies = set(reply_ids)
    edits = {str(e.get("event_id")): target for e in events
             if is_bot_sender(e.get("sender"), bot) and (target := _replaced(e)) in replies}
    problems = []
    taken_back: dict[str, str] = {}  # the bot's edit -> its redaction
    question_gone = False
    for e in events:
        if e.get("type") != "m.room.redaction":
            continue
        target = redacted_id(e)
        if not is_bot_sender(e.get("sender"), bot):
            question_gone = question_gone or (trigger_id is not None and target == trigger_id)
            continue
        if question_gone:
            continue
        if target in replies:
            problems.append(f"the bot redacted its reply {target} to '{to}' ({e.get('event_id')}): the answer the "
                            "check passed on is gone")
        elif target in edits:
            taken_back[target] = str(e.get("event_id"))
    for reply in dict.fromkeys(reply_ids):
        gone = [edit for edit in taken_back if edits[edit] == reply]
        if not gone:
            continue
        # What a client shows: the latest edit still there. Taking back an edit a later one replaced changes nothing.
        message = next((e for e in events if e.get("event_id") == reply), None)
        if message is None:
            continue  # a reply the client never saw: no text to tell (its redaction, above, is still named)
        shown = latest_body(dict(message), [dict(e) for e in events], bot)
        now = latest_body(dict(message), [dict(e) for e in events if e.get("event_id") not in gone], bot)
        wanted = (passed or {}).get(reply, shown)
        if now != shown and now != wanted:
            problems.append(f"the bot redacted its edit{'s' if len(gone) > 1 else ''} {', '.join(gone)} of its reply "
                            f"{reply} to '{to}' ({', '.join(taken_back[edit] for edit in gone)}): the reply now says "
                            f"{now!r}, not the {wanted!r} the check passed on")
    return problems


def _replaced(event: Mapping[str, Any]) -> str | None:
    """The event an edit (`m.replace`) replaces, else None."""
    relates = (event.get("content") or {}).get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
        return str(relates.get("event_id"))
    return None
