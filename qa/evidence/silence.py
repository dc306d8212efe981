"""Whether the bot's own account of a message proves it stayed silent about it. Pure: over the trace records
and the control message's answer that the expect_no_reply step gathers; how long a step judged by order keeps
watching after the control's answer; and how long the room must stay quiet before a scenario's final checks when
no trace says every turn ended; and which of a traced bot's messages after an ignored one its trace does not
account for (docs/trace-format.md, "untraced messages")."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from qa.evidence.events import BotIds, is_bot_sender
from qa.evidence.pairing import unnamed_in_threads

NOT_ANSWERED = ("dropped", "recorded", "ignored")  # decisions that mean "no reply will come"
# An out-of-order bot may start its model request for an ignored message only once it has answered the one after
# it, and then post: the slowest model answer of the scenario, twice over, covers the request and the post.
SETTLE_FACTOR = 2.0


def settle_window_s(model_ms: Iterable[float | None], quiet_s: float, cap_s: float,
                    reply_ms: Iterable[float | None] = ()) -> float:
    """How long the room must have been quiet (no bot event) before the final checks: the usual quiet, or the
    slowest reply this scenario saw when that is longer, plus the slowest model answer SETTLE_FACTOR times;
    never more than `cap_s`.

    `reply_ms` are the replies' latencies less the model's time (trigger sent -> reply seen): what one message
    of the bot takes to reach the room on this homeserver, under this load. A bot that edits its reply right
    after sending it is seen that much later again; a fixed quiet of 0.15 s let a slow homeserver (or a loaded
    machine) hide a reply edited into a wrong answer, and the scenario passed."""
    slowest = max([0.0, *(float(ms) for ms in model_ms if ms is not None)])  # a clock step back counts as none
    pace = max([0.0, *(float(ms) for ms in reply_ms if ms is not None)])
    return min(cap_s, max(quiet_s, pace / 1000.0) + SETTLE_FACTOR * slowest / 1000.0)


def watch_after_control_s(trigger_sent_ms: float, control_sent_ms: float, control_seen_ms: float,
                          cap_s: float) -> float:
    """How long, after the control's answer, a bot answering each message in its own task could still answer the
    trigger: until SETTLE_FACTOR times the turnaround it showed on the control (sent -> answer seen), counted from
    the trigger; never more than `cap_s`. Sized by the bot's own evidence, not a fixed window."""
    turnaround = max(0.0, control_seen_ms - control_sent_ms)
    return min(cap_s, max(0.0, trigger_sent_ms + SETTLE_FACTOR * turnaround - control_seen_ms) / 1000.0)


def is_decision(record: dict[str, Any], event_id: str) -> bool:
    """The bot's decision on an event: an inbound record, or for a reaction (never a message) its record."""
    return record.get("type") in ("inbound", "reaction") and record.get("eventId") == event_id


def accepted(decision: dict[str, Any]) -> bool:
    return decision.get("decision") not in NOT_ANSWERED


def decision_problems(decision: dict[str, Any], to: str, reason: str | None) -> list[str]:
    """What is wrong with the bot's decision on step `to`'s event, against the expected `reason` (any when
    None). An accepted message is one problem here; the step adds what the bot then said."""
    if accepted(decision):
        return [f"the bot accepted '{to}' ({decision.get('reason')})"]
    if reason and decision.get("reason") != reason:
        return [f"dropped for {decision.get('reason')!r}, expected {reason!r}"]
    return []


def control_problems(reply: dict[str, Any], expected: str | None) -> list[str]:
    """The control message's answer must say `expected`, when the step says what it is."""
    got = str((reply.get("content") or {}).get("body", "")).strip()
    return [] if expected is None or got == expected else [f"control reply body {got!r} != expected {expected!r}"]


