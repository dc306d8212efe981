"""Pure inbound decisions: should the bot answer this event, and if not, why.

No I/O here: the sync loop turns a Matrix event into an `Inbound`, asks `decide`, and traces the answer.
Every drop has a stable reason string because scenarios and reports match on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from qa.agent.media import Attachment, caption_of, parse_attachment

AllowBots = Literal["off", "mentions", "all"]

# Reasons are part of the trace contract; keep them stable.
OWN_MESSAGE = "own-message"
UNKNOWN_ROOM = "room-not-configured"
NOT_TEXT = "not-a-text-message"
# m.notice is what bots send; the spec says never to answer one automatically, because that is how loops start.
NOTICE = "notice"
EDIT = "edit"
MENTION_REQUIRED = "mention-required"
BOT_SENDER_BLOCKED = "bot-sender-blocked"
SENDER_NOT_ALLOWED = "sender-not-allowed"
DUPLICATE = "duplicate"
HISTORY = "history"
UNDECRYPTABLE = "undecryptable"  # an encrypted message whose room key never arrived
NOT_BOT_MESSAGE = "not-a-bot-message"  # a reaction to something the bot did not send
# A redaction removes an event; it says nothing to the bot, whoever sends it and whatever it removes.
REDACTION = "redaction"

RECORDED = "recorded"
# Two bots that both answer everything talk forever; after `botLoopLimit` answers in a row to known bots in one
# conversation, with no person speaking in between, the next bot message is dropped until a person speaks.
BOT_LOOP = "bot-loop"


@dataclass(frozen=True)
class RoomPolicy:
    require_mention: bool = True
    allowlist: frozenset[str] | None = None  # None: everyone may trigger the bot
    allow_bots: AllowBots = "off"
    known_bots: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Mutations:
    """Test-only bugs, all off in a correct bot: each is the mistake a scenario must catch (qa.agent.config
    `mutations:` documents them). Kept here so the policy's unit tests can show each one changes a decision."""

    react_on_edits: bool = False  # an edit is handled as the message it now says (m.new_content)
    trust_formatted_mentions: bool = False  # a pill in formatted_body counts even when m.mentions leaves us out
    mxid_prefix_is_mention: bool = False  # a body starting with our user id counts as addressing us
    answer_own_messages: bool = False  # no own-sender check
    answer_notices: bool = False  # m.notice handled like m.text
    thread_root_from_reply: bool = False  # the replied-to event taken as the thread root
    ignore_legacy_mentions: bool = False  # without m.mentions nothing counts: older clients' pills are missed
    display_name_is_mention: bool = False  # our display name (the localpart) typed in the body counts
    visible_mention_required: bool = False  # m.mentions alone is not enough: the id or a pill must show too
    quote_leaves_thread: bool = False  # an explicit quote inside a thread is taken for a top-level reply
    known_bots_ignored: bool = False  # knownBots never consulted: a bot is treated like a person


CORRECT = Mutations()


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
    media: Attachment | None = None  # for m.image/m.audio/m.video/m.file; `body` is then its caption


@dataclass(frozen=True)
class Decision:
    accept: bool
    reason: str

    @property
    def label(self) -> str:
        return "accepted" if self.accept else "dropped"


ACCEPT = Decision(True, "accepted")


def decide(event: Inbound, bot_user_id: str, policy: RoomPolicy | None, mutations: Mutations = CORRECT) -> Decision:
    # First, before any setting: a bot that answers itself loops, and no allowBots value may change that.
    if event.sender == bot_user_id and not mutations.answer_own_messages:
        return Decision(False, OWN_MESSAGE)
    if policy is None:
        return Decision(False, UNKNOWN_ROOM)
    if event.msgtype == "m.notice" and not mutations.answer_notices:
        return Decision(False, NOTICE)
    if event.msgtype not in ("m.text", "m.emote", *(("m.notice",) if mutations.answer_notices else ())) \
            and event.media is None:
        return Decision(False, NOT_TEXT)
    if event.is_edit:
        return Decision(False, EDIT)
    if event.sender in policy.known_bots and not mutations.known_bots_ignored:
        # Another bot talking is the classic loop hazard, so bots are blocked unless explicitly allowed, and a
        # blocked bot stays blocked even when it mentions us.
        if policy.allow_bots == "off":
            return Decision(False, BOT_SENDER_BLOCKED)
        if policy.allow_bots == "mentions" and not event.mentioned:
            return Decision(False, MENTION_REQUIRED)
    # allowBots only decides whether bots may trigger us at all; the room's mention rule applies to everyone,
    # so `all` in a mention-required room cannot turn two bots into an endless conversation.
    if policy.require_mention and not event.mentioned:
        return Decision(False, MENTION_REQUIRED)
    if policy.allowlist is not None and event.sender not in policy.allowlist:
        return Decision(False, SENDER_NOT_ALLOWED)
    return ACCEPT


def guard_bot_loop(decision: Decision, from_known_bot: bool, streak: int, limit: int | None) -> tuple[Decision, int]:
    """The loop guard after `decide`: (the decision, the conversation's new streak of answered bot messages).
    An accepted person resets the streak; an accepted known bot extends it, or is dropped as `bot-loop` once
    `limit` answers in a row went to bots (None: no guard). A drop leaves the streak as it was."""
    if not decision.accept:
        return decision, streak
    if not from_known_bot:
        return decision, 0
    if limit is not None and streak >= limit:
        return Decision(False, BOT_LOOP), streak
    return decision, streak + 1


