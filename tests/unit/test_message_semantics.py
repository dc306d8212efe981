"""Pure logic behind the message-semantics scenarios: edits, redactions, notices, own messages, spoofed
mentions, thread roots (qa.agent.policy); markdown, sanitizing and splitting (qa.agent.formatting); the
harness's edit content and reply checks (qa.scenario.steps.messages, qa.evidence.replies). Each test mutation of
the agent is shown to change exactly the decision it is named for."""

from __future__ import annotations

import dataclasses

import pytest

from qa.agent.config import AgentConfig, MutationsConfig
from qa.agent.formatting import (
    HTML_FORMAT,
    message_body,
    render_markdown,
    reply_contents,
    sanitize_html,
    split_text,
)
from qa.agent.policy import (
    CORRECT,
    EDIT,
    MENTION_REQUIRED,
    NOTICE,
    OWN_MESSAGE,
    REDACTION,
    UNKNOWN_ROOM,
    Mutations,
    RoomPolicy,
    conversation_root,
    decide,
    decide_redaction,
    mentions_user,
    parse_inbound,
    redacted_event_id,
    reply_thread,
)
from qa.evidence.replies import format_problems, html_safety_problems, parts_problems
from qa.scenario.steps.messages import edit_content

BOT = "@bot:hs"
ALICE = "@alice:hs"
ROOM = "!room:hs"
PILL = f'<a href="https://matrix.to/#/{BOT}">bot</a>: hi'


def event(content: dict, sender: str = ALICE, event_id: str = "$e") -> dict:
    return {"event_id": event_id, "room_id": ROOM, "sender": sender, "type": "m.room.message", "content": content}


def text(body: str = "hi", **extra: object) -> dict:
    return {"msgtype": "m.text", "body": body, **extra}


def accepted(content: dict, mutations: Mutations = CORRECT, sender: str = ALICE, **room: object) -> str:
    inbound = parse_inbound(event(content, sender), BOT, mutations)
    return decide(inbound, BOT, RoomPolicy(**room), mutations).reason  # type: ignore[arg-type]


# --- edits -----------------------------------------------------------------------------------------------------

EDIT_ADDING_MENTION = text("* bot: hi", **{
    "m.mentions": {"user_ids": [BOT]},
    "m.new_content": text("bot: hi", **{"m.mentions": {"user_ids": [BOT]}}),
    "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
})


def test_an_edit_is_never_a_trigger_even_when_its_outer_mentions_name_the_bot() -> None:
    assert accepted(EDIT_ADDING_MENTION) == EDIT
    assert accepted(EDIT_ADDING_MENTION, require_mention=False) == EDIT


def test_react_on_edits_reads_the_new_content_and_answers_it() -> None:
    bug = Mutations(react_on_edits=True)
    assert accepted(EDIT_ADDING_MENTION, bug) == "accepted"
    inbound = parse_inbound(event(EDIT_ADDING_MENTION), BOT, bug)
    assert inbound.body == "bot: hi" and not inbound.is_edit
    # The new content's own mentions decide: an edit that drops the mention is not answered even with the bug.
    dropped = {**EDIT_ADDING_MENTION, "m.new_content": text("hi", **{"m.mentions": {}})}
    assert accepted(dropped, bug) == MENTION_REQUIRED


def test_an_edit_without_new_content_stays_an_edit_under_the_mutation() -> None:
    bare = {k: v for k, v in EDIT_ADDING_MENTION.items() if k != "m.new_content"}
    assert accepted(bare, Mutations(react_on_edits=True)) == EDIT


# --- mentions ---------------------------------------------------------------------------------------------------


def test_a_pill_without_intentional_mention_is_not_a_mention() -> None:
    spoof = text("bot: hi", format=HTML_FORMAT, formatted_body=PILL, **{"m.mentions": {}})
    assert not mentions_user(spoof, BOT)
    assert mentions_user(spoof, BOT, Mutations(trust_formatted_mentions=True))
    assert accepted(spoof) == MENTION_REQUIRED
    assert accepted(spoof, Mutations(trust_formatted_mentions=True)) == "accepted"


def test_legacy_pill_and_body_fallback_apply_only_without_m_mentions() -> None:
    assert mentions_user(text("bot: hi", formatted_body=PILL), BOT)
    assert mentions_user(text(f"{BOT}: hi"), BOT)
    assert not mentions_user(text("hi", formatted_body="<b>bot</b>"), BOT)


