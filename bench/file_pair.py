"""Some test files in two trees at once: what a change to tests costs per file, on a shared machine.

    python bench/file_pair.py --base DIR --head DIR [--runs N] -- PYTEST_ARGS...

Each run starts `python bench/suite_time.py -- PYTEST_ARGS` in both trees at the same moment (each with
PYTHONPATH=its tree, at nice 5), so both sides see the same outside load, and prints each side's CPU (user+sys of
pytest and every process it reaped: workers, Synapses, bots), wall time and outcome, then the head/base ratios.
Two checkouts, e.g. `git archive main | tar -x -C /tmp/base`. A side with a failed test is marked: a run cut
short by a failure costs less and its figure is no saving. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

CPU = re.compile(r"^cpu: ([0-9.]+) s user\+sys", re.M)
WALL = re.compile(r"^wall time: ([0-9.]+) s", re.M)
TESTS = re.compile(r"^tests: (.*)$", re.M)


def _start(tree: Path, args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(["nice", "-n", "5", sys.executable, "bench/suite_time.py", "--top", "0", "--", *args],
                            cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _figures(text: str) -> tuple[float | None, float | None, str]:
    cpu, wall, tests = CPU.search(text), WALL.search(text), TESTS.search(text)
    return (float(cpu[1]) if cpu else None, float(wall[1]) if wall else None, tests[1] if tests else "no result")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--head", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("pytest_args", nargs="+")
    args = parser.parse_args()
    for run in range(1, args.runs + 1):
        procs = {side: _start(tree.resolve(), args.pytest_args) for side, tree in
                 (("base", args.base), ("head", args.head))}
        got = {side: _figures(proc.communicate()[0]) for side, proc in procs.items()}
        for side, (cpu, wall, tests) in got.items():
            mark = "" if "failed" not in tests and "error" not in tests else "  (FAILED: not comparable)"
            print(f"run {run} {side}: cpu {cpu} s, wall {wall} s, tests {tests}{mark}")
        (bc, bw, _), (hc, hw, _) = got["base"], got["head"]
        if bc and bw and hc and hw:
            print(f"run {run} head/base: cpu {hc / bc:.3f}, wall {hw / bw:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
