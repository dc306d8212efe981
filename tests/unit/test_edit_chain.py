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
