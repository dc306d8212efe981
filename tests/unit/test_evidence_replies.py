"""qa.evidence.replies without servers: which trace record settles a wait for a reply, and every problem a reply
can have (place, text, formatting, parts, edits, room, encryption, order), in the order the report shows them."""

from __future__ import annotations

from typing import Any

import pytest

from qa.evidence.edits import ChainRules
from qa.evidence.pairing import Trigger
from qa.evidence.replies import (
    HTML_FORMAT,
    ReplyWant,
    answered_dropped_or_failed,
    chain_problems,
    check_reply_shape,
    format_problems,
    html_safety_problems,
    judge_reply,
    parts_problems,
)

BOT = "@bot:hs"
TRIGGER = Trigger(event_id="$ask", room_id="!r", text="ask", sent_ms=0.0)
THREAD = {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True, "m.in_reply_to": {"event_id": "$ask"}}


def reply(body: str = "hi", event_id: str = "$reply", relates: dict[str, Any] | None = None, **extra: Any
          ) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body, "m.mentions": {}}
    if relates is not None:
        content["m.relates_to"] = relates
    return {"type": "m.room.message", "event_id": event_id, "room_id": "!r", "sender": BOT, "content": content,
            **extra}


def edit(of: str, body: str, event_id: str, ts: int = 0) -> dict[str, Any]:
    return {"type": "m.room.message", "event_id": event_id, "sender": BOT, "origin_server_ts": ts, "content": {
        "msgtype": "m.text", "body": f"* {body}", "m.mentions": {},
        "m.new_content": {"msgtype": "m.text", "body": body, "m.mentions": {}},
        "m.relates_to": {"rel_type": "m.replace", "event_id": of}}}


# --- which trace record settles the wait ---------------------------------------------------------------------


@pytest.mark.parametrize(("record", "settles"), [
    ({"type": "reply.sent", "inReplyTo": "$ask", "eventId": "$r"}, True),
    ({"type": "reply.sent", "inReplyTo": "$other", "eventId": "$ask"}, False),
    ({"type": "turn.end", "eventId": "$ask", "outcome": "failed"}, True),
    ({"type": "turn.end", "eventId": "$ask", "outcome": "replied"}, False),
    ({"type": "turn.end", "eventId": "$other", "outcome": "failed"}, False),
    ({"type": "inbound", "eventId": "$ask", "decision": "dropped", "reason": "mention-required"}, True),
    ({"type": "inbound", "eventId": "$ask", "decision": "dropped", "reason": "duplicate"}, False),
    ({"type": "inbound", "eventId": "$ask", "decision": "dropped", "reason": "history"}, False),
    ({"type": "inbound", "eventId": "$ask", "decision": "accepted", "reason": "mentioned"}, False),
    ({"type": "inbound", "eventId": "$other", "decision": "dropped", "reason": "x"}, False),
    ({"type": "reaction", "eventId": "$ask", "decision": "dropped", "reason": "x"}, False),
])
def test_the_wait_for_a_reply_ends_on_the_reply_or_a_final_refusal(record: dict[str, Any], settles: bool) -> None:
    assert answered_dropped_or_failed(record, "$ask") is settles


# --- the reply's place --------------------------------------------------------------------------------------


def test_reply_shape_problems_are_exact() -> None:
    wrong = {**THREAD, "event_id": "$other", "is_falling_back": 1, "m.in_reply_to": {"event_id": "$x"}}
    assert check_reply_shape(reply(relates=wrong), TRIGGER, "$root", False) == [
        "thread root $other != $root", "is_falling_back is not true", "m.in_reply_to $x != triggering event $ask"]
    assert check_reply_shape(reply(relates=THREAD), TRIGGER, None, True) == [
        f"expected a top-level reply (not in a thread), got m.relates_to={THREAD!r}"]
    assert check_reply_shape(reply(relates="odd"), TRIGGER, None, True) == [  # type: ignore[arg-type]
        "expected a top-level reply (not in a thread), got m.relates_to='odd'"]
    assert check_reply_shape(reply(relates=None), TRIGGER, "$root", False) == [
        "expected rel_type m.thread, got m.relates_to=None"]


# --- formatting ----------------------------------------------------------------------------------------------


