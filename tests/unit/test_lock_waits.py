"""The wait for the lock as its own lane (issue 31), and the pictures a reader can read: short section labels,
a minimum width for instant holds, an axis with its unit, turns numbered as the per-turn table numbers them,
and an SVG that clips nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from qa.report.lock_evidence import analyze_lock_evidence
from qa.report.lock_timeline import (
    MERMAID_ORIGIN_MS,
    MIN_BAR_PARTS,
    WAIT_LABEL,
    lock_waits,
    mermaid_gantt,
    scenario_timelines,
    tag_scenarios,
    timeline,
)
from qa.report.lock_view import turn_rows
from qa.report.svg import LABEL_W, MIN_BAR_W, RIGHT_W, WIDTH, bar_box, render_svg, verdict_text
from tests.unit.test_lock_evidence import attempt_scope_turn, rec

SVG = "{http://www.w3.org/2000/svg}"


def contention(session: str = "!room:hs/main") -> list[dict[str, Any]]:
    """The legacy bug with a second message: turn 2's inbound append waits out turn 1's whole model call."""
    one = {"session": session, "attempt": "turn-1"}
    two = {"session": session, "attempt": "turn-2"}
    return [
        rec(0.0, "turn.start", **one),
        rec(0.2, "lock.acquire", purpose="turn", waitMs=0.01, **one),
        rec(1.0, "model.request.start", requestId="m1", **one),
        rec(56.0, "turn.start", **two),
        rec(1500.0, "model.request.end", requestId="m1", **one),
        rec(1501.0, "lock.release", purpose="turn", **one),
        rec(1505.0, "lock.acquire", purpose="inbound", waitMs=1449.0, **two),
        rec(1505.3, "lock.release", purpose="inbound", **two),
        rec(1510.0, "turn.end", outcome="replied", **one),
    ]


def tagged(records: list[dict[str, Any]], scenario: str = "s") -> dict[str, Any]:
    lock = analyze_lock_evidence(records).model_dump(mode="json", by_alias=True)
    tag_scenarios(lock, {scenario: records})
    return lock


def test_lock_waits_are_read_from_the_acquisitions() -> None:
    records = [rec(10.0, "lock.acquire", session="!a", attempt="x", waitMs=4.0),
               rec(20.0, "lock.acquire", session="!a", attempt="x", waitMs=0),
               rec(30.0, "lock.acquire", session="!a", attempt="y", waitMs=True),
               rec(40.0, "lock.release", session="!a", attempt="y", waitMs=3.0),
               {"type": "lock.acquire", "session": "!a", "attempt": "z", "waitMs": 2.0},
               rec(50.0, "lock.acquire", attempt="w", waitMs=1.0), rec(60.0, "lock.acquire", session="!b", waitMs=2.0)]
    assert lock_waits(records) == {("!a", "x"): [(6.0, 10.0)], ("", "w"): [(49.0, 50.0)], ("!b", ""): [(58.0, 60.0)]}


def test_tag_scenarios_gives_each_turn_its_waits_relative_to_its_start() -> None:
    lock = tagged(contention())
    by_attempt = {t["attempt"]: t for t in lock["turns"]}
    assert by_attempt["turn-2"]["waits"] == [[0.0, 1449.0]]  # its turn started at 56
    assert by_attempt["turn-1"]["waits"] == [[0.19, 0.2]]
    assert {t["scenario"] for t in lock["turns"]} == {"s"}
    # A turn of no known scenario keeps no scenario; one without a start time gets no waits.
    lock = {"turns": ["junk", {"session": "!x", "attempt": "q"}, {"session": "!room:hs/main", "attempt": "turn-2"}]}
    tag_scenarios(lock, {"s": contention()})
    assert lock["turns"][1] == {"session": "!x", "attempt": "q"}
    assert lock["turns"][2] == {"session": "!room:hs/main", "attempt": "turn-2", "scenario": "s"}
    # Records and turns that name no session or no attempt still meet; waits keep three decimals.
    lock = {"turns": [{"session": "!s", "startT": 0.0}, {"attempt": "a", "startT": 0.0}]}
    tag_scenarios(lock, {"sc": [{"type": "lock.acquire", "session": "!s", "t": 5.12345, "waitMs": 1.0},
                                {"type": "turn.start", "attempt": "a", "t": 0.0}]})
    assert lock["turns"] == [{"session": "!s", "startT": 0.0, "scenario": "sc", "waits": [[4.123, 5.123]]},
                             {"attempt": "a", "startT": 0.0, "scenario": "sc"}]


def test_the_wait_is_its_own_lane_before_the_hold() -> None:
    (tl,) = scenario_timelines(tagged(contention()))
    assert tl.waited_ms == 1449.0
    lanes = [(lane.number, lane.what) for lane in tl.lanes]
    assert lanes == [(1, "lock"), (1, "model I/O"), (2, WAIT_LABEL), (2, "lock")]
    wait = tl.lanes[2].bars[0]
    assert (wait.kind, wait.start, wait.end) == ("wait", pytest.approx(55.81), pytest.approx(1504.81))
    text = mermaid_gantt(tl)
    assert "longest wait for the lock 1.45 s" in text.splitlines()[1]
    assert "    waited 1.45 s :done, 3600056, 3601505" in text.splitlines()
    svg = render_svg(tl)
    (rect,) = [r for r in ET.fromstring(svg).iter(f"{SVG}rect") if r.get("class") == "wait"]
    assert "waited for the lock" in "".join(rect.itertext())
    assert "longest wait for the lock 1.45 s" in svg


def test_a_wait_under_a_millisecond_is_not_a_lane_and_a_quiet_picture_says_no_wait() -> None:
    (tl,) = scenario_timelines({"turns": [{"scenario": "s", "session": "!a", "attempt": "t", "startT": 0.0,
                                           "holds": [[1, 2]], "waits": [[0.2, 1.0]]}]})
    assert [lane.what for lane in tl.lanes] == ["lock"] and tl.waited_ms == 0.8
    assert "wait" not in mermaid_gantt(tl).splitlines()[1]
    assert verdict_text(tl) == "no lock held during I/O"


def test_a_long_waiting_turn_is_drawn_even_when_turns_are_capped() -> None:
    turns = [{"scenario": "s", "session": "!a", "attempt": f"t{i}", "startT": 100.0 * i, "holds": [[0, 1]]}
             for i in range(5)]
    turns.append({"scenario": "s", "session": "!a", "attempt": "late", "startT": 900.0, "holds": [[50, 51]],
                  "waits": [[0, 50]]})
    (tl,) = scenario_timelines({"turns": turns}, max_turns=2)
    assert [lane.turn for lane in tl.lanes] == ["t0", "late", "late"]
    # Numbered among all the scenario's turns, as the per-turn table numbers them.
    assert [lane.number for lane in tl.lanes] == [1, 6, 6]
    rows = turn_rows(turns, ["s"])
    assert [(r["number"], r["attempt"]) for r in rows][-1] == (6, "late")
    assert [line.strip() for line in mermaid_gantt(tl).splitlines() if "section" in line] == \
        ["section turn 1", "section turn 6"]


def test_an_instant_hold_is_a_visible_fraction_of_the_picture() -> None:
    (tl,) = scenario_timelines({"turns": [{"scenario": "s", "session": "!a", "attempt": "t", "startT": 0.0,
                                           "holds": [[0, 0.3], [10, 1500]], "modelIo": [[20, 1490]]}]})
    tasks = [line.strip() for line in mermaid_gantt(tl).splitlines() if " :" in line]
    width = round(1500 / MIN_BAR_PARTS)
    assert MIN_BAR_PARTS == 150  # 1/150 of a ~750 px chart: 5 px
    assert tasks[0] == f"held 0.3 ms :{MERMAID_ORIGIN_MS}, {MERMAID_ORIGIN_MS + width}"
    assert tasks[1] == f"held 1.49 s :{MERMAID_ORIGIN_MS + 10}, {MERMAID_ORIGIN_MS + 1500}"


def test_section_labels_are_short_whatever_the_attempt_and_session() -> None:
    records = attempt_scope_turn("!aVeryLongRoomIdentifierIndeed:hs/thread/$aLongThreadRoot:hs",
                                 "an-attempt-id-that-goes-on-and-on", 0.0)
    text = mermaid_gantt(scenario_timelines(tagged(records))[0])
    assert [line for line in text.splitlines() if "section" in line] == ["    section turn 1"]
    assert max(len(line.split(" :")[0].strip()) for line in text.splitlines() if " :" in line) <= 24


def test_the_svg_keeps_its_last_tick_label_and_right_edge_bars_inside() -> None:
    # 12 ms span: the last tick, "12 ms", is centred on the plot's right edge and must fit in the picture.
    (tl,) = scenario_timelines({"turns": [{"scenario": "s", "session": "!a", "attempt": "t", "startT": 0.0,
                                           "holds": [[0, 1], [12.0, 12.0]], "modelIo": [[1, 12]]}]})
    root = ET.fromstring(render_svg(tl))
    ticks = [t for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    last = ticks[-1]
    assert "".join(last.itertext()) == "12 ms"
    assert float(last.get("x") or 0) + 3.5 * len("12 ms") <= WIDTH
    holds = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "hold"]
    right = max(float(r.get("x") or 0) + float(r.get("width") or 0) for r in holds)
    assert right <= WIDTH - RIGHT_W + 0.05
    assert min(float(r.get("width") or 0) for r in holds) >= MIN_BAR_W


def test_bar_box() -> None:
    assert bar_box(400.0, 500.0, LABEL_W, 972.0) == (400.0, 100.0)
    assert bar_box(400.0, 400.5, LABEL_W, 972.0) == (400.0, MIN_BAR_W)
    assert bar_box(972.0, 972.0, LABEL_W, 972.0) == (972.0 - MIN_BAR_W, MIN_BAR_W)
    assert bar_box(LABEL_W, LABEL_W, LABEL_W, LABEL_W + 2.0) == (LABEL_W, MIN_BAR_W)


def test_timeline_of_no_turns_is_empty_not_an_error() -> None:
    tl = timeline("s", [], 5)
    assert (tl.lanes, tl.span_ms, tl.turns, tl.waited_ms, tl.failed) == ((), 0.0, 0, 0.0, False)


def test_the_pictures_limits_and_labels() -> None:
    import dataclasses

    from qa.report.lock_timeline import (
        ATTEMPT_CHARS,
        IO_LABELS,
        MAX_TURNS_MERMAID,
        MAX_TURNS_SVG,
        WAIT_DRAWN_MS,
        WAIT_NOTED_MS,
        Bar,
        Lane,
        Timeline,
    )

    # A markdown chart of 12 turns is ~50 rows, an SVG of 60 about a screen; ids of 14 characters tell a run's
    # attempts apart (turn-<pid>-<n>).
    assert (MAX_TURNS_MERMAID, MAX_TURNS_SVG, ATTEMPT_CHARS) == (12, 60, 14)
    assert (WAIT_DRAWN_MS, WAIT_NOTED_MS, WAIT_LABEL) == (1.0, 10.0, "lock wait")
    assert IO_LABELS == {"model": "model I/O", "approval": "approval wait", "preview": "preview edit",
                         "media": "media fetch"}
    for value in (Bar("hold", 0, 1), Lane("s", "t", "lock", (), 1), Timeline("s", (), 0, 0, 0, 0, 0)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.scenario = "x"  # type: ignore[misc, union-attr]


def test_waits_at_their_thresholds() -> None:
    def one(wait_ms: float) -> Any:
        (tl,) = scenario_timelines({"turns": [{"scenario": "s", "session": "!a", "attempt": "t", "startT": 0.0,
                                               "holds": [[20, 21]], "waits": [[20 - wait_ms, 20]]}]})
        return tl

    assert [lane.what for lane in one(1.0).lanes] == [WAIT_LABEL, "lock"]
    assert [lane.what for lane in one(0.99).lanes] == ["lock"]
    (none,) = scenario_timelines({"turns": [{"scenario": "s", "session": "!a", "attempt": "t", "startT": 0.0,
                                             "holds": [[20, 21]]}]})
    assert none.waited_ms == 0.0
    assert "longest wait" in mermaid_gantt(one(10.0)) and "longest wait" not in mermaid_gantt(one(9.99))
    # A turn that waited 10 ms is drawn before quiet ones when turns are capped; 9.99 ms is quiet.
    quiet = [{"scenario": "s", "session": "!a", "attempt": "q", "startT": 0.0, "holds": [[0, 1]]}]
    for wait_ms, drawn in ((10.0, "w"), (9.99, "q")):
        waiting = {"scenario": "s", "session": "!a", "attempt": "w", "startT": 50.0, "holds": [[20, 21]],
                   "waits": [[20 - wait_ms, 20]]}
        (tl,) = scenario_timelines({"turns": [*quiet, waiting]}, max_turns=1)
        assert {lane.turn for lane in tl.lanes} == {drawn}


def test_when_every_drawn_turn_is_a_finding_no_quiet_turn_squeezes_in() -> None:
    turns = [{"scenario": "s", "session": "!a", "attempt": f"bad{i}", "startT": 100.0 * i, "holds": [[0, 10]],
              "modelIo": [[1, 9]]} for i in range(3)]
    turns.append({"scenario": "s", "session": "!a", "attempt": "quiet", "startT": 1000.0, "holds": [[0, 1]]})
    (tl,) = scenario_timelines({"turns": turns}, max_turns=2)
    assert sorted({lane.turn for lane in tl.lanes}) == ["bad0", "bad1"] and tl.omitted_turns == 2


def _title(text: str) -> str:
    return text.splitlines()[1].strip()


def test_mermaid_titles_and_task_order_exactly() -> None:
    (tl,) = scenario_timelines(tagged(contention()))
    assert _title(mermaid_gantt(tl)) == ("title s - lock held during I/O for 1.50 s, longest wait for the lock 1.45 s")
    turns = [{"scenario": "s", "session": "!a", "attempt": f"t{i}", "startT": 100.0 * i, "holds": [[0, 5]],
              "modelIo": [[10, 20]]} for i in range(5)]
    (capped,) = scenario_timelines({"turns": turns}, max_turns=3)
    assert _title(mermaid_gantt(capped, max_tasks=4)) == (
        "title s - no lock held during I/O (2 more turns not drawn, 2 more bars not drawn)")
    # Red rows after every hold of their turn, each kind in time order.
    (split,) = scenario_timelines({"turns": [{"scenario": "s", "session": "!a", "attempt": "t", "startT": 0.0,
                                              "holds": [[0, 10], [20, 30]], "modelIo": [[5, 25]]}]})
    names = [line.strip().split(" :")[0] for line in mermaid_gantt(split).splitlines() if " :" in line]
    assert names == ["held 10.0 ms", "held 10.0 ms", "held during I/O 5.0 ms", "held during I/O 5.0 ms",
                     "model I/O 20.0 ms"]
    assert [line.split(" :")[1] for line in mermaid_gantt(split).splitlines() if " :" in line][2:4] == [
        "crit, 3600005, 3600010", "crit, 3600020, 3600025"]


def test_a_chart_holds_forty_bars_by_default() -> None:
    turns = [{"scenario": "s", "session": "!a", "attempt": f"t{i}", "startT": 10.0 * i, "holds": [[0, 1]]}
             for i in range(41)]
    (tl,) = scenario_timelines({"turns": turns})
    text = mermaid_gantt(tl)
    assert len([line for line in text.splitlines() if " :" in line]) == 40 and "(1 more bars not drawn)" in text
