"""A second homeserver, measured: one run at --jobs J on one Synapse against the same plan on two, paired
A B A B … so the comparison holds on a machine whose load drifts. Not a test: nothing asserted.

    python bench/second_homeserver.py [--pairs N] [--profile fast] [--jobs 2] [--mode option|shards|main DIR]
        [--scenario ID]... [--cpus LIST]

The option now exists (issue 29: `matrix-qa run --homeservers N|auto`, qa.run.homeservers). --mode option (the
default) compares `--homeservers 1` with `--homeservers 2` in one run of this checkout; --mode main DIR compares
the checkout at DIR (before the option: one homeserver) with this one at its defaults (`--homeservers auto`);
--mode shards is what was measured before the option was built: the plan split in two shards run side by side at
--jobs J/2, each with its own Synapse.

--jobs 4 compares the default --jobs on 2 cores (qa.harness.jobs) with two homeservers of 2 jobs each.
--scenario ID (repeatable: give the canary too) runs those instead of the profile: where a second homeserver
starts to pay is a question of the plan's size (qa.harness.jobs.AUTO_MIN_SCENARIOS). --cpus 0 runs both sides
under `taskset -c 0`, so the run sees one core (qa.harness.jobs.usable_cores).

Per side, medians over the pairs: wall time (for B, until both shards are done), CPU seconds of every process
(getrusage of children), Synapse's CPU seconds, and the largest sum of Pss over every process at one instant
(bench/suite_bench.py's sampler). The canary runs in each shard, so B runs it twice.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_bench import REPO, SAMPLE_S, Sampler, every


def _run(commands: list[list[str]], cwd: Path = REPO) -> dict[str, float]:
    """The commands side by side under one shell, so one sampler follows every process they start."""
    script = " & ".join(" ".join(c) for c in commands) + " & wait"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", script], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sampler = Sampler(proc.pid)
    stop_sampling = every(SAMPLE_S, sampler.sample)
    proc.wait()
    wall = time.perf_counter() - began
    stop_sampling()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "cpu_synapse_s": sampler.cpu_s("synapse"),
            "peak_pss_mb": sampler.peak_pss_kb / 1024, "peak_synapse_mb": sampler.hwm_mb("synapse")}


def _verdicts(tmp: Path, pair: int) -> str:
    """Each run's status and homeservers as its summary says: a faster run that failed is no figure."""
    said = []
    for summary in sorted(tmp.glob(f"[ab]-{pair}*/matrix-qa-summary.json")):
        data = json.loads(summary.read_text())
        counts = data["counts"]
        said.append(f"{summary.parent.name} {data['status']} ({counts['passed']}/{counts['total']} passed, "
                    f"{len(data.get('homeservers') or [None])} homeserver(s))")
    return ", ".join(said)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--jobs", type=int, default=2, help="jobs of the one-homeserver run (even: half per shard)")
    parser.add_argument("--scenario", action="append", default=[], metavar="ID",
                        help="run these scenarios (repeatable) instead of --profile")
    parser.add_argument("--cpus", default=None, metavar="LIST", help="run both sides under taskset -c LIST")
    parser.add_argument("--mode", nargs="+", default=["option"], metavar="MODE",
                        help="option (default), shards, or main DIR (see the module notes)")
    args = parser.parse_args()
    mode = args.mode[0]
    if mode not in ("option", "shards", "main") or (mode == "main") != (len(args.mode) == 2):
        parser.error("--mode is option, shards or main DIR")
    if args.jobs < 2 or (mode == "shards" and args.jobs % 2):
        parser.error("--jobs must be at least 2 (each homeserver serves one slot or more), and even with shards")
    tmp = Path(tempfile.mkdtemp(prefix="second-hs-"))
    chosen = [f for i in args.scenario for f in ("--scenario", i)] or ["--profile", args.profile]
    pinned = ["taskset", "-c", args.cpus] if args.cpus else []
    run = [*pinned, sys.executable, "-m", "qa.cli", "run", *chosen, "--progress", "plain", "--jobs", str(args.jobs)]
    half = args.jobs // 2
    names = {"option": (f"--homeservers 1, --jobs {args.jobs}", f"--homeservers 2, --jobs {args.jobs}"),
             "shards": (f"one homeserver, --jobs {args.jobs}", f"two shards, 2 x --jobs {half}"),
             "main": (f"{args.mode[-1]}, --jobs {args.jobs}", f"this checkout (auto), --jobs {args.jobs}")}[mode]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for i in range(args.pairs):
        a_out, b_out = ["--output-dir", str(tmp / f"a-{i}")], ["--output-dir", str(tmp / f"b-{i}")]
        if mode == "option":
            one = _run([[*run, "--homeservers", "1", *a_out]])
            two = _run([[*run, "--homeservers", "2", *b_out]])
        elif mode == "main":
            one = _run([[*run, *a_out]], cwd=Path(args.mode[1]).resolve())
            two = _run([[*run, *b_out]])
        else:
            one = _run([[*run, *a_out]])
            two = _run([[*run[:-1], str(half), "--shard", f"{k}/2", "--output-dir", str(tmp / f"b-{i}-{k}")]
                        for k in (1, 2)])
        for name, figures in zip(results, (one, two), strict=True):
            results[name].append(figures)
        print(f"pair {i + 1}: wall {one['wall_s']:.1f} s vs {two['wall_s']:.1f} s; {_verdicts(tmp, i)}", flush=True)
    for name, rows in results.items():
        medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(f"{name:40s} " + "  ".join(f"{key} {value:.1f}" for key, value in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
