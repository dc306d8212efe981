"""Bot boot, paired, and where a boot's time goes. Not a test: nothing is asserted.

    python bench/boot_pairs.py --pairs N [--jobs J] BEFORE_TREE AFTER_TREE   two trees' fast profiles in turn
    python bench/boot_pairs.py --runs N [--jobs J] TREE                      one tree, with the breakdown
    python bench/boot_pairs.py --from-dir DIR...                             the breakdown of runs already made
    ... --scenario ID [--scenario ID ...]                                    those scenarios, not the fast profile

Each tree is a checkout (a worktree, or `git archive REV | tar -x -C DIR`); its runs get PYTHONPATH=TREE, --jobs 1
unless --jobs J (J 0: the run's default, the cores). Paired: A B A B …, so the comparison holds on a machine whose
load drifts; per tree, medians over every bot start of every run: the harness's botBootMs (process start -> ready
seen), the bot's own `start` -> `ready`, and the runs' wall time.

The breakdown (a tree whose runs record it: the scenario's `botBootMarks` and the `ready` record's `boot`
phases, qa/agent/boot.py) splits each first boot of a scenario, medians over the boots, into:
  spawn        the harness asks the fork server (or execs) until it has the pid
  to main      from there until the bot's code starts (`python -m`'s work in the child: runpy, asyncio.run)
  <phase>      the bot's own phases up to `ready`, each as wall = CPU + queued for a core + the rest (I/O wait)
  notice       `ready` written until the harness read it (its trace poll, its busy loop)
  wake         read until the scenario's wait_ready returned
and, from the homeserver's log, Synapse's own time (and CPU) on the bot's first /sync and its joins.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# Synapse's access log: "{@user:hs} Processed request: 0.010sec/0.000sec ru=(0.002sec, 0.002sec) … "GET /path …"
_ACCESS = re.compile(r"\{(?P<user>@[^}]+)\} Processed request: (?P<wall>[\d.]+)sec/[\d.]+sec "
                     r"ru=\((?P<ucpu>[\d.]+)sec, (?P<scpu>[\d.]+)sec\).*?\"(?P<method>[A-Z]+) (?P<path>\S+)")


def one_run(tree: Path, jobs: int = 1, scenarios: list[str] | None = None) -> tuple[float, Path]:
    out = Path(tempfile.mkdtemp(prefix="boot-pairs-"))
    began = time.monotonic()
    jobs_args = ["--jobs", str(jobs)] if jobs else []
    # Given scenarios instead of the fast profile (e.g. the encrypted ones, whose boots load a crypto store).
    jobs_args += [arg for scenario in scenarios or [] for arg in ("--scenario", scenario)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as .ci/run: bytecode kept
    done = subprocess.run([sys.executable, "-m", "qa.cli", "run", "--profile", "fast", *jobs_args, "--output-dir",
                           str(out), "--progress", "plain"], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=900)
    if done.returncode != 0:  # a failed run's boots are not a figure to compare (its output is kept to look at)
        raise SystemExit(f"boot_pairs: the run in {tree} ended with exit {done.returncode}; see {out}")
    return time.monotonic() - began, out


def boots(out: Path) -> tuple[list[float], list[float]]:
    """The harness's botBootMs of every scenario, and the bot's own start -> ready of every start."""
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    harness = [s["botBootMs"] for s in summary["scenarios"] if s.get("botBootMs")]
    inner = []
    for trace in out.glob("scenarios/*/bot-trace.jsonl"):
        start = None
        for record in _records(trace):
            if record.get("type") == "start":
                start = record["t"]
            elif record.get("type") == "ready" and start is not None:
                inner.append(record["t"] - start)
                start = None
    return harness, inner


def _records(trace: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def _synapse(out: Path) -> dict[str, list[tuple[str, str, float, float]]]:
    """Per user: (method, path, wall ms, CPU ms) of each request, in the log's order."""
    per_user: dict[str, list[tuple[str, str, float, float]]] = defaultdict(list)
    log = out / "homeserver" / "synapse.log"
    if log.exists():
        for m in _ACCESS.finditer(log.read_text(errors="replace")):
            per_user[m["user"]].append((m["method"], m["path"], float(m["wall"]) * 1000,
                                        (float(m["ucpu"]) + float(m["scpu"])) * 1000))
    return per_user


