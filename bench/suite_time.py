"""Test-suite timing: the suite's wall time and where it goes (the slowest tests, each with its share).

    python bench/suite_time.py [--top N] [-- PYTEST_ARGS...]      # runs pytest (default: the whole suite)
    python bench/suite_time.py --from-xml FILE [--top N]           # reads a JUnit XML an earlier run wrote

A run is `python -m pytest -p no:cacheprovider --junitxml=... PYTEST_ARGS` in a child process, timed from
outside (interpreter start, collection, fixtures and teardown all count). Per test, the JUnit `time` is
setup + call + teardown (pytest's default `junit_duration_report`), so a session fixture's boot is charged to
the first test that uses it. Under pytest-xdist the tests' summed time exceeds the wall time; the share column
is always of the summed time, which is what a slow test costs whatever the parallelism.

Prints: wall time (or "n/a" for --from-xml), the CPU the run used (user+sys of pytest and every descendant it
reaped: workers, Synapses, bots) and the load average before and after (the machine is shared: a figure means
little without it), tests by outcome, the summed test time, the N slowest tests with
their seconds and share, and the time per test file. A run also measures each test's CPU, its process tree's
included (bench/cpu_per_test.py, a plugin it loads): the N costliest tests by CPU and the CPU per file, which is
what a test costs the suite on a CPU-bound machine whatever its wall time (`--keep-cpu FILE` keeps the figures,
`--from-cpu FILE` reads them again). Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    seconds: float
    outcome: str  # passed | failed | error | skipped

    @property
    def nodeid(self) -> str:
        return f"{self.file}::{self.name}"


def _file_of(classname: str) -> str:
    """`tests.integration.test_x.TestY` -> `tests/integration/test_x.py` (a class part is dropped)."""
    parts = classname.split(".")
    while parts and not parts[-1].startswith("test_"):
        parts.pop()  # class names (TestY) and anything after the module
    return "/".join(parts) + ".py" if parts else classname


def read_cases(xml_path: Path) -> list[Case]:
    cases = []
    for el in ET.parse(xml_path).getroot().iter("testcase"):
        outcome = "passed"
        for child, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            if el.find(child) is not None:
                outcome = name
        cases.append(Case(_file_of(el.get("classname", "")), el.get("name", ""), float(el.get("time", 0) or 0),
                          outcome))
    return cases


def report(cases: list[Case], wall_s: float | None, top: int) -> str:
    total = sum(c.seconds for c in cases) or 1e-9
    outcomes: dict[str, int] = defaultdict(int)
    for c in cases:
        outcomes[c.outcome] += 1
    lines = [f"wall time: {'n/a' if wall_s is None else f'{wall_s:.1f} s ({wall_s / 60:.1f} min)'}",
             f"tests: {len(cases)} (" + ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())) + ")",
             f"summed test time: {total:.1f} s", "", f"{top} slowest tests:",
             f"{'seconds':>8} {'share':>6} {'cum':>6}  test"]
    cum = 0.0
    for c in sorted(cases, key=lambda c: -c.seconds)[:top]:
        cum += c.seconds
        mark = "" if c.outcome == "passed" else f"  [{c.outcome}]"
        lines.append(f"{c.seconds:8.1f} {100 * c.seconds / total:5.1f}% {100 * cum / total:5.1f}%  {c.nodeid}{mark}")
    per_file: dict[str, list[float]] = defaultdict(list)
    for c in cases:
        per_file[c.file].append(c.seconds)
    lines += ["", "per file:", f"{'seconds':>8} {'share':>6} {'tests':>5}  file"]
    for file, times in sorted(per_file.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"{sum(times):8.1f} {100 * sum(times) / total:5.1f}% {len(times):5d}  {file}")
    return "\n".join(lines)


def read_cpu(cpu_dir: Path) -> list[dict]:
    """The plugin's records, every process's file together."""
    return [json.loads(line) for path in sorted(cpu_dir.glob("cpu-*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cpu_report(records: list[dict], top: int) -> str:
    tests = [r for r in records if r["nodeid"] is not None]
    outside = sum(r["cpu"] for r in records if r["nodeid"] is None)
    total = sum(r["cpu"] for r in tests) or 1e-9
    lines = [f"CPU in tests: {total:.1f} s (each test's process tree); outside tests (worker start, imports, "
             f"collection): {outside:.1f} s", "", f"{top} costliest tests by CPU:",
             f"{'cpu s':>8} {'share':>6} {'wall s':>7}  test"]
    for r in sorted(tests, key=lambda r: -r["cpu"])[:top]:
        lines.append(f"{r['cpu']:8.1f} {100 * r['cpu'] / total:5.1f}% {r['wall']:7.1f}  {r['nodeid']}")
    per_file: dict[str, list[float]] = defaultdict(list)
    for r in tests:
        per_file[r["nodeid"].split("::")[0]].append(r["cpu"])
    lines += ["", "CPU per file:", f"{'cpu s':>8} {'share':>6} {'tests':>5}  file"]
    for file, cpus in sorted(per_file.items(), key=lambda kv: -sum(kv[1]))[:max(top, 30)]:
        lines.append(f"{sum(cpus):8.1f} {100 * sum(cpus) / total:5.1f}% {len(cpus):5d}  {file}")
    return "\n".join(lines)


def run_pytest(args: list[str], xml_path: Path, cpu_dir: Path) -> tuple[float, int, str]:
    """(wall seconds, exit code, a line with the CPU the run used and the machine's load before and after)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "bench.cpu_per_test",
           f"--junitxml={xml_path}", *args]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    load_before, cpu_before = os.getloadavg(), _children_cpu_s()
    began = time.monotonic()
    code = subprocess.run(cmd, cwd=REPO, check=False, env={**os.environ, "MATRIX_QA_CPU_LOG": str(cpu_dir)}).returncode
    wall = time.monotonic() - began
    cpu = _children_cpu_s() - cpu_before  # pytest, its xdist workers, Synapses and bots: every reaped descendant
    load_after = os.getloadavg()
    return wall, code, (f"cpu: {cpu:.1f} s user+sys ({cpu / max(wall, 1e-9):.2f} cores on average); "
                        f"load average (1/5/15 min) before: {_load(load_before)}, after: {_load(load_after)}")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=20, help="how many of the slowest tests to list (default 20)")
    parser.add_argument("--from-xml", type=Path, help="read this JUnit XML instead of running pytest")
    parser.add_argument("--keep-xml", type=Path, help="also write the run's JUnit XML here")
    parser.add_argument("--keep-cpu", type=Path, help="also write the per-test CPU records here (JSON lines)")
    parser.add_argument("--from-cpu", type=Path, help="report these per-test CPU records instead of running pytest")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after `--` (default: the whole suite)")
    ns = parser.parse_args(argv)
    if ns.from_xml or ns.from_cpu:
        if ns.from_xml:
            print(report(read_cases(ns.from_xml), None, ns.top))
        if ns.from_cpu:
            lines = ns.from_cpu.read_text(encoding="utf-8").splitlines()
            print(cpu_report([json.loads(line) for line in lines if line.strip()], ns.top))
        return 0
    with tempfile.TemporaryDirectory(prefix="suite-time-") as tmp:
        xml_path = ns.keep_xml or Path(tmp) / "junit.xml"
        cpu_dir = Path(tmp) / "cpu"
        cpu_dir.mkdir()
        wall, code, usage = run_pytest(ns.pytest_args, xml_path, cpu_dir)
        print(f"pytest exit code: {code}")
        print(usage)
        if not xml_path.exists():
            print("pytest wrote no JUnit XML", file=sys.stderr)
            return code or 1
        print(report(read_cases(xml_path), wall, ns.top))
        records = read_cpu(cpu_dir)
        if records:
            print("\n" + cpu_report(records, ns.top))
        if ns.keep_cpu:
            ns.keep_cpu.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return code


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the report quietly, without a traceback
    sys.exit(main())
