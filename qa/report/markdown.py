"""The pull-request-facing report: the run summary rendered as GitHub-flavoured markdown.

Everything here reads the Summary only, so `matrix-qa report` can re-render an old run from its JSON. The
Python side prepares plain values (escaped cells, formatted durations, a normalised lock view); the template
only lays them out, which keeps the escaping rules in one place where they are unit-tested.
"""

from __future__ import annotations

import html
import re
import shlex
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined

from qa.report.failure_view import SEEN_LINES_SHOWN as SEEN_LINES_SHOWN
from qa.report.failure_view import failure_view
from qa.report.failure_view import fault_rows as fault_rows  # re-exported: it lived here first
from qa.report.headline import Finding, findings, scenario_locks
from qa.report.lock_view import MERMAID_FAILING as MERMAID_FAILING
from qa.report.lock_view import lock_pictures, lock_view
from qa.report.repeats import percent
from qa.report.summary import Latency, ScenarioResult, Summary, latency_stats
from qa.report.summary import percentile as percentile  # re-exported: it lived here first
from qa.report.template_cache import use_cache
from qa.report.text import EMPTY, clip, human_ms, short_id, short_path, short_session, wrap

TEMPLATE = "report.md.j2"

DETAILS_CHARS = 120
# The first screen names at most this many findings; the rest are under Failures.
FINDINGS_SHOWN = 8

RUN_STATUS_EMOJI = {"pass": "✅", "fail": "❌", "error": "⚠️", "interrupted": "⏹️"}
SCENARIO_STATUS_EMOJI = {"pass": "✅", "fail": "❌", "skip": "⏭️", "interrupted": "⏹️"}

# Folding (issue 18): a long table goes into <details>, so the first screen keeps the verdict, the failures and
# the timings. Up to this many rows a table stays open: folding three rows only hides them.
OPEN_ROWS = 15
REASONS_OPEN = 10


# ---------------------------------------------------------------------------------------------------------
# Formatting and escaping (pure; also used as template filters)


# Why `--homeservers auto` booted several: qa.harness.jobs.AUTO_MIN_SCENARIOS, which this floor may not import
# (tests/unit/test_homeservers.py holds the two equal).
AUTO_HOMESERVERS_RULE = "auto: 12 scenarios or more"
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


def _short_details(result: ScenarioResult) -> str:
    text = result.details or (result.failure.expected if result.failure else "")
    # A skip's reason is the whole of what a reader learns about it: never cut.
    return text if result.status == "skip" else clip(text, DETAILS_CHARS)


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
    if summary.homeservers and len(summary.homeservers) > 1:  # one homeserver is the Homeserver row above
        parts = [f"{h.index}: {h.scenarios} scenario(s), boot {human_ms(h.bootMs) if h.bootMs is not None else EMPTY}"
                 f"{f' (not booted: {clip(h.notBooted, DETAILS_CHARS)})' if h.notBooted else ''}, log `{h.log}`"
                 for h in summary.homeservers]
        why = AUTO_HOMESERVERS_RULE if summary.homeserversAsked == "auto" else "--homeservers"
        facts.append(("Homeservers", f"{len(parts)} side by side ({why}); " + "; ".join(parts)))
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


def href(path: str) -> str:
    """A run-relative artifact path as a link target: spaces and parentheses would end a markdown link."""
    return quote(path, safe="/~.-_")


def id_html(value: Any) -> str:
    """An event or room id as a short code span whose `title` holds the whole id (GitHub keeps `title`)."""
    full = "" if value is None else str(value)
    if not full:
        return EMPTY
    if short_id(full) == full:
        return code(full, table=True)
    return f'<code title="{html.escape(full)}">{html.escape(short_id(full), quote=False)}</code>'


def wrapped(lines: list[str]) -> list[str]:
    return [part for line in lines for part in wrap(line)]


def _scenario_row(r: ScenarioResult, lock_failed: bool) -> dict[str, Any]:
    failing = r.status in ("fail", "interrupted")
    if lock_failed and not failing:
        # The record says pass (its steps did); the run failed on its lock evidence: never shown ✅.
        status = "❌ lock fail"
    else:
        status = f"{SCENARIO_STATUS_EMOJI.get(r.status, '❔')} {r.status}"
    return {"id": r.id, "title": r.title, "status": status, "duration": human_ms(r.durationMs),
            "latency": _scenario_latency(r), "details": _short_details(r), "failing": failing or lock_failed}


