"""The lock picture's interval arithmetic and labels at their edges (mutation testing found them unpinned):
touching holds merge, the two-pointer intersection walks every interval on both sides, a zero-length hold is
still a hold, a turn with only holds or only I/O is still drawn, and names are cut to their limits."""

from __future__ import annotations

from typing import Any

from qa.report.lock_timeline import (
    ATTEMPT_CHARS,
    intersections,
    mermaid_gantt,
    scenario_timelines,
    short_session,
    union,
)


def turn(**fields: Any) -> dict[str, Any]:
    return {"scenario": "s", "session": "!room:hs/main", "attempt": "turn-1", "startT": 1000.0, **fields}


def test_touching_intervals_merge_into_one() -> None:
    assert union([(5, 8), (0, 5)]) == [(0, 8)]
    assert union([(0, 4), (5, 8)]) == [(0, 4), (5, 8)]


def test_intersections_walk_every_interval_on_both_sides() -> None:
    many = [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert intersections(many, [(0.5, 6.5)]) == [(0.5, 1), (2, 3), (4, 5), (6, 6.5)]
    assert intersections([(0.5, 6.5)], many) == [(0.5, 1), (2, 3), (4, 5), (6, 6.5)]
    assert intersections([(0, 2), (3, 5), (6, 9)], [(1, 4), (4.5, 7), (8, 10)]) == \
        [(1, 2), (3, 4), (4.5, 5), (6, 7), (8, 9)]


def test_a_zero_length_hold_is_drawn_and_a_reversed_one_is_not() -> None:
    (tl,) = scenario_timelines({"turns": [turn(holds=[[5, 5], [9, 7]], modelIo=[[10, 20]])]})
    lock = next(lane for lane in tl.lanes if lane.what == "lock")
    assert [(b.start, b.end) for b in lock.bars] == [(0.0, 0.0)]


def test_a_turn_with_only_holds_or_only_io_is_drawn_one_with_neither_is_not() -> None:
    timelines = scenario_timelines({"turns": [
        turn(scenario="holds-only", holds=[[0, 3]]),
        turn(scenario="io-only", modelIo=[[0, 30]]),
        turn(scenario="nothing"),
    ]})
    assert [t.scenario for t in timelines] == ["holds-only", "io-only"]
    assert [lane.what for lane in timelines[0].lanes] == ["lock"]
    assert [lane.what for lane in timelines[1].lanes] == ["model I/O"]


def test_a_turn_of_another_kind_is_labelled_with_it() -> None:
    (tl,) = scenario_timelines({"turns": [turn(kind="compaction", holds=[[0, 1]]),
                                          turn(attempt="turn-2", kind="turn", holds=[[2, 3]])]})
    assert [lane.turn for lane in tl.lanes] == ["turn-1 (compaction)", "turn-2"]
    (unnamed,) = scenario_timelines({"turns": [{"startT": 0, "holds": [[0, 1]]}]})
    assert (unnamed.scenario, unnamed.lanes[0].session, unnamed.lanes[0].turn) == ("run", "?", "?")


def test_even_a_fraction_of_a_millisecond_of_overlap_is_a_failed_picture() -> None:
    (tl,) = scenario_timelines({"turns": [turn(holds=[[0, 10.4]], modelIo=[[10, 20]])]})
    assert tl.failed and tl.overlap_ms == 0.4
    assert "lock held during I/O" in mermaid_gantt(tl)
    (clean,) = scenario_timelines({"turns": [turn(holds=[[0, 10]], modelIo=[[10, 20]])]})
    assert not clean.failed and "no lock held during I/O" in mermaid_gantt(clean)


def test_names_are_cut_to_their_limit_with_an_ellipsis() -> None:
    exact = "a" * ATTEMPT_CHARS
    (tl,) = scenario_timelines({"turns": [turn(attempt=exact, holds=[[0, 1]]),
                                          turn(attempt=exact + "b", holds=[[2, 3]])]})
    assert [lane.turn for lane in tl.lanes] == [exact, "a" * (ATTEMPT_CHARS - 1) + "…"]
    assert short_session("!abcdefghijkl:hs/main") == "!abcdefgh…/main"  # the report's one rule (qa.report.text)
    assert short_session("!abc:hs/main") == "!abc/main"
    assert short_session("!abc:hs") == "!abc"


def _tasks(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if " :" in line]


def test_the_mermaid_chart_says_what_it_left_out_and_names_each_session_once() -> None:
    turns = [turn(attempt=f"turn-{i}", startT=1000.0 + 100 * i, holds=[[0, 5]], modelIo=[[10, 20]])
             for i in range(5)]
    (tl,) = scenario_timelines({"turns": turns}, max_turns=3)
    text = mermaid_gantt(tl, max_tasks=4)
    title = next(line for line in text.splitlines() if line.strip().startswith("title"))
    assert "2 more turns not drawn" in title and "2 more bars not drawn" in title, title
    assert "s - no lock held during I/O (" in title
    sections = [line.strip() for line in text.splitlines() if line.strip().startswith("section")]
    assert sections == ["section turn 1", "section turn 2"]
    assert len(_tasks(text)) == 4


def test_a_zero_width_bar_is_still_one_millisecond_wide_and_overlap_follows_its_hold() -> None:
    (tl,) = scenario_timelines({"turns": [turn(holds=[[3, 3], [10, 30]], modelIo=[[20, 40]])]})
    tasks = _tasks(mermaid_gantt(tl))
    assert tasks[0].endswith(":3600000, 3600001"), tasks  # the instant hold, drawn 1 ms wide
    assert [t.split(" :")[0] for t in tasks[:3]] == ["held 0.0 ms", "held 20.0 ms", "held during I/O 10.0 ms"]
    assert tasks[2].endswith(":crit, 3600017, 3600027"), tasks


def test_the_axis_switches_to_minutes_past_a_minute() -> None:
    (short,) = scenario_timelines({"turns": [turn(holds=[[0, 59_999]])]})
    (long,) = scenario_timelines({"turns": [turn(holds=[[0, 60_000]])]})
    assert "axisFormat %-S.%L s\n" in mermaid_gantt(short) and "axisFormat %-M:%S min\n" in mermaid_gantt(long)
    (quick,) = scenario_timelines({"turns": [turn(holds=[[0, 999]])]})
    (second,) = scenario_timelines({"turns": [turn(holds=[[0, 1000]])]})
    assert "axisFormat %-L ms\n" in mermaid_gantt(quick) and "axisFormat %-S.%L s\n" in mermaid_gantt(second)