def test_an_mxid_typed_before_a_command_is_not_a_mention() -> None:
    typed = text(f"{BOT}: !status", **{"m.mentions": {}})
    assert not mentions_user(typed, BOT)
    bug = Mutations(mxid_prefix_is_mention=True)
    assert mentions_user(typed, BOT, bug)
    assert mentions_user(text(f"  {BOT} !status", **{"m.mentions": {}}), BOT, bug)
    # Only a prefix: the id quoted later in the text is still no mention, even with the bug.
    assert not mentions_user(text(f"ask {BOT}", **{"m.mentions": {}}), BOT, bug)


# --- notices and own messages -----------------------------------------------------------------------------------


def test_notices_are_dropped_unless_the_mutation_answers_them() -> None:
    notice = {"msgtype": "m.notice", "body": "bot: hi", "m.mentions": {"user_ids": [BOT]}}
    assert accepted(notice) == NOTICE
    assert accepted(notice, Mutations(answer_notices=True)) == "accepted"
    assert accepted({**notice, "m.mentions": {}}, Mutations(answer_notices=True)) == MENTION_REQUIRED


@pytest.mark.parametrize("allow_bots", ["off", "mentions", "all"])
def test_own_messages_never_trigger_whatever_allow_bots_says(allow_bots: str) -> None:
    mine = text(f"{BOT}: hi", **{"m.mentions": {"user_ids": [BOT]}})
    room = {"require_mention": False, "allow_bots": allow_bots, "known_bots": frozenset({BOT})}
    assert accepted(mine, sender=BOT, **room) == OWN_MESSAGE
    # Even a room the bot does not know: the own-sender check comes first.
    assert decide(parse_inbound(event(mine, BOT), BOT), BOT, None).reason == OWN_MESSAGE
    assert accepted(mine, Mutations(answer_own_messages=True), sender=BOT, require_mention=False) == "accepted"


# --- redactions -------------------------------------------------------------------------------------------------


def test_a_redaction_is_never_a_trigger() -> None:
    assert decide_redaction(ALICE, BOT, RoomPolicy(require_mention=False)).reason == REDACTION
    assert not decide_redaction(ALICE, BOT, RoomPolicy()).accept
    assert decide_redaction(BOT, BOT, RoomPolicy()).reason == OWN_MESSAGE
    assert decide_redaction(ALICE, BOT, None).reason == UNKNOWN_ROOM


def test_the_redacted_event_is_read_from_content_first_then_the_top_level() -> None:
    assert redacted_event_id({"content": {"redacts": "$new"}, "redacts": "$old"}) == "$new"
    assert redacted_event_id({"content": {}, "redacts": "$old"}) == "$old"
    assert redacted_event_id({"content": {"redacts": ""}}) is None
    assert redacted_event_id({"redacts": 5}) is None


# --- threads ----------------------------------------------------------------------------------------------------


def test_the_thread_root_is_the_threads_not_the_replied_to_event() -> None:
    deep = text(**{"m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": False,
                                    "m.in_reply_to": {"event_id": "$answer"}}})
    assert parse_inbound(event(deep), BOT).thread_root == "$root"
    assert parse_inbound(event(deep), BOT, Mutations(thread_root_from_reply=True)).thread_root == "$answer"
    rich = text(**{"m.relates_to": {"m.in_reply_to": {"event_id": "$answer"}}})
    assert parse_inbound(event(rich), BOT, Mutations(thread_root_from_reply=True)).thread_root is None


def test_thread_replies_modes() -> None:
    assert conversation_root(None, "$e", "always") == "$e"
    assert conversation_root("$root", "$e", "always") == "$root"
    assert conversation_root(None, "$e", "inbound") is None
    assert conversation_root(None, "$e", "off") is None
    assert conversation_root("$root", "$e", "off") == "$root"
    assert reply_thread("$root", "off") is None
    assert reply_thread("$root", "inbound") == "$root"
    assert reply_thread(None, "always") is None


# --- config -----------------------------------------------------------------------------------------------------


