"""Edit-chain checks of streamed replies (qa.evidence.edits)."""

from __future__ import annotations

from typing import Any

from qa.agent.streaming import draft_content, edit_content
from qa.evidence.edits import ChainRules, check_chain, edits_of

BOT = "@bot:hs"


def event(event_id: str, content: dict[str, Any], ts: int, sender: str = BOT) -> dict[str, Any]:
    return {"type": "m.room.message", "event_id": event_id, "sender": sender, "origin_server_ts": ts,
            "content": content}


def chain(*texts: str, draft_type: str = "m.text") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    draft = event("$d", draft_content("draft …", draft_type, None), 1)
    return draft, [event(f"$e{i}", edit_content("$d", t), 10 + i) for i, t in enumerate(texts)]


def test_a_sound_chain_passes() -> None:
    draft, edits = chain("Hel …", "Hello")
    assert check_chain(draft, edits, BOT, ChainRules(min_edits=1, max_edits=2, final_body="Hello",
                                                     draft_msgtype="m.text")) == []


def test_edits_are_found_by_relation_in_observed_order() -> None:
    draft, edits = chain("a", "b")
    other = event("$x", edit_content("$other", "c"), 5)
    assert [e["event_id"] for e in edits_of("$d", [draft, edits[0], other, edits[1]])] == ["$e0", "$e1"]


def test_count_bounds() -> None:
    draft, edits = chain("a", "b", "c")
    assert check_chain(draft, edits, BOT, ChainRules(max_edits=2)) == ["3 edit(s), expected at most 2 (edits must "
                                                                         "be paced)"]
    assert check_chain(draft, [], BOT, ChainRules(min_edits=1)) == ["0 edit(s), expected at least 1"]


def test_final_must_be_the_complete_answer_and_an_m_text() -> None:
    draft, edits = chain("Hello wor")
    assert "expected the complete answer 'Hello world'" in check_chain(draft, edits, BOT,
                                                                     ChainRules(final_body="Hello world"))[0]
    edits[-1]["content"]["m.new_content"]["msgtype"] = "m.notice"
    draft, _ = chain()
    assert check_chain(draft, edits, BOT, ChainRules(final_body="Hello wor")) == [
        "the final edit is 'm.notice', not an m.text answer"]


def test_pings_anywhere_in_the_chain_are_problems() -> None:
    draft, edits = chain("a", "@room b")
    edits[1]["content"]["m.new_content"]["m.mentions"] = {"room": True}
    problems = check_chain(draft, edits, BOT, ChainRules())
    assert problems == ["edit 2 ($e1) m.new_content pings: m.mentions {'room': True}"]
    del draft["content"]["m.mentions"]
    assert "the draft pings: no m.mentions" in check_chain(draft, edits[:1], BOT, ChainRules())[0]


def test_order_sender_draft_type_and_what_previews_showed() -> None:
    draft, edits = chain("🔧 exec (running) …", "answer", draft_type="m.notice")
    edits[1]["origin_server_ts"] = 0
    edits[0]["sender"] = "@mallory:hs"
    problems = check_chain(draft, edits, BOT, ChainRules(draft_msgtype="m.text", some_edit_contains=["(done)"],
                                                         no_edit_contains=["🔧"]))
    assert problems == [
        "the draft is 'm.notice', expected 'm.text'",
        "edits not sent by the bot: $e0",
        "edits arrived out of order (a later edit has an earlier server timestamp)",
        "no preview showed '(done)'",
        "edit 1 showed '🔧', which it must not",
    ]


def test_an_empty_draft_is_not_a_sensible_body() -> None:
    draft, edits = chain("a")
    draft["content"]["body"] = " "
    assert check_chain(draft, edits, BOT, ChainRules())[0].startswith("the draft has an empty body")


# --- timing (issue 27): what a bot that buffers the answer and bursts the edits out cannot fake ---------------

from qa.evidence.edits import Timing, timing_problems  # noqa: E402


