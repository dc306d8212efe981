"""Reply pairing and order evidence for bots without a trace: pure functions over observed events."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from typing import Any, get_args

import pytest

from qa.evidence.order import Unwanted, unwanted_replies
from qa.evidence.pairing import (
    Method,
    Pairing,
    Trigger,
    body,
    pair_reply,
    replies_by_relation,
    unnamed_in_threads,
    unsure_in_thread,
)

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
def test_the_method_type_names_exactly_the_methods_pairing_uses() -> None:
    journal = [_Entry("say ABC", _Reply("ABC"))]
    used = {pair_reply(T, [msg("$r", "x", reply_to="$t")], BOT, None).method,  # type: ignore[union-attr]
            pair_reply(T, [msg("$j", "ABC")], BOT, journal).method,  # type: ignore[union-attr]
            pair_reply(T, [msg("$g", "x")], BOT, None).method}  # type: ignore[union-attr]
    assert set(get_args(Method)) == used == {"relation", "journal", "order-guess"}


def test_each_note_starts_by_saying_how_the_message_was_paired() -> None:
    # A step's message ends with "; <note>": the reader must see at once whether the pairing is a guess.
    notes = {m: Pairing(msg("$r", "x"), m).note for m in ("relation", "journal", "order-guess")}
    assert notes["relation"].startswith("paired by its m.in_reply_to relation")
    assert notes["journal"].startswith("paired through the provider journal")
    assert notes["order-guess"].startswith("a GUESS:")
    assert notes["order-guess"].endswith("(no relation, no journal match)")
    assert "GUESS" not in notes["relation"] + notes["journal"]


def test_evidence_records_cannot_be_rewritten() -> None:
    pairing = Pairing(msg("$r", "x"), "relation")
    unwanted = Unwanted("$u", "why")
    with pytest.raises(FrozenInstanceError):
        T.sent_ms = 0.0  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        pairing.method = "order-guess"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        unwanted.why = "other"  # type: ignore[misc]


def test_a_message_typed_state_event_is_not_something_the_bot_said() -> None:
    state = {**msg("$s", "ABC", reply_to="$t"), "state_key": ""}
    assert pair_reply(T, [state], BOT, None) is None
    assert unwanted_replies(T, "$c", [state], BOT, None) == []


def test_a_message_without_a_body_reads_as_empty() -> None:
    assert body({"content": {"msgtype": "m.text"}}) == "" and body({}) == ""
    assert body(msg("$x", "  padded \n")) == "padded"


def test_a_message_seen_at_the_instant_of_the_trigger_can_answer_it() -> None:
    at_once = msg("$r", "ABC", seen=T.sent_ms)
    pairing = pair_reply(T, [at_once], BOT, None)
    assert pairing is not None and pairing.event["event_id"] == "$r"
    assert [u.event_id for u in unwanted_replies(T, "$c", [at_once], BOT, None)] == ["$r"]


def test_a_message_with_no_seen_stamp_counts_as_seen_before_any_trigger() -> None:
    early = Trigger("$t", ROOM, "say ABC", 0.5)
    unstamped = {k: v for k, v in msg("$u", "ABC", reply_to="$t").items() if k != "_seenMs"}
    assert pair_reply(early, [unstamped], BOT, None) is None
    assert unwanted_replies(early, "$c", [unstamped], BOT, None) == []


def test_replies_by_relation_lists_every_bot_reply_to_the_trigger_in_order() -> None:
    events = [msg("$a", "one", reply_to="$t"), msg("$plain", "none"), msg("$x", "other", reply_to="$else"),
              msg("$b", "two", thread="$root", reply_to="$t")]
    assert replies_by_relation("$t", events, BOT, ROOM) == ["$a", "$b"]


def bare_thread(event_id: str, root: str, reply_to: str | None = None) -> dict[str, Any]:
    relates: dict[str, Any] = {"rel_type": "m.thread", "event_id": root}
    if reply_to:
        relates["m.in_reply_to"] = {"event_id": reply_to}
    return {**msg(event_id, "in a thread"), "content": {"msgtype": "m.text", "body": "x", "m.relates_to": relates}}


def test_a_thread_message_rooted_at_the_trigger_naming_no_other_event_replies_to_it() -> None:
    """A thread the bot starts on the trigger is its answer to it, m.in_reply_to or not; a thread message that
    replies to another event in that thread answers that event, not the root."""
    events = [bare_thread("$bare", "$t"), bare_thread("$deeper", "$t", reply_to="$inside"),
              bare_thread("$elsewhere", "$other"), bare_thread("$both", "$t", reply_to="$t")]
    assert replies_by_relation("$t", events, BOT, ROOM) == ["$bare", "$both"]
    assert replies_by_relation("$inside", events, BOT, ROOM) == ["$deeper"]


def test_an_old_message_listed_first_does_not_hide_the_unwanted_ones_after_it() -> None:
    events = [msg("$old", "old", seen=1), msg("$u", "answered", reply_to="$t", seen=6),
              msg("$human", "hi", sender="@h:hs", seen=6.5), msg("$v", "plain", seen=7)]
    assert [u.event_id for u in unwanted_replies(T, "$c", events, BOT, None)] == ["$u", "$v"]


def test_each_unwanted_reply_says_why_first() -> None:
    journal = [_Entry("say ABC", _Reply("ABC"))]
    events = [msg("$r", "x", reply_to="$t", seen=6), msg("$j", "ABC", seen=6), msg("$p", "plain", seen=6)]
    whys = [u.why for u in unwanted_replies(T, "$c", events, BOT, journal)]
    assert whys[0].startswith("replies to the trigger")
    assert whys[1].startswith("carries the model's answer to the trigger")
    assert whys[2].startswith("a bot message between the trigger and the control's answer")


def test_an_edit_is_read_from_m_new_content_not_from_its_fallback_body() -> None:
    from qa.evidence.pairing import latest_body

    reply = msg("$r", "draft", reply_to="$t")
    spec_edit = {**edit("$e", "$r", "ABC"), "content": {
        "msgtype": "m.text", "body": "* something the client shows as a fallback", "m.new_content": {"body": "ABC"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$r"}}}
    assert latest_body(reply, [reply, spec_edit], BOT) == "ABC"
    emptied = {**spec_edit, "content": {**spec_edit["content"], "m.new_content": {}}}
    assert latest_body(reply, [reply, emptied], BOT) == ""


def test_replies_by_journal_boundaries_of_time() -> None:
    from qa.evidence.pairing import replies_by_journal

    journal = [_Entry("say ABC", _Reply("ABC"))]
    at_once = Trigger("$t", ROOM, "say ABC", 10.0)
    assert replies_by_journal(at_once, [msg("$same", "ABC", seen=10.0)], BOT, journal) == ["$same"]
    unseen = {**msg("$u", "ABC"), "_seenMs": None}
    del unseen["_seenMs"]
    early = Trigger("$t", ROOM, "say ABC", 0.5)
    assert replies_by_journal(early, [unseen], BOT, journal) == [], "no seen-time counts as before everything"


# --- issue 28: journal before order, for the control of a negative check too ------------------------------------


@dataclass
class _Flight:
    latest_user: str | None
    reply: _Reply | None
    state: str = "in_flight"
    is_chat: bool = True


IGNORED = Trigger("$ign", ROOM, "say IGN", 5.0)
CONTROL = Trigger("$ctl", ROOM, "say CTL", 8.0)


def test_an_answer_the_journal_ties_to_another_trigger_is_never_this_ones() -> None:
    """The ignored message's answer lands while the control's model request is in flight: not a guess for it."""
    journal: list[Any] = [_Entry("bot: say IGN", _Reply("IGN")), _Flight("bot: say CTL", None)]
    events = [msg("$a", "IGN", seen=9)]
    assert pair_reply(CONTROL, events, BOT, journal, others=[IGNORED]) is None
    journal[1] = _Entry("bot: say CTL", _Reply("CTL"))
    pairing = pair_reply(CONTROL, [*events, msg("$b", "CTL", seen=10)], BOT, journal, others=[IGNORED])
    assert pairing is not None and pairing.event["event_id"] == "$b" and pairing.method == "journal"


def test_no_guess_while_the_model_still_answers_this_trigger() -> None:
    events = [msg("$typing", "thinking…", seen=9)]
    assert pair_reply(CONTROL, events, BOT, [_Flight("bot: say CTL", None)]) is None
    done = _Flight("bot: say CTL", None, state="error")  # no answer will come: a guess is all there is
    pairing = pair_reply(CONTROL, events, BOT, [done])
    assert pairing is not None and pairing.method == "order-guess"
    other = _Flight("bot: say OTHER", None)  # another trigger's request in flight says nothing about this one
    assert pair_reply(CONTROL, events, BOT, [other]) is not None
    assert pair_reply(CONTROL, events, BOT, [_Flight("bot: say CTL", None, is_chat=False)]) is not None
    assert pair_reply(CONTROL, events, BOT, [_Flight(None, None)]) is not None
    assert pair_reply(Trigger("$x", ROOM, None, 8.0), events, BOT, [_Flight("bot: say CTL", None)]) is not None


def test_an_answer_the_journal_ties_to_both_triggers_stays_a_candidate() -> None:
    journal = [_Entry("bot: say IGN", _Reply("SAME")), _Entry("bot: say CTL", _Reply("SAME"))]
    pairing = pair_reply(CONTROL, [msg("$a", "SAME", seen=9)], BOT, journal, others=[IGNORED])
    assert pairing is not None and pairing.event["event_id"] == "$a" and pairing.method == "journal"
    # The trigger itself among `others` excludes nothing; without a journal nothing is tied to anyone.
    journal2 = [_Entry("bot: say CTL", _Reply("CTL2"))]
    pairing = pair_reply(CONTROL, [msg("$a", "X", seen=9)], BOT, None, others=[IGNORED, CONTROL])
    assert pairing is not None and pairing.method == "order-guess"
    pairing = pair_reply(CONTROL, [msg("$c", "CTL2", seen=9)], BOT, journal2, others=[CONTROL])
    assert pairing is not None and pairing.method == "journal"


def test_every_message_the_journal_ties_to_the_ignored_trigger_is_unwanted_even_after_the_control() -> None:
    journal = [_Entry("bot: say IGN", _Reply("IGN")), _Entry("bot: say CTL", _Reply("CTL"))]
    events = [msg("$ctl-answer", "CTL", seen=9), msg("$late", "IGN", seen=10), msg("$other", "chat", seen=11)]
    found = unwanted_replies(IGNORED, "$ctl-answer", events, BOT, journal, "say CTL")
    assert [u.event_id for u in found] == ["$late"]
    assert found[0].why == "carries the model's answer to the trigger (provider journal), after the control's answer"
    # A text the model gave the control too may be the control's second answer: not the trigger's, after it.
    same = [_Entry("bot: say IGN", _Reply("SAME")), _Entry("bot: say CTL", _Reply("SAME"))]
    events = [msg("$ctl-answer", "SAME", seen=9), msg("$late", "SAME", seen=10)]
    assert unwanted_replies(IGNORED, "$ctl-answer", events, BOT, same, "say CTL") == []
    assert [u.event_id for u in unwanted_replies(IGNORED, "$ctl-answer", events, BOT, same)] == ["$late"]
    # A reply to another event after the control's answer is left alone.
    events = [msg("$ctl-answer", "CTL", seen=9), msg("$r", "IGN", seen=10, reply_to="$elsewhere")]
    assert unwanted_replies(IGNORED, "$ctl-answer", events, BOT, journal, "say CTL") == []


def test_a_bare_thread_message_answers_the_root_only_until_someone_else_writes_in_the_thread() -> None:
    """After a test user's message in the thread, a bot thread message without m.in_reply_to may answer that
    message: it no longer counts as a reply to the root (the last review's Medium/Low: an honest bot answering a
    follow-up this way was counted twice for the root)."""
    user = "@driver:hs"
    follow = {**bare_thread("$follow", "$t"), "sender": user}
    elsewhere = {**bare_thread("$other_thread", "$u"), "sender": user}
    away = {**bare_thread("$away", "$t"), "sender": user, "room_id": "!elsewhere:hs"}
    events = [bare_thread("$first", "$t"), elsewhere, away, bare_thread("$second", "$t"), follow,
              bare_thread("$third", "$t"), bare_thread("$named", "$t", reply_to="$t"),
              bare_thread("$in_u", "$u")]
    assert replies_by_relation("$t", events, BOT, ROOM) == ["$first", "$second", "$named"]
    assert replies_by_relation("$u", events, BOT, ROOM) == []
    assert unnamed_in_threads(events, BOT, ROOM) == {"$third", "$in_u"}
    # The bot's own messages in the thread (and an edit by someone else) do not make it ambiguous.
    edit_by_user = {**msg("$edit", "x", sender=user), "content": {"body": "x", "m.relates_to": {
        "rel_type": "m.replace", "event_id": "$first"}}}
    state = {**follow, "event_id": "$state", "state_key": ""}
    notice = {**follow, "event_id": "$reaction", "type": "m.reaction"}
    reference = {**msg("$ref", "x", sender=user), "content": {"body": "x", "m.relates_to": {
        "rel_type": "m.reference", "event_id": "$t"}}}
    assert replies_by_relation("$t", [bare_thread("$a", "$t"), edit_by_user, state, notice, reference,
                                      bare_thread("$b", "$t")], BOT, ROOM) == ["$a", "$b"]
    # Nor is the bot's own message referencing the root (no thread) a reply to it.
    assert replies_by_relation("$t", [{**reference, "sender": BOT}], BOT, ROOM) == []


def test_the_bare_thread_messages_after_a_follow_up_are_unsure_for_their_root_only_unless_settled() -> None:
    """unsure_in_thread: what expect_reply_count and the silence on a root name as NOT CHECKED for a bot without a
    trace (tests/unit/test_thread_unsure.py runs the steps)."""
    user = "@driver:hs"
    events = [bare_thread("$first", "$t"), {**bare_thread("$follow", "$t"), "sender": user},
              bare_thread("$then", "$t"), bare_thread("$named", "$t", reply_to="$follow"),
              {**bare_thread("$ask", "$u"), "sender": user}, bare_thread("$there", "$u"), bare_thread("$last", "$t")]
    assert unsure_in_thread("$t", events, BOT, ROOM) == ["$then", "$last"]
    assert unsure_in_thread("$t", events, BOT, ROOM, settled={"$then"}) == ["$last"]
    assert unsure_in_thread("$u", events, BOT, ROOM) == ["$there"]
    assert unsure_in_thread("$t", events[:1], BOT, ROOM) == []
