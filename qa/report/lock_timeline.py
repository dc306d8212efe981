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
from qa.report.text import human_ms
from qa.report.text import short_session as short_session

IO_LABELS = {"model": "model I/O", "approval": "approval wait", "preview": "preview edit", "media": "media fetch"}
WAIT_LABEL = "lock wait"
# Summaries written before io kinds were recorded: every I/O interval was a model call or counted as one.
DEFAULT_IO_KIND = "model"
# Whoever reads a timeline of a long scenario wants the turns that failed, then the first ones in time.
MAX_TURNS_SVG = 60
MAX_TURNS_MERMAID = 12
ATTEMPT_CHARS = 14
# A wait shorter than this is the lock file's own cost, not contention: not drawn as a lane.
WAIT_DRAWN_MS = 1.0
# A wait this long is a finding: its turn is drawn even when the picture has no room for the quiet ones.
WAIT_NOTED_MS = 10.0


@dataclass(frozen=True)
class Bar:
    kind: str  # "hold", "overlap", "wait" or an IO_LABELS key
    start: float  # ms since the timeline's origin
    end: float


@dataclass(frozen=True)
class Lane:
    session: str
    turn: str  # the attempt, with its kind when it is not a plain turn
    what: str  # "lock", WAIT_LABEL or an IO_LABELS value
    bars: tuple[Bar, ...]
    number: int  # the turn's number in its picture, in time order: what the Mermaid section is called


@dataclass(frozen=True)
class Timeline:
    scenario: str
    lanes: tuple[Lane, ...]
    span_ms: float
    overlap_ms: float
    turns: int  # turns drawn
    omitted_turns: int  # turns left out to keep the picture bounded
    waited_ms: float  # the longest any turn of the scenario waited for the lock

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
    waits: list[Interval]

    @property
    def waited(self) -> float:
        return max((e - s for s, e in self.waits), default=0.0)

    @property
    def notable(self) -> bool:
        return bool(self.overlaps) or self.waited >= WAIT_NOTED_MS


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
                 start=base, holds=holds, io=io, overlaps=intersections(holds, [iv for iv, _ in io]),
                 waits=[(base + s, base + e) for s, e in _intervals(raw.get("waits"))])


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _select(turns: list[_Turn], limit: int) -> list[_Turn]:
    """At most `limit` turns: every overlapping or long-waiting one first (they are the finding), then the
    earliest others."""
    notable = [t for t in turns if t.notable]
    chosen = notable[:limit] + [t for t in turns if not t.notable][: max(0, limit - len(notable))]
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


def _lanes(t: _Turn, number: int, origin: float) -> list[Lane]:
    """A turn's lanes, in the order things happen: the wait for the lock, the hold, the I/O."""
    shown = short_session(t.session)

    def bar(kind: str, iv: Interval) -> Bar:
        return Bar(kind, iv[0] - origin, iv[1] - origin)

    lanes = []
    waits = [bar("wait", iv) for iv in t.waits if iv[1] - iv[0] >= WAIT_DRAWN_MS]
    if waits:
        lanes.append(Lane(shown, t.label, WAIT_LABEL, tuple(waits), number))
    if t.holds:
        holds = [bar("hold", iv) for iv in t.holds] + [bar("overlap", iv) for iv in t.overlaps]
        lanes.append(Lane(shown, t.label, "lock", tuple(holds), number))
    # One lane per kind of I/O: a preview edit drawn over the model call it happens during would hide it.
    for kind in dict.fromkeys(k for _, k in t.io):
        lanes.append(Lane(shown, t.label, IO_LABELS.get(kind, kind),
                          tuple(bar(k, iv) for iv, k in t.io if k == kind), number))
    return lanes


def timeline(scenario: str, turns: list[_Turn], max_turns: int) -> Timeline:
    chosen = _select(sorted(turns, key=lambda t: t.start), max_turns)
    spans = [iv for t in chosen for iv in t.holds + [iv for iv, _ in t.io] + t.waits]
    origin = min((s for s, _ in spans), default=0.0)
    lanes: list[Lane] = []
    sessions = list(dict.fromkeys(t.session for t in chosen))  # grouped by session, in order of appearance
    # Numbered by time among all the scenario's turns, drawn or not: the per-turn table uses the same numbers.
    numbers = {id(t): n for n, t in enumerate(sorted(turns, key=lambda t: t.start), start=1)}
    for t in (t for session in sessions for t in chosen if t.session == session):
        lanes.extend(_lanes(t, numbers[id(t)], origin))
    return Timeline(
        scenario=scenario, lanes=tuple(lanes), span_ms=max((e for _, e in spans), default=origin) - origin,
        overlap_ms=round(sum(e - s for t in turns for s, e in t.overlaps), 3),
        turns=len(chosen), omitted_turns=len(turns) - len(chosen),
        waited_ms=round(max((t.waited for t in turns), default=0.0), 3),
    )


def lock_waits(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Interval]]:
    """(session, attempt) → the stretches it waited for the lock: a `lock.acquire` at t that says it waited
    `waitMs` waited from t - waitMs to t (the trace format's convention)."""
    found: dict[tuple[str, str], list[Interval]] = {}
    for r in records:
        t, wait = _number(r.get("t")), _number(r.get("waitMs"))
        if r.get("type") == "lock.acquire" and t is not None and wait is not None and wait > 0:
            found.setdefault((str(r.get("session", "")), str(r.get("attempt", ""))), []).append((t - wait, t))
    return found