def timed(*stamped: tuple[str, int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (first, at), *rest = stamped
    draft = event("$d", draft_content(first, "m.text", None), at)
    return draft, [event(f"$e{i}", edit_content("$d", t), ts) for i, (t, ts) in enumerate(rest, start=1)]


GROWING = timed(("He …", 1000), ("Hello …", 1250), ("Hello wor…", 1500), ("Hello world", 1510))


def test_a_real_preview_has_no_timing_problems() -> None:
    draft, edits = GROWING
    assert timing_problems(draft, edits, Timing(min_interval_ms=250, stream_end_ms=1400, grows=True)) == []
    assert timing_problems(draft, edits, Timing()) == []  # nothing asked, nothing checked


def test_a_draft_after_the_stream_ended_is_a_buffered_answer() -> None:
    draft, edits = GROWING
    assert timing_problems(draft, edits, Timing(stream_end_ms=1000)) == []  # the same millisecond is in time
    problems = timing_problems(draft, edits, Timing(stream_end_ms=990))
    assert problems == ["the draft reached the homeserver 10 ms after the model's stream ended: the answer was "
                        "buffered, not previewed as it came"]


def test_preview_edits_are_paced_within_the_tolerance_and_the_final_edit_is_not() -> None:
    draft, edits = timed(("a", 1000), ("ab", 1199), ("abc", 1398), ("abcd", 1399))
    assert timing_problems(draft, edits, Timing(min_interval_ms=250)) == [
        "edit 1 came 199 ms after the draft, under the edit interval of 250 ms (tolerance 50 ms)",
        "edit 2 came 199 ms after edit 1, under the edit interval of 250 ms (tolerance 50 ms)"]
    assert timing_problems(draft, edits, Timing(min_interval_ms=250, tolerance_ms=51)) == []
    draft, edits = timed(("a", 1000), ("ab", 1250))  # the boundary: exactly the interval is fine
    assert timing_problems(draft, edits, Timing(min_interval_ms=250, tolerance_ms=0)) == []


def test_a_missing_timestamp_is_not_a_gap() -> None:
    draft, edits = timed(("a", 1000), ("ab", 1001), ("abc", 1002))
    draft = {**draft, "origin_server_ts": None}
    assert timing_problems(draft, edits, Timing(min_interval_ms=250, stream_end_ms=0)) == []


def test_each_edit_grows_from_the_last_text_shown_less_its_cursor() -> None:
    for cursor in (" …", "…", "...", "▍", "▌", "█", ""):
        draft, edits = timed((f"Hel{cursor}", 1), ("Hello", 2))
        assert timing_problems(draft, edits, Timing(grows=True)) == [], cursor
    draft, edits = timed(("Hello …", 1), ("Goodbye …", 2), ("Goodbye", 3))
    assert timing_problems(draft, edits, Timing(grows=True)) == [
        "edit 1 does not grow from the text before it: 'Hello …' -> 'Goodbye …'"]
    draft, edits = timed(("abc  ", 1), ("abd", 2))
    assert timing_problems(draft, edits, Timing(grows=True)) != []


# --- wording, defaults and corners the mutation run found unpinned (tests/unit/MUTATION.md) -------------------

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from qa.evidence.edits import describe_chain  # noqa: E402


def test_default_rules_ask_for_one_edit_and_nothing_more() -> None:
    draft, edits = chain("a")
    assert check_chain(draft, edits, BOT, ChainRules()) == []
    assert check_chain(draft, [], BOT, ChainRules()) == ["0 edit(s), expected at least 1"]


def test_rules_and_timing_are_values_that_cannot_change() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ChainRules().min_edits = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Timing().grows = True  # type: ignore[misc]


def test_every_kind_of_ping_is_named_word_for_word() -> None:
    draft, edits = chain("a", "b")
    del draft["content"]["m.mentions"]
    edits[0]["content"]["m.mentions"] = {"user_ids": ["@alice:hs"]}  # the edit's own (fallback) content pings
    assert check_chain(draft, edits, BOT, ChainRules(min_edits=2)) == [
        "the draft pings: no m.mentions (clients then fall back to pinging whoever the body names)",
        "edit 1 ($e0) pings: m.mentions {'user_ids': ['@alice:hs']}"]
    edits[0]["content"]["m.mentions"] = {"room": False, "user_ids": []}  # present and empty: no ping
    draft["content"]["m.mentions"] = {}
    assert check_chain(draft, edits, BOT, ChainRules(min_edits=2)) == []


def test_an_edit_without_new_content_is_named_and_the_next_edit_is_still_checked() -> None:
    draft, edits = chain("a", "b")
    del edits[0]["content"]["m.new_content"]
    edits[1]["content"]["m.new_content"]["m.mentions"] = {"room": True}
    assert check_chain(draft, edits, BOT, ChainRules()) == [
        "edit 1 ($e0) has no m.new_content",
        "edit 2 ($e1) m.new_content pings: m.mentions {'room': True}"]


def test_the_final_text_is_read_from_the_last_edit_or_the_draft_and_named_whole() -> None:
    draft, edits = chain("Hello wor")
    assert check_chain(draft, edits, BOT, ChainRules(final_body="Hello world")) == [
        "the final text is 'Hello wor', expected the complete answer 'Hello world'"]
    del edits[0]["content"]["m.new_content"]["body"]  # new content without a body shows nothing
    assert check_chain(draft, edits, BOT, ChainRules(final_body="Hello world"))[-1] == (
        "the final text is '', expected the complete answer 'Hello world'")
    del edits[0]["content"]["m.new_content"]  # no new content at all: nothing either
    assert check_chain(draft, edits, BOT, ChainRules(final_body="Hello world"))[-1] == (
        "the final text is '', expected the complete answer 'Hello world'")
    # Without edits the draft is the final text.
    assert check_chain(draft, [], BOT, ChainRules(min_edits=0, final_body="draft …")) == []
    del draft["content"]["body"]
    assert check_chain(draft, [], BOT, ChainRules(min_edits=0, final_body="Hello")) == [
        "the draft has an empty body: a reader that ignores edits sees nothing",
        "the final text is '', expected the complete answer 'Hello'"]


def test_edits_by_another_of_the_bots_accounts_are_foreign_all_named() -> None:
    draft, edits = chain("a", "b", "c")
    edits[0]["sender"] = "@bot2:hs"  # the bot's, but not the draft's sender: Matrix ignores such an edit
    edits[2]["sender"] = "@mallory:hs"
    assert check_chain(draft, edits, {BOT, "@bot2:hs"}, ChainRules()) == ["edits not sent by the bot: $e0, $e2"]


def test_edits_at_the_same_server_millisecond_are_in_order() -> None:
    draft, edits = chain("a", "b")
    edits[1]["origin_server_ts"] = edits[0]["origin_server_ts"]
    assert check_chain(draft, edits, BOT, ChainRules()) == []


def test_the_draft_itself_may_show_a_forbidden_text_or_the_wanted_one() -> None:
    draft, edits = chain("a", "b")
    assert check_chain(draft, edits, BOT, ChainRules(some_edit_contains=["draft"], no_edit_contains=["draft"])) == [
        "the draft showed 'draft', which it must not"]


def test_timing_asks_nothing_by_default_even_of_a_chain_that_fails_every_check() -> None:
    draft, edits = timed(("Hello", 5000), ("Bye", 5001), ("Hi", 5002))
    assert timing_problems(draft, edits, Timing()) == []
    assert len(timing_problems(draft, edits, Timing(min_interval_ms=250, stream_end_ms=0, grows=True))) == 4


def test_a_draft_without_a_body_grows_into_any_first_edit() -> None:
    draft, edits = timed(("x", 1), ("Hello", 2))
    del draft["content"]["body"]
    assert timing_problems(draft, edits, Timing(grows=True)) == []


def test_only_the_cursor_is_taken_off_the_text_before() -> None:
    # "Hello …" -> "Help" takes back text shown before the cursor: not a growing preview.
    draft, edits = timed(("Hello …", 1), ("Help", 2))
    assert timing_problems(draft, edits, Timing(grows=True)) == [
        "edit 1 does not grow from the text before it: 'Hello …' -> 'Help'"]


def test_a_text_that_does_not_grow_is_shown_cut_to_sixty_characters() -> None:
    before, after = "a" * 61 + " …", "b" * 61
    draft, edits = timed((before, 1), (after, 2))
    assert timing_problems(draft, edits, Timing(grows=True)) == [
        f"edit 1 does not grow from the text before it: {'a' * 60!r} -> {'b' * 60!r}"]


def test_the_chain_is_described_line_by_line_with_texts_cut_to_eighty_characters() -> None:
    draft, edits = chain("x" * 81, "short", draft_type="m.notice")
    draft["content"]["body"] = "d" * 81
    edits[1]["content"]["m.mentions"] = {"room": True}
    assert describe_chain(draft, edits) == [
        f"draft $d m.notice: {'d' * 80!r} mentions={{}}",
        f"edit 1 $e0: {'x' * 80!r} mentions={{}}",
        "edit 2 $e1: 'short' mentions={'room': True}"]
    del draft["content"]["body"], draft["content"]["m.mentions"], edits[0]["content"]["m.new_content"]
    assert describe_chain(draft, edits[:1]) == ["draft $d m.notice: '' mentions=None", "edit 1 $e0: '' mentions={}"]