_LACKS = re.compile(r"'([\w .-]+)' \(")


def lacking_meanings(summary: Summary) -> list[tuple[str, str]]:
    """What each capability a skipped scenario's bot lacked means, in the order the skips name them."""
    bot = summary.environment.bot
    meanings = bot.capabilityMeanings if bot is not None else {}
    named = [name for r in summary.scenarios if r.status == "skip" and " lacks " in r.details
             for name in _LACKS.findall(r.details.split(" lacks ", 1)[1])]
    return [(name, meanings[name]) for name in dict.fromkeys(named) if name in meanings]


def accounts_that_spoke(summary: Summary) -> list[tuple[str, str]]:
    """Per scenario, which of the bot's accounts sent each reply its steps checked (bots with extra accounts)."""
    return [(r.id, ", ".join(f"step {s.index} {s.account}" for s in r.steps if s.account))
            for r in summary.scenarios if any(s.account for s in r.steps)]


def _findings_view(summary: Summary, found: list[Finding]) -> dict[str, Any]:
    status = {r.id: r.status for r in summary.scenarios}
    shown = [{"scenario": f.scenario, "text": f.text, "lock_only": f.lock_only,
              "mark": SCENARIO_STATUS_EMOJI["interrupted"] if status.get(f.scenario or "") == "interrupted" else "❌"}
             for f in found[:FINDINGS_SHOWN]]
    return {"shown": shown, "more": max(0, len(found) - FINDINGS_SHOWN)}


def build_view(summary: Summary) -> dict[str, Any]:
    # Summaries written before the latency fields existed carry only the raw lists.
    latency = summary.latency or latency_stats(ms for r in summary.scenarios for ms in r.replyLatenciesMs)
    negative = [(r.id, check) for r in summary.scenarios for check in r.negativeChecks]
    locks = scenario_locks(summary.lock)
    lock_failed = {sid for sid, mine in locks.items() if mine.failed}
    # Failures in the order of the first screen: failed steps first, then failed lock evidence alone.
    failing = sorted((r for r in summary.scenarios if r.status in ("fail", "interrupted") or r.id in lock_failed),
                     key=lambda r: r.status not in ("fail", "interrupted"))
    in_failures = {r.id for r in failing}
    return {
        "s": summary,
        "env": summary.environment,
        "status_emoji": RUN_STATUS_EMOJI.get(summary.status, "❔"),
        "lock_failed": (summary.lock or {}).get("verdict") == "fail",
        "findings": _findings_view(summary, findings(summary)),
        "command": shlex.join(summary.command) if summary.command else None,
        "run_facts": _run_facts(summary),
        "rows": [_scenario_row(r, r.id in lock_failed) for r in summary.scenarios],
        "lacking": lacking_meanings(summary),
        "spoke": accounts_that_spoke(summary),
        "pass_rates": pass_rate_rows(summary),
        "retries": retry_rows(summary),
        "latency": _latency_view(latency),
        "lock": lock_view(summary.lock, [r.id for r in summary.scenarios]),
        "pictures": lock_pictures(summary),
        "open_rows": OPEN_ROWS,
        "reasons_open": REASONS_OPEN,
        "negative": negative,
        "failures": [failure_view(r, locks.get(r.id)) for r in failing],
        "faults": [(r.id, row) for r in summary.scenarios for row in fault_rows(r)],
        "scenario_artifacts": [(r.id, list(r.artifacts.items())) for r in summary.scenarios
                               if r.artifacts and r.id not in in_failures],
        "artifacts_in_failures": any(r.artifacts for r in failing),
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
    env.filters.update(cell=cell, inline=inline, code=code, ms=human_ms, fenced=fenced, href=href, id_html=id_html,
                       short_session=short_session, short_path=short_path, wrapped=wrapped)
    return use_cache(env, TEMPLATE)  # compiled once per machine, not per run (qa.report.template_cache)


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
