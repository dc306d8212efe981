"""Bot boot, paired: two source trees' fast profiles run in turn (A B A B …, --jobs 1), so the comparison holds
on a machine whose load drifts. Not a test: nothing is asserted.

    python bench/boot_pairs.py --pairs N BEFORE_TREE AFTER_TREE

Each tree is a checkout (e.g. `git archive REV | tar -x -C DIR`); its runs get PYTHONPATH=TREE. Per tree, medians
over every bot start of every run: the harness's botBootMs (process start -> ready seen) and the bot's own
trace, `start` -> `ready` (the embedded agent's in-trace marks), and the runs' wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(tree: Path) -> tuple[float, list[float], list[float]]:
    out = Path(tempfile.mkdtemp(prefix="boot-pairs-"))
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "qa.cli", "run", "--profile", "fast", "--jobs", "1", "--output-dir",
                    str(out), "--progress", "plain"], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.monotonic() - began
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    boots = [s["botBootMs"] for s in summary["scenarios"] if s.get("botBootMs")]
    inner = []
    for trace in out.glob("scenarios/*/bot-trace.jsonl"):
        start = None
        for line in trace.read_text().splitlines():
            record = json.loads(line)
            if record.get("type") == "start":
                start = record["t"]
            elif record.get("type") == "ready" and start is not None:
                inner.append(record["t"] - start)
                start = None
    return wall, boots, inner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    ns = parser.parse_args()
    results: dict[str, tuple[list[float], list[float], list[float]]] = {"before": ([], [], []), "after": ([], [], [])}
    for i in range(ns.pairs):
        for name, tree in (("before", ns.before), ("after", ns.after)):
            wall, boots, inner = one_run(tree.resolve())
            results[name][0].append(wall)
            results[name][1].extend(boots)
            results[name][2].extend(inner)
            print(f"pair {i + 1} {name}: wall {wall:.1f} s", flush=True)
    for name, (walls, boots, inner) in results.items():
        print(f"{name}: harness bot boot p50 {statistics.median(boots):.0f} ms (n={len(boots)}); in-bot start->ready "
              f"p50 {statistics.median(inner):.0f} ms (n={len(inner)}); run wall p50 {statistics.median(walls):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
