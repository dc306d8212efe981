"""One record per scenario of a --repeat N run, from its N attempts: pure, so pass rates are unit-tested.

Each attempt ran as its own scenario (`<id>~<k>`: its own users, rooms, bot, markers and artifacts); the record
keeps one entry per scenario id, with the attempts listed under `passRate`, so every reader of the summary
(JUnit, the markdown, `report --merge`, `--rerun-failed`) sees scenarios, not attempts.
"""

from __future__ import annotations

from collections.abc import Sequence

from qa.report.summary import Attempt, PassRate, ScenarioResult, Summary, latency_stats
from qa.report.verdict import is_flaky, pass_rate, repeated_status

ATTEMPT_SEPARATOR = "~"


def attempt_id(scenario_id: str, attempt: int) -> str:
    return f"{scenario_id}{ATTEMPT_SEPARATOR}{attempt}"


def scenario_of(run_id: str) -> str:
    """attempt_id's inverse: the scenario an attempt (or a plain scenario id) runs."""
    return run_id.split(ATTEMPT_SEPARATOR, 1)[0]


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.0f} %"


def combine_attempts(scenario_id: str, title: str, attempts: Sequence[ScenarioResult], ran_as: Sequence[str],
                     min_pass_rate: float) -> ScenarioResult:
    """The scenario's record: its status from the pass rate (qa.report.verdict.repeated_status); its steps,
    failure and artifacts those of the first attempt that did not pass (the one worth reading), else the last."""
    statuses = [a.status for a in attempts]
    status = repeated_status(statuses, min_pass_rate)
    passed, finished, rate = pass_rate(statuses)
    flaky = is_flaky(statuses)
    shown = next((a for a in attempts if a.status in ("fail", "interrupted")), attempts[-1])
    numbered = list(enumerate(attempts, start=1))
    failed = [k for k, a in numbered if a.status == "fail"]
    if finished:
        details = f"{passed} of {finished} attempts passed ({percent(rate)})"
        if flaky:
            details += ", flaky"
        if min_pass_rate < 1 or status == "fail":
            details += f"; needs {percent(min_pass_rate)}"
        if failed:
            details += f"; attempt {failed[0]}: {shown.details}"
        not_finished = len(attempts) - finished
        if not_finished:
            details += f"; {not_finished} attempt(s) did not finish"
        # A pass that could not make a check says so in its details; the combined record must keep saying it, or
        # the markdown and JUnit (which read `details`) would show 'N of N passed' for checks that were not made.
        unchecked = [k for k, a in numbered if a.status == "pass" and "NOT CHECKED" in a.details]
        if unchecked:
            details += f"; NOT CHECKED in attempt(s) {', '.join(map(str, unchecked))}: " \
                + attempts[unchecked[0] - 1].details
    else:
        details = shown.details
    latencies = [ms for a in attempts for ms in a.replyLatenciesMs]
    return shown.model_copy(update={
        "id": scenario_id, "title": title, "status": status, "details": details,
        "durationMs": round(sum(a.durationMs for a in attempts), 1),
        "failure": shown.failure if status in ("fail", "interrupted") else None,
        "replyLatenciesMs": latencies, "latency": latency_stats(latencies),
        "negativeChecks": [c for a in attempts for c in a.negativeChecks],
        "retries": [r for a in attempts for r in a.retries],
        "passRate": PassRate(
            repeat=len(attempts), finished=finished, passed=passed,
            passRate=round(rate, 4) if rate is not None else None, minPassRate=min_pass_rate, flaky=flaky,
            attempts=[Attempt(attempt=k, status=a.status, durationMs=a.durationMs, details=a.details,
                              ranAs=ran, retried=bool(a.retries))
                      for (k, a), ran in zip(numbered, ran_as, strict=True)]),
    })


def rerun_ids(summary: Summary) -> list[str]:
    """What --rerun-failed runs again: the scenarios that failed or were cut short, and those a stopped run
    (a signal, --timeout, a dead homeserver) never got to; never what passed or was skipped for a reason."""
    return [r.id for r in summary.scenarios
            if r.status in ("fail", "interrupted") or (r.status == "skip" and r.details.startswith("not run"))]
