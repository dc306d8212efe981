"""Bot boot, paired: two source trees' fast profiles run in turn (A B A B …, --jobs 1 unless --jobs J), so the
comparison holds on a machine whose load drifts. Not a test: nothing is asserted.

    python bench/boot_pairs.py --pairs N [--jobs J] BEFORE_TREE AFTER_TREE

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


def one_run(tree: Path, jobs: int = 1) -> tuple[float, list[float], list[float]]:
    out = Path(tempfile.mkdtemp(prefix="boot-pairs-"))
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "qa.cli", "run", "--profile", "fast", "--jobs", str(jobs), "--output-dir",
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
    parser.add_argument("--jobs", type=int, default=1, help="scenarios at once (the run's default is the cores)")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    ns = parser.parse_args()
    results: dict[str, tuple[list[float], list[float], list[float]]] = {"before": ([], [], []), "after": ([], [], [])}
    ratios: list[float] = []  # per pair: after's bot boot p50 / before's, taken side by side
    for i in range(ns.pairs):
        pair_boot: dict[str, float] = {}
        for name, tree in (("before", ns.before), ("after", ns.after)):
            wall, boots, inner = one_run(tree.resolve(), ns.jobs)
            results[name][0].append(wall)
            results[name][1].extend(boots)
            results[name][2].extend(inner)
            pair_boot[name] = statistics.median(boots) if boots else float("nan")
            print(f"pair {i + 1} {name}: wall {wall:.1f} s, bot boot p50 {pair_boot[name]:.0f} ms", flush=True)
        ratios.append(pair_boot["after"] / pair_boot["before"])
    for name, (walls, boots, inner) in results.items():
        print(f"{name}: harness bot boot p50 {statistics.median(boots):.0f} ms (n={len(boots)}); in-bot start->ready "
              f"p50 {statistics.median(inner):.0f} ms (n={len(inner)}); run wall p50 {statistics.median(walls):.1f} s")
    print(f"paired ratio after/before of bot boot p50: median {statistics.median(ratios):.2f} "
          f"(per pair: {', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
