"""Suite scheduling, simulated: the wall time a recorded suite would take on N pytest-xdist workers and C cores.

    python bench/suite_schedule.py --cpu base_s.cpu --order collected.txt [--workers 2 3 4 5] [--cores 2]

Why a simulation: the machine is shared, so two whole-suite timings taken an hour apart differ by a minute of
noise (8 min 5 s and 9 min 17 s for the same tests); the per-test records of one run (`bench/suite_time.py
--keep-cpu`: each test's CPU, its process tree's included, and its wall) say what each test needs, and this
replays them onto other worker counts under one model, so the worker counts are compared on the same load.

The model (a fluid one):
- A test needs `d` seconds if nothing else ran (its waits: timers, silence windows, Synapse round trips, and its
  own CPU) and uses `cpu` CPU-seconds spread evenly over them (rate cpu/d; a test whose process tree ran on both
  cores has a rate above 1). While the running tests' rates add up to more than C cores, every running test
  advances at C/sum of its normal pace: CPU contention stretches compute and waits alike (a wait on a Synapse
  answer is a wait on Synapse's CPU).
- `d` is calibrated so that each test's recorded wall comes out again when the recorded run is replayed as it
  ran (each worker's tests, in the order the records list them: bench/cpu_per_test.py writes them so): a few
  rounds of d <- d * recorded wall / simulated wall.
- Each worker first pays its start (interpreter, imports, collection: its `"nodeid": null` record's CPU, at
  most one core), after the controller's own start (`--controller-s`). A worker's session Synapse and fork server
  boot in the first test that uses them (bench/cpu_per_test.py charges them there): `--worker-boot-cpu` seconds
  move from the recorded first integration test of each worker to each simulated worker's first one, so more
  workers pay more boots.
- Scheduling is pytest-xdist's `worksteal` (xdist/scheduler/worksteal.py): the collection split evenly into N
  contiguous chunks; a worker down to its last test steals the back half of the longest queue (keeping that
  worker two), one steal at a time, answered at once.
It ignores memory, the controller's own CPU during the run, and load from outside the suite (the recorded walls
already carry the load the recorded run saw). Its check is the first line it prints: the recorded run replayed
as it ran, and the same tests under simulated worksteal at the recorded worker count, against the recorded wall
(`--recorded-wall`). Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIN_PENDING = 2  # xdist's worksteal: a worker with fewer queued tests (its running one included) asks for more


@dataclass
class Test:
    nodeid: str
    cpu: float
    wall: float
    need: float = 0.0  # d: seconds at an uncontended pace, calibrated

    @property
    def integration(self) -> bool:
        return self.nodeid.startswith("tests/integration/")


@dataclass
class Job:
    """A running piece of work: progress left in uncontended seconds, and its CPU rate."""
    left: float
    rate: float
    worker: int
    test: int | None  # None: the worker's start


@dataclass
class Outcome:
    wall: float
    cpu: float
    walls: dict[int, float] = field(default_factory=dict)  # test index -> simulated wall
    busy: list[float] = field(default_factory=list)  # per worker: seconds running tests


def load(cpu_file: Path) -> tuple[list[Test], list[list[int]], list[float]]:
    """Tests, each recorded worker's sequence (indices into tests), and each worker's start CPU."""
    tests: list[Test] = []
    sequences: list[list[int]] = []
    starts: list[float] = []
    current: list[int] = []
    for line in cpu_file.read_text().splitlines():
        record = json.loads(line)
        if record["nodeid"] is None:
            sequences.append(current)
            starts.append(float(record["cpu"]))
            current = []
            continue
        current.append(len(tests))
        tests.append(Test(record["nodeid"], float(record["cpu"]), float(record["wall"])))
    if current:
        sequences.append(current)
        starts.append(sum(starts) / len(starts) if starts else 0.0)
    return tests, sequences, starts


class Scheduler:
    """Who runs what next: either a fixed sequence per worker, or xdist's worksteal over the collection order."""

    def __init__(self, workers: int, order: Sequence[int] | None, fixed: list[list[int]] | None) -> None:
        self.fixed = fixed
        self.queues: list[list[int]] = [list(q) for q in fixed] if fixed else [[] for _ in range(workers)]
        if order is not None and not fixed:
            pending = list(order)
            for k in range(workers):  # check_schedule's first pass: len(pending) // nodes_remaining each
                take = len(pending) // (workers - k)
                self.queues[k], pending = pending[:take], pending[take:]

    def next_for(self, worker: int) -> int | None:
        """The worker finished its running test (or its start): the next one it runs, after any steal."""
        queue = self.queues[worker]
        if not self.fixed and len(queue) < MIN_PENDING:
            self._steal_for(worker)
        return queue.pop(0) if queue else None

    def _steal_for(self, worker: int) -> None:
        donor = max(range(len(self.queues)), key=lambda k: len(self.queues[k]) + (k != worker))
        # the donor's running test is not in its queue here; xdist counts it: +1 for a worker that is running
        donor_pending = len(self.queues[donor]) + 1
        steal = min(donor_pending // 2, max(0, donor_pending - MIN_PENDING))
        if donor != worker and steal:
            self.queues[worker].extend(self.queues[donor][-steal:])
            del self.queues[donor][-steal:]


def simulate(tests: list[Test], scheduler: Scheduler, workers: int, starts: list[float], *, cores: float,
             controller_s: float, boot_cpu: float, booted_in: set[int]) -> Outcome:
    """Run the fluid model to the end; `booted_in`: recorded tests whose CPU and need hold a worker's boot."""
    now, cpu_used = 0.0, 0.0
    outcome = Outcome(0.0, 0.0, busy=[0.0] * workers)
    booted = [False] * workers
    started_at: dict[int, float] = {}
    jobs = [Job(left=s, rate=1.0, worker=w, test=None) for w, s in enumerate(_cycle(starts, workers))]
    now = controller_s
    while jobs:
        demand = sum(j.rate for j in jobs)
        speed = min(1.0, cores / demand) if demand > 0 else 1.0
        step = min(j.left for j in jobs) / speed
        now += step
        cpu_used += step * speed * demand
        done = [j for j in jobs if j.left <= step * speed + 1e-9]
        for j in jobs:
            j.left -= step * speed
        for j in done:
            jobs.remove(j)
            if j.test is not None:
                outcome.walls[j.test] = now - started_at[j.test]
                outcome.busy[j.worker] += outcome.walls[j.test]
            nxt = scheduler.next_for(j.worker)
            if nxt is None:
                continue
            t = tests[nxt]
            need, cpu = t.need, t.cpu
            if nxt in booted_in:  # the recorded boot leaves this test ...
                need, cpu = max(need - boot_cpu, 0.01), max(cpu - boot_cpu, 0.0)
            if t.integration and not booted[j.worker]:  # ... and goes to each worker's first integration test
                booted[j.worker] = True
                need, cpu = need + boot_cpu, cpu + boot_cpu
            started_at[nxt] = now
            jobs.append(Job(left=need, rate=cpu / need if need > 0 else 0.0, worker=j.worker, test=nxt))
    outcome.wall, outcome.cpu = now, cpu_used
    return outcome


def _cycle(values: list[float], n: int) -> list[float]:
    mean = sum(values) / len(values)
    return [values[k] if k < len(values) else mean for k in range(n)]


def calibrate(tests: list[Test], sequences: list[list[int]], starts: list[float], *, cores: float,
              controller_s: float, boot_cpu: float, booted_in: set[int], rounds: int = 12) -> Outcome:
    """Fit each test's uncontended need so the recorded run, replayed as it ran, gives back its recorded walls."""
    for t in tests:
        t.need = max(t.wall, 1e-4)
    outcome = Outcome(0.0, 0.0)
    for _ in range(rounds):
        outcome = simulate(tests, Scheduler(len(sequences), None, sequences), len(sequences), starts, cores=cores,
                           controller_s=controller_s, boot_cpu=boot_cpu, booted_in=booted_in)
        for i, t in enumerate(tests):
            t.need = max(t.need * t.wall / max(outcome.walls[i], 1e-6), t.cpu / cores, 1e-4)
    return outcome


def collection_order(tests: list[Test], order_file: Path | None) -> list[int]:
    """Indices in pytest's collection order (`pytest --collect-only -q` output); recorded order without it."""
    if order_file is None:
        return list(range(len(tests)))
    index = {t.nodeid: i for i, t in enumerate(tests)}
    order = [index[line.strip()] for line in order_file.read_text().splitlines() if line.strip() in index]
    missing = sorted(set(range(len(tests))) - set(order))
    return order + missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=Path, required=True, help="per-test records (bench/suite_time.py --keep-cpu)")
    parser.add_argument("--order", type=Path, help="collection order: `python -m pytest --collect-only -q -n 0`")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--cores", type=float, default=2.0)
    parser.add_argument("--recorded-wall", type=float, help="the recorded run's wall in seconds, to compare")
    parser.add_argument("--controller-s", type=float, default=6.0,
                        help="seconds before the workers start (controller's interpreter, imports, spawning)")
    parser.add_argument("--worker-boot-cpu", type=float, default=4.5,
                        help="CPU-seconds of a worker's session Synapse and fork server boot (2.9 + 1.6 measured)")
    parser.add_argument("--set", action="append", default=[], metavar="NODEID=WALL[:CPU]",
                        help="what if this test took WALL seconds (its CPU unchanged unless given)")
    args = parser.parse_args(argv)

    tests, sequences, starts = load(args.cpu)
    first_integration = {next((i for i in seq if tests[i].integration), -1) for seq in sequences} - {-1}
    common = dict(cores=args.cores, controller_s=args.controller_s, boot_cpu=args.worker_boot_cpu,
                  booted_in=first_integration)
    replay = calibrate(tests, sequences, starts, **common)
    for spec in args.set:
        nodeid, _, value = spec.rpartition("=")
        wall, _, cpu = value.partition(":")
        for t in tests:
            if t.nodeid == nodeid:
                scale = float(wall) / t.wall
                t.need *= scale
                t.wall, t.cpu = float(wall), float(cpu) if cpu else t.cpu
                t.need = max(t.need, t.cpu / args.cores)
                break
        else:
            print(f"--set: no test {nodeid!r} in the records", file=sys.stderr)
            return 2
    order = collection_order(tests, args.order)
    recorded = f"recorded {args.recorded_wall / 60:.2f} min" if args.recorded_wall else "recorded wall not given"
    print(f"{len(tests)} tests, {sum(t.cpu for t in tests) + sum(starts):.0f} s CPU recorded "
          f"({len(sequences)} workers), {args.cores:g} cores; {recorded}")
    print(f"  replayed as recorded (calibration):  {replay.wall / 60:5.2f} min")
    print(f"{'workers':>8} {'wall min':>9} {'cores busy':>11} {'CPU s':>7} {'busiest/idlest worker s':>24}")
    for n in args.workers:
        out = simulate(tests, Scheduler(n, order, None), n, starts, **common)
        print(f"{n:>8} {out.wall / 60:>9.2f} {out.cpu / out.wall:>11.2f} {out.cpu:>7.0f} "
              f"{max(out.busy):>12.0f}/{min(out.busy):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
