"""The pull-request-facing report: the run summary rendered as GitHub-flavoured markdown.

Everything here reads the Summary only, so `matrix-qa report` can re-render an old run from its JSON. The
Python side prepares plain values (escaped cells, formatted durations, a normalised lock view); the template
only lays them out, which keeps the escaping rules in one place where they are unit-tested.
"""

from __future__ import annotations

import html
import json
import math
import re
import shlex
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from qa.report.lock_picture import ARTIFACT as LOCK_PICTURE
from qa.report.lock_timeline import MAX_TURNS_MERMAID, mermaid_gantt, scenario_timelines
from qa.report.repeats import percent
from qa.report.summary import Latency, ScenarioResult, Summary, latency_stats
from qa.report.summary import percentile as percentile  # re-exported: it lived here first

TEMPLATE = "report.md.j2"

# A failure block is for a glance; the full list of seen lines stays in matrix-qa-summary.json.
SEEN_LINES_SHOWN = 20
SEEN_LINE_CHARS = 400
DETAILS_CHARS = 120
SESSION_CHARS = 24
ID_CHARS = 8

RUN_STATUS_EMOJI = {"pass": "✅", "fail": "❌", "error": "⚠️", "interrupted": "⏹️"}
SCENARIO_STATUS_EMOJI = {"pass": "✅", "fail": "❌", "skip": "⏭️", "interrupted": "⏹️"}
LOCK_VERDICT_EMOJI = {"pass": "✅", "fail": "❌", "none": "➖", "n/a": "➖"}

EMPTY = "—"

# Folding (issue 18): a long table goes into <details>, so the first screen keeps the verdict, the failures and
# the timings. Up to this many rows a table stays open: folding three rows only hides them.
OPEN_ROWS = 15
# Mermaid pictures in the markdown: the failing scenarios' open, a few passing ones folded; every scenario's
# SVG is linked whatever these caps leave out.
MERMAID_FAILING = 4
MERMAID_PASSING = 3
MERMAID_TASKS = 40
REASONS_OPEN = 10


# ---------------------------------------------------------------------------------------------------------
# Formatting and escaping (pure; also used as template filters)


def human_ms(ms: float | None) -> str:
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return EMPTY
    if ms < 100:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


_TERMINAL_NOISE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """Drop colour codes and other control characters that logs carry; GitHub shows them as garbage."""
    return _TERMINAL_NOISE.sub("", text)


def cell(value: Any) -> str:
    """Text that is safe inside one GFM table cell.

    A raw `|` would start a new column and a raw newline would end the row, so the table falls apart; HTML is
    escaped because GitHub strips unknown tags, which would silently hide text like `<@bot:server>`.
    """
    if value is None or value == "":
        return EMPTY
    text = html.escape(printable(str(value)), quote=False)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
    return text.replace("|", "\\|")