def untraced_plain(events: Sequence[Mapping[str, Any]], trigger_id: str, room_id: str, bot: BotIds,
                   accounted: Collection[str], start: int = 0) -> list[Mapping[str, Any]]:
    """The bot's messages in the trigger's room after the trigger (and from `start` on) that name no event they
    answer (no `m.relates_to` at all: not a reply, a thread message nor an edit; or a thread message without
    `m.in_reply_to` after someone else wrote in its thread: qa.evidence.pairing.unnamed_in_threads) and that no
    trace record accounts for (`accounted`: the ids the bot's trace says it sent). A trigger the client never
    saw: from `start` on."""
    seen = next((n + 1 for n, e in enumerate(events) if e.get("event_id") == trigger_id), 0)
    in_threads = unnamed_in_threads([dict(e) for e in events], bot, room_id)
    return [e for e in events[max(seen, start):]
            if e.get("type") == "m.room.message" and e.get("room_id") == room_id and "state_key" not in e
            and is_bot_sender(e.get("sender"), bot)
            and (not (e.get("content") or {}).get("m.relates_to") or e.get("event_id") in in_threads)
            and e.get("event_id") not in accounted]


def untraced_edits(events: Sequence[Mapping[str, Any]], trigger_id: str, room_id: str, bot: BotIds,
                   accounted: Collection[str], start: int = 0) -> list[Mapping[str, Any]]:
    """The bot's edits (`m.replace`) in the trigger's room after the trigger (and from `start` on) that no trace
    record names: an edit of one of its own messages, even a traced one, can carry the ignored message's answer.
    Only such an edit is judged (by answering): an edit that says anything else is no message of its own."""
    seen = next((n + 1 for n, e in enumerate(events) if e.get("event_id") == trigger_id), 0)
    return [e for e in events[max(seen, start):]
            if e.get("type") == "m.room.message" and e.get("room_id") == room_id and "state_key" not in e
            and is_bot_sender(e.get("sender"), bot) and _replaces(e) and e.get("event_id") not in accounted]


def _replaces(event: Mapping[str, Any]) -> bool:
    relates = (event.get("content") or {}).get("m.relates_to")
    return isinstance(relates, dict) and relates.get("rel_type") == "m.replace"


def said_text(event: Mapping[str, Any]) -> str:
    """What a message says: an edit's new text (`m.new_content`, else its body less the '* ' fallback mark)."""
    content = event.get("content") or {}
    if _replaces(event):
        new = content.get("m.new_content")
        if isinstance(new, dict):
            return str(new.get("body", "")).strip()
        return str(content.get("body", "")).strip().removeprefix("* ").strip()
    return str(content.get("body", "")).strip()


def answering(events: Iterable[Mapping[str, Any]], answers: Collection[str], markers: Collection[str] = (),
              prompts: Collection[str] = ()) -> list[str]:
    """The ids of the messages that say what the ignored message asked for: whose text (an edit's new text) is
    one of `answers` (the model's answer to it), or carries one of `markers` (a say-able prompt's marker: fixed
    length and unique, so a message carrying it says it however it is dressed) outside its quotes of `prompts`
    (the ignored message's own text, which carries the marker too: quoting it only repeats the question), or is
    exactly a marker that is itself a prompt (a bot whose `say` is the bare text: that is word for word what the
    message asked for): an untraced message that says it answers the ignored one, whatever its relation."""
    wanted = {a.strip() for a in answers if a and a.strip()}
    return [str(e.get("event_id")) for e in events
            if (said := said_text(e)) in wanted or _reading(said, markers, prompts) == "answer"]


def echo_or_answer(events: Iterable[Mapping[str, Any]], markers: Collection[str] = (),
                   prompts: Collection[str] = ()) -> list[str]:
    """The ids of the messages whose text carries a marker that is itself the whole ignored message (a bot whose
    `say` is the bare text) beside other words: whether the marker is the bot quoting the question ("not
    answering MQA-…") or answering it ("Sure! MQA-…") the text cannot tell, so the silence is NOT CHECKED
    (untraced_echo_note), neither failed nor passed on it. A text that is exactly the marker answers (answering)."""
    return [str(e.get("event_id")) for e in events if _reading(said_text(e), markers, prompts) == "unsure"]


