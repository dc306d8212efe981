"""`matrix-qa compare BASE HEAD`: what changed between two runs, as markdown for a pull request (or JSON).

`compare` is pure (two Summaries in, a Comparison out) and so are the renderers; `main` reads the files. What
counts, each rule chosen so that noise on a shared CI machine does not fail a pull request:

- **Verdicts**: a scenario's verdict is its status, and `fail` when its steps passed but its lock evidence did
  not (as the report shows it). pass → fail or interrupted, and skip → fail, are regressions; fail → pass is a
  fix; anything else (pass → skip) is a change. The run's lock verdict turning `fail` is a regression too.
- **New and vanished scenarios**: listed; a new scenario that fails is a regression.
- **Timings**: per scenario, the reply latency p50 and the lock's longest hold, longest wait and time held
  during I/O. A change is listed only beyond noise, |Δ| ≥ max(floor, share × the smaller of the two values) with
  the floor and share of NOISE; a rise beyond noise is a regression, a fall an improvement.

Exit code of `main`: 1 when something regressed, 0 when nothing did, 2 when a summary cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qa.kernel.errors import ConfigError
from qa.kernel.terminal import safe_print, terminal_safe
from qa.report.headline import ScenarioLock, scenario_locks
from qa.report.summary import ScenarioResult, Summary, latency_stats
from qa.report.text import human_ms, signed_ms

SCHEMA = "matrix-qa.compare/v1"
# metric -> (what a reader calls it, floor ms, share of the base): a change smaller than both is noise.
NOISE: dict[str, tuple[str, float, float]] = {
    "replyLatencyP50Ms": ("reply latency p50", 250.0, 1.0),
    "longestHoldMs": ("longest lock hold", 50.0, 1.0),
    "longestWaitMs": ("longest wait for the lock", 50.0, 1.0),
    "heldDuringIoMs": ("lock held during I/O", 1.0, 0.0),
}
_BAD = ("fail", "interrupted")
STATUS_MARK = {"pass": "✅", "fail": "❌", "skip": "⏭️", "interrupted": "⏹️"}


@dataclass(frozen=True)
class VerdictChange:
    scenario: str
    base: str
    head: str
    change: str  # "regressed", "fixed" or "changed"


@dataclass(frozen=True)
class Delta:
    scenario: str
    metric: str
    baseMs: float
    headMs: float
    deltaMs: float
    regressed: bool


@dataclass
class Comparison:
    base: dict[str, Any]
    head: dict[str, Any]
    verdictChanges: list[VerdictChange] = field(default_factory=list)
    new: list[dict[str, str]] = field(default_factory=list)  # scenario, verdict
    vanished: list[dict[str, str]] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    lockVerdict: dict[str, str] | None = None  # base, head: only when it changed

    @property
    def regressed_scenarios(self) -> list[str]:
        """Each scenario that regressed once, however many of its measures did."""
        found = [c.scenario for c in self.verdictChanges if c.change == "regressed"]
        found += [n["scenario"] for n in self.new if n["verdict"] in _BAD]
        found += [d.scenario for d in self.deltas if d.regressed]
        return list(dict.fromkeys(found))

    @property
    def regressions(self) -> int:
        """Regressed scenarios; a lock verdict turned `fail` counts once more when no scenario shows it."""
        lock = 1 if self.lockVerdict and self.lockVerdict["head"] == "fail" else 0
        return len(self.regressed_scenarios) or lock

    def to_json_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "regressed": self.regressions > 0, "regressedScenarios": self.regressed_scenarios,
                **asdict(self)}


def verdict(result: ScenarioResult, lock: ScenarioLock | None) -> str:
    return "fail" if result.status == "pass" and lock is not None and lock.failed else result.status


def change_of(base: str, head: str) -> str:
    if head in _BAD and base not in _BAD:
        return "regressed"
    if base in _BAD and head == "pass":
        return "fixed"
    return "changed"


def measures(result: ScenarioResult, lock: ScenarioLock | None) -> dict[str, float]:
    """The timings compared for one scenario; a measure the run did not take is absent, not zero."""
    found: dict[str, float] = {}
    latency = result.latency or latency_stats(result.replyLatenciesMs)
    if latency is not None:
        found["replyLatencyP50Ms"] = latency.p50Ms
    if lock is not None:
        found.update(longestHoldMs=lock.held_ms, longestWaitMs=lock.waited_ms, heldDuringIoMs=lock.overlap_ms)
    return found


def beyond_noise(metric: str, base: float, head: float) -> bool:
    _, floor, share = NOISE[metric]
    # Relative to the smaller side, so that halving is as far beyond noise as doubling.
    return abs(head - base) >= max(floor, share * min(base, head))


def _run(summary: Summary) -> dict[str, Any]:
    return {"runId": summary.runId, "status": summary.status, "scenarios": len(summary.scenarios),
            "lockVerdict": (summary.lock or {}).get("verdict")}


def compare(base: Summary, head: Summary) -> Comparison:
    out = Comparison(base=_run(base), head=_run(head))
    base_locks, head_locks = scenario_locks(base.lock), scenario_locks(head.lock)
    before = {r.id: r for r in base.scenarios}
    after = {r.id: r for r in head.scenarios}
    for r in head.scenarios:
        now = verdict(r, head_locks.get(r.id))
        if r.id not in before:
            out.new.append({"scenario": r.id, "verdict": now})
            continue
        old = verdict(before[r.id], base_locks.get(r.id))
        if old != now:
            out.verdictChanges.append(VerdictChange(r.id, old, now, change_of(old, now)))
        was, now_m = measures(before[r.id], base_locks.get(r.id)), measures(r, head_locks.get(r.id))
        for metric in NOISE:
            if metric in was and metric in now_m and beyond_noise(metric, was[metric], now_m[metric]):
                delta = now_m[metric] - was[metric]
                out.deltas.append(Delta(r.id, metric, was[metric], now_m[metric], round(delta, 3), delta > 0))
    out.vanished = [{"scenario": r.id, "verdict": verdict(r, base_locks.get(r.id))}
                    for r in base.scenarios if r.id not in after]
    old_lock, new_lock = out.base["lockVerdict"], out.head["lockVerdict"]
    if old_lock != new_lock and old_lock is not None and new_lock is not None:
        out.lockVerdict = {"base": old_lock, "head": new_lock}
    return out


def _mark(status: str) -> str:
    return f"{STATUS_MARK.get(status, '❔')} {status}"


def render_compare_markdown(c: Comparison) -> str:
    n = c.regressions
    head = "❌" if n else "✅"
    what = (f"{n} scenario{'s' if n != 1 else ''} regressed" if c.regressed_scenarios
            else "the lock evidence regressed" if n else "no regression")
    lines = [f"## {head} matrix-qa compare: {what}",
             "",
             f"Base `{c.base['runId']}` ({c.base['status']}, {c.base['scenarios']} scenarios) → head "
             f"`{c.head['runId']}` ({c.head['status']}, {c.head['scenarios']} scenarios)", ""]
    if c.lockVerdict:
        lines += [f"**Lock evidence:** {c.lockVerdict['base']} → {c.lockVerdict['head']}", ""]
    if c.verdictChanges:
        lines += ["### Verdicts that changed", "", "| Scenario | Base | Head | |", "|---|---|---|---|"]
        lines += [f"| `{v.scenario}` | {_mark(v.base)} | {_mark(v.head)} | {v.change} |" for v in c.verdictChanges]
        lines.append("")
    for title, items in (("New scenarios", c.new), ("Vanished scenarios", c.vanished)):
        if items:
            lines += [f"### {title}", ""] + [f"- `{i['scenario']}`: {_mark(i['verdict'])}" for i in items] + [""]
    if c.deltas:
        lines += ["### Timings beyond noise", "", "| Scenario | Measure | Base | Head | Change | |",
                  "|---|---|---:|---:|---:|---|"]
        lines += [f"| `{d.scenario}` | {NOISE[d.metric][0]} | {human_ms(d.baseMs)} | {human_ms(d.headMs)} | "
                  f"{signed_ms(d.deltaMs)} | {'❌ worse' if d.regressed else '✅ better'} |" for d in c.deltas]
        lines.append("")
    if not (c.verdictChanges or c.new or c.vanished or c.deltas or c.lockVerdict):
        lines += ["Same scenarios, same verdicts, no timing beyond noise.", ""]
    noise = "; ".join(f"{label} {floor:g} ms" + (f" or {share:.0%} of the smaller value" if share else "")
                      for label, floor, share in NOISE.values())
    lines.append(f"Noise (a smaller change is not listed): {noise}.")
    return "\n".join(lines) + "\n"


def _summary_path(given: Path) -> Path:
    return given / "matrix-qa-summary.json" if given.is_dir() else given


def main(argv: Sequence[str] | None = None) -> int:
    from qa.report.writer import load_summary

    parser = argparse.ArgumentParser(prog="matrix-qa compare", description="What changed between two runs: "
                                     "verdicts, new and vanished scenarios, timings beyond noise. Exit 1 when "
                                     "something regressed.")
    parser.add_argument("base", type=Path, help="the base run: its matrix-qa-summary.json or its directory")
    parser.add_argument("head", type=Path, help="the run to judge: its matrix-qa-summary.json or its directory")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead of markdown")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        result = compare(load_summary(_summary_path(args.base)), load_summary(_summary_path(args.head)))
    except ConfigError as exc:
        safe_print(f"matrix-qa: {exc}", file=sys.stderr)
        return 2
    # JSON escapes the C0 controls itself; the markdown shows scenario ids read from the two summaries.
    print(json.dumps(result.to_json_dict(), indent=2, ensure_ascii=False) if args.json
          else terminal_safe(render_compare_markdown(result)), end="" if not args.json else "\n")
    return 1 if result.regressions else 0


if __name__ == "__main__":
    sys.exit(main())
