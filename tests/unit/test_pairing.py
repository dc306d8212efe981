"""Reply pairing and order evidence for bots without a trace: pure functions over observed events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qa.evidence.order import unwanted_replies
from qa.evidence.pairing import Trigger, pair_reply, replies_by_relation

BOT = "@bot:hs"
ROOM = "!r:hs"


def msg(event_id: str, body: str, *, sender: str = BOT, seen: float = 10.0, reply_to: str | None = None,
        thread: str | None = None, room: str = ROOM, replace: bool = False, **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if thread:
        content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread, "is_falling_back": True,
                                   "m.in_reply_to": {"event_id": reply_to or thread}}
    elif reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    if replace:
        content["m.relates_to"] = {"rel_type": "m.replace", "event_id": reply_to}
    return {"type": "m.room.message", "sender": sender, "event_id": event_id, "room_id": room, "content": content,
            "_seenMs": seen, **extra}


@dataclass
class _Reply:
    text: str | None


@dataclass
class _Entry:
    latest_user: str | None
    reply: _Reply | None
    is_chat: bool = True


T = Trigger("$t", ROOM, "say ABC", 5.0)


def test_relation_wins_over_order() -> None:
    events = [msg("$other", "unrelated first", seen=6), msg("$r", "ABC", reply_to="$t", seen=7)]
    pairing = pair_reply(T, events, BOT, None)
    assert pairing is not None and pairing.event["event_id"] == "$r" and pairing.method == "relation"


def test_a_threaded_reply_pairs_by_its_in_reply_to() -> None:
    pairing = pair_reply(T, [msg("$r", "ABC", thread="$root", reply_to="$t")], BOT, None)
    assert pairing is not None and pairing.method == "relation"


def test_journal_pairs_an_unrelated_message_by_the_models_answer() -> None:
    journal = [_Entry("bot: say XYZ", _Reply("XYZ")), _Entry("bot: say ABC", _Reply("ABC"))]
    events = [msg("$a", "XYZ", seen=6), msg("$b", "ABC", seen=7)]
    pairing = pair_reply(T, events, BOT, journal)
    assert pairing is not None and pairing.event["event_id"] == "$b" and pairing.method == "journal"


def test_with_a_journal_answer_no_other_message_is_guessed() -> None:
    journal = [_Entry("say ABC", _Reply("ABC"))]
    assert pair_reply(T, [msg("$a", "something else")], BOT, journal) is None


def test_order_guess_is_the_first_unrelated_bot_message_after_the_trigger() -> None:
    events = [msg("$before", "old", seen=4), msg("$x", "reply to another", reply_to="$y", seen=6),
              msg("$human", "hi", sender="@h:hs", seen=6.5), msg("$g", "guess me", seen=7), msg("$h", "later", seen=8)]
    pairing = pair_reply(T, events, BOT, None)
    assert pairing is not None and pairing.event["event_id"] == "$g" and pairing.method == "order-guess"
    assert "GUESS" in pairing.note
    claimed = pair_reply(T, events, BOT, None, claimed=frozenset({"$g"}))
    assert claimed is not None and claimed.event["event_id"] == "$h"


def test_never_pairs_state_edits_other_rooms_or_other_senders() -> None:
    events = [
        {"type": "m.room.member", "sender": BOT, "state_key": BOT, "event_id": "$j", "room_id": ROOM,
         "content": {"membership": "join"}, "_seenMs": 6},
        msg("$e", "edit", replace=True, reply_to="$t", seen=6),
        msg("$o", "ABC", room="!other:hs", reply_to="$t", seen=6),
        msg("$p", "ABC", sender="@someone:hs", reply_to="$t", seen=6),
        {**msg("$n", "notice-ish", reply_to="$t", seen=6), "type": "m.reaction"},
    ]
    assert pair_reply(T, events, BOT, None) is None
    assert replies_by_relation("$t", events, BOT, ROOM) == []


def test_unwanted_replies_by_order() -> None:
    events = [
        msg("$u1", "answered the trigger", reply_to="$t", seen=6),
        msg("$u2", "no relation at all", seen=6.5),
        msg("$ok", "answer to something else", reply_to="$else", seen=7),
        msg("$c", "control answer", reply_to="$control", seen=8),
        msg("$late-plain", "after the control answer", seen=9),
        msg("$late", "late answer to the trigger", reply_to="$t", seen=10),
    ]
    found = unwanted_replies(T, "$c", events, BOT, None)
    assert [(u.event_id, u.why.split(" ")[0]) for u in found] == [("$u1", "replies"), ("$u2", "a"),
                                                                   ("$late", "replies")]


def test_unwanted_by_the_journal_answer() -> None:
    journal = [_Entry("say ABC", _Reply("ABC"))]
    found = unwanted_replies(T, "$c", [msg("$u", "ABC", seen=6), msg("$c", "ok", seen=7)], BOT, journal)
    assert [(u.event_id, "journal" in u.why) for u in found] == [("$u", True)]


def test_nothing_unwanted_when_the_bot_kept_quiet() -> None:
    events = [msg("$t", "say ABC", sender="@driver:hs", seen=5), msg("$c", "control", reply_to="$control", seen=8)]
    assert unwanted_replies(T, "$c", events, BOT, None) == []


def test_messages_before_the_trigger_are_not_unwanted() -> None:
    assert unwanted_replies(T, "$c", [msg("$old", "old", seen=1)], BOT, None) == []


def edit(event_id: str, target: str, new_body: str, *, seen: float = 20.0, sender: str = BOT) -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "event_id": event_id, "room_id": ROOM, "_seenMs": seen,
            "content": {"msgtype": "m.text", "body": f"* {new_body}", "m.new_content": {"body": new_body},
                        "m.relates_to": {"rel_type": "m.replace", "event_id": target}}}


def test_latest_body_follows_the_bots_own_edits_only() -> None:
    from qa.evidence.pairing import latest_body

    reply = msg("$r", "…", reply_to="$t")
    events = [reply, edit("$e1", "$r", "draft"), edit("$x", "$r", "hijack", sender="@other:hs"),
              edit("$e2", "$r", "ABC"), edit("$e3", "$other", "elsewhere")]
    assert latest_body(reply, events, BOT) == "ABC"
    assert latest_body(reply, [reply], BOT) == "…"
    no_new_content = {**edit("$e4", "$r", "x"), "content": {"body": "* plain", "m.relates_to": {
        "rel_type": "m.replace", "event_id": "$r"}}}
    assert latest_body(reply, [reply, no_new_content], BOT) == "plain"


def test_replies_by_journal_counts_every_plain_copy_of_the_answer() -> None:
    from qa.evidence.pairing import replies_by_journal

    journal = [_Entry("say ABC", _Reply("ABC"))]
    events = [msg("$a", "ABC", seen=6), msg("$b", "ABC", seen=7), msg("$c", "ABC", reply_to="$x", seen=8),
              msg("$d", "other", seen=9), msg("$early", "ABC", seen=1)]
    assert replies_by_journal(T, events, BOT, journal) == ["$a", "$b"]
    assert replies_by_journal(T, events, BOT, None) == []
