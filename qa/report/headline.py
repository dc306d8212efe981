"""What went wrong, in one sentence per failing scenario: the report's first screen.

Pure: a Summary in, plain sentences out (the renderers escape them). A scenario fails by its steps, by the lock
evidence of its turns, or both; the sentence leads with the lock finding (the hold across I/O and the wait it
caused) when there is one, because that is what this tool exists to show, and otherwise with the failing step's
expectation and the value that decided it. A failing lock verdict whose reasons belong to no scenario gets a
line of its own, so a failure of the evidence alone is never without a pointer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qa.report.lock_timeline import WAIT_NOTED_MS
from qa.report.summary import ScenarioResult, Summary
from qa.report.text import clip, deciding_first, fields, human_ms, humanize_durations, shorten_ids, shorten_paths

SEEN_CHARS = 160
# `lock.acquire with waitMs <= 25`: the scenario's own limit on the wait, quoted with the wait.
_WAIT_LIMIT = re.compile(r"\bwaitMs\s*<=?\s*(\d+(?:\.\d+)?)")
_SESSION_REASON = re.compile(r"^session (\S+)")
FAILING = ("fail", "interrupted")


@dataclass
class ScenarioLock:
    """One scenario's part of the run's lock evidence."""

    sessions: set[str] = field(default_factory=set)
    overlap_ms: float = 0.0  # the worst turn's
    overlap_attempt: str = ""
    io_kinds: set[str] = field(default_factory=set)
    waited_ms: float = 0.0  # the longest wait of any of its turns
    held_ms: float = 0.0  # the longest hold of any of its turns
    reasons: list[str] = field(default_factory=list)  # the verdict's reasons about its sessions

    @property
    def failed(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Finding:
    scenario: str | None  # None: the lock evidence of no scenario in particular
    text: str
    lock_only: bool = False  # the scenario's steps passed; its lock evidence did not


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def scenario_locks(lock: Mapping[str, Any] | None) -> dict[str, ScenarioLock]:
    """Per scenario (as tag_scenarios named the turns): its sessions, worst overlap, longest wait, reasons."""
    found: dict[str, ScenarioLock] = {}
    if not isinstance(lock, Mapping):
        return found
    for turn in lock.get("turns") or []:
        if not isinstance(turn, Mapping) or not turn.get("scenario"):
            continue
        mine = found.setdefault(str(turn["scenario"]), ScenarioLock())
        mine.sessions.add(str(turn.get("session")))
        if _num(turn.get("overlapMs")) > mine.overlap_ms:
            mine.overlap_ms, mine.overlap_attempt = _num(turn.get("overlapMs")), str(turn.get("attempt") or "?")
            mine.io_kinds = {str(k) for k in turn.get("ioKinds") or ["model"]}
        waits = [_num(e) - _num(s) for s, e in (w for w in turn.get("waits") or [] if len(w) == 2)]
        mine.waited_ms = max([mine.waited_ms, *waits])
        mine.held_ms = max(mine.held_ms, _num(turn.get("longestHoldMs")))
    if lock.get("verdict") == "fail":
        for reason in lock.get("reasons") or []:
            session = _SESSION_REASON.match(str(reason))
            for mine in found.values():
                if session and session.group(1).rstrip(":") in mine.sessions:
                    mine.reasons.append(str(reason))
    return found


def lock_sentence(mine: ScenarioLock, expected: str) -> str:
    """`the bot held its session write lock during model I/O for 1.51 s (turn-1); a second writer waited 1.44 s
    for it (limit 25 ms)`; without an overlap, the first of the scenario's lock reasons."""
    limit = _WAIT_LIMIT.search(expected)
    limit_text = f" (limit {limit.group(1)} ms)" if limit else ""
    if mine.overlap_ms > 0:
        io = "model I/O" if mine.io_kinds <= {"model"} else "I/O"
        text = (f"the bot held its session write lock during {io} for {human_ms(mine.overlap_ms)} "
                f"({mine.overlap_attempt})")
        if mine.waited_ms >= WAIT_NOTED_MS:
            text += f"; a second writer waited {human_ms(mine.waited_ms)} for it{limit_text}"
        return text
    if mine.reasons:
        return humanize_durations(shorten_ids(mine.reasons[0]))
    return ""


def seen_value(result: ScenarioResult) -> str:
    """The seen value that decided the failing step: the fields the expectation names when the first seen line
    has them, else that line, cut to fit a sentence."""
    failure = result.failure
    if failure is None or not failure.seen:
        return "nothing"
    first = shorten_paths(shorten_ids(str(failure.seen[0]).splitlines()[0] if failure.seen[0] else ""))
    named = set(re.findall(r"[A-Za-z][\w.]*", failure.expected))
    deciding = [f"{k}={v}" for k, v in fields(first)[1] if k in named]
    return " ".join(deciding) if deciding else clip(deciding_first(first, failure.expected), SEEN_CHARS)


def step_sentence(result: ScenarioResult) -> str:
    failure = result.failure
    if failure is None:
        return result.details or result.status
    step = f"step {failure.step}" if failure.step is not None else "a step"
    kind = f" ({failure.stepKind})" if failure.stepKind else ""
    expected = clip(failure.expected, SEEN_CHARS)
    return f"{step}{kind} expected {expected}; saw {seen_value(result)}"


def _scenario_finding(result: ScenarioResult, mine: ScenarioLock | None) -> Finding | None:
    failing = result.status in FAILING
    locked = mine is not None and mine.failed
    if not failing and not locked:
        return None
    expected = result.failure.expected if result.failure else ""
    lock_text = lock_sentence(mine, expected) if mine is not None and locked else ""
    if not failing:
        return Finding(result.id, f"its steps passed, but {lock_text}", lock_only=True)
    # The wait the lock sentence quotes is what an expectation on waitMs measured: one sentence says both.
    explained = bool(lock_text) and "waitMs" in expected and mine is not None and mine.waited_ms >= WAIT_NOTED_MS
    if result.status == "interrupted":
        parts = [lock_text, result.details or "interrupted"]
    else:
        parts = [lock_text, "" if explained else step_sentence(result)]
    return Finding(result.id, "; ".join(p for p in parts if p))


def findings(summary: Summary) -> list[Finding]:
    """One finding per scenario that failed by its steps, then per scenario that failed only by its lock
    evidence (each in the scenarios' order), then one for the lock verdict's reasons that name no scenario's
    session."""
    locks = scenario_locks(summary.lock)
    found = [f for r in summary.scenarios if (f := _scenario_finding(r, locks.get(r.id))) is not None]
    found.sort(key=lambda f: f.lock_only)  # the scenarios that failed their steps first, each group in table order
    lock = summary.lock or {}
    if lock.get("verdict") == "fail":
        claimed = {reason for mine in locks.values() for reason in mine.reasons}
        rest = [str(r) for r in lock.get("reasons") or [] if str(r) not in claimed]
        if rest:
            more = f" (and {len(rest) - 1} more)" if len(rest) > 1 else ""
            found.append(Finding(None, humanize_durations(shorten_ids(rest[0])) + more))
    return found
