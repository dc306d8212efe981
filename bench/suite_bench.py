"""Suite benchmark: a profile, cold, at --jobs 1 and at the default --jobs, with a profile of the run.

    python bench/suite_bench.py [--runs N] [--profile P]... [--jobs J]... [--compare-exec] [--before DIR] [--hops]

Issue 29's figures in one call, before and after on the same day (the same machine, the same hour):

    python bench/suite_bench.py --runs 3 --profile fast --profile all --hops --before /tmp/before

Each run is `matrix-qa run` in a new process (interpreter start, imports, Synapse boot, every scenario, report
and shutdown all inside the wall time). The fast profile is measured at --jobs 1 and at the default --jobs;
any other profile (`--profile all`) at the default only, unless --jobs asks for more. --compare-exec adds a
column at the default --jobs with --no-fork-server: every bot a fresh interpreter, as before the fork server.
Per configuration, medians over the runs of:

- wall time, and the ratio default / --jobs 1;
- the run's own timings from its summary: homeserver boot, bot boot p50 (process start -> ready), and where the
  scenarios' time went (bot boot, the rest of setup: users, logins, rooms; the steps), summed over scenarios;
- reply latency p50 / p95 (driver send -> reply seen, minus the mock model's simulated latency);
- CPU seconds by process (harness, Synapse, fork server, bots), per scenario, and how many cores the run kept
  busy on average;
- peak memory: VmHWM (the kernel's resident high-water mark) of the harness, of Synapse and of the largest bot;
  the largest sum of VmRSS over all bots, and over every process, at one instant; and the largest sum of Pss
  over every process at one instant (forked bots share the fork server's pages: RSS counts those once per
  process, Pss splits them, so the Pss sum is what the run really holds).

Then "where the wall time went": before the run's clock (interpreter start, imports), the homeserver's boot
(the fork server starts beside it), the wait for the fork server once the homeserver was ready (the summary's
forkServerWaitMs), the scenarios (their own times summed, divided by the jobs that ran them),
the report, and exit.

Memory and per-process CPU come from sampling /proc every 50 ms for the run's process tree; a process's
figures are those of its last sample before it exited, so they are lower bounds (a bot lives about a second;
its memory is reached while it boots, well before its last sample). Total CPU is exact (getrusage of children).

--before DIR measures a second checkout (another commit's tree: `git worktree add DIR COMMIT`) the same way,
its runs alternating with this one's (before, after, before, after, ...) so a drift in the machine's load falls on
both; each figure is then printed before, after and after/before. --hops adds bench/latency_breakdown.py (one run
at --jobs 1 per checkout and per --runs): our share of a reply (the bot's hops, p50) and the ratio of the reply
latency to the Synapse floor measured in the same run.

Goals on a 2-core machine (default --jobs, issue 29): fast profile wall <= 7 s, the all profile <= 40 s; bot boot
p50 <= 100 ms; our hops <= 10 ms p50 and reply latency <= 1.3 x the Synapse floor (--hops); Pss no worse than
before (--before). Issue 18's reply latency goals (p50 <= 50 ms, p95 <= 120 ms) are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.05
GOAL_WALL_S = {"fast": 7.0, "all": 40.0}
GOAL_BOOT_MS = 100.0
GOAL_OURS_MS = 10.0
GOAL_FLOOR_RATIO = 1.3
GOAL_P50_MS = 50.0
GOAL_P95_MS = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class _Proc:
    kind: str
    hwm_kb: int = 0
    cpu_s: float = 0.0


def every(interval_s: float, sample: Any) -> Any:
    """`sample()` on a daemon thread every `interval_s`; returns the function that stops it (after the sample in
    progress, if any)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            sample()
            stop.wait(interval_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join()

    return halt


@dataclass
class Sampler:
    """Follows one process tree through /proc: per process its VmHWM and CPU time, per instant the RSS sums."""

    root: int
    procs: dict[int, _Proc] = field(default_factory=dict)
    peak_rss_kb: dict[str, int] = field(default_factory=dict)
    peak_pss_kb: int = 0

    def sample(self) -> None:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _read(f"/proc/{entry}/stat")
                if stat:
                    parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree, frontier = {self.root}, [self.root]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
            tree.update(children)
            frontier.extend(children)
        rss: dict[str, int] = {}
        pss = 0
        for pid in tree:
            status = _read(f"/proc/{pid}/status")
            stat = _read(f"/proc/{pid}/stat")
            if not status or not stat:
                continue
            proc = self.procs.get(pid)
            if proc is None:
                proc = self.procs[pid] = _Proc(self._kind(pid, parents.get(pid)))
            elif proc.kind == "other":
                # Seen between its fork and its exec (still the harness's command line): look again, or a
                # Synapse caught in that window would be counted as "other" for the whole run.
                proc.kind = self._kind(pid, parents.get(pid))
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            proc.hwm_kb = max(proc.hwm_kb, _kb(fields.get("VmHWM")))
            ticks = stat.rsplit(")", 1)[1].split()
            proc.cpu_s = (int(ticks[11]) + int(ticks[12])) / CLOCK_TICKS  # utime + stime
            rss[proc.kind] = rss.get(proc.kind, 0) + _kb(fields.get("VmRSS"))
            pss += _pss_kb(pid)
        rss["all"] = sum(rss.values())
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        for kind, kb in rss.items():
            self.peak_rss_kb[kind] = max(self.peak_rss_kb.get(kind, 0), kb)

    def _kind(self, pid: int, parent: int | None) -> str:
        if pid == self.root:
            return "harness"
        cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
        if "synapse.app.homeserver" in cmdline:
            return "synapse"
        if "qa.harness.zygote" in cmdline:  # a forked bot keeps its parent's command line: told apart by parent
            forked = parent is not None and "qa.harness.zygote" in _read(f"/proc/{parent}/cmdline")
            return "bot" if forked else "fork-server"
        return "bot" if "qa.agent" in cmdline else "other"

    def hwm_mb(self, kind: str) -> float:
        return max((p.hwm_kb for p in self.procs.values() if p.kind == kind), default=0) / 1024

    def cpu_s(self, kind: str) -> float:
        return sum(p.cpu_s for p in self.procs.values() if p.kind == kind)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:  # the process exited between listing and reading
        return ""


def _pss_kb(pid: int) -> int:
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return _kb(line.split(":", 1)[1])
    return 0


def _kb(value: str | None) -> int:
    return int(value.split()[0]) if value and value.split() else 0


@dataclass(frozen=True)
class Config:
    name: str
    jobs: int | None  # None: the runner's default
    fork_server: bool = True


def checkout_env(tree: Path) -> dict[str, str]:
    """The environment that runs `tree`'s matrix-qa whatever the editable install points at: every process of the
    run (Synapse's boot helper, the fork server, bots) imports qa from PYTHONPATH first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}


def one_run(config: Config, profile: str, out: Path, tree: Path = REPO) -> dict[str, float]:
    command = [sys.executable, "-m", "qa.cli", "run", "--profile", profile, "--output-dir", str(out)]
    if config.jobs is not None:
        command += ["--jobs", str(config.jobs)]
    if not config.fork_server:
        command.append("--no-fork-server")
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.Popen(command, cwd=tree, env=checkout_env(tree), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    stop_sampling = every(SAMPLE_S, sampler.sample)
    _, stderr = proc.communicate()
    wall = time.perf_counter() - began
    stop_sampling()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"run of {tree} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    summary: dict[str, Any] = json.loads((out / "matrix-qa-summary.json").read_text())
    t = summary["timings"]
    scenarios = summary["scenarios"]
    jobs = float(summary.get("jobs") or 1)
    boots = [s["botBootMs"] or 0.0 for s in scenarios]
    steps = [sum(step["durationMs"] for step in s["steps"]) for s in scenarios]
    latency = summary.get("latency") or {}
    cpu_total = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    sum_scenarios_s = sum(s["durationMs"] for s in scenarios) / 1000
    return {
        "scenarios": float(len(scenarios)),
        "jobs": jobs,
        "wall_s": wall,
        "homeserver_boot_s": t["homeserverBootMs"] / 1000,
        "fork_server_wait_s": (t.get("forkServerWaitMs") or 0) / 1000,
        "bot_boot_p50_ms": statistics.median(boots),
        "bot_boot_p95_ms": _p95(boots),
        "scenarios_wall_s": t["scenariosMs"] / 1000,
        "sum_bot_boot_s": sum(boots) / 1000,
        "sum_setup_without_boot_s": sum_scenarios_s - sum(boots) / 1000 - sum(steps) / 1000,
        "sum_steps_s": sum(steps) / 1000,
        "before_run_s": wall - t["totalMs"] / 1000,
        "report_s": (t.get("reportMs") or 0) / 1000,
        "reply_p50_ms": latency.get("p50Ms", float("nan")),
        "reply_p95_ms": latency.get("p95Ms", float("nan")),
        "replies": float(latency.get("count", 0)),
        "cpu_harness_s": sampler.cpu_s("harness"),
        "cpu_synapse_s": sampler.cpu_s("synapse"),
        "cpu_fork_server_s": sampler.cpu_s("fork-server"),
        "cpu_bots_s": sampler.cpu_s("bot"),
        "cpu_total_s": cpu_total,
        "cpu_per_scenario_s": cpu_total / max(len(scenarios), 1),
        "cores_busy": cpu_total / wall,
        "peak_harness_mb": sampler.hwm_mb("harness"),
        "peak_synapse_mb": sampler.hwm_mb("synapse"),
        "peak_one_bot_mb": sampler.hwm_mb("bot"),
        "peak_bots_at_once_mb": sampler.peak_rss_kb.get("bot", 0) / 1024,
        "peak_all_at_once_mb": sampler.peak_rss_kb.get("all", 0) / 1024,
        "peak_all_pss_mb": sampler.peak_pss_kb / 1024,
        "bots": float(sum(1 for p in sampler.procs.values() if p.kind == "bot")),
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else float("nan")


def where_the_time_went(m: dict[str, float]) -> list[str]:
    """The wall time of one configuration, phase by phase; the scenario phase split by its own summed times."""
    scenarios = m["scenarios_wall_s"]
    parts = {"bot boot": m["sum_bot_boot_s"], "setup (users, logins, rooms)": m["sum_setup_without_boot_s"],
             "steps": m["sum_steps_s"]}
    summed = sum(parts.values()) or 1.0
    waited = m["fork_server_wait_s"]
    rest = m["wall_s"] - m["before_run_s"] - m["homeserver_boot_s"] - waited - scenarios - m["report_s"]
    rows = [("before the run's clock (interpreter start, imports), exit", m["before_run_s"], ""),
            ("homeserver boot (the fork server starts beside it)", m["homeserver_boot_s"], ""),
            ("waiting for the fork server once the homeserver was ready", waited, ""),
            (f"scenarios: {int(m['scenarios'])} at --jobs {int(m['jobs'])}", scenarios, "")]
    rows += [(f"  {name}", scenarios * value / summed, f"  ({value:.2f} s summed over scenarios)")
             for name, value in parts.items()]
    rows += [("report", m["report_s"], ""),
             ("the rest (run set-up before the homeserver's clock, provider start, shutdown)", rest, "")]
    return [f"  {label:60} {value:6.2f} s{note}" for label, value, note in rows]


def configs_for(profile: str, extra_jobs: list[int], compare_exec: bool) -> list[Config]:
    configs = [Config("jobs=1", 1)] if profile == "fast" else []
    configs.append(Config("default", None))
    configs += [Config(f"jobs={j}", j) for j in extra_jobs]
    if compare_exec:
        configs.append(Config("no-fork", None, fork_server=False))
    return configs


_OURS = re.compile(r"^\s*ours\s+([\d.]+)\s+([\d.]+)")
_RATIO = re.compile(r"^ratio reply latency p50 / floor: .* = ([\d.]+)")


def hops_run(tree: Path) -> dict[str, float]:
    """One bench/latency_breakdown.py run of `tree` (its own copy of the script): ours p50/p90 per reply and the
    ratio to the Synapse floor; NaN for a figure that script did not print."""
    done = subprocess.run([sys.executable, str(tree / "bench" / "latency_breakdown.py"), "--runs", "1"], cwd=tree,
                          env=checkout_env(tree), capture_output=True, text=True, check=False)
    figures = {"ours_p50_ms": float("nan"), "ours_p90_ms": float("nan"), "floor_ratio": float("nan")}
    for line in done.stdout.splitlines():
        if m := _OURS.match(line):
            figures["ours_p50_ms"], figures["ours_p90_ms"] = float(m[1]), float(m[2])
        elif m := _RATIO.match(line):
            figures["floor_ratio"] = float(m[1])
    if done.returncode != 0:
        sys.exit(f"latency_breakdown of {tree} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return figures


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def _ratio(after: float, before: float) -> str:
    return f"{after / before:14.3f}" if before and before == before and after == after else f"{'':>14}"


def print_profile(profile: str, runs: int, after: dict[str, dict[str, float]],
                  before: dict[str, dict[str, float]] | None) -> None:
    default = after["default"]
    print(f"{profile} profile, cold, {runs} run(s) per column (medians); default --jobs = "
          f"{int(default['jobs'])} on {os.cpu_count()} cores")
    if before is None:
        names = list(after)
        print(f"  {'':28}" + "".join(f"{n:>14}" for n in names))
        for key in default:
            print(f"  {key:28}" + "".join(f"{after[n][key]:14.2f}" for n in names))
    else:
        for name in after:
            print(f"  {name:28}{'before':>14}{'after':>14}{'after/before':>14}")
            for key in after[name]:
                b, a = before[name].get(key, float("nan")), after[name][key]
                print(f"  {key:28}{b:14.2f}{a:14.2f}{_ratio(a, b)}")
    if "jobs=1" in after:
        one = after["jobs=1"]
        print(f"ratio wall default / jobs=1: {default['wall_s'] / one['wall_s']:.2f} "
              f"({one['wall_s'] / default['wall_s']:.2f}x faster)")
    if "no-fork" in after:
        exec_ = after["no-fork"]
        print(f"ratio wall default / no-fork: {default['wall_s'] / exec_['wall_s']:.2f}; bot boot p50 "
              f"{default['bot_boot_p50_ms']:.0f} ms vs {exec_['bot_boot_p50_ms']:.0f} ms; bot CPU "
              f"{default['cpu_bots_s'] + default['cpu_fork_server_s']:.1f} s vs {exec_['cpu_bots_s']:.1f} s")
    goal = GOAL_WALL_S.get(profile)
    print("goals (default --jobs):"
          + (f" wall <= {goal:.0f} s: {default['wall_s']:.2f} s ({default['wall_s'] / goal:.2f} of goal);" if goal
             else "")
          + f" bot boot p50 <= {GOAL_BOOT_MS:.0f} ms: {default['bot_boot_p50_ms']:.0f} ms "
          f"({default['bot_boot_p50_ms'] / GOAL_BOOT_MS:.2f}); reply p50 <= {GOAL_P50_MS:.0f} ms: "
          f"{default['reply_p50_ms']:.0f} ms ({default['reply_p50_ms'] / GOAL_P50_MS:.2f}); reply p95 <= "
          f"{GOAL_P95_MS:.0f} ms: {default['reply_p95_ms']:.0f} ms ({default['reply_p95_ms'] / GOAL_P95_MS:.2f})"
          + (f"; Pss {default['peak_all_pss_mb']:.0f} MiB against {before['default']['peak_all_pss_mb']:.0f} "
             f"before ({default['peak_all_pss_mb'] / before['default']['peak_all_pss_mb']:.2f})" if before else ""))
    print("where the wall time went (default --jobs):")
    print("\n".join(where_the_time_went(default)))


def print_hops(runs: int, after: dict[str, float], before: dict[str, float] | None) -> None:
    print(f"our hops (bench/latency_breakdown.py, --jobs 1, {runs} run(s), medians of the runs' figures):")
    for key, goal in (("ours_p50_ms", f"goal <= {GOAL_OURS_MS:.0f} ms"), ("ours_p90_ms", ""),
                      ("floor_ratio", f"goal <= {GOAL_FLOOR_RATIO}")):
        said = f"  {key:28}" + (f"{before[key]:14.2f}" if before else "") + f"{after[key]:14.2f}"
        print(said + (_ratio(after[key], before[key]) if before else "") + f"   {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="cold runs per configuration (medians are shown)")
    parser.add_argument("--profile", action="append", default=None,
                        help="the scenario profile to run (fast, all, …); repeatable (default: fast)")
    parser.add_argument("--jobs", type=int, action="append", default=None, metavar="J",
                        help="extra --jobs values to measure besides the default (repeatable)")
    parser.add_argument("--compare-exec", action="store_true",
                        help="also measure the default --jobs with --no-fork-server")
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="another checkout to measure the same way, its runs alternating with this one's")
    parser.add_argument("--hops", action="store_true", help="also our hops and the floor ratio (latency_breakdown)")
    args = parser.parse_args()
    before_tree = args.before.resolve() if args.before else None
    if before_tree is not None and not (before_tree / "qa" / "cli.py").is_file():
        sys.exit(f"--before {args.before}: not a matrix-qa checkout (no qa/cli.py)")
    trees = [("before", before_tree)] if before_tree else []
    trees.append(("after", REPO))
    for profile in args.profile or ["fast"]:
        configs = configs_for(profile, args.jobs or [], args.compare_exec)
        results: dict[str, dict[str, list[dict[str, float]]]] = {side: {} for side, _ in trees}
        with tempfile.TemporaryDirectory(prefix="mqa-suite-bench-") as tmp:
            for config in configs:
                for i in range(args.runs):
                    for side, tree in trees:
                        out = Path(tmp) / f"{side}-{config.name}-{i}"
                        results[side].setdefault(config.name, []).append(one_run(config, profile, out, tree))
        medians = {side: {name: _medians(rows) for name, rows in by_config.items()}
                   for side, by_config in results.items()}
        print_profile(profile, args.runs, medians["after"], medians.get("before"))
        print()
    if args.hops:
        hops: dict[str, list[dict[str, float]]] = {side: [] for side, _ in trees}
        for _ in range(args.runs):
            for side, tree in trees:
                hops[side].append(hops_run(tree))
        print_hops(args.runs, _medians(hops["after"]), _medians(hops["before"]) if before_tree else None)
    print("(sum_* add the scenarios' own times, which overlap under --jobs; the scenario phase above is split in "
          "their proportions; peak_* in MiB, lower bounds: see the docstring)")


if __name__ == "__main__":
    main()