def test_format_problems_name_each_text_and_show_the_formatted_body_cut_at_300() -> None:
    content = {"body": "b", "format": HTML_FORMAT, "formatted_body": "<p>" + "x" * 400 + "</p>"}
    assert format_problems(content, ["<em>", "<p>"], ["<P>", "<i>"], []) == [
        "formatted_body does not contain '<em>'", "formatted_body contains '<P>'",
        f"formatted_body: {content['formatted_body'][:300]!r}"]


def test_format_problems_without_html_say_what_the_format_was() -> None:
    assert format_problems({"body": "b", "format": "other", "formatted_body": "<b>x</b>"}, ["x"], [], []) == [
        "no org.matrix.custom.html formatted_body (format='other')", "formatted_body does not contain 'x'"]
    assert format_problems({"body": "b", "format": HTML_FORMAT, "formatted_body": 3}, [], [], [], safe=True) == [
        "no org.matrix.custom.html formatted_body (format='org.matrix.custom.html')"]
    # Nothing asked of the formatting: a plain reply is fine, and only the plain body is checked.
    assert format_problems({"body": "a <b>"}, [], [], ["<i>"]) == []
    assert format_problems({}, [], [], ["x"]) == []
    assert format_problems({}, [], [], ["X"]) == []  # no body at all carries nothing


def test_format_problems_check_safety_only_when_asked() -> None:
    content = {"body": "b", "format": HTML_FORMAT, "formatted_body": "<script>x</script>"}
    assert format_problems(content, [], [], []) == []
    assert format_problems(content, [], [], [], safe=True) == [
        "<script> is not a tag Matrix clients render", "formatted_body: '<script>x</script>'"]


@pytest.mark.parametrize(("html", "problems"), [
    ('<a href="javascript:x()">j</a>', ["<a href='javascript:x()'> uses an unsafe URL scheme"]),
    ('<a href=" JAVASCRIPT:x()">j</a>', ["<a href=' JAVASCRIPT:x()'> uses an unsafe URL scheme"]),
    ('<img src="data:image/png;base64,x">', ["<img src='data:image/png;base64,x'> uses an unsafe URL scheme"]),
    ('<img src="https://e.org/a.png">', ["<img src='https://e.org/a.png'> is not an mxc:// URL"]),
    ('<img src="/a.png">', ["<img src='/a.png'> is not an mxc:// URL"]),
    ('<a href="/x:y">x</a>', []),  # a colon after the first slash is a path, not a scheme
    ('<a href="matrix:r/x">x</a><a href="http://e.org">y</a>', []),
    ("<img>", []),
    ('<img alt="a picture" title="t" src="mxc://hs/abc">', []),  # only href and src carry URLs
    ('<a onclick="x()" href="https://e.org">x</a>', ["<a> carries an event handler attribute onclick"]),
    ("<mx-reply>q</mx-reply><details><summary>s</summary></details>", []),
    ("<blink>x</blink>", ["<blink> is not a tag Matrix clients render"]),
])
def test_html_safety_problems_are_exact(html: str, problems: list[str]) -> None:
    assert html_safety_problems(html) == problems


# --- parts ---------------------------------------------------------------------------------------------------


def part(event_id: str, body: str, **over: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "m.room.message", "content": {"msgtype": "m.text", "body": body}, **over}


def test_parts_problems_are_exact() -> None:
    parts = [part("$1", "one two"), part("$2", "three")]
    assert parts_problems(parts, ["$1", "$2"], None, 3, 7) == ["the reply came as 2 part(s), expected at least 3"]
    assert parts_problems(parts, ["$1", "$2"], "one two three", 2, 7) == []  # exactly at the limit is fine
    assert parts_problems([None, *parts, None], ["$1", "$2"], None, 2, 99) == ["2 part(s) never appeared in the room"]
    odd = [part("$1", "x", type="m.room.notice"), part("$2", ""), {"event_id": "$3"}]
    found = parts_problems(odd, [], None, 1, 99)
    assert [p.split(":")[0] for p in found] == [f"part {i} is not a text message with a body" for i in (1, 2, 3)]
    assert found[0].endswith("m.room.notice from=None id=$1 body='x'")
    long = "w " * 150
    joined = parts_problems([part("$1", long)], [], "other", 1, 999)
    assert joined == [f"the parts joined do not read as the expected text: {long[:200]!r}…"]