def test_every_config_mutation_reaches_the_policy_or_the_bot_under_its_own_name() -> None:
    fields = {f.name for f in dataclasses.fields(Mutations)}
    for name, field in MutationsConfig.model_fields.items():
        config = MutationsConfig.model_validate({field.alias: True})
        policy = config.policy()
        if name in fields:
            assert getattr(policy, name) is True and sum(dataclasses.astuple(policy)) == 1, name
        else:
            assert policy == CORRECT, name
    assert MutationsConfig().policy() == CORRECT


def test_replies_settings_default_and_yaml_off() -> None:
    base = {"homeserver": "h", "userId": BOT, "stateDir": "/s", "rooms": {}, "model": {"baseUrl": "b", "model": "m"}}
    config = AgentConfig.model_validate(base)
    assert (config.replies.text_chunk_limit, config.replies.thread_replies, config.replies.markdown) == (
        4000, "inbound", True)
    off = AgentConfig.model_validate({**base, "replies": {"threadReplies": False}})
    assert off.replies.thread_replies == "off"


# --- formatting -------------------------------------------------------------------------------------------------

HOSTILE = "**bold** <script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))"


def test_markdown_is_rendered_and_model_html_is_escaped() -> None:
    html = render_markdown(HOSTILE)
    assert "<strong>bold</strong>" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html
    assert html_safety_problems(html) == []


def test_raw_html_mutation_lets_the_models_html_through() -> None:
    html = render_markdown(HOSTILE, raw_html=True)
    assert "<script>" in html
    assert any("<script>" in p for p in html_safety_problems(html))


def test_the_sanitizer_keeps_matrix_tags_and_drops_the_rest() -> None:
    dirty = ('<p onclick="x()">a <a href="javascript:x()">j</a> <a href="https://e.org/" target="_blank">ok</a>'
             '<iframe src="https://e.org"></iframe><code class="language-py">c</code><ol start="3"><li>i</li></ol></p>')
    clean = sanitize_html(dirty)
    assert "onclick" not in clean and "javascript" not in clean and "iframe" not in clean and "target" not in clean
    assert '<a href="https://e.org/">ok</a>' in clean
    assert '<code class="language-py">c</code>' in clean and '<ol start="3">' in clean


def test_plain_prose_gets_no_formatted_body_and_markdown_does() -> None:
    assert message_body("just words & more") == {"msgtype": "m.text", "body": "just words & more"}
    rich = message_body("a **b**")
    assert rich["format"] == HTML_FORMAT and rich["formatted_body"] == "<p>a <strong>b</strong></p>"
    assert rich["body"] == "a **b**"


@pytest.mark.parametrize(("text", "limit", "parts"), [
    ("short", 10, ["short"]),
    ("exactly10!", 10, ["exactly10!"]),
    ("aaaa bbbb cccc", 9, ["aaaa bbbb", "cccc"]),
    ("aaaa\n\nbbbb cc", 11, ["aaaa", "bbbb cc"]),
    ("aa bb\ncc dd", 8, ["aa bb", "cc dd"]),
    ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
    ("  padded  ", 3, ["pad", "ded"]),
    ("", 5, []),
])
def test_split_text_cuts_where_a_reader_would(text: str, limit: int, parts: list[str]) -> None:
    assert split_text(text, limit) == parts
    assert all(0 < len(p) <= limit for p in parts)
    assert " ".join(parts).split() == text.split() or limit < max((len(w) for w in text.split()), default=0)


def test_split_text_prefers_a_paragraph_break_over_a_later_space() -> None:
    assert split_text("one two\n\nthree four five", 20) == ["one two", "three four five"]
    assert split_text("one two\nthree four", 15) == ["one two", "three four"]


def test_split_text_refuses_a_non_positive_limit() -> None:
    with pytest.raises(ValueError, match="positive"):
        split_text("x", 0)


def test_reply_contents_are_each_complete_and_truncation_loses_parts() -> None:
    relation = {"rel_type": "m.thread", "event_id": "$root"}
    contents = reply_contents("**a** " + "word " * 30, relation, limit=40)
    assert len(contents) > 2
    for content in contents:
        assert content["m.relates_to"] == relation and content["m.mentions"] == {} and content["body"]
        assert len(content["body"]) <= 40
    assert contents[0]["formatted_body"].startswith("<p><strong>a</strong>")
    assert len(reply_contents("word " * 30, None, limit=40, truncate=True)) == 1
    assert "m.relates_to" not in reply_contents("x", None, limit=40)[0]
    plain = reply_contents("**a**", None, limit=40, markdown=False)[0]
    assert plain == {"msgtype": "m.text", "body": "**a**", "m.mentions": {}}


