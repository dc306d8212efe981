"""Who reached which membership in a room, from the room's member events. Pure."""

from __future__ import annotations

from typing import Any


def membership_of(event: dict[str, Any], user_id: str, room_id: str) -> str | None:
    """The membership `event` gives `user_id` in `room_id`; None when it is about something else."""
    if event.get("type") == "m.room.member" and event.get("state_key") == user_id and event.get("room_id") == room_id:
        return str((event.get("content") or {}).get("membership"))
    return None


def settles(event: dict[str, Any], user_id: str, room_id: str, wanted: str) -> bool:
    """Whether `event` answers a wait for `wanted`: reaching it, or any other membership than a (repeated)
    invite. Waiting for a join, a decline (leave) is as final an answer as the join: the step fails on it."""
    found = membership_of(event, user_id, room_id)
    return found is not None and (found == wanted or found != "invite")
