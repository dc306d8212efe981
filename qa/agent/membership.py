"""Invites, kicks and direct chats: which rooms the bot is in, why, and how it treats each.

The decisions are pure (`decide_invite`, `backlog_cutoff`, `left_room`); `Membership` is the thin edge that
joins or declines through the client, keeps what it learnt in `membership.json` beside the sync token (so a
restarted bot still serves a room it joined by invite and still knows its DMs), and traces every change:

  invite      {roomId, inviter, direct, decision: joined|declined, reason}
  membership  {roomId, membership: leave|ban, by, reason?}   the bot was removed (or left) — it stops there
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.kernel.trace import Trace

# Reasons are part of the trace contract.
CONFIGURED = "configured-room"
AUTO_JOIN_ALWAYS = "auto-join-always"
INVITER_ALLOWED = "inviter-allowed"
AUTO_JOIN_OFF = "auto-join-off"
INVITER_NOT_ALLOWED = "inviter-not-allowed"


@dataclass(frozen=True)
class InviteDecision:
    join: bool
    reason: str


def decide_invite(inviter: str, configured: bool, auto_join: str, allowlist: Iterable[str]) -> InviteDecision:
    """A room the bot is configured for is always joined; any other follows autoJoin."""
    if configured:
        return InviteDecision(True, CONFIGURED)
    if auto_join == "always":
        return InviteDecision(True, AUTO_JOIN_ALWAYS)
    if auto_join == "allowlist":
        allowed = inviter in set(allowlist)
        return InviteDecision(allowed, INVITER_ALLOWED if allowed else INVITER_NOT_ALLOWED)
    return InviteDecision(False, AUTO_JOIN_OFF)


def invite_facts(invite_state: Iterable[Any], user_id: str) -> tuple[str, bool]:
    """(who invited us, whether they flagged it a direct chat) from the invite's stripped state."""
    for event in invite_state:
        if getattr(event, "state_key", None) == user_id and getattr(event, "membership", None) == "invite":
            return str(getattr(event, "sender", "")), bool((getattr(event, "content", None) or {}).get("is_direct"))
    return "", False


def _member_of(event: Any, user_id: str) -> str | None:
    source = getattr(event, "source", None) or {}
    if source.get("type") != "m.room.member" or source.get("state_key") != user_id:
        return None
    return (source.get("content") or {}).get("membership")


def backlog_cutoff(timeline: list[Any], user_id: str) -> int:
    """How many leading events of a batch came before the bot's own join in it: a room just (re)joined shows
    what was said while the bot was not there, which is history to it, not messages to answer."""
    for index in range(len(timeline) - 1, -1, -1):
        if _member_of(timeline[index], user_id) == "join":
            return index + 1
    return 0


def left_room(timeline: list[Any], user_id: str) -> dict[str, Any] | None:
    """The bot's last leave/ban in a left room's timeline: who did it and why; None when none is shown."""
    for event in reversed(timeline):
        membership = _member_of(event, user_id)
        if membership in ("leave", "ban"):
            source = event.source
            reason = (source.get("content") or {}).get("reason")
            return {"membership": membership, "by": source.get("sender"), **({"reason": reason} if reason else {})}
    return None


class Membership:
    """Rooms joined at run time and direct chats, persisted; joins, declines and removals, traced."""

    def __init__(self, state_dir: Path, user_id: str, trace: Trace, *, forget: bool = False) -> None:
        self._path = state_dir / "membership.json"
        self._user_id = user_id
        self._trace = trace
        self.runtime_rooms: set[str] = set()
        self.direct_rooms: set[str] = set()
        if not forget and self._path.exists():
            try:
                data = json.loads(self._path.read_text())
                self.runtime_rooms = set(data.get("runtimeRooms", []))
                self.direct_rooms = set(data.get("directRooms", []))
            except (OSError, ValueError):
                pass

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runtimeRooms": sorted(self.runtime_rooms),
                                   "directRooms": sorted(self.direct_rooms)}))
        tmp.replace(self._path)

    async def on_invites(self, client: Any, invites: dict[str, Any], config: Any) -> set[str]:
        """Join or decline every invite of a batch (the requests at once: a bot invited to its rooms is not ready
        before it joined them all); returns the rooms joined."""
        facts = {room_id: invite_facts(getattr(info, "invite_state", []), self._user_id)
                 for room_id, info in invites.items()}
        decisions = {room_id: decide_invite(inviter, room_id in config.rooms, config.auto_join,
                                            config.auto_join_allowlist)
                     for room_id, (inviter, _) in facts.items()}
        responses = await asyncio.gather(*(client.join(room_id) if decision.join else client.room_leave(room_id)
                                           for room_id, decision in decisions.items()))
        joined: set[str] = set()
        for (room_id, decision), resp in zip(decisions.items(), responses, strict=True):
            inviter, direct = facts[room_id]
            error = getattr(resp, "message", None) if type(resp).__name__.endswith("Error") else None
            if error is None and decision.join:
                joined.add(room_id)
                if room_id not in config.rooms:
                    self.runtime_rooms.add(room_id)
                if direct:
                    self.direct_rooms.add(room_id)
                self._save()
            self._trace.emit("invite", roomId=room_id, inviter=inviter, direct=direct,
                             decision="joined" if decision.join else "declined", reason=decision.reason,
                             **({"error": error} if error else {}))
        return joined

    def on_leaves(self, leaves: dict[str, Any]) -> None:
        for room_id, info in leaves.items():
            seen = left_room(list(getattr(getattr(info, "timeline", None), "events", []) or []), self._user_id)
            if seen is None or seen["by"] == self._user_id:
                continue  # an invite we declined ourselves shows up here too; it is traced as `invite` already
            self._trace.emit("membership", roomId=room_id, **seen)
