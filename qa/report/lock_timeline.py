"""The lock evidence as a picture: per scenario and session, each turn's lock holds beside its I/O, overlap red.

Pure. Reads the lock section of a Summary (what qa.report.lock_evidence computed: turns with their holds and
I/O relative to the turn's start on the trace's monotonic clock), so `matrix-qa report` draws an old run too.
Two layouts read the same Timeline: `mermaid_gantt` (the markdown report; GitHub renders ```mermaid blocks) and
qa.report.svg (a file per scenario among the artifacts).

One turn gives a `lock` lane (its holds, with the part that overlaps its own I/O drawn as a red `overlap` bar)
and one lane per kind of I/O it did (model calls, approval waits, preview edits, media fetches). The overlap here is the
same per-turn rule the verdict uses (union of holds ∩ union of I/O), so a red bar means the verdict failed it.
Holds of attempts that are not turns (the inbound append of a message arriving mid-turn) are only counted in
the evidence, not traced per hold in the summary, so the picture does not show them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qa.report.lock_evidence import Interval, union
from qa.report.lock_evidence import intersections as overlap_stretches

IO_LABELS = {"model": "model I/O", "approval": "approval wait", "preview": "preview edit", "media": "media fetch"}
# Summaries written before io kinds were recorded: every I/O interval was a model call or counted as one.
DEFAULT_IO_KIND = "model"
# Whoever reads a timeline of a long scenario wants the turns that failed, then the first ones in time.
MAX_TURNS_SVG = 60
MAX_TURNS_MERMAID = 12
ATTEMPT_CHARS = 14
SESSION_CHARS = 28


@dataclass(frozen=True)
class Bar:
    kind: str  # "hold", "overlap" or an IO_LABELS key
    start: float  # ms since the timeline's origin
    end: float


@dataclass(frozen=True)
class Lane:
    session: str
    turn: str  # the attempt, with its kind when it is not a plain turn
    what: str  # "lock" or an IO_LABELS value
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Timeline:
    scenario: str
    lanes: tuple[Lane, ...]
    span_ms: float
    overlap_ms: float
    turns: int  # turns drawn
    omitted_turns: int  # turns left out to keep the picture bounded

    @property
    def failed(self) -> bool:
        return self.overlap_ms > 0


def intersections(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The stretches covered by both a and b (each side merged first), in time order; touching is not overlap:
    the verdict's own rule (qa.report.lock_evidence), so a red bar means the verdict failed it."""
    return overlap_stretches(union(a), union(b))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _intervals(raw: Any) -> list[Interval]:
    found = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, list | tuple) and len(item) == 2:
            start, end = _number(item[0]), _number(item[1])
            if start is not None and end is not None and end >= start:
                found.append((start, end))
    return found


@dataclass(frozen=True)
class _Turn:
    scenario: str
    session: str
    label: str
    start: float
    holds: list[Interval]  # absolute, on the trace clock
    io: list[tuple[Interval, str]]
    overlaps: list[Interval]


def _turn(raw: Mapping[str, Any]) -> _Turn | None:
    base = _number(raw.get("startT"))
    if base is None:
        return None
    holds = [(base + s, base + e) for s, e in _intervals(raw.get("holds"))]
    io_iv = _intervals(raw.get("modelIo"))
    kinds = raw.get("ioKinds") if isinstance(raw.get("ioKinds"), list) else []
    io = [((base + s, base + e), str(kinds[i]) if i < len(kinds) else DEFAULT_IO_KIND)
          for i, (s, e) in enumerate(io_iv)]
    if not holds and not io:
        return None
    attempt = _short(str(raw.get("attempt") or "?"), ATTEMPT_CHARS)
    kind = raw.get("kind")
    label = attempt if kind in (None, "turn") else f"{attempt} ({kind})"
    return _Turn(scenario=str(raw.get("scenario") or "run"), session=str(raw.get("session") or "?"), label=label,
                 start=base, holds=holds, io=io, overlaps=intersections(holds, [iv for iv, _ in io]))


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_session(session: str) -> str:
    """`!roomIdThatIsLong:server/main` → `!roomIdTh…/main`: one run's sessions stay distinguishable."""
    room, _, rest = session.partition("/")
    room = room.split(":", 1)[0]
    text = f"{_short(room, 12)}/{rest}" if rest else _short(room, 12)
    return _short(text, SESSION_CHARS)


def _select(turns: list[_Turn], limit: int) -> list[_Turn]:
    """At most `limit` turns: every overlapping one first (they are the finding), then the earliest others."""
    failing = [t for t in turns if t.overlaps]
    chosen = failing[:limit] + [t for t in turns if not t.overlaps][: max(0, limit - len(failing))]
    return sorted(chosen, key=lambda t: t.start)


def scenario_timelines(lock: Mapping[str, Any] | None, max_turns: int = MAX_TURNS_SVG) -> list[Timeline]:
    """One Timeline per scenario that has turns with holds or I/O, in the order the scenarios first appear."""
    if not isinstance(lock, Mapping):
        return []
    by_scenario: dict[str, list[_Turn]] = {}
    for raw in lock.get("turns") or []:
        turn = _turn(raw) if isinstance(raw, Mapping) else None
        if turn is not None:
            by_scenario.setdefault(turn.scenario, []).append(turn)
    return [timeline(scenario, turns, max_turns) for scenario, turns in by_scenario.items()]


