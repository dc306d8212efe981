"""What matrix-nio's schema validation of responses costs the harness's event loop (and each bot's), per run.

    python bench/sync_validation_cost.py [-- extra matrix-qa run arguments]

Runs `matrix-qa run` (the fast profile unless told otherwise) with bench/validation_probe on PYTHONPATH and prints,
for the harness (the process started here) and for the bots together: the thread CPU spent in nio's
`validate_json` (calls, and the five costliest schemas), the CPU of parsing each /sync response (its body to a
SyncResponse, the validation included; an upper bound, since what other tasks run while the body is read counts too)
and the main thread's CPU in all. Thread CPU: the figure is the work, not the
machine's load, and not a profiler's overhead (cProfile reads jsonschema's many small calls several times too
slow). Issue 29 asked whether this validation is worth taking off the harness's loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "bench" / "validation_probe"


def summary(label: str, stats: list[dict[str, Any]]) -> list[str]:
    by: dict[str, list[float]] = {}
    for one in stats:
        for schema, (spent, calls) in one["validate"].items():
            total = by.setdefault(schema, [0.0, 0])
            total[0] += spent
            total[1] += calls
    validate_s = sum(spent for spent, _ in by.values())
    calls = sum(int(n) for _, n in by.values())
    syncs = [s for one in stats for s in one["syncs"]]
    main_s = sum(one["mainThreadCpuS"] for one in stats)
    lines = [f"{label} ({len(stats)} process{'es' if len(stats) != 1 else ''}): main-thread CPU {main_s:.2f} s; "
             f"nio validate_json {validate_s * 1000:.1f} ms in {calls} calls "
             f"({validate_s / main_s * 100 if main_s else 0:.1f} % of it)"]
    if syncs:
        lines.append(f"  /sync responses parsed: {len(syncs)}, {sum(syncs) * 1000:.1f} ms in all, "
                     f"p50 {statistics.median(syncs) * 1000:.2f} ms each (validation included)")
    for schema, (spent, n) in sorted(by.items(), key=lambda item: -item[1][0])[:5]:
        lines.append(f"  {schema:24s} {spent * 1000:7.1f} ms  {int(n):5d} calls  {spent / n * 1000:.3f} ms a call")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extra", nargs="*", help="more arguments for matrix-qa run (after --)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sync-validation-"))
    (work / "probe").mkdir()
    env = {**os.environ, "MATRIX_QA_VALIDATION_PROBE": str(work / "probe"),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(PROBE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "qa.cli", "run", "--output-dir", str(work / "out"), *args.extra]
    harness = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code = harness.wait()
    files = {int(f.stem.split("-")[1]): json.loads(f.read_text()) for f in (work / "probe").glob("validation-*.json")}
    if harness.pid not in files:
        print(f"the run wrote no probe file for the harness (exit {code}); see {work}")
        return 1
    print(f"run exit {code}; artifacts in {work}")
    print("\n".join(summary("harness", [files.pop(harness.pid)])))
    print("\n".join(summary("bots and helpers", [s for s in files.values() if s["syncs"] or s["validate"]])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
