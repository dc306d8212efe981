"""Where the embedded Synapse's time goes in a run: its CPU before, during and after the scenarios, and py-spy's
samples of it bucketed by what they served.

    python bench/synapse_profile.py [--profile fast] [--rate 250] [--out DIR] [--top 8]
    python bench/synapse_profile.py --again DIR     # print a kept profile (--out DIR) again

Runs `matrix-qa run --profile P --homeservers 1` from this checkout (PYTHONPATH = the checkout, so it measures
this tree, not the installed one), attaches `py-spy record --gil --threads` to each Synapse process of the run as
soon as it exists: its early interpreter (the import counts as boot), then the Synapse forked from it, which serves
the scenarios (one recorder each; their samples are read together); and samples those processes' CPU (utime +
stime, summed) from /proc every 50 ms. Printed:

- Synapse's CPU split at its log's first and last request from a scenario (admin registration or a `mqa-` user):
  boot (imports, config, schema) / scenarios / after;
- py-spy's samples in buckets, each with its largest members: boot (imports, the rest), a client request (the
  servlet method that served it), event persistence outside a request, the database thread (by transaction
  function), HTTP machinery around the servlet, background processes, the notifier, GC, and the rest of the
  reactor's work (by the outermost Synapse frame under it, e.g. a /sync's per-room work that runs in its own
  context). `--gil` counts only the thread holding the GIL, so the buckets share Synapse's Python CPU; time in C
  with the GIL released (SQLite, fsync, epoll) is left out. On a loaded machine a thread that holds the GIL while
  descheduled is counted too: compare buckets within one profile, not across machines.

Per request (counts, their own CPU and database time): bench/synapse_requests.py OUT/run. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
SCENARIO_REQUEST = re.compile(r"\{@mqa-[^}]*\} Processed request|Processed request: .*/_synapse/admin/v1/register")
SERVLET = re.compile(r"\.(on_GET|on_POST|on_PUT|on_DELETE)$")
# Wrappers that every piece of reactor work runs under: not what the work was for.
PLUMBING = re.compile(r"synapse/(logging|metrics|util/async_helpers|util/caches|util/__init__)")


def frames(stack: str) -> tuple[str, list[tuple[str, str]]]:
    """One folded py-spy line's thread and its frames, outermost first, as (function, file)."""
    thread, *rest = stack.split(";")
    out = []
    for frame in rest:
        found = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
        out.append((found.group(1), found.group(2)) if found else (frame, ""))
    return thread, out


def bucket(thread: str, stack: list[tuple[str, str]]) -> tuple[str, str]:
    """(bucket, member) for one sample."""
    names = [name for name, _ in stack]
    running = "ReactorBase.run" in names
    if "MainThread" in thread and not running:
        imports = any("frozen importlib" in path for _, path in stack)
        return ("boot: imports", "") if imports else ("boot: the rest", "")
    if "MainThread" not in thread:
        txn = [inner for (outer, _), (inner, _) in itertools.pairwise(stack) if outer == "DatabasePool.new_transaction"]
        return "database thread", txn[0] if txn else "(between transactions)"
    for name, path in stack:
        if SERVLET.search(name) and "synapse/rest" in path:
            return "client request (servlet)", f"{name} ({path.split('synapse/rest/')[-1]})"
    if any("_maybe_gc" in name for name in names):
        return "gc", ""
    persist = [name for name in names if "persist" in name.lower()]
    if persist:
        return "event persistence outside a request", persist[0]
    if any(path.endswith("synapse/notifier.py") for _, path in stack):
        return "notifier outside a request", ""
    background = [inner for (outer, _), (inner, path) in itertools.pairwise(stack)
                  if outer.startswith("run_as_background_process") and not PLUMBING.search(path)]
    if background:
        return "background process", background[0]
    http = [f"{name} ({path.split('site-packages/')[-1]})" for name, path in stack
            if "synapse/http/" in path or "twisted/web/" in path]
    if http:
        return "HTTP machinery around the servlet", http[0]
    start = names.index("ReactorBase.run")
    own = [f"{name} ({path.split('site-packages/')[-1]})" for name, path in stack[start:]
           if "synapse/" in path and not PLUMBING.search(path)]
    return "reactor, other", own[0] if own else "(twisted and plumbing only)"


def summarise(folded: Path, top: int) -> list[str]:
    buckets: Counter[str] = Counter()
    members: dict[str, Counter[str]] = defaultdict(Counter)
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        name, member = bucket(*frames(stack))
        buckets[name] += int(count)
        members[name][member] += int(count)
    total = sum(buckets.values()) or 1
    out = [f"{total} samples (GIL holder)"]
    for name, count in buckets.most_common():
        out.append(f"{count:6d} {100 * count / total:5.1f}%  {name}")
        out += [f"         {n:6d} {100 * n / total:5.1f}%  {m}" for m, n in members[name].most_common(top) if m]
    return out


