"""A failing scenario as plain values that fit a pull request's column: what the step expected, what was seen
(the deciding value first, ids and paths short, lines wrapped, nothing twice), its faults and its artifacts.

Pure, and shared by the markdown and the HTML report. The seen lines are capped for a glance; all of them stay
in matrix-qa-summary.json. A capped block keeps its first lines as well as its last: the first line of a crashed
bot's evidence says how it exited, the last ones what it did just before.
"""

from __future__ import annotations

from typing import Any

from qa.report.headline import ScenarioLock, lock_sentence
from qa.report.summary import ScenarioResult
from qa.report.text import deciding_first, shorten_ids, shorten_paths, wrap

SEEN_LINES_SHOWN = 20
SEEN_HEAD = 3  # of SEEN_LINES_SHOWN, kept from the start when the block is cut


def seen_lines(seen: list[str], expected: str) -> list[str]:
    """Each seen entry's lines (an entry can be a multi-line body), a line seen before left out, then each made
    readable: ids and absolute paths short, the fields the expectation names first."""
    lines: list[str] = []
    known: set[str] = set()
    for entry in seen:
        for line in str(entry).splitlines() or [""]:
            if line.strip() and line in known:
                continue  # the same log tail quoted twice by two kinds of evidence
            known.add(line)
            lines.append(deciding_first(shorten_paths(shorten_ids(line)), expected))
    return lines


def seen_view(seen: list[str], expected: str) -> dict[str, Any]:
    lines = seen_lines(seen, expected)
    total = len(lines)
    if total > SEEN_LINES_SHOWN:
        tail = SEEN_LINES_SHOWN - SEEN_HEAD
        cut = [f"… {total - SEEN_LINES_SHOWN} lines left out …"]
        lines = lines[:SEEN_HEAD] + cut + lines[-tail:]
    return {"lines": [part for line in lines for part in wrap(line)], "shown": min(total, SEEN_LINES_SHOWN),
            "total": total, "repeated": sum(len(str(e).splitlines() or [""]) for e in seen) - total}


def fault_rows(result: ScenarioResult) -> list[dict[str, Any]]:
    """A scenario's fault hits, one row per (source, rule): how often it hit, how, and what the rule does."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for hit in result.faultHits:
        key = (str(hit.get("source", "")), str(hit.get("rule", "")))
        row = rows.setdefault(key, {"source": key[0], "rule": key[1], "hits": 0, "actions": [], "what": "",
                                    "paths": []})
        row["hits"] += 1
        row["what"] = row["what"] or str(hit.get("what") or "")
        for name, value in (("actions", hit.get("action")), ("paths", f"{hit.get('method')} {hit.get('path')}")):
            if value and value not in row[name]:
                row[name].append(shorten_ids(str(value)))
    return list(rows.values())


def failure_view(result: ScenarioResult, lock: ScenarioLock | None = None) -> dict[str, Any]:
    """Raw values (the renderer escapes): step, its detail when it says more than the expectation, expected,
    seen, hints, diff, the scenario's lock finding, faults and artifacts."""
    failure = result.failure
    view: dict[str, Any] = {"id": result.id, "title": result.title, "source": result.source,
                            "status": result.status, "lock_only": result.status not in ("fail", "interrupted")}
    view["artifacts"] = list(result.artifacts.items())
    view["faults"] = [f"{r['rule']} ×{r['hits']} ({r['what']})" for r in fault_rows(result)]
    view["lock"] = lock_sentence(lock, failure.expected if failure else "") if lock and lock.failed else None
    view["lock_reasons"] = list(lock.reasons) if lock and lock.failed else []
    if failure is None:
        view.update(step=None, kind=None, detail=None, expected=None, seen=None, hints=[], diff=[])
        return view
    detail = next((s.detail for s in result.steps if s.index == failure.step and s.detail), "")
    view.update(
        step=failure.step,
        kind=failure.stepKind,
        # The step's own detail only when it says something the expectation does not (no sentence twice).
        detail=detail if detail and detail.strip() != failure.expected.strip() else None,
        expected=failure.expected,
        seen=seen_view(failure.seen, failure.expected),
        hints=failure.hints,
        diff=failure.diff,
    )
    return view