def timeline(scenario: str, turns: list[_Turn], max_turns: int) -> Timeline:
    chosen = _select(sorted(turns, key=lambda t: t.start), max_turns)
    starts = [s for t in chosen for s, _ in t.holds + [iv for iv, _ in t.io]]
    ends = [e for t in chosen for _, e in t.holds + [iv for iv, _ in t.io]]
    origin = min(starts, default=0.0)
    lanes: list[Lane] = []
    sessions = list(dict.fromkeys(t.session for t in chosen))  # grouped by session, in order of appearance
    for session in sessions:
        for t in (t for t in chosen if t.session == session):
            shown = short_session(session)
            if t.holds:
                bars = [Bar("hold", s - origin, e - origin) for s, e in t.holds]
                bars += [Bar("overlap", s - origin, e - origin) for s, e in t.overlaps]
                lanes.append(Lane(shown, t.label, "lock", tuple(bars)))
            # One lane per kind of I/O: a preview edit drawn over the model call it happens during would hide it.
            for kind in dict.fromkeys(k for _, k in t.io):
                lanes.append(Lane(shown, t.label, IO_LABELS.get(kind, kind),
                                  tuple(Bar(k, s - origin, e - origin) for (s, e), k in t.io if k == kind)))
    return Timeline(
        scenario=scenario, lanes=tuple(lanes), span_ms=max(ends, default=origin) - origin,
        overlap_ms=round(sum(e - s for t in turns for s, e in t.overlaps), 3),
        turns=len(chosen), omitted_turns=len(turns) - len(chosen),
    )


def tag_scenarios(lock: dict[str, Any], traces: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Name each turn's scenario (the one whose trace has its session and attempt): the evidence is computed
    over the whole run's records, the picture is drawn per scenario."""
    owner: dict[tuple[str, str], str] = {}
    for scenario, records in traces.items():
        for r in records:
            owner.setdefault((str(r.get("session", "")), str(r.get("attempt", ""))), scenario)
    for turn in lock.get("turns") or []:
        if isinstance(turn, dict):
            scenario = owner.get((str(turn.get("session", "")), str(turn.get("attempt", ""))))
            if scenario is not None:
                turn["scenario"] = scenario


# ---------------------------------------------------------------------------------------------------------
# Mermaid: a gantt chart, one task per bar (so one row each), in ms on a `dateFormat x` axis.

# Mermaid's gantt reads `x` as Unix ms; the origin sits on a whole hour so the seconds on the axis read as ms
# since the scenario's first record in every time zone.
MERMAID_ORIGIN_MS = 3_600_000
_MERMAID_UNSAFE = re.compile(r"[:;#%\n\r`<>{}\[\]]")
_MERMAID_TAGS = {"hold": "", "overlap": "crit, "}  # I/O: `active` (a lighter colour), overlap: `crit` (red)


def mermaid_text(text: str) -> str:
    """A task or section name: a colon would start the task's data, `#`/`;`/`%` are comments or entities."""
    return " ".join(_MERMAID_UNSAFE.sub(" ", text).split()) or "?"


def _bar_name(lane: Lane, bar: Bar) -> str:
    if bar.kind == "overlap":
        return f"{lane.turn} OVERLAP {bar.end - bar.start:.0f} ms"
    if bar.kind == "hold":
        return f"{lane.turn} lock held"
    return f"{lane.turn} {IO_LABELS.get(bar.kind, bar.kind)}"


def mermaid_gantt(tl: Timeline, max_tasks: int = 40) -> str:
    """The timeline as the body of a ```mermaid block (no fences). Tasks past `max_tasks` are left out, and the
    title says how many, as it says how many turns were."""
    tasks: list[tuple[str, str]] = []  # (section, task line)
    for lane in tl.lanes:
        # Overlap after the hold it belongs to, so the red row sits right under the held row.
        for bar in sorted(lane.bars, key=lambda b: (b.kind == "overlap", b.start)):
            start = MERMAID_ORIGIN_MS + round(bar.start)
            end = max(start + 1, MERMAID_ORIGIN_MS + round(bar.end))  # a zero-width task is not drawn at all
            tag = _MERMAID_TAGS.get(bar.kind, "active, ")
            tasks.append((lane.session, f"{mermaid_text(_bar_name(lane, bar))} :{tag}{start}, {end}"))
    left_out = max(0, len(tasks) - max_tasks)
    tasks = tasks[:max_tasks]
    notes = []
    if tl.omitted_turns:
        notes.append(f"{tl.omitted_turns} more turns not drawn")
    if left_out:
        notes.append(f"{left_out} more bars not drawn")
    verdict = f"lock held during I/O for {tl.overlap_ms:.0f} ms" if tl.failed else "no lock held during I/O"
    title = f"{tl.scenario} - {verdict}" + (f" ({', '.join(notes)})" if notes else "")
    lines = ["gantt", f"    title {mermaid_text(title)}", "    dateFormat x",
             f"    axisFormat {'%S.%L' if tl.span_ms < 60_000 else '%M:%S'}", "    todayMarker off"]
    section = None
    for name, line in tasks:
        if name != section:
            lines.append(f"    section {mermaid_text(name)}")
            section = name
        lines.append(f"    {line}")
    return "\n".join(lines)