def _reading(said: str, markers: Collection[str], prompts: Collection[str]) -> str | None:
    """"answer", "unsure" or None (no marker, or one only inside quotes of a longer prompt): see answering."""
    marks = [m.strip() for m in markers if m and m.strip()]
    quoted = {p.strip() for p in prompts if p and p.strip()}
    rest = said
    for prompt in sorted(quoted - set(marks), key=len, reverse=True):  # a longer quote first: it may hold a shorter
        rest = rest.replace(prompt, " ")
    found = [m for m in marks if m in rest]
    if not found:
        return None
    if said in found or any(m not in quoted for m in found):
        return "answer"  # the marker outside any quote, or the bare marker that is the whole of what was asked
    return "unsure"  # the marker is the whole question too: an echo of it reads as its answer


def _surplus(total: int, unnamed: int) -> str:
    """What a failure adds when sends were traced without an event id: they cannot be all of these messages."""
    if not unnamed:
        return ""
    return (f" ({unnamed} traced send(s) without an event id can account for {unnamed} message(s) at most, not all "
            f"{total})")


def untraced_answer_problem(to: str, ids: Sequence[str], unnamed: int = 0, total: int | None = None) -> str | None:
    """A failed silence: untraced messages of the bot that relate to nothing carry the ignored message's answer.
    None when the `unnamed` sends traced without their event id are as many as the `total` such messages (these
    and the edits, `ids` alone by default): each may be one of them, so the trace may account for them after all
    (unnamed_sends_note says so instead); more of them than unnamed sends cannot all be accounted for."""
    total = len(ids) if total is None else total
    if not ids or (unnamed and total <= unnamed):
        return None
    return (f"the bot answered '{to}' in {len(ids)} message(s) relating to nothing that its trace does not account "
            f"for, saying what '{to}' asked for: {', '.join(ids)}{_surplus(total, unnamed)}")


def untraced_edit_problem(to: str, ids: Sequence[str], unnamed: int = 0, total: int | None = None) -> str | None:
    """A failed silence: untraced edits of the bot's messages change one into the ignored message's answer (None
    when `unnamed` sends traced without an id are as many as the `total`, as for untraced_answer_problem)."""
    total = len(ids) if total is None else total
    if not ids or (unnamed and total <= unnamed):
        return None
    return (f"the bot answered '{to}' in {len(ids)} edit(s) of its messages that its trace does not account for, "
            f"their new text saying what '{to}' asked for: {', '.join(ids)}{_surplus(total, unnamed)}")


def untraced_echo_note(to: str, ids: Sequence[str]) -> str | None:
    """Why the silence about `to` is NOT CHECKED: untraced messages carry its marker beside other words, and the
    marker is the whole of `to` (the bot's `say` is the bare text), so quoting `to` and answering it read alike."""
    if not ids:
        return None
    return (f"the bot sent {len(ids)} message(s) that its trace does not account for carrying the marker that is "
            f"the whole of '{to}' beside other words ({', '.join(ids[:5])}): whether one quotes '{to}' or answers "
            "it cannot be told")


def untraced_note(to: str, ids: Sequence[str]) -> str | None:
    """Why the silence about `to` is NOT CHECKED after the bot exited: it sent messages after the first look that
    relate to nothing and that its trace does not account for, and none says what `to` asked for, so whether one
    answers it cannot be told."""
    if not ids:
        return None
    return (f"the bot sent {len(ids)} message(s) after the first look that relate to nothing and that its trace "
            f"does not account for ({', '.join(ids[:5])}): whether one answers '{to}', which it traced as not "
            "answered, cannot be told")


def unnamed_sends_note(to: str, ids: Sequence[str], unnamed: int, total: int | None = None) -> str | None:
    """Why the silence about `to` is NOT CHECKED rather than failed: messages relating to nothing say what `to`
    asked for and no traced event id names them, but `unnamed` sends were traced without one, as many as the
    `total` such messages (`ids` alone by default; the scenario's, for every ignored message) or more (more such
    messages than unnamed sends fail: untraced_answer_problem)."""
    total = len(ids) if total is None else total
    if not ids or not unnamed or total > unnamed:
        return None
    return (f"the bot sent {len(ids)} message(s) relating to nothing that say what '{to}' asked for "
            f"({', '.join(ids[:5])}), but {unnamed} of its traced sends name no event id: whether its trace accounts "
            "for them cannot be told")
