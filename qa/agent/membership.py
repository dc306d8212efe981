"""Invites, kicks and direct chats: which rooms the bot is in, why, and how it treats each.

The decisions are pure (`decide_invite`, `backlog_cutoff`, `left_room`); `Membership` is the thin edge that
joins or declines through the client, keeps what it learnt in `membership.json` beside the sync token (so a
restarted bot still serves a room it joined by invite and still knows its DMs), and traces every change:

  invite      {roomId, inviter, direct, decision: joined|declined, reason}
  membership  {roomId, membership: leave|ban, by, reason?}   the bot was removed (or left) — it stops there
  m.direct    {users, rooms}   the bot's own m.direct account data arrived (how many users and rooms it lists)

Direct chats: an invite flagged is_direct makes one (kept in membership.json). The bot's own `m.direct` account
data is a hint only, taken when the room really is a chat of two: `direct_partner` names the listed user only
while the room has exactly two joined members, the bot and that user. Clients never prune m.direct, so an entry
outlives the person's leaving and other people's joining; trusted blindly it would turn a group room into a
DM, where the bot answers every message unmentioned.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Iterable
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


def parse_m_direct(content: Any) -> dict[str, list[str]]:
    """m.direct's content ({user id: [room id, ...]}) with anything malformed left out: account data is written
    by any client of the account and is not checked by the server."""
    if not isinstance(content, dict):
        return {}
    return {user: [room for room in rooms if isinstance(room, str)]
            for user, rooms in content.items() if isinstance(user, str) and isinstance(rooms, list)}


def direct_partner(m_direct: dict[str, list[str]], room_id: str, own_id: str, joined: Collection[str],
                   joined_count: int) -> str | None:
    """The user m.direct lists this room for, when the room is a chat of exactly two: the bot and that user,
    both joined. None for a stale entry (the user left, or others joined) or a room m.direct does not list."""
    if joined_count != 2 or own_id not in joined:
        return None
    for user, rooms in m_direct.items():
        if user != own_id and room_id in rooms and user in joined:
            return user
    return None


# A room's joined members as the client knows them: (joined count, joined user ids); None for a room not known.
RoomMembers = Callable[[str], tuple[int, Collection[str]] | None]


class Membership:
    """Rooms joined at run time and direct chats, persisted; joins, declines and removals, traced."""

    def __init__(self, state_dir: Path, user_id: str, trace: Trace, *, forget: bool = False) -> None:
        self._path = state_dir / "membership.json"
        self._user_id = user_id
        self._trace = trace
        self.runtime_rooms: set[str] = set()
        self.direct_rooms: set[str] = set()
        self.m_direct: dict[str, list[str]] = {}  # the bot's own m.direct account data, as last synced
        self.room_members: RoomMembers = lambda _room_id: None  # the Matrix edge sets it (qa.agent.matrix)
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

    def on_account_data(self, events: Iterable[Any]) -> None:
        """Takes the bot's m.direct from a sync's global account data (each event replaces the whole map)."""
        for event in events:
            if getattr(event, "type", None) == "m.direct":
                self.m_direct = parse_m_direct(getattr(event, "content", None))
                self._trace.emit("m.direct", users=len(self.m_direct),
                                 rooms=len({room for rooms in self.m_direct.values() for room in rooms}))

    def is_direct(self, room_id: str, *, trust_m_direct: bool = False, any_pair: bool = False) -> bool:
        """A direct chat: its invite said so, or m.direct lists it and the room is the bot and that user alone.
        `trust_m_direct` is the test-only bug: any room m.direct lists, whoever is in it; `any_pair` the subtler
        one: any room m.direct lists while two are joined, though the user it lists has left (a stale entry)."""
        if room_id in self.direct_rooms:
            return True
        listed = any(room_id in rooms for rooms in self.m_direct.values())
        if trust_m_direct:
            return listed
        members = self.room_members(room_id)
        if members is None:
            return False
        joined_count, joined = members
        if any_pair:
            return listed and joined_count == 2
        return direct_partner(self.m_direct, room_id, self._user_id, joined, joined_count) is not None

    def on_leaves(self, leaves: dict[str, Any]) -> None:
        for room_id, info in leaves.items():
            seen = left_room(list(getattr(getattr(info, "timeline", None), "events", []) or []), self._user_id)
            if seen is None or seen["by"] == self._user_id:
                continue  # an invite we declined ourselves shows up here too; it is traced as `invite` already
            self._trace.emit("membership", roomId=room_id, **seen)