def inline(value: Any) -> str:
    """Text for a paragraph or list item: same as a cell, but a pipe there is just a pipe."""
    if value is None or value == "":
        return EMPTY
    text = html.escape(printable(str(value)), quote=False)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def code(value: Any, table: bool = False) -> str:
    """An inline code span that survives backticks in the value (and pipes, inside a table)."""
    if value is None or value == "":
        return EMPTY
    text = " ".join(printable(str(value)).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    if text.startswith("`") or text.endswith("`"):
        text = f" {text} "
    if table:
        # GFM splits cells before it parses code spans, so even a pipe inside backticks needs escaping.
        text = text.replace("|", "\\|")
    return f"{ticks}{text}{ticks}"


def fenced(lines: list[str], info: str = "text") -> str:
    """A fenced code block whose fence is longer than any backtick run in the content, so it cannot close early."""
    body = "\n".join(printable(line) for line in lines)
    longest = max((len(run) for run in re.findall(r"`{3,}", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_id(part: str) -> str:
    # Within one run every id is on the same homeserver, so the server part only takes up room.
    local = part.split(":", 1)[0]
    return local if len(local) <= ID_CHARS + 1 else local[: ID_CHARS + 1] + "…"


def short_session(session: Any) -> str:
    """`!room:server/thread/$root` → `!roomAbCd…/thread/$rootAbCd…`: enough to tell sessions apart in a table."""
    text = str(session) if session is not None else ""
    parts = text.split("/")
    if len(parts) > 1 and text.startswith("!"):
        return "/".join(_short_id(p) if p[:1] in ("!", "$") else p for p in parts)
    if len(text) <= SESSION_CHARS:
        return text
    keep = (SESSION_CHARS - 1) // 2
    return f"{text[:keep]}…{text[-keep:]}"


# ---------------------------------------------------------------------------------------------------------
# View: plain values the template lays out


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def probe_line(probe: dict[str, Any]) -> str:
    parts = [f"session={short_session(probe.get('session'))}"]
    for key in ("acquiredElapsedMs", "timeoutElapsedMs"):
        if probe.get(key) is not None:
            parts.append(f"{key}={_number(probe[key])}")
    if probe.get("duringModelIo") is not None:
        parts.append(f"duringModelIo={str(bool(probe['duringModelIo'])).lower()}")
    if probe.get("error"):
        parts.append(f"error={json.dumps(str(probe['error']), ensure_ascii=False)}")
    return "probe " + " ".join(parts)


def _ms_or_empty(value: Any) -> str:
    return human_ms(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else EMPTY


def _scalar_pairs(mapping: Any) -> list[tuple[str, str]]:
    if not isinstance(mapping, dict):
        return []
    pairs = []
    for key, value in mapping.items():
        if isinstance(value, str):
            shown = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            shown = _number(value)
        else:
            shown = json.dumps(value, default=str)
        pairs.append((str(key), shown))
    return pairs


_LOCK_COUNTERS = (
    ("turnCount", "turn", "turns"),
    ("modelRequests", "model request", "model requests"),
    ("otherHolds", "other hold", "other holds"),
    ("takeovers", "takeover", "takeovers"),
    ("lockTimeouts", "lock timeout", "lock timeouts"),
    ("startupReclaims", "startup reclaim", "startup reclaims"),
)


def _counters(lock: dict[str, Any]) -> list[str]:
    shown = []
    for key, one, many in _LOCK_COUNTERS:
        n = lock.get(key)
        if isinstance(n, int) and not isinstance(n, bool):
            shown.append(f"{n} {one if n == 1 else many}")
    return shown


def lock_view(lock: dict[str, Any] | None) -> dict[str, Any] | None:
    """Normalise the lock evidence; its analysis is still evolving, so every key is optional."""
    if lock is None:
        return None
    verdict = str(lock.get("verdict") or "none")
    turns = []
    for turn in lock.get("turns") or []:
        if not isinstance(turn, dict):
            continue
        turns.append(
            {
                "session": short_session(turn.get("session")),
                "attempt": turn.get("attempt") if turn.get("kind") in (None, "turn")
                else f"{turn.get('attempt')} ({turn.get('kind')})",
                "outcome": turn.get("outcome"),
                "summary": turn.get("summary") or "",
                "longestHold": _ms_or_empty(turn.get("longestHoldMs")),
                "overlap": _ms_or_empty(turn.get("overlapMs")),
            }
        )
    return {
        "scope": lock.get("scope"),
        "verdict": verdict,
        "emoji": LOCK_VERDICT_EMOJI.get(verdict, "❔"),
        "settings": _scalar_pairs(lock.get("settings")),
        "sources": _scalar_pairs(lock.get("sources")),
        "reasons": [str(r) for r in lock.get("reasons") or []],
        "turns": turns,
        "counters": _counters(lock),
        "longestHold": _ms_or_empty(lock.get("longestHoldMs")),
        "totalOverlap": _ms_or_empty(lock.get("totalOverlapMs")),
        "probes": [probe_line(p) for p in lock.get("probes") or [] if isinstance(p, dict)],
        "holdKinds": [hold_kind_text(k) for k in lock.get("holdKinds") or [] if isinstance(k, dict)],
        "takeovers": [takeover_line(t) for t in lock.get("takeoverList") or [] if isinstance(t, dict)],
    }


def hold_kind_text(kind: dict[str, Any]) -> str:
    text = f"{kind.get('kind')} ×{kind.get('count')} (longest {_ms_or_empty(kind.get('longestMs'))})"
    return text + (f", {kind.get('open')} open" if kind.get("open") else "")


def takeover_line(tk: dict[str, Any]) -> str:
    """One takeover or startup reclaim, and what the stale attempt did after it (nothing, when all is well)."""
    what = "startup reclaim" if tk.get("startup") else "takeover"
    age = tk.get("previousAgeMs")
    held = f", held {age:.0f}ms" if isinstance(age, int | float) else ""
    after = tk.get("after") or []
    then = "then: " + ", ".join(str(a) for a in after) if after else "then: nothing sent, written, run or removed"
    return (f"{what} session={short_session(tk.get('session'))} {tk.get('previousAttempt') or '?'} "
            f"(pid {tk.get('previousPid') or '?'}{held}) by {tk.get('byAttempt')} reason={tk.get('reason')}; {then}")


def lock_pictures(summary: Summary) -> dict[str, Any]:
    """The lock timelines, failing scenarios first: Mermaid bodies (capped) and a link to every SVG."""
    links = {r.id: r.artifacts[LOCK_PICTURE] for r in summary.scenarios if LOCK_PICTURE in r.artifacts}
    timelines = scenario_timelines(summary.lock, MAX_TURNS_MERMAID)

    def item(tl: Any, draw: bool) -> dict[str, Any]:
        return {"scenario": tl.scenario, "overlap": human_ms(tl.overlap_ms), "svg": links.get(tl.scenario),
                "mermaid": fenced(mermaid_gantt(tl, MERMAID_TASKS).splitlines(), "mermaid") if draw else None}

    failing = [tl for tl in timelines if tl.failed]
    passing = [tl for tl in timelines if not tl.failed]
    return {"failing": [item(tl, i < MERMAID_FAILING) for i, tl in enumerate(failing)],
            "passing": [item(tl, i < MERMAID_PASSING) for i, tl in enumerate(passing)],
            "passing_drawn": min(len(passing), MERMAID_PASSING), "failing_drawn": min(len(failing), MERMAID_FAILING)}


def _seen_view(seen: list[str]) -> dict[str, Any]:
    # A seen entry can itself span lines (a multi-line body); cap what a reader scrolls through, not entries.
    lines = [shorten_line(line) for entry in seen for line in (str(entry).splitlines() or [""])]
    shown = lines[-SEEN_LINES_SHOWN:]
    return {"block": fenced(shown) if shown else None, "shown": len(shown), "total": len(lines)}


def shorten_line(line: str) -> str:
    return line if len(line) <= SEEN_LINE_CHARS else line[: SEEN_LINE_CHARS - 1] + "…"


def _failure_view(result: ScenarioResult) -> dict[str, Any]:
    failure = result.failure
    view: dict[str, Any] = {"id": result.id, "title": result.title, "source": result.source}
    view["artifacts"] = list(result.artifacts.items())
    view["faults"] = [f"{r['rule']} ×{r['hits']} ({r['what']})" for r in fault_rows(result)]
    if failure is None:
        view.update(step=None, expected=None, expected_block=None, seen=None, hints=[], diff_block=None)
        return view
    parts = [str(failure.step)] if failure.step is not None else []
    if failure.stepKind:
        parts.append(f"({code(failure.stepKind)})")
    step = " ".join(parts) or None
    detail = next((s.detail for s in result.steps if s.index == failure.step and s.detail), "")
    if step and detail:
        step = f"{step} — {inline(detail)}"
    multi_line = "\n" in failure.expected
    view.update(
        step=step,
        expected=None if multi_line else failure.expected,
        expected_block=fenced(failure.expected.splitlines()) if multi_line else None,
        seen=_seen_view(failure.seen),
        hints=failure.hints,
        diff_block=fenced(failure.diff, "diff") if failure.diff else None,
    )
    return view


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
                row[name].append(str(value))
    return list(rows.values())


def _short_details(result: ScenarioResult) -> str:
    text = result.details or (result.failure.expected if result.failure else "")
    return shorten(text, DETAILS_CHARS) if text else ""


def _latency_view(latency: Latency | None) -> dict[str, Any] | None:
    if latency is None:
        return None
    return {"p50": human_ms(latency.p50Ms), "p95": human_ms(latency.p95Ms), "n": latency.count}


def _scenario_latency(result: ScenarioResult) -> str:
    latency = result.latency or latency_stats(result.replyLatenciesMs)
    if latency is None:
        return EMPTY
    # One reply has one latency; p50 and p95 of it would only repeat the number.
    if latency.count == 1:
        return human_ms(latency.p50Ms)
    return f"{human_ms(latency.p50Ms)} / {human_ms(latency.p95Ms)}"


def _run_facts(summary: Summary) -> list[tuple[str, str]]:
    """Environment rows that only some runs have: concurrency, sharding, merging."""
    facts = []
    if summary.jobs is not None:
        facts.append(("Jobs", f"up to {summary.jobs} scenario(s) side by side"))
    if summary.shard is not None:
        facts.append(("Shard", f"{summary.shard.index}/{summary.shard.count}"))
    if summary.repeat is not None:
        rate = summary.minPassRate if summary.minPassRate is not None else 1.0
        facts.append(("Repeat", f"each scenario {summary.repeat} times; passes at a pass rate of {percent(rate)} "
                                f"or more; {summary.counts.flaky} flaky"))
    if summary.deadline is not None:
        d = summary.deadline
        facts.append(("Deadline", f"--timeout {d.timeout}: " + (
            f"reached; every process stopped; {len(d.finished)} finished, {len(d.unfinished)} did not"
            if d.reached else "not reached")))
    if summary.mergedFrom:
        parts = [f"{m.runId} ({f'shard {m.shard.index}/{m.shard.count}, ' if m.shard else ''}{m.status})"
                 for m in summary.mergedFrom]
        facts.append(("Merged from", f"{len(parts)} summaries: " + ", ".join(parts)))
    return facts


def pass_rate_rows(summary: Summary) -> list[dict[str, str]]:
    """One row per repeated scenario, flaky ones marked; the attempts as a strip of status marks."""
    rows = []
    for r in summary.scenarios:
        if r.passRate is None:
            continue
        p = r.passRate
        rows.append({"id": r.id, "passed": f"{p.passed} of {p.finished}", "rate": percent(p.passRate),
                     "verdict": f"{SCENARIO_STATUS_EMOJI.get(r.status, '❔')} {r.status}",
                     "flaky": "⚠️ flaky" if p.flaky else "—",
                     "attempts": " ".join(SCENARIO_STATUS_EMOJI.get(a.status, "❔") + ("↻" if a.retried else "")
                                          for a in p.attempts)})
    return rows


def retry_rows(summary: Summary) -> list[tuple[str, str, str]]:
    return [(r.id, t.ranAs, t.error) for r in summary.scenarios for t in r.retries]


def build_view(summary: Summary) -> dict[str, Any]:
    # Summaries written before the latency fields existed carry only the raw lists.
    latency = summary.latency or latency_stats(ms for r in summary.scenarios for ms in r.replyLatenciesMs)
    negative = [(r.id, check) for r in summary.scenarios for check in r.negativeChecks]
    return {
        "s": summary,
        "env": summary.environment,
        "status_emoji": RUN_STATUS_EMOJI.get(summary.status, "❔"),
        "command": shlex.join(summary.command) if summary.command else None,
        "run_facts": _run_facts(summary),
        "rows": [
            {
                "id": r.id,
                "title": r.title,
                "status": f"{SCENARIO_STATUS_EMOJI.get(r.status, '❔')} {r.status}",
                "duration": human_ms(r.durationMs),
                "latency": _scenario_latency(r),
                "details": _short_details(r),
                "failing": r.status in ("fail", "interrupted"),
            }
            for r in summary.scenarios
        ],
        "pass_rates": pass_rate_rows(summary),
        "retries": retry_rows(summary),
        "latency": _latency_view(latency),
        "lock": lock_view(summary.lock),
        "pictures": lock_pictures(summary),
        "open_rows": OPEN_ROWS,
        "reasons_open": REASONS_OPEN,
        "negative": negative,
        "failures": [_failure_view(r) for r in summary.scenarios if r.status in ("fail", "interrupted")],
        "faults": [(r.id, row) for r in summary.scenarios for row in fault_rows(r)],
        "scenario_artifacts": [(r.id, list(r.artifacts.items())) for r in summary.scenarios if r.artifacts],
    }


# ---------------------------------------------------------------------------------------------------------
# Rendering


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        # PackageLoader reads through importlib.resources, so the template is found from an installed wheel too.
        loader=PackageLoader("qa.report", "templates"),
        # Markdown, not HTML: escaping is explicit per context (cell / inline / code) via the filters below.
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(cell=cell, inline=inline, code=code, ms=human_ms, fenced=fenced)
    return env


def _scan_fences(lines: list[str]) -> list[tuple[bool, bool]]:
    """Per line: (part of a fenced code block, fences included; a fence still open after the line)."""
    scanned = []
    fence: str | None = None
    for line in lines:
        match = re.match(r"^ {0,3}(`{3,})", line)
        if fence is None:
            if match:
                fence = match.group(1)
            scanned.append((fence is not None, fence is not None))
        else:
            if match and len(match.group(1)) >= len(fence) and not line.strip().strip("`"):
                fence = None
            scanned.append((True, fence is not None))
    return scanned


def fence_states(lines: list[str]) -> list[bool]:
    """For each line, whether it belongs to a fenced code block (fence lines included).

    Markdown post-processing (tidying, trimming for CI) must never touch what is inside a fence.
    """
    return [inside for inside, _ in _scan_fences(lines)]


def fence_open_after(lines: list[str]) -> list[bool]:
    """For each line, whether a fence is still open after it, i.e. whether cutting there would leave it open."""
    return [open_after for _, open_after in _scan_fences(lines)]


def _collapse_blank_lines(text: str) -> str:
    lines = text.split("\n")
    kept: list[str] = []
    for line, in_fence in zip(lines, fence_states(lines), strict=True):
        if not in_fence and not line.strip() and kept and not kept[-1].strip():
            continue
        kept.append(line)
    return "\n".join(kept).strip() + "\n"


def render_markdown(summary: Summary) -> str:
    text = _environment().get_template(TEMPLATE).render(**build_view(summary))
    # Optional sections leave runs of blank lines behind; collapse them so the markdown source reads cleanly.
    return _collapse_blank_lines(text)