def test_a_part_without_a_body_adds_no_text_to_the_joined_parts() -> None:
    found = parts_problems([{"event_id": "$1", "type": "m.room.message", "content": {"msgtype": "m.text"}}], [], "",
                           1, 9)
    assert found == ["part 1 is not a text message with a body: m.room.message from=None id=$1"]


def test_parts_out_of_order_only_counts_parts_seen_in_the_room() -> None:
    parts = [part("$1", "a"), part("$2", "b")]
    assert parts_problems(parts, ["$2", "$x"], None, 2, 9) == []
    assert parts_problems(parts, ["$2", "$1"], None, 2, 9) == ["the parts appeared in the room out of order"]


# --- edit chains ---------------------------------------------------------------------------------------------


def test_chain_problems_list_the_chain_after_its_problems_and_nothing_when_sound() -> None:
    draft = reply("dra")
    events = [draft, edit("$reply", "draft done", "$e1", 1), edit("$other", "x", "$e9")]
    assert chain_problems(draft, events, BOT, ChainRules(final_body="draft done")) == []
    found = chain_problems(draft, events, BOT, ChainRules(final_body="else"))
    assert found == ["the final text is 'draft done', expected the complete answer 'else'",
                     "draft $reply m.text: 'dra' mentions={}", "edit 1 $e1: 'draft done' mentions={}"]


# --- the whole reply -----------------------------------------------------------------------------------------


def test_a_reply_with_every_problem_lists_them_reader_first() -> None:
    event = {**reply("wrong", relates={"m.in_reply_to": {"event_id": "$ask"}}), "room_id": "!elsewhere",
             "decrypted": True}
    event["content"].update(msgtype="m.notice", format=HTML_FORMAT, formatted_body="<i>x</i>")
    want = ReplyWant(body="right", contains="needle", thread_root="$root", msgtype="m.text", encrypted=False,
                     formatted_contains=["<b>"], after="$later", after_step="later", streamed=True)
    found = judge_reply(event, TRIGGER, want, [event], BOT)
    assert found == [
        "msgtype 'm.notice' != expected 'm.text'",
        "body 'wrong' does not contain 'needle'",
        "body 'wrong' != expected 'right'",
        "formatted_body does not contain '<b>'", "formatted_body: '<i>x</i>'",
        "expected rel_type m.thread, got m.relates_to={'m.in_reply_to': {'event_id': '$ask'}}",
        "0 edit(s), expected at least 1", "the final text is 'wrong', expected the complete answer 'right'",
        "draft $reply m.notice: 'wrong' mentions={}",
        "the reply is in room !elsewhere, the message was in !r",
        "the reply was encrypted",
        "reply $reply came before the reply of 'later' ($later)",
    ]


def test_a_good_reply_has_no_problem_and_is_judged_by_its_latest_edit() -> None:
    event = reply("draft", relates=THREAD)
    events = [{"event_id": "$earlier"}, event, edit("$reply", "final answer", "$e1", 5)]
    want = ReplyWant(body="final answer", contains="answer", thread_root="$root", msgtype="m.text", encrypted=False,
                     after="$earlier", after_step="first", streamed=True)
    assert judge_reply(event, TRIGGER, want, events, BOT) == []
    assert judge_reply(event, TRIGGER, ReplyWant(), events, BOT) == []
    assert judge_reply(event, TRIGGER, ReplyWant(body=" final answer"), events, BOT) == [
        "body 'final answer' != expected ' final answer'"]  # the reply is stripped, the expectation is not


def test_encryption_and_order_are_checked_either_way() -> None:
    clear = reply("x")
    assert judge_reply(clear, TRIGGER, ReplyWant(encrypted=True), [clear], BOT) == ["the reply was sent in the clear"]
    assert judge_reply({**clear, "decrypted": True}, TRIGGER, ReplyWant(encrypted=True), [clear], BOT) == []
    events = [clear, {"event_id": "$later"}]
    assert judge_reply(clear, TRIGGER, ReplyWant(after="$later", after_step="s"), events, BOT) == [
        "reply $reply came before the reply of 's' ($later)"]
    assert judge_reply(clear, TRIGGER, ReplyWant(after="$reply", after_step="s"), events, BOT) == []
    assert judge_reply(clear, TRIGGER, ReplyWant(top_level=True, no_relation=True), events, BOT) == []