def cpu_split(samples: list[tuple[float, int]], log: Path) -> str:
    """Synapse's CPU before its first scenario request, up to its last, and after (from the /proc samples)."""
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        if SCENARIO_REQUEST.search(line):
            when = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            stamps.append(when.timestamp())  # asctime is local time, as is a naive datetime's timestamp()
    if not samples or not stamps:
        return "no CPU split: no samples or no scenario request in the log"

    def at(t: float) -> int:
        return max((ticks for when, ticks in samples if when <= t), default=0)

    total, first, last = samples[-1][1], at(stamps[0]), at(stamps[-1])
    return (f"Synapse CPU {total / TICKS:.2f} s: boot {first / TICKS:.2f} s, scenarios {(last - first) / TICKS:.2f} s "
            f"over {stamps[-1] - stamps[0]:.1f} s of wall ({len(stamps)} scenario requests), after "
            f"{(total - last) / TICKS:.2f} s")


def find_synapse(parent: int, seen: set[int], proc: Path = Path("/proc")) -> int | None:
    """A Synapse process below the run (its child, or reaped by it as subreaper) not already in `seen`: first the early
    interpreter (qa.homeserver.synapse_zygote), then the Synapse forked from it, which the run adopts once the
    zygote's middle process exits. Both carry the zygote's command line."""
    for entry in os.listdir(proc):
        try:
            stat = (proc / entry / "stat").read_text()
            cmdline = (proc / entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.isdigit() and int(entry) not in seen and int(stat.rsplit(")", 1)[1].split()[1]) == parent \
                and b"synapse.app.homeserver" in cmdline:
            return int(entry)
    return None


def sample_cpu(pids: list[int], into: list[tuple[float, int]], stop: threading.Event,
               proc: Path = Path("/proc")) -> None:
    """Every 50 ms, the Synapse processes' CPU so far (utime + stime, ticks), summed: a forked Synapse starts at zero,
    so the zygote's last figure plus the forked one's is the homeserver's whole CPU."""
    last: dict[int, int] = {}
    while not stop.is_set():
        for pid in list(pids):
            try:
                fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited: its last figure stays
            last[pid] = int(fields[11]) + int(fields[12])
        if last:
            into.append((time.time(), sum(last.values())))
        stop.wait(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None, help="keep the run and the profile here")
    parser.add_argument("--top", type=int, default=8, help="members shown per bucket")
    parser.add_argument("--again", type=Path, default=None, help="print a kept profile again, without a run")
    args = parser.parse_args()
    if args.again is not None:
        return report(args.again, args.top)
    spy = shutil.which("py-spy")
    if spy is None:
        print("error: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="synapse-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen([sys.executable, "-m", "qa.cli", "run", "--profile", args.profile, "--homeservers", "1",
                            "--output-dir", str(out / "run")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    pids: list[int] = []  # every Synapse of the run, in the order they appeared (the zygote first, when forked)
    recorders: list[subprocess.Popen[bytes]] = []
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_cpu, args=(pids, samples, stop), daemon=True)
    # Each Synapse gets its own recorder: since Synapses are forked from an early interpreter (issue 29), the first
    # one found is that zygote, which exits once it has forked the server; attached to it alone, the profile held
    # the import and nothing of the scenarios.
    while run.poll() is None:
        pid = find_synapse(run.pid, set(pids))
        if pid is not None:
            pids.append(pid)
            recorders.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--gil", "--threads", "--nonblocking",
                 "--format", "raw", "-o", str(out / f"synapse-{len(pids)}.folded")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if len(pids) == 1:
                sampler.start()
        elif not pids and time.monotonic() > deadline:
            run.send_signal(signal.SIGTERM)
            run.wait()
            print("error: the run started no Synapse within 30 s (is the embedded Synapse the backend?)",
                  file=sys.stderr)
            return 2
        time.sleep(0.02 if not pids else 0.1)  # the forked Synapse follows its zygote within a moment
    code = run.returncode
    stop.set()
    if sampler.is_alive():
        sampler.join()
    for recorder in recorders:
        recorder.wait()
    folded = out / "synapse.folded"
    folded.write_text("".join(part.read_text(errors="replace") for k in range(1, len(pids) + 1)
                              if (part := out / f"synapse-{k}.folded").exists()))
    (out / "cpu.tsv").write_text("".join(f"{when:.3f}\t{ticks}\n" for when, ticks in samples))
    print(f"run exit {code}; artifacts and profile in {out}")
    report(out, args.top)
    return 0 if code == 0 else 1


def report(out: Path, top: int) -> int:
    try:
        samples = [(float(when), int(ticks)) for when, ticks in
                   (line.split("\t") for line in (out / "cpu.tsv").read_text().splitlines())]
    except (OSError, ValueError) as exc:
        print(f"error: no CPU samples in {out}: {exc}", file=sys.stderr)
        return 2
    print(cpu_split(samples, out / "run" / "homeserver" / "synapse.log"))
    folded = out / "synapse.folded"
    if folded.exists():
        print("\n".join(summarise(folded, top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
