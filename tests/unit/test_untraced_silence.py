"""A traced bot's messages after a message it said it ignored, which its trace does not account for
(qa.evidence.silence): which are looked at, which answer the ignored message by their text, and what the result
says of them (docs/trace-format.md)."""

from __future__ import annotations

from typing import Any

from qa.evidence.events import BotIdentity
from qa.evidence.silence import (
    answering,
    echo_or_answer,
    unnamed_sends_note,
    untraced_answer_problem,
    untraced_echo_note,
    untraced_edit_problem,
    untraced_edits,
    untraced_note,
    untraced_plain,
)

BOT = "@bot:hs"


def msg(event_id: str, body: str = "hi", sender: str = BOT, room: str = "!r", kind: str = "m.room.message",
        **content: Any) -> dict[str, Any]:
    return {"event_id": event_id, "sender": sender, "type": kind, "room_id": room,
            "content": {"msgtype": "m.notice", "body": body, **content}}


def ids(events: list[Any]) -> list[str]:
    return [e["event_id"] for e in events]


def test_only_the_bots_untraced_messages_relating_to_nothing_after_the_trigger_in_its_room_count() -> None:
    events = [
        msg("$before"),  # before the trigger
        msg("$trigger", sender="@driver:hs"),
        msg("$plain"),
        msg("$traced"),  # its reply.sent accounts for it
        msg("$reply", **{"m.relates_to": {"m.in_reply_to": {"event_id": "$other"}}}),
        msg("$edit", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$plain"}}),
        msg("$thread", **{"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}),
        msg("$person", sender="@driver:hs"),
        msg("$elsewhere", room="!other"),
        msg("$reaction", kind="m.reaction"),
        {**msg("$state"), "state_key": ""},
        msg("$empty", **{"m.relates_to": {}}),  # an empty relation relates to nothing
        msg("$last"),
    ]
    assert ids(untraced_plain(events, "$trigger", "!r", BOT, {"$traced"})) == ["$plain", "$empty", "$last"]
    # From the first look's mark on only, when that is later than the trigger.
    assert ids(untraced_plain(events, "$trigger", "!r", BOT, {"$traced"}, start=10)) == ["$empty", "$last"]
    # The mark before the trigger: still only what came after the trigger.
    assert ids(untraced_plain(events, "$trigger", "!r", BOT, set(), start=1)) == ["$plain", "$traced", "$empty",
                                                                                 "$last"]
    # A trigger the client never saw: everything from the mark on.
    assert ids(untraced_plain(events, "$unseen", "!r", BOT, {"$traced"}, start=11)) == ["$empty", "$last"]
    assert ids(untraced_plain(events, "$unseen", "!r", BOT, {"$traced"})) == ["$before", "$plain", "$empty",
                                                                               "$last"]
    # Any of the bot's accounts.
    assert ids(untraced_plain(events, "$trigger", "!r", BotIdentity(frozenset({"@driver:hs"})), set())) == [
        "$person"]


def test_a_message_answers_the_ignored_one_when_its_text_is_what_that_one_asked_for() -> None:
    events = [msg("$a", " tok1 \n"), msg("$b", "tok1 and more"), msg("$c", "tok2"), msg("$d", ""),
              {"event_id": "$e", "content": {}}]
    assert answering(events, ["tok1", "model answer"]) == ["$a"]
    assert answering(events, [" tok2 "]) == ["$c"]
    # No answer known (nothing asked for a marker, no model request): nothing is attributed, an empty body least.
    assert answering(events, []) == []
    assert answering(events, ["", "  "]) == []
    # A message without a body says nothing, whatever text is looked for.
    assert answering([{"event_id": "$e", "content": {}}, {"event_id": "$f"}], ["XXXX", "None"]) == []


def test_a_message_carrying_the_marker_answers_unless_it_quotes_the_prompt() -> None:
    """Markers are fixed-length and unique (qa.shared.markers): a message containing one says it, however it is
    dressed; one that quotes the ignored prompt (which carries the marker too) only repeats the question."""
    prompt = "reply with only this exact marker: MQA-0000abcd"
    events = [msg("$dressed", "Sure! MQA-0000abcd"), msg("$quote", f'you said "{prompt}", ignored'),
              msg("$other", "MQA-1111abcd"), msg("$model", "the model said so"), msg("$part", "the model said")]
    found = answering(events, ["the model said so"], markers=["MQA-0000abcd"], prompts=[prompt])
    assert found == ["$dressed", "$model"]
    # No prompt known: a quote is not told apart.
    assert answering(events, [], markers=["MQA-0000abcd"]) == ["$dressed", "$quote"]
    assert answering(events, [], markers=["", " "], prompts=[""]) == []
    assert answering([edit("$e", "$m", {"body": "ok: MQA-0000abcd"})], [], markers=[" MQA-0000abcd "]) == ["$e"]


def edit(event_id: str, target: str, new: Any, sender: str = BOT, room: str = "!r") -> dict[str, Any]:
    content: dict[str, Any] = {"m.relates_to": {"rel_type": "m.replace", "event_id": target}}
    if new is not None:
        content["m.new_content"] = new
    return msg(event_id, "* stale", sender=sender, room=room, **content)


def test_the_bots_untraced_edits_after_the_trigger_are_looked_at_by_their_new_text() -> None:
    """An edit of the bot's own (traced) message into the ignored message's answer is an answer too."""
    events = [edit("$old", "$m", {"body": "T1"}), msg("$trigger", sender="@driver:hs"),
              edit("$e", "$control_answer", {"body": " T1 "}), edit("$traced", "$m", {"body": "T1"}),
              edit("$person", "$p", {"body": "T1"}, sender="@driver:hs"),
              edit("$away", "$m", {"body": "T1"}, room="!o"),
              msg("$plain", "T1"), msg("$reply", "T1", **{"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}),
              edit("$bare", "$m", None), edit("$odd", "$m", "T1")]
    found = untraced_edits(events, "$trigger", "!r", BOT, {"$traced"})
    assert ids(found) == ["$e", "$bare", "$odd"]
    assert ids(untraced_edits(events, "$trigger", "!r", BOT, set(), start=4)) == ["$bare", "$odd"]
    # Its new text is what counts (the fallback body "* stale" says nothing), else its body without the '* '.
    assert answering(found, ["T1"]) == ["$e"]
    assert answering(found, ["stale"]) == ["$bare", "$odd"]


def test_what_the_result_says() -> None:
    assert untraced_answer_problem("quiet", []) is None
    assert untraced_answer_problem("quiet", ["$a", "$b"]) == (
        "the bot answered 'quiet' in 2 message(s) relating to nothing that its trace does not account for, "
        "saying what 'quiet' asked for: $a, $b")
    assert untraced_edit_problem("quiet", []) is None
    assert untraced_edit_problem("quiet", ["$e"], unnamed=1) is None
    assert untraced_edit_problem("quiet", ["$e"]) == (
        "the bot answered 'quiet' in 1 edit(s) of its messages that its trace does not account for, their new text "
        "saying what 'quiet' asked for: $e")
    assert untraced_note("quiet", []) is None
    assert untraced_note("quiet", ["$1", "$2", "$3", "$4", "$5", "$6"]) == (
        "the bot sent 6 message(s) after the first look that relate to nothing and that its trace does not account "
        "for ($1, $2, $3, $4, $5): whether one answers 'quiet', which it traced as not answered, cannot be told")


def test_an_untraced_answer_is_not_checked_when_the_trace_names_not_every_send() -> None:
    """A `reply.sent` without its eventId may be the very message: the rule cannot fail it, nor pass it."""
    assert untraced_answer_problem("quiet", ["$a"], unnamed=1) is None
    assert untraced_answer_problem("quiet", ["$a"], unnamed=0) is not None
    assert unnamed_sends_note("quiet", ["$a"], 0) is None
    assert unnamed_sends_note("quiet", [], 2) is None
    assert unnamed_sends_note("quiet", ["$a", "$b"], 2) == (
        "the bot sent 2 message(s) relating to nothing that say what 'quiet' asked for ($a, $b), but 2 of its "
        "traced sends name no event id: whether its trace accounts for them cannot be told")


# --- the expect_no_reply step's final check and its note after the exit (qa.scenario.steps.silence) ------------


def negative() -> Any:
    from qa.report.summary import NegativeCheck

    return NegativeCheck(step=2, triggerEventId="$trigger", expectedReason="mention-required")


def step_ctx(events: list[Any], trace: list[dict[str, Any]], has_trace: bool = True, journal: Any = None) -> Any:
    from types import SimpleNamespace

    from qa.scenario.context import Ref

    send = SimpleNamespace(defined_id=lambda: "quiet", body="reply with only this exact marker: {token}")
    other = SimpleNamespace(defined_id=lambda: None)
    ref = Ref("!r", "$trigger", None, 0.0, actor="driver", text="reply with only this exact marker: T1")
    return SimpleNamespace(
        bot=SimpleNamespace(has_trace=has_trace, trace=SimpleNamespace(items=trace)), trace_start=0,
        observer=lambda: SimpleNamespace(events=SimpleNamespace(items=events)), bot_ids=BotIdentity(frozenset({BOT})),
        scenario=SimpleNamespace(steps=[other, send]), markers={"token": "T1"},
        provider=SimpleNamespace(journal=journal) if journal is not None else None, refs={"quiet": ref}, claimed={},
        rooms={"main": "!r"}, silenced=[]), ref


def test_the_final_check_fails_an_untraced_plain_answer_and_the_note_tells_what_cannot_be_attributed() -> None:
    from qa.scenario.steps import silence

    events = [msg("$trigger", sender="@driver:hs"), msg("$hello", "hello"), msg("$traced", "T1"), msg("$t1", "T1"),
              msg("$later", "later")]
    trace = [{"type": "reply.sent", "eventId": "$traced", "inReplyTo": "$control"}]
    ctx, ref = step_ctx(events, trace)
    check = negative()
    final = silence._still_silent(ctx, ref, "quiet", check)
    assert final() == ("the bot answered 'quiet' in 1 message(s) relating to nothing that its trace does not "
                       "account for, saying what 'quiet' asked for: $t1")
    assert check.unwantedReplies == ["$t1"]
    final()
    assert check.unwantedReplies == ["$t1"], "a second look lists it once"
    note = silence._untraced_after(ctx, ref, "quiet")
    # From the first look on: $t1 is the failure above, $later cannot be attributed.
    assert note(3) == ("the bot sent 1 message(s) after the first look that relate to nothing and that its trace "
                       "does not account for ($later): whether one answers 'quiet', which it traced as not answered, "
                       "cannot be told")
    assert note(5) is None
    quiet, _ = step_ctx(events[:3], trace)
    assert silence._still_silent(quiet, ref, "quiet", negative())() is None


def test_the_models_answer_to_the_ignored_text_counts_and_a_bot_without_a_trace_is_judged_as_before() -> None:
    from types import SimpleNamespace

    from qa.scenario.steps import silence

    asked = SimpleNamespace(is_chat=True, latest_user="reply with only this exact marker: T1",
                            reply=SimpleNamespace(text="the model said so"))
    events = [msg("$trigger", sender="@driver:hs"), msg("$m", "the model said so")]
    ctx, ref = step_ctx(events, [], journal=[asked])
    assert "$m" in silence._still_silent(ctx, ref, "quiet", negative())()
    # Without a trace nothing accounts for any message: order evidence judges it (unchanged), not this rule.
    untraced, ref = step_ctx([msg("$trigger", sender="@driver:hs"), msg("$t1", "T1")], [], has_trace=False)
    assert silence._still_silent(untraced, ref, "quiet", negative())() is None


def test_a_trace_with_an_unnamed_send_leaves_an_untraced_answer_not_checked_never_failed_nor_passed() -> None:
    from qa.scenario.steps import silence

    events = [msg("$trigger", sender="@driver:hs"), msg("$t1", "T1")]
    trace = [{"type": "reply.sent", "inReplyTo": "$control"}]  # no eventId: it may be $t1
    ctx, ref = step_ctx(events, trace)
    check = negative()
    assert silence._still_silent(ctx, ref, "quiet", check)() is None
    assert check.unwantedReplies == []
    assert silence._untraced_after(ctx, ref, "quiet")(2) == (
        "the bot sent 1 message(s) relating to nothing that say what 'quiet' asked for ($t1), but 1 of its traced "
        "sends name no event id: whether its trace accounts for them cannot be told")


def test_the_final_check_fails_an_untraced_edit_into_the_ignored_messages_answer() -> None:
    from qa.scenario.steps import silence

    events = [msg("$trigger", sender="@driver:hs"), msg("$traced", "control answer"),
              edit("$e", "$traced", {"body": "T1"}), edit("$ok", "$traced", {"body": "fixed typo"})]
    trace = [{"type": "reply.sent", "eventId": "$traced", "inReplyTo": "$control"}]
    ctx, ref = step_ctx(events, trace)
    check = negative()
    assert silence._still_silent(ctx, ref, "quiet", check)() == (
        "the bot answered 'quiet' in 1 edit(s) of its messages that its trace does not account for, their new text "
        "saying what 'quiet' asked for: $e")
    assert check.unwantedReplies == ["$e"]
    # An untraced edit saying anything else is no message of its own: no note after the exit.
    assert silence._untraced_after(ctx, ref, "quiet")(1) is None
    honest, ref = step_ctx([*events[:2], events[3]], trace)
    assert silence._still_silent(honest, ref, "quiet", negative())() is None


def test_untraced_edits_edges_and_the_wordings_in_full() -> None:
    """Cases the mutation run asked for (bench/mutation.py qa/evidence/silence.py)."""
    early = edit("$early", "$m", {"body": "T1"})
    events = [early, edit("$before", "$m", {"body": "T1"}), msg("$trigger", sender="@driver:hs"),
              {**edit("$state", "$m", {"body": "T1"}), "state_key": ""}, edit("$after", "$m", {"body": "T1"})]
    assert ids(untraced_edits(events, "$trigger", "!r", BOT, set())) == ["$after"]
    # A trigger the client never saw: every edit from the start (or the mark) on.
    assert ids(untraced_edits(events, "$unseen", "!r", BOT, set())) == ["$early", "$before", "$after"]
    # An edit whose new content or whose own content has no body says nothing.
    bodyless = [edit("$nb", "$m", {"msgtype": "m.text"}),
                msg("$fb", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$m"}})]
    del bodyless[1]["content"]["body"]
    assert answering(bodyless, ["XXXX"]) == []
    # A blank prompt quotes nothing.
    dressed = [msg("$d", "ok MQA-0000abcd")]
    assert answering(dressed, [], markers=["MQA-0000abcd"], prompts=[" "]) == ["$d"]
    assert (untraced_edit_problem("q", ["$1", "$2"]) or "").endswith("asked for: $1, $2")
    note = unnamed_sends_note("q", ["$1", "$2", "$3", "$4", "$5", "$6"], 6)
    assert note is not None and "($1, $2, $3, $4, $5), but" in note


# --- verdict30: quotes that answer, a prompt that is its own marker, more answers than unnamed sends -------------


def test_a_message_quoting_the_prompt_and_then_answering_it_answers() -> None:
    """The quote of the prompt is taken out first: a marker left outside it is said by the bot itself (the last
    review's Medium: '> !echo T1\n\nT1' passed as a mere quote)."""
    prompt = "!echo MQA-0000abcd"
    events = [msg("$both", f"> {prompt}\n\nMQA-0000abcd"), msg("$quote", f"not answered: {prompt}"),
              msg("$twice", f"{prompt} / {prompt}"), msg("$bare", "MQA-0000abcd")]
    assert answering(events, [], markers=["MQA-0000abcd"], prompts=[prompt]) == ["$both", "$bare"]
    assert echo_or_answer(events, markers=["MQA-0000abcd"], prompts=[prompt]) == []
    # A longer quote is taken out before a shorter one it holds.
    long, short = "reply with only this exact marker: MQA-0000abcd", "exact"
    assert answering([msg("$l", f"you said: {long}")], [], ["MQA-0000abcd"], [short, long]) == []


def test_a_prompt_that_is_its_own_marker_answers_when_said_bare_and_is_unsure_beside_other_words() -> None:
    """A bot whose `say` is "{text}": the ignored message IS the marker. Saying exactly it is the answer it asked
    for; carrying it beside other words may quote the question or answer it, which the text cannot tell."""
    marker = "MQA-0000abcd"
    events = [msg("$exact", f" {marker} "), msg("$notice", f"not answered (mention me): {marker}"),
              msg("$sure", f"Sure! {marker}"), msg("$other", "MQA-1111abcd"), msg("$none", "hello")]
    assert answering(events, [], markers=[marker], prompts=[marker]) == ["$exact"]
    assert echo_or_answer(events, markers=[marker], prompts=[marker]) == ["$notice", "$sure"]
    # With a longer prompt the same messages are an answer each (the marker is outside every quote).
    assert answering(events, [], markers=[marker], prompts=[f"!echo {marker}"]) == ["$exact", "$notice", "$sure"]
    assert echo_or_answer(events, markers=[marker], prompts=[f"!echo {marker}"]) == []
    assert echo_or_answer(events) == []
    assert untraced_echo_note("q", []) is None
    assert untraced_echo_note("q", ["$1", "$2", "$3", "$4", "$5", "$6"]) == (
        "the bot sent 6 message(s) that its trace does not account for carrying the marker that is the whole of "
        "'q' beside other words ($1, $2, $3, $4, $5): whether one quotes 'q' or answers it cannot be told")


def test_more_untraced_answers_than_unnamed_sends_fail() -> None:
    """Each send traced without its event id may be one message, not more: the surplus is untraced for sure (the
    last review's Low: one unnamed send left every untraced answer NOT CHECKED)."""
    assert untraced_answer_problem("q", ["$a"], unnamed=1) is None
    assert untraced_answer_problem("q", ["$a", "$b"], unnamed=1) == (
        "the bot answered 'q' in 2 message(s) relating to nothing that its trace does not account for, saying what "
        "'q' asked for: $a, $b (1 traced send(s) without an event id can account for 1 message(s) at most, not "
        "all 2)")
    # The edits share the unnamed sends: one message and one edit against one unnamed send fail both.
    assert untraced_answer_problem("q", ["$a"], unnamed=1, total=2) is not None
    assert untraced_edit_problem("q", ["$e"], unnamed=1, total=2) == (
        "the bot answered 'q' in 1 edit(s) of its messages that its trace does not account for, their new text "
        "saying what 'q' asked for: $e (1 traced send(s) without an event id can account for 1 message(s) at "
        "most, not all 2)")
    assert untraced_edit_problem("q", ["$e"], unnamed=2, total=2) is None
    assert untraced_edit_problem("q", [], unnamed=0, total=2) is None
    assert unnamed_sends_note("q", ["$a", "$b"], 1) is None  # failed instead
    assert unnamed_sends_note("q", ["$a"], 1) is not None


def test_the_step_fails_the_surplus_over_unnamed_sends_and_says_an_echo_is_unsure() -> None:
    from qa.scenario.steps import silence

    events = [msg("$trigger", sender="@driver:hs"), msg("$t1", "T1"), msg("$again", "T1: done")]
    trace = [{"type": "reply.sent", "inReplyTo": "$control"}]  # one send without its eventId, two answers
    ctx, ref = step_ctx(events, trace)
    check = negative()
    assert (silence._still_silent(ctx, ref, "quiet", check)() or "").endswith(
        "$t1, $again (1 traced send(s) without an event id can account for 1 message(s) at most, not all 2)")
    assert check.unwantedReplies == ["$t1", "$again"]
    # A bot whose say is the bare text: the ignored message is "T1" itself.
    bare = [msg("$trigger", sender="@driver:hs"), msg("$notice", "ignored: T1"), msg("$hello", "hello")]
    ctx, ref = step_ctx(bare, [])
    ref = type(ref)("!r", "$trigger", None, 0.0, actor="driver", text="T1")
    assert silence._still_silent(ctx, ref, "quiet", negative())() is None
    assert silence._untraced_after(ctx, ref, "quiet")(2) == (
        "the bot sent 1 message(s) that its trace does not account for carrying the marker that is the whole of "
        "'quiet' beside other words ($notice): whether one quotes 'quiet' or answers it cannot be told; the bot "
        "sent 1 message(s) after the first look that relate to nothing and that its trace does not account for "
        "($hello): whether one answers 'quiet', which it traced as not answered, cannot be told")
    exact = [msg("$trigger", sender="@driver:hs"), msg("$t1", "T1")]
    ctx, _ = step_ctx(exact, [])
    assert "$t1" in (silence._still_silent(ctx, ref, "quiet", negative())() or "")


def test_a_bare_thread_message_after_someone_else_wrote_in_its_thread_is_judged_as_relating_to_nothing() -> None:
    """Its relation names the thread, not the message it answers (qa.evidence.pairing.unnamed_in_threads): an
    untraced one that carries the ignored root's marker answers it; before anyone else wrote there it is a reply
    to the root by relation (replies_by_relation), not looked at here."""
    def in_thread(event_id: str, body: str, sender: str = BOT) -> dict[str, Any]:
        return msg(event_id, body, sender=sender, **{"m.relates_to": {"rel_type": "m.thread", "event_id": "$trigger"}})

    events = [msg("$trigger", sender="@driver:hs"), in_thread("$first", "T1"),
              in_thread("$ask", "follow-up", sender="@driver:hs"), in_thread("$then", "T1")]
    assert ids(untraced_plain(events, "$trigger", "!r", BOT, set())) == ["$then"]
    assert ids(untraced_plain(events, "$trigger", "!r", BOT, {"$then"})) == []


def test_one_unnamed_send_excuses_one_answer_in_the_whole_scenario_not_one_per_ignored_message() -> None:
    """The unnamed sends are the scenario's, so they are shared by every ignored message's untraced answers (a
    union: one message answering two ignored ones is counted once). The last review's Medium: one `reply.sent`
    without eventId left an untraced answer to each of two ignored messages NOT CHECKED."""
    from types import SimpleNamespace

    from qa.scenario.context import Ref
    from qa.scenario.steps import silence

    def ctx_for(events: list[Any], trace: list[dict[str, Any]]) -> tuple[Any, Ref, Ref]:
        steps = [SimpleNamespace(defined_id=lambda n=n: n, body=f"reply with only this exact marker: {{{m}}}")
                 for n, m in (("q1", "token"), ("q2", "token2"))]
        r1 = Ref("!r", "$q1", None, 0.0, actor="driver", text="reply with only this exact marker: T1")
        r2 = Ref("!r", "$q2", None, 0.0, actor="driver", text="reply with only this exact marker: T2")
        ctx = SimpleNamespace(
            bot=SimpleNamespace(has_trace=True, trace=SimpleNamespace(items=trace)), trace_start=0,
            observer=lambda: SimpleNamespace(events=SimpleNamespace(items=events)),
            bot_ids=BotIdentity(frozenset({BOT})), scenario=SimpleNamespace(steps=steps),
            markers={"token": "T1", "token2": "T2"}, provider=None, refs={"q1": r1, "q2": r2}, claimed={},
            rooms={"main": "!r"}, silenced=[(r1, "q1"), (r2, "q2")])
        return ctx, r1, r2

    asked = [msg("$q1", "reply with only this exact marker: T1", sender="@driver:hs"),
             msg("$q2", "reply with only this exact marker: T2", sender="@driver:hs")]
    unnamed = [{"type": "reply.sent", "inReplyTo": "$control"}]
    ctx, r1, r2 = ctx_for([*asked, msg("$a1", "T1"), msg("$a2", "T2")], unnamed)
    first, second = negative(), negative()
    assert silence._still_silent(ctx, r1, "q1", first)() == (
        "the bot answered 'q1' in 1 message(s) relating to nothing that its trace does not account for, saying what "
        "'q1' asked for: $a1 (1 traced send(s) without an event id can account for 1 message(s) at most, not all 2)")
    assert (silence._still_silent(ctx, r2, "q2", second)() or "").endswith("$a2 (1 traced send(s) without an event "
                                                                           "id can account for 1 message(s) at "
                                                                           "most, not all 2)")
    assert (first.unwantedReplies, second.unwantedReplies) == (["$a1"], ["$a2"])
    assert silence._untraced_after(ctx, r1, "q1")(4) is None, "failed, not NOT CHECKED"
    # Two unnamed sends may be both answers: NOT CHECKED, each naming its own.
    ctx, r1, r2 = ctx_for([*asked, msg("$a1", "T1"), msg("$a2", "T2")], unnamed * 2)
    assert silence._still_silent(ctx, r1, "q1", negative())() is None
    assert silence._still_silent(ctx, r2, "q2", negative())() is None
    assert "($a2), but 2 of its traced sends name no event id" in (silence._untraced_after(ctx, r2, "q2")(4) or "")
    # One message answering both is one message (a union), which one unnamed send may be.
    ctx, r1, r2 = ctx_for([*asked, msg("$both", "T1 T2")], unnamed)
    assert silence._still_silent(ctx, r1, "q1", negative())() is None
    assert silence._still_silent(ctx, r2, "q2", negative())() is None
    assert "($both), but 1 of its traced sends" in (silence._untraced_after(ctx, r1, "q1")(3) or "")
