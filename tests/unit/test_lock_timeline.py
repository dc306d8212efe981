"""The lock evidence as a picture: interval model, Mermaid gantt and SVG, from lock_evidence's own output."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from qa.report.lock_evidence import analyze_lock_evidence
from qa.report.lock_picture import write_lock_pictures
from qa.report.lock_timeline import (
    intersections,
    mermaid_gantt,
    mermaid_text,
    scenario_timelines,
    tag_scenarios,
)
from qa.report.summary import ScenarioResult
from qa.report.svg import COLOURS, nice_step, render_svg
from tests.unit.test_lock_evidence import attempt_scope_turn, narrow_turn, rec

SVG = "{http://www.w3.org/2000/svg}"


def lock_of(records: list[dict[str, Any]], scenario: str = "lock-scenario") -> dict[str, Any]:
    lock = analyze_lock_evidence(records).model_dump(mode="json", by_alias=True)
    tag_scenarios(lock, {scenario: records})
    return lock


def bars(tl: Any, kind: str) -> list[tuple[float, float]]:
    return [(b.start, b.end) for lane in tl.lanes for b in lane.bars if b.kind == kind]


def svg_rects(text: str, kind: str) -> list[ET.Element]:
    return [r for r in ET.fromstring(text).iter(f"{SVG}rect") if r.get("class") == kind]


def test_intersections_are_the_stretches_both_cover_and_touching_is_not_overlap() -> None:
    assert intersections([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert intersections([(0, 10)], [(10, 20)]) == []
    # Parallel requests are merged first: one stretch, not the same milliseconds twice.
    assert intersections([(0, 100)], [(10, 50), (20, 60)]) == [(10, 60)]


def test_legacy_whole_turn_hold_is_drawn_red_exactly_where_it_overlaps_the_model_call() -> None:
    lock = lock_of(attempt_scope_turn("!a:x", "att-1", 5000.0))
    (tl,) = scenario_timelines(lock)

    assert tl.scenario == "lock-scenario" and tl.failed
    # The turn starts at 5000; the hold 0.1 ms later is the origin; model I/O 1.0 → 800.0 is inside the hold.
    assert bars(tl, "hold") == [(0.0, pytest.approx(800.9))]
    assert bars(tl, "model") == [(pytest.approx(0.9), pytest.approx(799.9))]
    assert bars(tl, "overlap") == [(pytest.approx(0.9), pytest.approx(799.9))]
    assert tl.overlap_ms == pytest.approx(lock["totalOverlapMs"])  # the picture and the verdict agree


def test_narrow_turn_has_no_red() -> None:
    (tl,) = scenario_timelines(lock_of(narrow_turn("!a:x", "att-1", 1000.0)))
    assert not tl.failed and bars(tl, "overlap") == []
    assert len(bars(tl, "hold")) == 2 and len(bars(tl, "model")) == 1
    assert ":crit" not in mermaid_gantt(tl)
    assert svg_rects(render_svg(tl), "overlap") == []


def test_mermaid_marks_the_overlap_crit_on_a_ms_axis() -> None:
    (tl,) = scenario_timelines(lock_of(attempt_scope_turn("!a:x", "att-1", 5000.0)))
    text = mermaid_gantt(tl)
    lines = text.splitlines()

    assert lines[:5] == ["gantt", "    title lock-scenario - lock held during I/O for 799 ms", "    dateFormat x",
                         "    axisFormat %-L ms", "    todayMarker off"]
    # One short section per turn (a long label is drawn over the bars); each bar named by what and how long.
    assert lines[5:] == ["    section turn 1", "    held 801 ms :3600000, 3600801",
                         "    held during I/O 799 ms :crit, 3600001, 3600800",
                         "    model I/O 799 ms :active, 3600001, 3600800"]


def test_io_kinds_are_named_and_an_approval_wait_under_a_hold_is_red_too() -> None:
    s = {"session": "!a:x", "attempt": "att-1"}
    records = [
        rec(0.0, "turn.start", **s),
        rec(1.0, "lock.acquire", purpose="tool", **s),
        rec(2.0, "approval.wait.start", requestId="ap1", **s),
        rec(50.0, "approval.wait.end", requestId="ap1", **s),
        rec(60.0, "lock.release", purpose="tool", **s),
        rec(70.0, "media.fetch.start", requestId="m1", **s),
        rec(80.0, "media.fetch.end", requestId="m1", **s),
        rec(90.0, "turn.end", outcome="replied", **s),
    ]
    (tl,) = scenario_timelines(lock_of(records))
    assert bars(tl, "approval") == [(1.0, 49.0)] and bars(tl, "media") == [(69.0, 79.0)]
    assert bars(tl, "overlap") == [(1.0, 49.0)]
    text = mermaid_gantt(tl)
    assert "approval wait 48.0 ms :active," in text and "media fetch 10.0 ms :active," in text
    svg = render_svg(tl)
    assert [r.get("fill") for r in svg_rects(svg, "overlap")] == [COLOURS["overlap"]]


def test_a_summary_without_io_kinds_or_scenarios_still_draws() -> None:
    lock = analyze_lock_evidence(attempt_scope_turn("!a:x", "att-1", 0.0)).model_dump(mode="json", by_alias=True)
    for turn in lock["turns"]:
        turn.pop("ioKinds")
    (tl,) = scenario_timelines(lock)
    assert tl.scenario == "run" and bars(tl, "model") and tl.failed


def test_junk_in_the_lock_section_is_skipped_not_raised() -> None:
    lock = {"turns": [None, {"startT": "x"}, {"startT": 1.0, "holds": [[5, 1], "x", [1]], "modelIo": [[True, 2]]},
                      {"startT": 0.0, "holds": [[0, 5]], "modelIo": [[1, 2]], "ioKinds": "model"}]}
    (tl,) = scenario_timelines(lock)
    assert bars(tl, "hold") == [(0.0, 5.0)] and bars(tl, "model") == [(1.0, 2.0)]
    assert scenario_timelines(None) == [] and scenario_timelines({}) == []


def test_big_runs_are_bounded_and_say_how_much_was_left_out() -> None:
    records: list[dict[str, Any]] = []
    for i in range(100):
        records += narrow_turn("!a:x", f"att-{i}", i * 1000.0, model_ms=100.0)
    records += attempt_scope_turn("!b:x", "legacy", 99_500.0)  # the one that matters comes last
    (tl,) = scenario_timelines(lock_of(records), max_turns=10)

    assert tl.turns == 10 and tl.omitted_turns == 91
    assert tl.failed and any(lane.turn.startswith("legacy") for lane in tl.lanes)
    text = mermaid_gantt(tl, max_tasks=12)
    assert "91 more turns not drawn" in text.splitlines()[1]
    task_lines = [line for line in text.splitlines() if " :" in line]
    assert len(task_lines) == 12
    assert "more bars not drawn" in text.splitlines()[1]
    assert "91 more not drawn" in render_svg(tl)


def test_turns_are_drawn_per_scenario_and_session() -> None:
    one = narrow_turn("!a:x", "att-1", 0.0)
    two = attempt_scope_turn("!b:x", "att-2", 10.0) + narrow_turn("!c:x/thread/$t", "att-3", 20.0)
    lock = analyze_lock_evidence(one + two).model_dump(mode="json", by_alias=True)
    tag_scenarios(lock, {"first": one, "second": two})
    first, second = scenario_timelines(lock)
    assert (first.scenario, first.failed, second.scenario, second.failed) == ("first", False, "second", True)
    assert list(dict.fromkeys(lane.session for lane in second.lanes)) == ["!b", "!c/thread/$t"]
    # Each scenario's own origin: its first hold or I/O, not the run's.
    assert min(b.start for lane in second.lanes for b in lane.bars) == 0.0


def test_names_cannot_break_the_mermaid_syntax() -> None:
    assert mermaid_text("a:b; c#d %%e\nf `g`") == "a b c d e f g"
    assert mermaid_text(":::") == "?"


def test_svg_is_well_formed_escaped_and_keeps_tiny_holds_visible() -> None:
    s = {"session": "!<a&b>:x", "attempt": "<script>"}
    records = [rec(0.0, "turn.start", **s), rec(0.0, "lock.acquire", purpose="reply", **s),
               rec(0.1, "lock.release", purpose="reply", **s), rec(1.0, "model.request.start", requestId="r", **s),
               rec(10_000.0, "model.request.end", requestId="r", **s)]
    svg = render_svg(scenario_timelines(lock_of(records, "scenario <&>"))[0])
    root = ET.fromstring(svg)  # raises on anything unescaped
    assert "<script>" not in svg and "scenario &lt;&amp;&gt;" in svg
    (hold,) = svg_rects(svg, "hold")
    assert float(hold.get("width") or 0) >= 1.0
    assert root.get("width") == "1000"


@pytest.mark.parametrize(("span", "step"), [(0.5, 0.2), (9, 2), (800, 100), (1646, 500), (75_000, 10_000)])
def test_axis_steps_are_round(span: float, step: float) -> None:
    assert nice_step(span) == step


def test_pictures_are_written_into_each_scenarios_dir_and_listed(tmp_path: Path) -> None:
    lock = lock_of(attempt_scope_turn("!a:x", "att-1", 0.0), "s1")
    results = [ScenarioResult(id="s1", title="t", status="fail"), ScenarioResult(id="s2", title="t", status="pass")]
    written = write_lock_pictures(lock, tmp_path, results, {"s1": "s1~retry"})

    assert written == [tmp_path / "scenarios" / "s1~retry" / "lock-timeline.svg"]
    assert results[0].artifacts == {"lock-timeline": "scenarios/s1~retry/lock-timeline.svg"}
    assert results[1].artifacts == {}
    assert svg_rects(written[0].read_text(), "overlap")