def breakdown(out: Path) -> list[dict[str, float]]:
    """One row per scenario's first boot: component -> ms (see the module's docstring)."""
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    synapse = _synapse(out)
    rows = []
    for scenario in summary["scenarios"]:
        marks = scenario.get("botBootMarks")
        trace = out / "scenarios" / scenario["id"] / "bot-trace.jsonl"
        if not marks or not trace.exists():
            continue
        ready = next((r for r in _records(trace) if r.get("type") == "ready" and "boot" in r), None)
        if ready is None:
            continue
        boot = ready["boot"]
        ready_at = ready["t"] - marks["t"]  # ms after the harness began
        main_at = ready_at - sum(p["wallMs"] for p in boot["phases"].values())
        row = {"total (harness botBootMs)": marks["seenMs"], "spawn": marks["spawnedMs"],
               "to main": main_at - marks["spawnedMs"],
               "  CPU before main": boot["beforeStart"]["cpuMs"],
               "  queued before main": boot["beforeStart"]["queueMs"]}
        for name, phase in boot["phases"].items():
            row[name] = phase["wallMs"]
            for part in ("cpuMs", "queueMs", "ioMs"):
                row[f"  {name} {part[:-2]}"] = phase[part]
        row["bot CPU to ready"] = boot["beforeStart"]["cpuMs"] + sum(p["cpuMs"] for p in boot["phases"].values())
        row["bot queued to ready"] = boot["beforeStart"]["queueMs"] + sum(p["queueMs"] for p in boot["phases"].values())
        if "readyReadMs" in marks:
            row["notice"] = marks["readyReadMs"] - ready_at
            row["wake"] = marks["seenMs"] - marks["readyReadMs"]
        requests = synapse.get(ready.get("userId", ""), [])
        first_sync = next((r for r in requests if "/sync" in r[1] and "full_state=true" in r[1]), None)
        if first_sync:
            row["synapse: first /sync"], row["synapse: first /sync CPU"] = first_sync[2], first_sync[3]
        joins = [r for r in requests if "/join/" in r[1]]
        if joins:
            row["synapse: join"], row["synapse: join CPU"] = max(r[2] for r in joins), sum(r[3] for r in joins)
        rows.append(row)
    return rows


def print_breakdown(name: str, rows: list[dict[str, float]]) -> None:
    if not rows:
        print(f"{name}: no breakdown (a tree without botBootMarks / the `ready` record's boot phases)")
        return
    print(f"{name}: where a boot's time goes, p50 over {len(rows)} first boots (ms; a component's p50s do not add up)")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    for key in keys:
        values = [row[key] for row in rows if key in row]
        print(f"  {key:<32} p50 {statistics.median(values):7.1f}   p90 {_p90(values):7.1f}   (n={len(values)})")


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=0, help="one tree, N runs, with the breakdown")
    parser.add_argument("--jobs", type=int, default=1, help="scenarios at once (0: the run's default, the cores)")
    parser.add_argument("--from-dir", action="store_true", help="the arguments are output dirs of runs made")
    parser.add_argument("--scenario", action="append", default=[],
                        help="run these scenarios (repeatable) instead of the whole fast profile")
    parser.add_argument("trees", type=Path, nargs="+")
    ns = parser.parse_args()
    if ns.from_dir:
        print_breakdown("runs", [row for out in ns.trees for row in breakdown(out)])
        return 0
    names = ["before", "after"] if len(ns.trees) == 2 and not ns.runs else [str(t) for t in ns.trees]
    runs = ns.runs or ns.pairs
    results: dict[str, tuple[list[float], list[float], list[float], list[dict[str, float]]]] = {
        name: ([], [], [], []) for name in names}
    ratios: list[float] = []  # per pair: after's bot boot p50 / before's, taken side by side
    for i in range(runs):
        pair_boot: dict[str, float] = {}
        for name, tree in zip(names, ns.trees, strict=True):
            wall, out = one_run(tree.resolve(), ns.jobs, ns.scenario)
            harness, inner = boots(out)
            results[name][0].append(wall)
            results[name][1].extend(harness)
            results[name][2].extend(inner)
            results[name][3].extend(breakdown(out))
            pair_boot[name] = statistics.median(harness) if harness else float("nan")
            print(f"run {i + 1} {name}: wall {wall:.1f} s, bot boot p50 {pair_boot[name]:.0f} ms ({out})", flush=True)
        if len(names) == 2:
            ratios.append(pair_boot[names[1]] / pair_boot[names[0]])
    for name, (walls, harness, inner, rows) in results.items():
        print(f"{name}: harness bot boot p50 {statistics.median(harness):.0f} ms (n={len(harness)}); in-bot "
              f"start->ready p50 {statistics.median(inner):.0f} ms (n={len(inner)}); run wall p50 "
              f"{statistics.median(walls):.1f} s")
        print_breakdown(name, rows)
    if ratios:
        print(f"paired ratio {names[1]}/{names[0]} of bot boot p50: median {statistics.median(ratios):.2f} "
              f"(per pair: {', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
