"""The send step's ways of writing like clients that are not ours (issue 27): a mention without `m.mentions`
(older clients, bridges), a display name typed as text, a mention only in `m.mentions`, and an explicit quote
inside a thread; each option's content, and each bad combination refused with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.actors import message_content
from qa.agent.policy import CORRECT, Mutations, mentions_user, parse_inbound
from qa.scenario.loader import ScenarioErrors, load_scenario
from qa.scenario.steps.messages import HTML_FORMAT, quoted_in_thread, with_mention

BOT = ("@qa-bot:hs", "qa-bot")
PILL = '<a href="https://matrix.to/#/@qa-bot:hs">qa-bot</a>: hi'


def content(style: str, m_mentions: bool = True) -> dict:
    return with_mention(message_content("hi"), "hi", BOT, style, m_mentions)


def test_pill_is_what_message_content_sends_for_a_mention() -> None:
    assert content("pill") == message_content("hi", mention=BOT)


@pytest.mark.parametrize(("style", "body", "formatted", "mentions"), [
    ("pill", "qa-bot: hi", PILL, {"user_ids": ["@qa-bot:hs"]}),
    ("text", "@qa-bot:hs: hi", None, {}),
    ("spoof", "qa-bot: hi", PILL, {}),
    ("display_name", "qa-bot: hi", None, {"user_ids": ["@qa-bot:hs"]}),
    ("metadata_only", "hi", None, {"user_ids": ["@qa-bot:hs"]}),
])
def test_each_mention_style(style: str, body: str, formatted: str | None, mentions: dict) -> None:
    got = content(style)
    assert got["body"] == body
    assert got.get("formatted_body") == formatted
    assert got.get("format") == (HTML_FORMAT if formatted else None)
    assert got["m.mentions"] == mentions
    assert got["msgtype"] == "m.text"


@pytest.mark.parametrize("style", ["pill", "text", "display_name"])
def test_m_mentions_false_leaves_the_key_out_and_nothing_else(style: str) -> None:
    legacy = content(style, m_mentions=False)
    assert "m.mentions" not in legacy
    assert legacy == {k: v for k, v in content(style).items() if k != "m.mentions"}


def test_no_mention_and_no_m_mentions_is_a_bare_message() -> None:
    assert with_mention(message_content("hi"), "hi", None, "pill", False) == {"msgtype": "m.text", "body": "hi"}
    assert with_mention(message_content("hi"), "hi", None, "pill") == message_content("hi")


def test_the_input_content_is_not_changed() -> None:
    plain = message_content("hi")
    with_mention(plain, "hi", BOT, "pill", False)
    assert plain == message_content("hi")


def test_the_typed_text_is_escaped_in_the_pill_and_the_name_too() -> None:
    got = with_mention(message_content("<b>"), "<b>", ("@x:hs", "a&b"), "pill")
    assert got["formatted_body"] == '<a href="https://matrix.to/#/@x:hs">a&amp;b</a>: &lt;b&gt;'
    assert got["body"] == "a&b: <b>"


def test_a_quote_in_a_thread_is_an_explicit_reply() -> None:
    relates = message_content("hi", thread_root="$root")["m.relates_to"]
    assert relates["is_falling_back"] is True
    quoted = quoted_in_thread(relates, "$earlier")
    assert quoted == {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": False,
                      "m.in_reply_to": {"event_id": "$earlier"}}
    assert relates["m.in_reply_to"] == {"event_id": "$root"}  # not changed in place


# --- what the embedded agent makes of them (the policy the scenarios hold it to) -------------------------------


def test_the_policy_on_each_client_shape() -> None:
    """m.mentions decides when present (also alone, with no visible text); without it a pill or the id counts;
    a display name typed as text never counts by itself."""
    user_id = BOT[0]
    assert mentions_user(content("pill", m_mentions=False), user_id)
    assert mentions_user(content("metadata_only"), user_id)
    assert mentions_user(content("display_name"), user_id)
    assert not mentions_user(content("display_name", m_mentions=False), user_id)
    assert mentions_user(content("text", m_mentions=False), user_id)
    assert not mentions_user(content("text"), user_id)


@pytest.mark.parametrize(("mutation", "style", "m_mentions", "correct"), [
    ("ignore_legacy_mentions", "pill", False, True),
    ("ignore_legacy_mentions", "text", False, True),
    ("display_name_is_mention", "display_name", False, False),
    ("display_name_is_mention", "spoof", True, False),
    ("visible_mention_required", "metadata_only", True, True),
    ("visible_mention_required", "display_name", True, True),
])
def test_each_mention_mutation_flips_its_case(mutation: str, style: str, m_mentions: bool, correct: bool) -> None:
    shape = content(style, m_mentions)
    assert mentions_user(shape, BOT[0], CORRECT) is correct
    assert mentions_user(shape, BOT[0], Mutations(**{mutation: True})) is not correct


def test_visible_mention_required_still_accepts_a_pill_or_the_typed_id() -> None:
    bug = Mutations(visible_mention_required=True)
    assert mentions_user(content("pill"), BOT[0], bug)
    typed = {**content("metadata_only"), "body": "@qa-bot:hs hi"}
    assert mentions_user(typed, BOT[0], bug)
    assert not mentions_user({**content("metadata_only"), "m.mentions": {"user_ids": ["@other:hs"]}}, BOT[0], bug)


def test_display_name_mutation_matches_the_localpart_case_blind() -> None:
    bug = Mutations(display_name_is_mention=True)
    assert mentions_user({"body": "QA-Bot, hi", "m.mentions": {}}, "@qa-bot:hs", bug)
    assert not mentions_user({"body": "qa-bo hi", "m.mentions": {}}, "@qa-bot:hs", bug)


def test_quote_leaves_thread_only_for_an_explicit_quote() -> None:
    relates = message_content("hi", thread_root="$root")["m.relates_to"]
    quote = {"event_id": "$e", "room_id": "!r", "sender": "@a:hs",
             "content": {"msgtype": "m.text", "body": "hi", "m.relates_to": quoted_in_thread(relates, "$x")}}
    fallback = {**quote, "content": {"msgtype": "m.text", "body": "hi", "m.relates_to": relates}}
    bug = Mutations(quote_leaves_thread=True)
    assert parse_inbound(quote, "@bot:hs").thread_root == "$root"
    assert parse_inbound(quote, "@bot:hs", bug).thread_root is None
    assert parse_inbound(fallback, "@bot:hs", bug).thread_root == "$root"


# --- bad combinations: one message naming file, line and field ----------------------------------------------------

HEAD = "id: s\ntitle: t\nprofiles: [fast]\nsteps:\n  - send: {as: driver, body: root, id: root}\n"


@pytest.mark.parametrize(("step", "says"), [
    ("{as: driver, body: hi, mention_style: display_name}", "mention_style: display_name needs `mention`"),
    ("{as: driver, body: hi, mention: bot, mention_style: metadata_only, m_mentions: false}",
     "m_mentions: false contradicts mention_style: metadata_only"),
    ("{as: driver, body: hi, mention: bot, mention_style: spoof, m_mentions: false}", "contradicts"),
    ("{as: driver, body: hi, quote: root}", "quote is an explicit reply inside a thread"),
    ("{as: driver, body: hi, thread: root, quote: root, reply_to: root}", "quote and reply_to both"),
    ("{as: driver, body: hi, thread: root, quote: nowhere}", "nowhere"),
    ("{as: driver, body: hi, m_mentions: maybe}", "m_mentions"),
])
def test_bad_send_options_name_file_and_line(tmp_path: Path, step: str, says: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + f"  - send: {step}\n", encoding="utf-8")
    with pytest.raises(ScenarioErrors) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert f"{path}:6:" in message, message
    assert says in message, message
    assert "Traceback" not in message


def test_good_send_options_load(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "  - send: {as: driver, body: a, thread: root, quote: root, mention: bot,"
                           " mention_style: metadata_only}\n"
                           "  - send: {as: driver, body: b, mention: bot, m_mentions: false}\n", encoding="utf-8")
    steps = load_scenario(path).steps
    assert steps[1].quote == "root" and steps[2].m_mentions is False  # type: ignore[union-attr]