# --- harness helpers --------------------------------------------------------------------------------------------


def test_edit_content_names_only_newly_mentioned_users_outside() -> None:
    new = text("bot: hi", **{"m.mentions": {"user_ids": [BOT]}, "format": HTML_FORMAT, "formatted_body": PILL})
    added = edit_content("$orig", new, ())
    assert added["m.mentions"] == {"user_ids": [BOT]}
    assert added["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$orig"}
    assert added["body"] == "* bot: hi" and added["formatted_body"] == f"* {PILL}"
    assert added["m.new_content"]["body"] == "bot: hi"
    kept = edit_content("$orig", new, (BOT,))
    assert kept["m.mentions"] == {}
    assert edit_content("$orig", text("hi", **{"m.mentions": {}}), ())["m.mentions"] == {}
    threaded = edit_content("$o", {**text(), "m.relates_to": {"rel_type": "m.thread"}}, ())
    assert "m.relates_to" not in threaded["m.new_content"]


def test_format_problems() -> None:
    good = {"body": "**a**", "format": HTML_FORMAT, "formatted_body": "<p><strong>a</strong> &lt;script&gt;</p>"}
    assert format_problems(good, ["<strong>a</strong>"], ["<script"], ["<strong>"], safe=True) == []
    assert format_problems({"body": "a"}, ["a"], [], []) [0].startswith("no org.matrix.custom.html")
    assert format_problems({"body": "a"}, [], [], [], safe=True)[0].startswith("no org.matrix.custom.html")
    assert format_problems({"body": "<b>a</b>"}, [], [], ["<b>"]) == [
        "body contains '<b>' (the plain body must be plain)"]
    bad = {**good, "formatted_body": "<p><SCRIPT>x</SCRIPT></p>"}
    problems = format_problems(bad, [], ["<script"], [], safe=True)
    assert "formatted_body contains '<script'" in problems
    assert "<script> is not a tag Matrix clients render" in problems


@pytest.mark.parametrize(("html", "problem"), [
    ('<img src="https://e.org/x.png">', "not an mxc:// URL"),
    ('<img src="mxc://hs/abc">', None),
    ('<a href="JavaScript:alert(1)">x</a>', "unsafe URL scheme"),
    ('<a href="relative/path">x</a>', None),
    ('<a href="mailto:a@b">x</a>', None),
    ('<p onmouseover="x()">a</p>', "event handler"),
    ("<style>p{}</style>", "<style> is not a tag"),
    ("&lt;iframe&gt;", None),
])
def test_html_safety(html: str, problem: str | None) -> None:
    found = html_safety_problems(html)
    assert (found == []) if problem is None else any(problem in p for p in found)


def part(event_id: str, body: str, msgtype: str = "m.text") -> dict:
    return {"event_id": event_id, "type": "m.room.message", "content": {"msgtype": msgtype, "body": body}}


def test_parts_problems() -> None:
    parts = [part("$1", "one two"), part("$2", "three")]
    order = ["$0", "$1", "$x", "$2"]
    assert parts_problems(parts, order, "one  two\n\nthree", 2, 10) == []
    assert parts_problems(parts[:1], order, None, 2, 10) == ["the reply came as 1 part(s), expected at least 2"]
    assert "1 part(s) never appeared in the room" in parts_problems([parts[0], None], order, None, 2, 10)
    assert parts_problems(parts, ["$2", "$1"], None, 2, 10) == ["the parts appeared in the room out of order"]
    assert parts_problems(parts, order, None, 2, 6) == ["part 1 has 7 characters, over the limit of 6"]
    assert parts_problems(parts, order, "one two three four", 2, 10)[0].startswith("the parts joined do not read")
    assert parts_problems(list(reversed(parts)), order, "one two three", 2, 10)[-1].startswith("the parts joined")
    notice = parts_problems([part("$1", "x", "m.notice"), parts[1]], order, None, 2, 10)
    assert notice[0].startswith("part 1 is not a text message")
