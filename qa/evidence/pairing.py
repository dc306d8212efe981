"""Which bot message answers which trigger, for bots that write no trace: pure, over what the harness saw.

Evidence, strongest first (the design's "bot seam" ladder, below the trace):
  relation     the bot message says so: `m.relates_to.m.in_reply_to.event_id` is the trigger (threaded replies
               carry it too);
  journal      with the mock provider: the request whose latest user message carried the trigger's text, the
               text the model returned for it, and the bot message with that text;
  order-guess  the first bot message after the trigger that relates to nothing; shown in the report as a guess.
A message that replies to some *other* event is never paired by a weaker method, nor is one the journal ties to
another trigger only (the bot's answer to a message it should have ignored is not the control's answer), and no
guess is made while the journal shows the model still working on this trigger's request.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from qa.evidence.events import BotIds, is_bot_sender

Method = Literal["relation", "journal", "order-guess"]


class JournalLike(Protocol):
    """What pairing needs of a mock-provider journal entry (qa.provider.mock.JournalEntry)."""

    @property
    def is_chat(self) -> bool: ...

    @property
    def latest_user(self) -> str | None: ...

    reply: Any


@dataclass(frozen=True)
class Trigger:
    event_id: str
    room_id: str
    text: str | None  # what the actor typed, markers expanded, without a mention prefix
    sent_ms: float  # monotonic ms when it was sent; bot messages seen before cannot answer it


@dataclass(frozen=True)
class Pairing:
    event: dict[str, Any]
    method: Method

    @property
    def note(self) -> str:
        return {"relation": "paired by its m.in_reply_to relation",
                "journal": "paired through the provider journal (the model's answer to the trigger)",
                "order-guess": "a GUESS: the first bot message after the trigger (no relation, no journal match)",
                }[self.method]


def in_reply_to(event: dict[str, Any]) -> str | None:
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    target = (relates.get("m.in_reply_to") or {}).get("event_id") if isinstance(relates, dict) else None
    return str(target) if target else None


def is_bot_message(event: dict[str, Any], bot_user_id: BotIds, room_id: str) -> bool:
    """Something the bot said in the room: a message, not state (its join), not an edit of an earlier one."""
    if event.get("type") != "m.room.message" or not is_bot_sender(event.get("sender"), bot_user_id):
        return False
    if event.get("room_id") != room_id or "state_key" in event:
        return False
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    return not (isinstance(relates, dict) and relates.get("rel_type") == "m.replace")


def body(event: dict[str, Any]) -> str:
    return str((event.get("content") or {}).get("body", "")).strip()


def answers_in_journal(text: str | None, journal: Iterable[JournalLike] | None) -> list[str]:
    """The texts the model returned to requests whose latest user message carried the trigger's text."""
    if not text or journal is None:
        return []
    out = []
    for entry in journal:
        latest = entry.latest_user
        reply = getattr(entry, "reply", None)
        if entry.is_chat and latest is not None and text in latest and reply is not None and reply.text:
            out.append(str(reply.text).strip())
    return out


def in_flight_for(text: str | None, journal: Iterable[JournalLike] | None) -> bool:
    """Whether a model request whose latest user message carried the trigger's text is still unanswered."""
    if not text or journal is None:
        return False
    return any(entry.is_chat and entry.latest_user is not None and text in entry.latest_user
               and getattr(entry, "state", None) == "in_flight" for entry in journal)


def answers_elsewhere(trigger: Trigger, others: Iterable[Trigger], journal: Sequence[JournalLike] | None
                      ) -> set[str]:
    """The texts the journal ties to other triggers and not to this one: never this trigger's answer (the trigger
    itself among `others` adds only its own answers, which are taken away again)."""
    mine = set(answers_in_journal(trigger.text, journal))
    theirs = {answer for other in others for answer in answers_in_journal(other.text, journal)}
    return theirs - mine


def pair_reply(trigger: Trigger, events: Sequence[dict[str, Any]], bot_user_id: BotIds,
               journal: Iterable[JournalLike] | None, claimed: frozenset[str] = frozenset(),
               others: Sequence[Trigger] = ()) -> Pairing | None:
    """The bot message that answers `trigger`, by the strongest evidence available; None if there is none yet.
    `claimed` holds bot messages already paired with earlier triggers; `others` are the scenario's other
    triggers, whose answers by the journal are never this one's."""
    entries = list(journal) if journal is not None else None
    candidates = [e for e in events if is_bot_message(e, bot_user_id, trigger.room_id)
                  and float(e.get("_seenMs", 0.0)) >= trigger.sent_ms and e.get("event_id") not in claimed]
    for event in candidates:
        if in_reply_to(event) == trigger.event_id:
            return Pairing(event, "relation")
    elsewhere = answers_elsewhere(trigger, others, entries)
    unrelated = [e for e in candidates if in_reply_to(e) is None and body(e) not in elsewhere]
    answers = answers_in_journal(trigger.text, entries)
    if answers:
        # The journal knows what the model said for this trigger: only a message carrying it is the answer.
        for event in unrelated:
            if body(event) in answers:
                return Pairing(event, "journal")
        return None
    if in_flight_for(trigger.text, entries):
        return None  # the model is still answering it: what the bot said meanwhile is not that answer
    return Pairing(unrelated[0], "order-guess") if unrelated else None


