"""How a run's jobs were used: when each scenario started and ended, and the idle tail of the side-by-side phase.

    python bench/jobs_tail.py ARTIFACT_DIR [ARTIFACT_DIR ...] [--simulate 2,4,6]

Reads the run's own output log (matrix-qa-output.log: every `[id] ▶` start and `[id] ✔/✘` end line is stamped)
and its summary (the --jobs it ran at). Prints, per run: the side-by-side phase (after the canary, before the
scenarios that run alone), the tail idle time (summed over the jobs: how long each job sat idle between its last
scenario's end and the phase's end, i.e. the time the run spent on fewer scenarios than --jobs after the last
start), the scenarios that ran alone, and the last finishers. A long scenario started late shows as a long tail;
qa.harness.plan.longest_first starts the long ones first.

--simulate J,... replays each run's scenario durations (its summary) through J jobs, in plan order and longest
first, and prints each order's makespan and tail: the ordering's effect without the noise of a second run
(durations under more jobs grow with contention, so the figures are the order's share, not a forecast).
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"(\S+Z) \[([^\]]+)\] (.)")


def stamps(log: Path) -> tuple[dict[str, float], dict[str, float]]:
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if not match:
            continue
        t = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
        sid, mark = match.group(2), match.group(3)
        if mark == "▶":
            start[sid] = t
        elif mark in "✔✘":
            end[sid] = max(end.get(sid, 0.0), t)
    return start, end


def ran_alone(spans: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The scenarios that started only after every other had ended (a homeserver restart runs alone, last)."""
    return [s for s in spans if s[2] != "canary" and s[0] >= max(e for _, e, i in spans if i != s[2]) - 1e-3]


def report(run_dir: Path) -> str:
    summary = json.loads((run_dir / "matrix-qa-summary.json").read_text())
    jobs = int(summary.get("jobs") or 1)
    start, end = stamps(run_dir / "matrix-qa-output.log")
    spans = sorted((start[i], end[i], i) for i in start if i in end)
    if not spans:
        return f"{run_dir}: no scenario start/end lines"
    t0 = spans[0][0]
    alone = ran_alone(spans)
    together = [s for s in spans if s[2] != "canary" and s not in alone]
    if not together:
        return f"{run_dir}: nothing ran side by side"
    phase_end = max(e for _, e, _ in together)
    last_ends = sorted(e for _, e, _ in together)[-jobs:]
    idle = sum(phase_end - e for e in last_ends)
    lines = [f"{run_dir}: --jobs {jobs}, {len(spans)} scenarios, first start to last end "
             f"{max(e for _, e, _ in spans) - t0:.1f} s",
             f"  side by side {min(s for s, _, _ in together) - t0:.1f} -> {phase_end - t0:.1f} s; tail idle "
             f"{idle:.1f} job-s (the last {jobs} ends spread over {phase_end - last_ends[0]:.1f} s)"]
    lines += [f"  alone: {i} {s - t0:.1f} -> {e - t0:.1f} s ({e - s:.1f} s)" for s, e, i in alone]
    last = sorted(together, key=lambda x: x[1])[-jobs:]
    lines.append("  last finishers: " + ", ".join(f"{i} ({e - s:.1f} s, ended {e - t0:.1f})" for s, e, i in last))
    return "\n".join(lines)


def makespan(durations: list[float], jobs: int) -> tuple[float, float]:
    """(when the last job ends, idle job-seconds before that) with each next scenario to the first free job."""
    free = [0.0] * jobs
    for d in durations:
        k = free.index(min(free))
        free[k] += d
    return max(free), sum(max(free) - f for f in free)


def simulate(run_dir: Path, jobs: list[int]) -> str:
    summary = json.loads((run_dir / "matrix-qa-summary.json").read_text())
    start, end = stamps(run_dir / "matrix-qa-output.log")
    alone = {i for _, _, i in ran_alone(sorted((start[i], end[i], i) for i in start if i in end))}
    together = [r for r in summary["scenarios"]
                if r["status"] != "skip" and r["id"] != "canary" and r["id"] not in alone]
    plan = [r["durationMs"] / 1000 for r in together]
    lines = [f"  simulated from its {len(plan)} side-by-side durations (sum {sum(plan):.1f} s):"]
    for j in jobs:
        (a, ai), (b, bi) = makespan(plan, j), makespan(sorted(plan, reverse=True), j)
        lines.append(f"    --jobs {j}: plan order {a:.1f} s (tail idle {ai:.1f} job-s), longest first {b:.1f} s "
                     f"(tail idle {bi:.1f}); floor {sum(plan) / j:.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="artifact directories of finished runs")
    parser.add_argument("--simulate", default="", help="comma-separated job counts to replay the durations at")
    args = parser.parse_args()
    for run_dir in args.runs:
        print(report(run_dir))
        if args.simulate:
            print(simulate(run_dir, [int(j) for j in args.simulate.split(",")]))


if __name__ == "__main__":
    main()
