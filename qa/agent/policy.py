"""Pure inbound decisions: should the bot answer this event, and if not, why.

No I/O here: the sync loop turns a Matrix event into an `Inbound`, asks `decide`, and traces the answer.
Every drop has a stable reason string because scenarios and reports match on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AllowBots = Literal["off", "mentions", "all"]

# Reasons are part of the trace contract; keep them stable.
OWN_MESSAGE = "own-message"
UNKNOWN_ROOM = "room-not-configured"
NOT_TEXT = "not-a-text-message"
EDIT = "edit"
MENTION_REQUIRED = "mention-required"
BOT_SENDER_BLOCKED = "bot-sender-blocked"
SENDER_NOT_ALLOWED = "sender-not-allowed"
DUPLICATE = "duplicate"
HISTORY = "history"


@dataclass(frozen=True)
class RoomPolicy:
    require_mention: bool = True
    allowlist: frozenset[str] | None = None  # None: everyone may trigger the bot
    allow_bots: AllowBots = "off"
    known_bots: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Inbound:
    """What the policy needs to know about one room event, already parsed."""

    event_id: str
    room_id: str
    sender: str
    msgtype: str | None
    body: str
    mentioned: bool
    thread_root: str | None = None
    is_edit: bool = False


@dataclass(frozen=True)
class Decision:
    accept: bool
    reason: str

    @property
    def label(self) -> str:
        return "accepted" if self.accept else "dropped"


ACCEPT = Decision(True, "accepted")


def decide(event: Inbound, bot_user_id: str, policy: RoomPolicy | None) -> Decision:
    if event.sender == bot_user_id:
        return Decision(False, OWN_MESSAGE)
    if policy is None:
        return Decision(False, UNKNOWN_ROOM)
    if event.msgtype not in ("m.text", "m.notice", "m.emote"):
        return Decision(False, NOT_TEXT)
    if event.is_edit:
        return Decision(False, EDIT)
    if event.sender in policy.known_bots:
        # Another bot talking is the classic loop hazard, so bots are blocked unless explicitly allowed.
        if policy.allow_bots == "off":
            return Decision(False, BOT_SENDER_BLOCKED)
        if policy.allow_bots == "mentions" and not event.mentioned:
            return Decision(False, MENTION_REQUIRED)
    elif policy.require_mention and not event.mentioned:
        return Decision(False, MENTION_REQUIRED)
    if policy.allowlist is not None and event.sender not in policy.allowlist:
        return Decision(False, SENDER_NOT_ALLOWED)
    return ACCEPT


def mentions_user(content: Mapping[str, Any], user_id: str) -> bool:
    """Intentional mentions (MSC3952) when present; otherwise a matrix.to pill to the user.

    When `m.mentions` is present it is authoritative: a body that merely contains the id does not count, which
    is what stops replies and quotes from re-triggering a bot.
    """
    mentions = content.get("m.mentions")
    if isinstance(mentions, Mapping):
        ids = mentions.get("user_ids")
        return isinstance(ids, list) and user_id in ids
    formatted = content.get("formatted_body")
    if isinstance(formatted, str):
        return f"https://matrix.to/#/{user_id}" in formatted
    return False


def parse_inbound(event: Mapping[str, Any], bot_user_id: str) -> Inbound:
    content = event.get("content") or {}
    relates = content.get("m.relates_to") or {}
    thread_root = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
    return Inbound(
        event_id=str(event.get("event_id", "")),
        room_id=str(event.get("room_id", "")),
        sender=str(event.get("sender", "")),
        msgtype=content.get("msgtype"),
        body=str(content.get("body", "")),
        mentioned=mentions_user(content, bot_user_id),
        thread_root=thread_root,
        is_edit=relates.get("rel_type") == "m.replace",
    )


def session_key(room_id: str, thread_root: str | None) -> str:
    """A room's top level is one session; every thread in it is its own."""
    return f"{room_id}/thread/{thread_root}" if thread_root else f"{room_id}/main"