def test_a_split_reply_is_judged_by_its_parts_joined_not_by_its_first_part() -> None:
    first = reply("one two", relates=THREAD)
    second = {**reply("three", event_id="$p2", relates={**THREAD, "m.in_reply_to": {"event_id": "$x"}})}
    want = ReplyWant(body="one two three", thread_root="$root", parts_min=2, chunk_limit=7, streamed=True)
    assert want.whole_body is None and ReplyWant(body="b").whole_body == "b"
    events = [first, second]
    found = judge_reply(first, TRIGGER, want, events, BOT, [first, second, None])
    assert found == ["1 part(s) never appeared in the room",
                     "part 2: m.in_reply_to $x != triggering event $ask", "0 edit(s), expected at least 1",
                     "draft $reply m.text: 'one two' mentions={}"]
    assert judge_reply(first, TRIGGER, want, events, BOT, [first])[0] == \
        "the reply came as 1 part(s), expected at least 2"
    top = ReplyWant(body="one two", parts_min=2, top_level=True, no_relation=True, chunk_limit=99)
    plain = reply("one")
    found = judge_reply(plain, TRIGGER, top, [plain], BOT, [plain, reply("two", event_id="$p2", relates=THREAD)])
    # A part the room's order does not hold yet is not "out of order".
    assert found == [f"part 2: expected a top-level reply with no m.relates_to, got m.relates_to={THREAD!r}"]


# The tags a Matrix client may render (the spec's suggested set, plus mx-reply), written out: the allowlist is a
# contract with clients, so each entry is pinned here rather than read back from the module.
SPEC_TAGS = [
    "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup", "sub", "li", "b", "i",
    "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead", "tbody", "tr", "th", "td", "caption", "pre",
    "span", "img", "details", "summary", "mx-reply",
]


def test_every_tag_matrix_renders_is_safe_and_nothing_else_is() -> None:
    assert html_safety_problems("".join(f"<{tag}>x</{tag}>" for tag in SPEC_TAGS)) == []
    assert html_safety_problems("<script>x</script><iframe></iframe>") == [
        "<script> is not a tag Matrix clients render", "<iframe> is not a tag Matrix clients render"]


@pytest.mark.parametrize("scheme", ["https:", "http:", "mailto:", "matrix:", "mxc:"])
def test_each_safe_scheme_is_safe_for_a_link(scheme: str) -> None:
    assert html_safety_problems(f'<a href="{scheme}//x">x</a>') == []


def test_a_split_reply_whose_parts_came_out_of_order_says_so() -> None:
    first, second = reply("one"), reply("two", event_id="$p2")
    want = ReplyWant(body="one two", parts_min=2)
    assert judge_reply(first, TRIGGER, want, [second, first], BOT, [first, second]) == [
        "the parts appeared in the room out of order"]


def test_the_default_part_limit_is_the_bots_default_text_chunk_limit() -> None:
    want = ReplyWant(parts_min=1)
    assert judge_reply(reply("x" * 4000), TRIGGER, want, [], BOT, [reply("x" * 4000)]) == []
    assert judge_reply(reply("x" * 4001), TRIGGER, want, [], BOT, [reply("x" * 4001)]) == [
        "part 1 has 4001 characters, over the limit of 4000"]


def test_formatting_asks_can_be_given_one_at_a_time() -> None:
    content = {"body": "b", "format": HTML_FORMAT, "formatted_body": "<b>x</b>"}
    event = {**reply("b"), "content": content}
    assert judge_reply(event, TRIGGER, ReplyWant(formatted_excludes=["<i>"]), [event], BOT) == []
    assert judge_reply(event, TRIGGER, ReplyWant(formatted_contains=["<b>"]), [event], BOT) == []
    assert judge_reply(event, TRIGGER, ReplyWant(body_excludes=["b"]), [event], BOT) == [
        "body contains 'b' (the plain body must be plain)"]
