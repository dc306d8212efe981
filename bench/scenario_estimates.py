"""Writes scenarios/durations.json: the expected ms of each built-in scenario, from a measured run's summary.

    python bench/scenario_estimates.py SUMMARY.json [--out scenarios/durations.json]

The run's scheduler starts scenarios longest expected first under --jobs (qa.harness.plan.longest_first), so the
last job does not run one long scenario alone while the others idle. Only the order reads these figures: a stale
file costs a little tail time, never a verdict. Regenerate after adding a scenario or changing a long one, from
a `matrix-qa run --profile all --jobs 2` summary on a quiet machine: the relative lengths are what count, and
under load or many jobs the contention hides them (a run at --jobs 4 and load 15 correlated 0.07 with one at
--jobs 2 and load 1-6). Skipped scenarios and failed ones are left out (a failure may end early, so its time
says nothing about a pass); ids the file lacks weigh the median of the others.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def estimates(summary: dict) -> dict[str, int]:
    """Per passed scenario id, its duration rounded to 100 ms (finer digits are noise), sorted by id."""
    found = {r["id"]: int(round(r["durationMs"], -2)) for r in summary["scenarios"] if r["status"] == "pass"}
    return dict(sorted(found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "scenarios" / "durations.json")
    args = parser.parse_args()
    summary = json.loads(args.summary.read_text())
    data = {
        "about": "expected ms per built-in scenario: only the start order under --jobs reads it "
                 "(bench/scenario_estimates.py writes it)",
        "measured": f"run {summary['runId']}, --jobs {summary.get('jobs')}",
        "durationsMs": estimates(summary),
    }
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{args.out}: {len(data['durationsMs'])} scenarios from run {summary['runId']}")


if __name__ == "__main__":
    main()