def tag_scenarios(lock: dict[str, Any], traces: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Name each turn's scenario (the one whose trace has its session and attempt), and give it `waits`: how
    long its lock acquisitions waited, relative to its start. The evidence is computed over the whole run's
    records and keeps no waits; the picture is drawn per scenario and shows them. Waits of attempts that are not
    turns (a bot's separate inbound writer) have no turn to go on and are left out."""
    owner: dict[tuple[str, str], str] = {}
    waits: dict[tuple[str, str], list[Interval]] = {}
    for scenario, records in traces.items():
        for r in records:
            owner.setdefault((str(r.get("session", "")), str(r.get("attempt", ""))), scenario)
        for key, found in lock_waits(records).items():
            waits.setdefault(key, []).extend(found)
    for turn in lock.get("turns") or []:
        if not isinstance(turn, dict):
            continue
        key = (str(turn.get("session", "")), str(turn.get("attempt", "")))
        if key in owner:
            turn["scenario"] = owner[key]
        base = _number(turn.get("startT"))
        if base is not None and key in waits:
            turn["waits"] = [[round(s - base, 3), round(e - base, 3)] for s, e in waits[key]]


# ---------------------------------------------------------------------------------------------------------
# Mermaid: a gantt chart, one task per bar (so one row each), in ms on a `dateFormat x` axis; one section per
# turn, called by its number ("turn 2"): a longer label is drawn over the bars.

# Mermaid's gantt reads `x` as Unix ms; the origin sits on a whole hour so the seconds on the axis read as ms
# since the scenario's first record in every time zone.
MERMAID_ORIGIN_MS = 3_600_000
# A bar narrower than this part of the picture is drawn this wide (its name still says how long it was): a
# 0.3 ms hold in a 1.5 s chart would be a fraction of a pixel, i.e. nothing.
MIN_BAR_PARTS = 150
_MERMAID_UNSAFE = re.compile(r"[:;#%\n\r`<>{}\[\]]")
# I/O: `active` (a lighter colour); overlap: `crit` (red); the wait for the lock: `done` (grey).
_MERMAID_TAGS = {"hold": "", "overlap": "crit, ", "wait": "done, "}


def mermaid_text(text: str) -> str:
    """A task or section name: a colon would start the task's data, `#`/`;`/`%` are comments or entities."""
    return " ".join(_MERMAID_UNSAFE.sub(" ", text).split()) or "?"


def _bar_name(bar: Bar) -> str:
    what = {"hold": "held", "overlap": "held during I/O", "wait": "waited"}.get(bar.kind)
    return f"{what or IO_LABELS.get(bar.kind, bar.kind)} {human_ms(bar.end - bar.start)}"


def _title(tl: Timeline, left_out: int) -> str:
    notes = []
    if tl.omitted_turns:
        notes.append(f"{tl.omitted_turns} more turns not drawn")
    if left_out:
        notes.append(f"{left_out} more bars not drawn")
    verdict = f"lock held during I/O for {human_ms(tl.overlap_ms)}" if tl.failed else "no lock held during I/O"
    if tl.waited_ms >= WAIT_NOTED_MS:
        verdict += f", longest wait for the lock {human_ms(tl.waited_ms)}"
    return f"{tl.scenario} - {verdict}" + (f" ({', '.join(notes)})" if notes else "")


def axis_format(span_ms: float) -> str:
    """A d3 time format that names its unit and does not wrap within the span ("-" drops the leading zero)."""
    if span_ms < 1000:
        return "%-L ms"
    return "%-S.%L s" if span_ms < 60_000 else "%-M:%S min"


def mermaid_gantt(tl: Timeline, max_tasks: int = 40) -> str:
    """The timeline as the body of a ```mermaid block (no fences). Tasks past `max_tasks` are left out, and the
    title says how many, as it says how many turns were."""
    min_ms = max(1, round(tl.span_ms / MIN_BAR_PARTS))
    tasks: list[tuple[int, str]] = []  # (turn number, task line)
    for lane in tl.lanes:
        # Overlap after the hold it belongs to, so the red row sits right under the held row.
        for bar in sorted(lane.bars, key=lambda b: (b.kind == "overlap", b.start)):
            # An instant at the right edge widens the axis a little rather than start before it happened.
            start, end = round(bar.start), max(round(bar.end), round(bar.start) + min_ms)
            tag = _MERMAID_TAGS.get(bar.kind, "active, ")
            tasks.append((lane.number, f"{mermaid_text(_bar_name(bar))} :{tag}{MERMAID_ORIGIN_MS + start}, "
                                       f"{MERMAID_ORIGIN_MS + end}"))
    left_out = max(0, len(tasks) - max_tasks)
    tasks = tasks[:max_tasks]
    axis = axis_format(tl.span_ms)
    lines = ["gantt", f"    title {mermaid_text(_title(tl, left_out))}", "    dateFormat x",
             f"    axisFormat {axis}", "    todayMarker off"]
    section = None
    for number, line in tasks:
        if number != section:
            lines.append(f"    section turn {number}")
            section = number
        lines.append(f"    {line}")
    return "\n".join(lines)
