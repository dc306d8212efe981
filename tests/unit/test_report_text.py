"""One rule each for durations, ids, paths and long lines, as every report writes them (qa.report.text)."""

from __future__ import annotations

import pytest

from qa.report.text import (
    CONTINUATION,
    EMPTY,
    WRAP_WIDTH,
    clip,
    deciding_first,
    fields,
    human_ms,
    humanize_durations,
    plural,
    short_id,
    short_path,
    short_session,
    shorten_ids,
    shorten_paths,
    signed_ms,
    wrap,
)

ROOM = "!qpviIePd5y44-qSk9-SlT9wzwnxZd1VkSVxv8zjvI9I"
LOCK_LINE = (f"bot trace: lock.acquire session={ROOM}:localhost/main attempt=turn-12521-2 purpose=inbound "
             "lockPath=/dev/shm/matrix-qa-djaqofw8/state/matrix-session-lock-contention/bot/sessions/"
             "qpviIePd5y44_main-a518d471e02c.jsonl.lock waitMs=1456.744")


@pytest.mark.parametrize(("ms", "shown"), [
    (None, EMPTY), (float("nan"), EMPTY), (0.0, "0.0 ms"), (0.25, "0.2 ms"), (99.94, "99.9 ms"), (99.96, "100.0 ms"),
    (100.0, "100 ms"), (999.4, "999 ms"), (1000.0, "1.00 s"), (1514.3, "1.51 s"), (59_994.0, "59.99 s"),
    (60_000.0, "1 min 00 s"), (125_000.0, "2 min 05 s"), (3_599_000.0, "59 min 59 s"), (3_600_000.0, "1 h 00 min"),
    (3_725_000.0, "1 h 02 min"),
])
def test_one_duration_formatter(ms: float | None, shown: str) -> None:
    assert human_ms(ms) == shown


def test_a_change_of_a_duration_has_its_sign() -> None:
    assert signed_ms(1440.0) == "+1.44 s"
    assert signed_ms(-12.0) == "−12.0 ms"
    assert signed_ms(0.0) == "+0.0 ms"


def test_ids_are_cut_after_eight_characters_and_lose_their_server() -> None:
    assert short_id(f"{ROOM}:localhost") == "!qpviIePd…"
    assert short_id("$D5UJt4bIxxh42hESRVmii") == "$D5UJt4bI…"
    # Ten characters or fewer stay whole: cutting them would save nothing.
    assert short_id("!abcdefghi:hs") == "!abcdefghi"
    assert short_id("$abcdefghij") == "$abcdefgh…"
    assert short_id("$short") == "$short"


def test_sessions_are_shortened_part_by_part() -> None:
    assert short_session(f"{ROOM}:localhost/main") == "!qpviIePd…/main"
    assert short_session(f"{ROOM}:hs/thread/$rootEventIdLong:hs") == "!qpviIePd…/thread/$rootEven…"
    assert short_session(None) == ""
    assert short_session("dm-alice") == "dm-alice"


def test_room_and_event_ids_are_shortened_in_free_text_user_ids_are_not() -> None:
    text = f"room {ROOM}:localhost event $D5UJt4bIxxh42hESRVmiipazwe6D from @mqa-driver-x:localhost"
    assert shorten_ids(text) == "room !qpviIePd… event $D5UJt4bI… from @mqa-driver-x:localhost"
    # Short ids and ids inside a word are left alone.
    assert shorten_ids("$abc x$abcdefghijkl a.$abcdefghijkl") == "$abc x$abcdefghijkl a.$abcdefghijkl"
    assert shorten_ids(f"{ROOM}:hs:8448/main") == "!qpviIePd…/main"


def test_paths_are_shown_from_the_run_or_by_their_last_parts() -> None:
    assert short_path("/tmp/out/run-1/scenarios/canary/bot.log") == "scenarios/canary/bot.log"
    assert short_path("/a/scenarios/x/scenarios/y/bot.log") == "scenarios/y/bot.log"
    assert short_path("/dev/shm/mqa/state/s/bot/sessions/x.lock") == "…/bot/sessions/x.lock"
    assert short_path("/tmp/s/abc.lock") == "/tmp/s/abc.lock"
    assert short_path("/a/b/c/d.lock") == "/a/b/c/d.lock"
    assert short_path("scenarios") == "scenarios"


def test_paths_in_free_text_are_shortened_urls_are_not() -> None:
    text = ("exited (log: /tmp/o/scenarios/s/bot.log) http://127.0.0.1:4/v1/chat.json "
            "PUT /_matrix/client/v3/rooms/x /a/b.txt /d/e/f/g/h.lock")
    assert shorten_paths(text) == ("exited (log: scenarios/s/bot.log) http://127.0.0.1:4/v1/chat.json "
                                   "PUT /_matrix/client/v3/rooms/x /a/b.txt …/f/g/h.lock")


def test_fields_of_a_described_record() -> None:
    assert fields("bot trace: error where=send status=403 error=M_FORBIDDEN You are not allowed tries=1") == (
        "bot trace: error", [("where", "send"), ("status", "403"), ("error", "M_FORBIDDEN You are not allowed"),
                             ("tries", "1")])
    assert fields("no fields here") == ("no fields here", [])
    assert fields("a.b=1") == ("", [("a.b", "1")])


