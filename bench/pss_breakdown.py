"""Where a run's peak Pss goes, per process kind: one `matrix-qa run` per tree at a time, alternating between trees.

    python bench/pss_breakdown.py [--runs N] [--profile P] [--jobs J] [--tree DIR]... [--variant ARGS]...
                                  [-- RUN-ARGS...]

bench/suite_bench.py prints the largest sum of Pss over a run's processes at one instant (issue 29: "memory (Pss)
no worse"); this says what that sum is made of. Every SAMPLE_S it reads /proc/PID/smaps_rollup for each process
of the run's tree and sorts it into a kind:

- harness: the `matrix-qa run` process (the mock provider and the test users' clients live in it);
- synapse-zygote: the early Synapse interpreter (qa.homeserver.synapse_zygote) before it is let go;
- synapse: a homeserver's Synapse, forked from that zygote or spawned;
- fork-server: the bots' fork server (qa.harness.zygote);
- bot / lock-probe / state-tool: processes forked from the fork server, told apart by the log their stdout or
  stderr writes to (a probe's stderr is lock-probe.log) or their command line when spawned;
- other: anything else (a middle process between its fork and its exit, a spawned helper).

Printed per tree (medians over runs): the peak Pss sum and, at that instant, each kind's Pss, its file-backed
share (code and libraries), its private dirty share and how many processes of that kind were alive; then each
kind's own peak over the run, its largest single process, and ("one dirty") the median of its processes' own
peak private dirty memory: what one more process of that kind costs (its shared pages stay with the others). Pss of
a process that shares pages with others (forked bots and their fork server, forked Synapses and their zygote)
counts each shared page 1/n per process, so the kinds add up to the total. A process's figures are sampled: lower
bounds for short-lived ones. Not a test: nothing asserted.

Default tree: this checkout. `--tree /work/main --tree .` compares two (each run with PYTHONPATH set to its
tree, as suite_bench does); anything after `--` is passed to `matrix-qa run`. `--variant '--jobs 3'` adds an arm:
the first tree again with those run arguments too (repeatable), its runs alternating with the others', so a run
option's memory (a default's --jobs, --homeservers 1) is paired on one load.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_bench import _read, checkout_env, every  # one /proc reader, one checkout environment, one sampling loop

REPO = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.1
_ZYGOTE = "qa.harness.zygote"
_OLD_ZYGOTE = "qa.agent.zygote"  # its name before it moved (issue 29's start tree, 92c3be8)
KINDS = ("harness", "synapse-zygote", "synapse", "fork-server", "bot", "lock-probe", "state-tool", "other")


@dataclass(frozen=True)
class Seen:
    """One process as /proc shows it: enough to tell its kind."""

    pid: int
    ppid: int
    cmdline: str
    stdout: str  # where fd 1 points (a log file, /dev/null, a pipe)
    stderr: str = ""  # where fd 2 points (a lock probe answers on a pipe and logs to lock-probe.log)


def kind_of(proc: Seen, root: int, by_pid: dict[int, Seen]) -> str:
    """Pure: the kind of one process of a run rooted at `root` (see the module notes)."""
    if proc.pid == root:
        return "harness"
    if "qa.homeserver.seeded_boot" in proc.cmdline:
        # The zygote's stdout is kept for its answers and fd 1 is /dev/null (synapse_zygote.answers_apart); a
        # forked Synapse's fd 1 is its homeserver's log. A middle process (between its two forks) is the zygote's
        # child and lives a few milliseconds: counted as the zygote's.
        parent = by_pid.get(proc.ppid)
        if parent is not None and parent.pid != root and "qa.homeserver.seeded_boot" in parent.cmdline:
            return "synapse-zygote"
        return "synapse" if proc.stdout.endswith(".log") else "synapse-zygote"
    if "synapse.app.homeserver" in proc.cmdline:
        return "synapse"
    if _ZYGOTE in proc.cmdline or _OLD_ZYGOTE in proc.cmdline:
        parent = by_pid.get(proc.ppid)
        if parent is None or (_ZYGOTE not in parent.cmdline and _OLD_ZYGOTE not in parent.cmdline):
            return "fork-server"
        return _bot_kind(proc.stdout, proc.stderr)
    if "qa.agent.lock_probe" in proc.cmdline:
        return "lock-probe"
    if "qa.agent.state_tools" in proc.cmdline:
        return "state-tool"
    return "bot" if "qa.agent" in proc.cmdline else "other"


def _bot_kind(stdout: str, stderr: str) -> str:
    names = {os.path.basename(stdout), os.path.basename(stderr)}
    if "lock-probe.log" in names:
        return "lock-probe"
    return "state-tool" if "bot-mutations.log" in names else "bot"


@dataclass
class Instant:
    pss_kb: dict[str, int] = field(default_factory=dict)
    private_kb: dict[str, int] = field(default_factory=dict)
    file_kb: dict[str, int] = field(default_factory=dict)  # Pss of file-backed pages (code, libraries)
    count: dict[str, int] = field(default_factory=dict)

    @property
    def total_kb(self) -> int:
        return sum(self.pss_kb.values())


@dataclass
class Follower:
    """Samples one process tree until stopped: the instant of the largest Pss sum, and each kind's own peak."""

    root: int
    peak: Instant = field(default_factory=Instant)
    kind_peak_kb: dict[str, int] = field(default_factory=dict)
    one_peak_kb: dict[str, int] = field(default_factory=dict)  # the largest single process of each kind
    kinds: dict[int, str] = field(default_factory=dict)
    own_dirty_kb: dict[int, int] = field(default_factory=dict)  # each process's own peak private dirty memory

    def sample(self) -> None:
        seen = _tree(self.root)
        now = Instant()
        for proc in seen.values():
            rollup = _rollup(proc.pid)
            if not rollup:
                continue
            kind = kind_of(proc, self.root, seen)
            if self.kinds.get(proc.pid) in (None, "other"):
                self.kinds[proc.pid] = kind
            kind = self.kinds[proc.pid]
            pss = rollup.get("Pss", 0)
            self.own_dirty_kb[proc.pid] = max(self.own_dirty_kb.get(proc.pid, 0), rollup.get("Private_Dirty", 0))
            now.pss_kb[kind] = now.pss_kb.get(kind, 0) + pss
            now.private_kb[kind] = now.private_kb.get(kind, 0) + rollup.get("Private_Dirty", 0)
            now.file_kb[kind] = now.file_kb.get(kind, 0) + rollup.get("Pss_File", 0)
            now.count[kind] = now.count.get(kind, 0) + 1
            self.one_peak_kb[kind] = max(self.one_peak_kb.get(kind, 0), pss)
        for kind, kb in now.pss_kb.items():
            self.kind_peak_kb[kind] = max(self.kind_peak_kb.get(kind, 0), kb)
        if now.total_kb > self.peak.total_kb:
            self.peak = now