def thread_root_only(event: dict[str, Any]) -> str | None:
    """The root of a thread message that names no event it replies to (no `m.in_reply_to`): a thread the bot
    started on that root answers the root, whatever its client left out (replies_by_relation: until someone else
    has written in that thread)."""
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    if not isinstance(relates, dict) or relates.get("rel_type") != "m.thread" or relates.get("m.in_reply_to"):
        return None
    root = relates.get("event_id")
    return str(root) if root else None


def _thread_of(event: dict[str, Any]) -> str | None:
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    if not isinstance(relates, dict) or relates.get("rel_type") != "m.thread" or not relates.get("event_id"):
        return None
    return str(relates["event_id"])


def unnamed_in_threads(events: Iterable[dict[str, Any]], bot_user_id: BotIds, room_id: str) -> set[str]:
    """The bot's thread messages in the room that name no event they reply to (no `m.in_reply_to`) and came after
    someone else had written in that thread: each may answer that message as well as the root, and its relation
    no longer says which, so it answers no event by relation (like a message relating to nothing)."""
    asked: set[str] = set()  # the threads someone other than the bot has written in, so far
    found: set[str] = set()
    for e in events:
        if is_bot_message(e, bot_user_id, room_id):
            root = thread_root_only(e)
            if root is not None and root in asked:
                found.add(str(e.get("event_id")))
        elif (e.get("type") == "m.room.message" and e.get("room_id") == room_id and "state_key" not in e
              and not is_bot_sender(e.get("sender"), bot_user_id) and (root := _thread_of(e)) is not None):
            asked.add(root)
    return found


def unsure_in_thread(root_id: str, events: Sequence[dict[str, Any]], bot_user_id: BotIds, room_id: str,
                     settled: Collection[str] = ()) -> list[str]:
    """The bot's thread messages rooted at `root_id` that name no event they reply to and came after someone else
    wrote in that thread (unnamed_in_threads), less the `settled` ones (a trace, a journal or a pairing tied them to
    a message): each may answer the root or the later message, and nothing tells which."""
    unsure = unnamed_in_threads(events, bot_user_id, room_id)
    return [str(e.get("event_id")) for e in events if str(e.get("event_id")) in unsure
            and thread_root_only(e) == root_id and str(e.get("event_id")) not in settled]


def replies_by_relation(trigger_id: str, events: Iterable[dict[str, Any]], bot_user_id: BotIds, room_id: str
                        ) -> list[str]:
    """The bot's messages that name the trigger as what they answer: `m.in_reply_to`, or a thread rooted at it
    that replies to nothing else (a thread message replying to another event of the thread answers that one)
    while no one else has written in the thread (unnamed_in_threads: after that it may answer their message)."""
    seen = list(events)
    unsure = unnamed_in_threads(seen, bot_user_id, room_id)
    return [str(e.get("event_id")) for e in seen if is_bot_message(e, bot_user_id, room_id)
            and (in_reply_to(e) == trigger_id
                 or (thread_root_only(e) == trigger_id and str(e.get("event_id")) not in unsure))]


def latest_body(event: dict[str, Any], events: Iterable[dict[str, Any]], bot_user_id: BotIds) -> str:
    """What the message says now: the body of the bot's latest edit of it (`m.replace`, `m.new_content`), or
    its own. Streaming bots post a draft and edit it; a bot may also edit a right answer into a wrong one."""
    current = body(event)
    target = event.get("event_id")
    for other in events:
        content = other.get("content") or {}
        relates = content.get("m.relates_to") or {}
        # Only the message's own sender can edit it (Matrix ignores an m.replace by anyone else), and it is the bot.
        if (is_bot_sender(other.get("sender"), bot_user_id) and other.get("sender") == event.get("sender")
                and other.get("type") == "m.room.message"
                and isinstance(relates, dict) and relates.get("rel_type") == "m.replace"
                and relates.get("event_id") == target):
            new = content.get("m.new_content")
            current = str((new or {}).get("body", "")).strip() if isinstance(new, dict) \
                else body(other).removeprefix("* ").strip()
    return current


def replies_by_journal(trigger: Trigger, events: Iterable[dict[str, Any]], bot_user_id: BotIds,
                       journal: Iterable[JournalLike] | None) -> list[str]:
    """Bot messages that relate to nothing but carry the model's answer to the trigger: how a bot that posts
    plain messages answers it (twice, if it answers twice)."""
    answers = set(answers_in_journal(trigger.text, journal))
    if not answers:
        return []
    return [str(e.get("event_id")) for e in events
            if is_bot_message(e, bot_user_id, trigger.room_id) and in_reply_to(e) is None
            and float(e.get("_seenMs", 0.0)) >= trigger.sent_ms and body(e) in answers]
