"""Silence proved by order, for bots that write no trace: pure.

The scenario sends the trigger, then a control message in the same room (and session). An in-order bot that
answers the control has handled the trigger before it; so every bot message between the trigger and the
control's answer is looked at:
  - one that replies to the trigger (its relation), or carries the model's answer to the trigger (the journal),
    is an unwanted reply;
  - one that relates to nothing is unwanted too: it is not the control's answer, and nothing else was asked;
  - one that replies to some other event is someone else's answer and is left alone.
A reply to the trigger by relation counts wherever it is, even after the control's answer; so does every message
the journal ties to the trigger (and not to the control): an out-of-order bot may answer it last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qa.evidence.events import BotIds
from qa.evidence.pairing import JournalLike, Trigger, answers_in_journal, body, in_reply_to, is_bot_message


@dataclass(frozen=True)
class Unwanted:
    event_id: str
    why: str


def unwanted_replies(trigger: Trigger, control_reply_id: str | None, events: Sequence[dict[str, Any]],
                     bot_user_id: BotIds, journal: Iterable[JournalLike] | None,
                     control_text: str | None = None) -> list[Unwanted]:
    entries = list(journal) if journal is not None else None
    answers = set(answers_in_journal(trigger.text, entries))
    # After the control's answer, a text the model also gave the control may be a second answer to it.
    only_trigger = answers - set(answers_in_journal(control_text, entries))
    found: list[Unwanted] = []
    before_control = True
    for event in events:
        said = is_bot_message(event, bot_user_id, trigger.room_id)
        if not said or float(event.get("_seenMs", 0.0)) < trigger.sent_ms:
            continue
        event_id = str(event.get("event_id"))
        if event_id == control_reply_id:
            before_control = False
            continue
        target = in_reply_to(event)
        if target == trigger.event_id:
            found.append(Unwanted(event_id, "replies to the trigger (m.in_reply_to)"))
        elif not before_control and target is None and body(event) in only_trigger:
            found.append(Unwanted(event_id, "carries the model's answer to the trigger (provider journal), "
                                            "after the control's answer"))
        elif not before_control:
            continue
        elif target is None and body(event) in answers:
            found.append(Unwanted(event_id, "carries the model's answer to the trigger (provider journal)"))
        elif target is None:
            found.append(Unwanted(event_id, "a bot message between the trigger and the control's answer"))
    return found
