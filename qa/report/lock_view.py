"""The lock section of a report as plain values: verdict, counters, per-turn rows with units, probes, pictures.

Pure, and shared by the markdown and the HTML report (each escapes for its own format). The lock section of a
summary is a dict whose analysis keeps growing, so every key is optional here; turns and pictures come in the
order of the scenarios table, so a reader finds a scenario's chart, its rows and its failure in one order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from qa.report.lock_evidence import probes_not_checked
from qa.report.lock_picture import ARTIFACT as LOCK_PICTURE
from qa.report.lock_timeline import MAX_TURNS_MERMAID, Timeline, mermaid_gantt, scenario_timelines
from qa.report.summary import Summary
from qa.report.text import EMPTY, human_ms, humanize_durations, short_session, shorten_ids, shorten_paths

LOCK_VERDICT_EMOJI = {"pass": "✅", "fail": "❌", "none": "➖", "n/a": "➖"}
# Mermaid pictures in the markdown: the failing scenarios' open, a few passing ones folded; every scenario's
# SVG is linked whatever these caps leave out.
MERMAID_FAILING = 4
MERMAID_PASSING = 3
MERMAID_TASKS = 40

_LOCK_COUNTERS = (
    ("turnCount", "turn", "turns"),
    ("modelRequests", "model request", "model requests"),
    ("otherHolds", "other hold", "other holds"),
    ("takeovers", "takeover", "takeovers"),
    ("lockTimeouts", "lock timeout", "lock timeouts"),
    ("startupReclaims", "startup reclaim", "startup reclaims"),
)
# A probe's fields, the deciding ones first: how long it took and whether a model call was in flight.
_PROBE_FIELDS = ("timeoutElapsedMs", "acquiredElapsedMs", "heldSinceT")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ms_or_empty(value: Any) -> str:
    return human_ms(float(value)) if _is_number(value) else EMPTY


def _number(value: Any) -> str:
    if not _is_number(value):
        return str(value)
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def probe_line(probe: Mapping[str, Any]) -> str:
    """`probe timeoutElapsedMs=26.1 duringModelIo=true session=!room…/main error="…"`: the value that decides
    first, the lock file's path from its last parts."""
    parts = [f"{key}={_number(probe[key])}" for key in _PROBE_FIELDS if probe.get(key) is not None]
    if probe.get("duringModelIo") is not None:
        parts.append(f"duringModelIo={str(bool(probe['duringModelIo'])).lower()}")
    parts.append(f"session={short_session(probe.get('session'))}")
    if probe.get("error"):
        parts.append(f"error={json.dumps(shorten_paths(str(probe['error'])), ensure_ascii=False)}")
    if probe.get("note"):
        parts.append(f"note={json.dumps(str(probe['note']), ensure_ascii=False)}")
    return "probe " + " ".join(parts)


def _scalar_pairs(mapping: Any) -> list[tuple[str, str]]:
    if not isinstance(mapping, dict):
        return []
    pairs = []
    for key, value in mapping.items():
        if isinstance(value, str):
            shown = value
        elif _is_number(value):
            shown = _number(value)
        else:
            shown = json.dumps(value, default=str)
        pairs.append((str(key), shown))
    return pairs


def _counters(lock: Mapping[str, Any]) -> list[str]:
    shown = []
    for key, one, many in _LOCK_COUNTERS:
        n = lock.get(key)
        if isinstance(n, int) and not isinstance(n, bool):
            shown.append(f"{n} {one if n == 1 else many}")
    return shown


def _sum_ms(intervals: Any) -> float | None:
    if not isinstance(intervals, list):
        return None
    pairs = [iv for iv in intervals if isinstance(iv, list | tuple) and len(iv) == 2
             and _is_number(iv[0]) and _is_number(iv[1])]
    return sum(float(e) - float(s) for s, e in pairs) if pairs else None


def turn_row(turn: Mapping[str, Any], number: int | None) -> dict[str, Any]:
    """One turn with units: how long it waited for the lock, held it, talked to the model, and held it then."""
    kind = turn.get("kind")
    attempt = turn.get("attempt")
    waited = _sum_ms(turn.get("waits"))
    return {
        "scenario": turn.get("scenario"),
        "number": number,
        "session": short_session(turn.get("session")),
        "sessionFull": turn.get("session"),
        "attempt": attempt if kind in (None, "turn") else f"{attempt} ({kind})",
        "outcome": turn.get("outcome"),
        "waited": human_ms(waited) if waited is not None else EMPTY,
        "held": ms_or_empty(turn.get("longestHoldMs")),
        "io": ms_or_empty(_sum_ms(turn.get("modelIo"))),
        "overlap": ms_or_empty(turn.get("overlapMs")),
        "failed": _is_number(turn.get("overlapMs")) and float(turn["overlapMs"]) > 0,
    }


