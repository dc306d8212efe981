"""A homeserver per job, measured rather than built: one run at --jobs J on one Synapse, against the same plan
split in two shards run side by side at --jobs J/2, each with its own Synapse (what "a second homeserver per job"
would do), paired A B A B … so the comparison holds on a machine whose load drifts. Not a test: nothing asserted.

    python bench/second_homeserver.py [--pairs N] [--profile fast] [--jobs 2]

--jobs 4 compares the default --jobs on 2 cores (qa.harness.jobs) with two homeservers of 2 jobs each.

Per side, medians over the pairs: wall time (for B, until both shards are done), CPU seconds of every process
(getrusage of children), Synapse's CPU seconds, and the largest sum of Pss over every process at one instant
(bench/suite_bench.py's sampler). The canary runs in each shard, so B runs it twice.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_bench import REPO, Sampler


def _run(commands: list[list[str]]) -> dict[str, float]:
    """The commands side by side under one shell, so one sampler follows every process they start."""
    script = " & ".join(" ".join(c) for c in commands) + " & wait"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", script], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sampler = Sampler(proc.pid)
    thread = sampler.start()
    proc.wait()
    wall = time.perf_counter() - began
    sampler.stop(thread)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "cpu_synapse_s": sampler.cpu_s("synapse"),
            "peak_pss_mb": sampler.peak_pss_kb / 1024, "peak_synapse_mb": sampler.hwm_mb("synapse")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--jobs", type=int, default=2, help="jobs of the one-homeserver run (even: half per shard)")
    args = parser.parse_args()
    if args.jobs < 2 or args.jobs % 2:
        parser.error("--jobs must be even and at least 2 (each shard runs half)")
    tmp = Path(tempfile.mkdtemp(prefix="second-hs-"))
    run = [sys.executable, "-m", "qa.cli", "run", "--profile", args.profile, "--progress", "plain"]
    half = args.jobs // 2
    results: dict[str, list[dict[str, float]]] = {f"one homeserver, --jobs {args.jobs}": [],
                                                  f"two homeservers, 2 x --jobs {half}": []}
    for i in range(args.pairs):
        one = _run([[*run, "--jobs", str(args.jobs), "--output-dir", str(tmp / f"one-{i}")]])
        two = _run([[*run, "--jobs", str(half), "--shard", f"{k}/2", "--output-dir", str(tmp / f"two-{i}-{k}")]
                    for k in (1, 2)])
        for name, figures in zip(results, (one, two), strict=True):
            results[name].append(figures)
        print(f"pair {i + 1}: wall {one['wall_s']:.1f} s vs {two['wall_s']:.1f} s", flush=True)
    for name, rows in results.items():
        medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(f"{name:32s} " + "  ".join(f"{key} {value:.1f}" for key, value in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
