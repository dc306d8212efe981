"""Cold canary benchmark: one `matrix-qa run --scenario canary` from a new process, split into its parts.

    python bench/canary_cold.py [--runs N]

Prints per run: wall time of the whole command (imports, Synapse boot, bot boot, scenario, report, shutdown)
and the run's own timings from its summary. Goal on a 2-core machine: the whole cold canary ≤ 6 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from cli_run import run_matrix_qa

GOAL_S = 6.0


def one_run(out: Path) -> dict[str, float]:
    summary, wall = run_matrix_qa(["--scenario", "canary"], out)
    t = summary["timings"]
    scenario_ms = summary["scenarios"][0]["durationMs"]
    return {
        "wall_s": wall,
        "homeserver_boot_s": t["homeserverBootMs"] / 1000,
        "bot_boot_s": (t["botBootMs"] or 0) / 1000,
        "scenario_s": scenario_ms / 1000,
        "steps_s": (scenario_ms - (t["botBootMs"] or 0)) / 1000,
        "report_s": (t["reportMs"] or 0) / 1000,
        "run_total_s": t["totalMs"] / 1000,
        "outside_run_s": wall - t["totalMs"] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mqa-bench-") as tmp:
        for i in range(args.runs):
            rows.append(one_run(Path(tmp) / f"run{i}"))
    keys = list(rows[0])
    print(f"cold canary, {args.runs} runs (seconds; median / min / max)")
    for key in keys:
        values = [r[key] for r in rows]
        print(f"  {key:20} {statistics.median(values):6.2f} {min(values):6.2f} {max(values):6.2f}")
    wall = statistics.median(r["wall_s"] for r in rows)
    print(f"goal: whole cold canary <= {GOAL_S:.1f} s; median {wall:.2f} s; ratio {wall / GOAL_S:.2f} of goal")
    print("(scenario_s includes bot boot; steps_s is the conversation itself; outside_run_s is interpreter start"
          " and imports before the run's clock starts plus exit)")


if __name__ == "__main__":
    main()