def test_the_field_the_expectation_names_comes_first() -> None:
    line = "bot trace: lock.acquire session=!s attempt=a purpose=inbound waitMs=1456.744"
    assert deciding_first(line, "lock.acquire with waitMs <= 25") == (
        "bot trace: lock.acquire waitMs=1456.744 · session=!s attempt=a purpose=inbound")
    assert deciding_first("x waitMs=3", "waitMs <= 25") == "x waitMs=3"
    assert deciding_first(line, "a reply") == line
    assert deciding_first("waitMs=3", "waitMs") == "waitMs=3"


def test_the_issues_seen_line_reads_deciding_value_first_and_fits() -> None:
    shown = deciding_first(shorten_paths(shorten_ids(LOCK_LINE)), "lock.acquire with waitMs <= 25")
    assert shown.startswith("bot trace: lock.acquire waitMs=1456.744 · session=!qpviIePd…/main")
    assert "…/bot/sessions/qpviIePd5y44_main-a518d471e02c.jsonl.lock" in shown
    assert all(len(part) <= WRAP_WIDTH for part in wrap(shown))


def test_wrapping_breaks_before_a_field_else_at_a_space_else_hard() -> None:
    assert wrap("short") == ["short"]
    assert wrap("a" * WRAP_WIDTH) == ["a" * WRAP_WIDTH]
    assert wrap("aaa bbb ccc", width=7) == ["aaa bbb", CONTINUATION + "ccc"]
    assert wrap("k=aaaa x=bbbb", width=10) == ["k=aaaa", CONTINUATION + "x=bbbb"]
    # A field boundary before the width wins over a later space: a field stays whole.
    assert wrap("pre k=aa bb cc dd", width=14) == ["pre", CONTINUATION + "k=aa bb cc", CONTINUATION + "dd"]
    assert wrap("x" * 25, width=10) == ["x" * 10, CONTINUATION + "x" * 6, CONTINUATION + "x" * 6, CONTINUATION + "xxx"]
    # A continuation breaks after its indent, never inside it.
    assert wrap("aaaa bbbbbbbbbbbb", width=8) == ["aaaa", CONTINUATION + "bbbb", CONTINUATION + "bbbb",
                                                   CONTINUATION + "bbbb"]


def test_durations_in_sentences_use_the_same_formatter() -> None:
    assert humanize_durations("held for 1506.7ms; probe timed out after 26.1ms") == (
        "held for 1.51 s; probe timed out after 26.1 ms")
    # A whole number under a second was written as a limit and stays as written.
    assert humanize_durations("(timeout 25ms) 1200ms 7 ms") == "(timeout 25 ms) 1.20 s 7 ms"
    assert humanize_durations("turn-12ms x12ms 3msx") == "turn-12ms x12ms 3msx"


def test_clip_and_plural() -> None:
    assert clip("a  b\nc", 10) == "a b c"
    assert clip("abcdef", 4) == "abc…"
    assert clip("abcd", 4) == "abcd"
    assert plural(1, "turn") == "1 turn" and plural(2, "turn") == "2 turns" and plural(0, "reply", "replies") == \
        "0 replies"


def test_edges_found_by_mutation_testing() -> None:
    assert EMPTY == "—" and human_ms(None) == "—"
    assert WRAP_WIDTH == 100 and wrap("a" * 101) == ["a" * 100, CONTINUATION + "a"]
    # Ids of eleven characters and more are id-like; shorter `$words:x` in text are left alone.
    assert shorten_ids("$abcdefghij:hs x") == "$abcdefgh… x"
    assert shorten_ids("$abcdefg:hs and $abcdefghi:hs") == "$abcdefg:hs and $abcdefghi:hs"
    assert short_path("/a/b/c/scenarios/x.log") == "scenarios/x.log"
    assert deciding_first("XTYPE a=1 b=2X", "b") == "XTYPE b=2X · a=1"
    assert deciding_first("a=1 b=2", "b") == "b=2 · a=1"
    # A space right after the first character is a break; one just past the width is not.
    assert wrap("a bbbbbbbbbbb", width=6) == ["a", *[CONTINUATION + "bb"] * 5, CONTINUATION + "b"]
    assert wrap("aaaaaaa bb", width=6) == ["aaaaaa", CONTINUATION + "a", CONTINUATION + "bb"]
    # A field right after the first character is a break, before a later space that would also fit.
    assert wrap("a k=v wwwww", width=7) == ["a", CONTINUATION + "k=v", CONTINUATION + "www", CONTINUATION + "ww"]
    # A width no wider than the indent still makes progress.
    assert wrap("x" * 9, width=3) == ["xxxxx", *[CONTINUATION + "x"] * 4]
    # Measured values are rewritten by the one formatter; a second is a second whatever way it was written.
    assert humanize_durations("after 512.7ms, 12.34ms, 1000ms, 999ms") == "after 513 ms, 12.3 ms, 1.00 s, 999 ms"