def turn_rows(turns: Sequence[Any], order: Sequence[str]) -> list[dict[str, Any]]:
    """Every turn, in the scenarios table's order and then in time, numbered per scenario as its picture is."""
    rank = {sid: i for i, sid in enumerate(order)}
    valid = [t for t in turns if isinstance(t, Mapping)]
    valid.sort(key=lambda t: (rank.get(str(t.get("scenario")), len(rank)), str(t.get("scenario") or ""),
                              t["startT"] if _is_number(t.get("startT")) else 0.0))
    rows: list[dict[str, Any]] = []
    counted: dict[Any, int] = {}
    for turn in valid:
        scenario = turn.get("scenario")
        counted[scenario] = counted.get(scenario, 0) + 1
        rows.append(turn_row(turn, counted[scenario] if scenario else None))
    return rows


def lock_view(lock: Mapping[str, Any] | None, order: Sequence[str] = ()) -> dict[str, Any] | None:
    """Normalise the lock evidence; its analysis is still evolving, so every key is optional."""
    if lock is None:
        return None
    verdict = str(lock.get("verdict") or "none")
    return {
        "scope": lock.get("scope"),
        "verdict": verdict,
        "emoji": LOCK_VERDICT_EMOJI.get(verdict, "❔"),
        "settings": _scalar_pairs(lock.get("settings")),
        "sources": _scalar_pairs(lock.get("sources")),
        "reasons": [humanize_durations(shorten_ids(str(r))) for r in lock.get("reasons") or []],
        "turns": turn_rows(lock.get("turns") or [], order),
        "counters": _counters(lock),
        "longestHold": ms_or_empty(lock.get("longestHoldMs")),
        "totalOverlap": ms_or_empty(lock.get("totalOverlapMs")),
        "probes": [probe_line(p) for p in lock.get("probes") or [] if isinstance(p, dict)],
        "probesNotChecked": probes_not_checked(lock.get("probes") or []),
        "holdKinds": [hold_kind_text(k) for k in lock.get("holdKinds") or [] if isinstance(k, dict)],
        "takeovers": [takeover_line(t) for t in lock.get("takeoverList") or [] if isinstance(t, dict)],
    }


def hold_kind_text(kind: Mapping[str, Any]) -> str:
    text = f"{kind.get('kind')} ×{kind.get('count')} (longest {ms_or_empty(kind.get('longestMs'))})"
    return text + (f", {kind.get('open')} open" if kind.get("open") else "")


def takeover_line(tk: Mapping[str, Any]) -> str:
    """One takeover or startup reclaim, and what the stale attempt did after it (nothing, when all is well)."""
    what = "startup reclaim" if tk.get("startup") else "takeover"
    age = tk.get("previousAgeMs")
    held = f", held {human_ms(float(age))}" if _is_number(age) else ""
    after = tk.get("after") or []
    then = "then: " + ", ".join(str(a) for a in after) if after else "then: nothing sent, written, run or removed"
    return (f"{what} session={short_session(tk.get('session'))} {tk.get('previousAttempt') or '?'} "
            f"(pid {tk.get('previousPid') or '?'}{held}) by {tk.get('byAttempt')} reason={tk.get('reason')}; {then}")


def ordered_timelines(summary: Summary, max_turns: int = MAX_TURNS_MERMAID) -> list[Timeline]:
    """The scenarios' lock timelines in the order of the scenarios table (a run's trace order is any order)."""
    rank = {r.id: i for i, r in enumerate(summary.scenarios)}
    return sorted(scenario_timelines(summary.lock, max_turns), key=lambda tl: rank.get(tl.scenario, len(rank)))


def lock_pictures(summary: Summary) -> dict[str, Any]:
    """The lock timelines, failing scenarios first: Mermaid bodies (capped) and a link to every SVG."""
    links = {r.id: r.artifacts[LOCK_PICTURE] for r in summary.scenarios if LOCK_PICTURE in r.artifacts}
    timelines = ordered_timelines(summary)

    def item(tl: Timeline, draw: bool) -> dict[str, Any]:
        return {"scenario": tl.scenario, "overlap": human_ms(tl.overlap_ms), "svg": links.get(tl.scenario),
                "waited": human_ms(tl.waited_ms), "mermaid": mermaid_gantt(tl, MERMAID_TASKS) if draw else None}

    failing = [tl for tl in timelines if tl.failed]
    passing = [tl for tl in timelines if not tl.failed]
    return {"failing": [item(tl, i < MERMAID_FAILING) for i, tl in enumerate(failing)],
            "passing": [item(tl, i < MERMAID_PASSING) for i, tl in enumerate(passing)],
            "passing_drawn": min(len(passing), MERMAID_PASSING), "failing_drawn": min(len(failing), MERMAID_FAILING)}