def _tree(root: int) -> dict[int, Seen]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return {pid: Seen(pid, parents.get(pid, 0), _read(f"/proc/{pid}/cmdline").replace("\0", " "),
                      _link(f"/proc/{pid}/fd/1"), _link(f"/proc/{pid}/fd/2")) for pid in tree}


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # gone, or not ours to read
        return ""


def _rollup(pid: int) -> dict[str, int]:
    figures = {}
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            figures[name] = int(parts[0])
    return figures


def one_run(tree: Path, out: Path, run_args: list[str]) -> tuple[Follower, float, int]:
    env = checkout_env(tree)
    command = [sys.executable, "-m", "qa.cli", "run", "--output-dir", str(out), *run_args]
    began = time.perf_counter()
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    follower = Follower(proc.pid)
    stop_sampling = every(SAMPLE_S, follower.sample)
    code = proc.wait()
    stop_sampling()
    return follower, time.perf_counter() - began, code


def report(tree: Path | str, rows: list[tuple[Follower, float, int]]) -> list[str]:
    med = statistics.median
    lines = [f"{tree}: {len(rows)} run(s), exit codes {[code for _, _, code in rows]}, wall "
             f"{med(w for _, w, _ in rows):.1f} s (median)",
             f"  peak Pss sum {med(f.peak.total_kb for f, _, _ in rows) / 1024:7.1f} MiB; at that instant:",
             f"  {'kind':16}{'Pss MiB':>10}{'of it file':>11}{'dirty MiB':>11}{'procs':>7}   {'own peak MiB':>13}"
             f"{'largest one':>13}{'one dirty':>13}"]
    for kind in KINDS:
        if not any(kind in f.kind_peak_kb for f, _, _ in rows):
            continue
        lines.append(f"  {kind:16}{med(f.peak.pss_kb.get(kind, 0) for f, _, _ in rows) / 1024:10.1f}"
                     f"{med(f.peak.file_kb.get(kind, 0) for f, _, _ in rows) / 1024:11.1f}"
                     f"{med(f.peak.private_kb.get(kind, 0) for f, _, _ in rows) / 1024:11.1f}"
                     f"{med(f.peak.count.get(kind, 0) for f, _, _ in rows):7.0f}   "
                     f"{med(f.kind_peak_kb.get(kind, 0) for f, _, _ in rows) / 1024:13.1f}"
                     f"{med(f.one_peak_kb.get(kind, 0) for f, _, _ in rows) / 1024:13.1f}"
                     f"{one_dirty_kb(kind, [f for f, _, _ in rows]) / 1024:13.1f}")
    return lines


def one_dirty_kb(kind: str, followers: list[Follower]) -> float:
    """Pure: the median, over every process of `kind` in these runs, of its own peak private dirty memory (0: none)."""
    peaks = [kb for f in followers for pid, kb in f.own_dirty_kb.items() if f.kinds.get(pid) == kind]
    return statistics.median(peaks) if peaks else 0.0


def main() -> int:
    argv = sys.argv[1:]
    run_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--jobs", type=int, default=None, help="the run's --jobs (default: the runner's)")
    parser.add_argument("--tree", type=Path, action="append", default=None,
                        help="a checkout to run (repeatable; default: this one); runs alternate between trees")
    parser.add_argument("--variant", action="append", default=[], metavar="ARGS",
                        help="one more arm: the first tree with these run arguments too, e.g. '--jobs 3' (repeatable)")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [REPO])]
    run_args = ["--profile", args.profile, *(["--jobs", str(args.jobs)] if args.jobs else []), *run_args]
    arms = [(str(t), t, run_args) for t in trees] + [(f"{trees[0]} {v}", trees[0], [*run_args, *shlex.split(v)])
                                                      for v in args.variant]
    results: dict[str, list[tuple[Follower, float, int]]] = {label: [] for label, _, _ in arms}
    with tempfile.TemporaryDirectory(prefix="mqa-pss-") as tmp:
        for i in range(args.runs):
            for n, (label, tree, arm_args) in enumerate(arms):
                results[label].append(one_run(tree, Path(tmp) / f"{n}-{i}", arm_args))
    print(f"matrix-qa run {' '.join(run_args)}")
    for label, rows in results.items():
        print("\n".join(report(label, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