def decide_reaction(sender: str, bot_user_id: str, policy: RoomPolicy | None, on_bot_message: bool) -> Decision:
    """Whether a reaction is recorded in the session of the bot message it annotates.

    The same people who may talk to the bot may react to it; a reaction is never answered, only recorded, so
    the mention rule does not apply.
    """
    if sender == bot_user_id:
        return Decision(False, OWN_MESSAGE)
    if policy is None:
        return Decision(False, UNKNOWN_ROOM)
    if not on_bot_message:
        return Decision(False, NOT_BOT_MESSAGE)
    if sender in policy.known_bots and policy.allow_bots == "off":
        return Decision(False, BOT_SENDER_BLOCKED)
    if policy.allowlist is not None and sender not in policy.allowlist:
        return Decision(False, SENDER_NOT_ALLOWED)
    return Decision(True, RECORDED)


def decide_redaction(sender: str, bot_user_id: str, policy: RoomPolicy | None) -> Decision:
    """A redaction is never a trigger; the reason says why it was not answered (own, unknown room, redaction)."""
    if sender == bot_user_id:
        return Decision(False, OWN_MESSAGE)
    if policy is None:
        return Decision(False, UNKNOWN_ROOM)
    return Decision(False, REDACTION)


def redacted_event_id(event: Mapping[str, Any]) -> str | None:
    """The event a redaction removes: `content.redacts` from room version 11 on, the top-level key before."""
    content = event.get("content") or {}
    target = content.get("redacts") if isinstance(content, Mapping) else None
    target = target or event.get("redacts")
    return target if isinstance(target, str) and target else None


def mentions_user(content: Mapping[str, Any], user_id: str, mutations: Mutations = CORRECT) -> bool:
    """Intentional mentions (MSC3952) when present; otherwise a matrix.to pill or the full user id in the body.

    When `m.mentions` is present it is authoritative: a body that merely contains the id does not count, which
    is what stops replies and quotes from re-triggering a bot, and a mention that only `m.mentions` carries
    (no visible text, as a client sends for a mention it hides) does count: the sender said whom they meant.
    Without it (clients older than Matrix 1.7, bridges) the spec's legacy fallback applies: a pill, or the user
    id in the plain body. A display name typed as text never counts by itself: display names are neither unique
    nor stable, and anyone talking *about* the bot by name would wake it (docs/scenarios.md, mentions).
    """
    formatted = content.get("formatted_body")
    pill = isinstance(formatted, str) and f"https://matrix.to/#/{user_id}" in formatted
    body = content.get("body")
    if mutations.trust_formatted_mentions and pill:
        return True
    if mutations.mxid_prefix_is_mention and isinstance(body, str) and body.lstrip().startswith(user_id):
        return True
    if mutations.display_name_is_mention and isinstance(body, str) and _localpart(user_id) in body.lower():
        return True
    mentions = content.get("m.mentions")
    if isinstance(mentions, Mapping):
        ids = mentions.get("user_ids")
        named = isinstance(ids, list) and user_id in ids
        if named and mutations.visible_mention_required:
            return pill or (isinstance(body, str) and user_id in body)
        return named
    if mutations.ignore_legacy_mentions:
        return False
    return pill or (isinstance(body, str) and user_id in body)


def _localpart(user_id: str) -> str:
    """`@name:server` -> `name`: the display name a Matrix account has until someone sets another one."""
    return user_id.lstrip("@").split(":", 1)[0].lower()


def parse_inbound(event: Mapping[str, Any], bot_user_id: str, mutations: Mutations = CORRECT) -> Inbound:
    content = event.get("content") or {}
    relates = content.get("m.relates_to") or {}
    thread_root = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
    if thread_root and mutations.thread_root_from_reply:
        thread_root = (relates.get("m.in_reply_to") or {}).get("event_id") or thread_root
    if thread_root and mutations.quote_leaves_thread and relates.get("is_falling_back") is False:
        thread_root = None  # the bug: a real reply read as "not in a thread" because it quotes something
    is_edit = relates.get("rel_type") == "m.replace"
    new_content = content.get("m.new_content")
    if is_edit and mutations.react_on_edits and isinstance(new_content, Mapping):
        # The bug: the edit read as the message it now says, so an edited trigger is answered again.
        content, is_edit = new_content, False
    media = parse_attachment(content)
    return Inbound(
        event_id=str(event.get("event_id", "")),
        room_id=str(event.get("room_id", "")),
        sender=str(event.get("sender", "")),
        msgtype=content.get("msgtype"),
        body=caption_of(content) if media is not None else str(content.get("body", "")),
        mentioned=mentions_user(content, bot_user_id, mutations),
        thread_root=thread_root,
        is_edit=is_edit,
        media=media,
    )


ThreadReplies = Literal["off", "inbound", "always"]


def conversation_root(thread_root: str | None, event_id: str, mode: ThreadReplies) -> str | None:
    """The thread a message's conversation (its session and its answer) lives in. `inbound`: where the message
    was; `always`: a top-level message opens a thread on itself, so its follow-ups there share its session;
    `off` keeps threads as sessions too (only the answer goes to the top level, see reply_thread)."""
    if mode == "always" and thread_root is None:
        return event_id
    return thread_root


def reply_thread(thread_root: str | None, mode: ThreadReplies) -> str | None:
    """The thread an answer is posted in: none when thread replies are off, else the conversation's."""
    return None if mode == "off" else thread_root


def session_key(room_id: str, thread_root: str | None) -> str:
    """A room's top level is one session; every thread in it is its own."""
    return f"{room_id}/thread/{thread_root}" if thread_root else f"{room_id}/main"
