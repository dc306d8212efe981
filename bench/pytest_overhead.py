"""Per-test cost of the pytest plugin against the CLI's per-scenario cost: N canaries either way.

    python bench/pytest_overhead.py [--n 10] [--rounds 5]

pytest: one session of N tests, each the canary's two steps through the `matrix_qa` fixture; its per-test time is
pytest's own (JUnit: setup + call + teardown), the first test left out (it waits for the homeserver's boot).
CLI: `matrix-qa run --scenario canary --repeat N --jobs 1`; its per-scenario time is the scheduler's time over
its scenarios divided by N. Goal (issue 26): the plugin within 20 % of the CLI. Prints both and the ratio, what
each test cost beyond its scenario's own run, and the number of homeserver starts in the session's log (one).
On a shared machine the scenarios' own durations vary by a second or more from run to run: read the ratio
over several runs, and the cost beyond the scenario as the plugin's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

from cli_run import REPO, run_matrix_qa

GOAL_RATIO = 1.2
TESTS = '''
import pytest


@pytest.mark.parametrize("n", range({n}))
async def test_canary(matrix_qa, n):
    await matrix_qa.send(as_="driver", mention="bot", body="reply with only this exact marker: {{token}}", id="ask")
    await matrix_qa.expect_reply(to="ask", body="{{token}}", top_level=True)
'''


def pytest_per_test(n: int, tmp: Path) -> tuple[float, float, int, float]:
    """(median and mean seconds per test after the first, homeserver starts, the mean of what each test cost
    beyond its scenario's own duration: the fixture, the loop crossing, pytest itself)."""
    (tmp / "test_canaries.py").write_text(TESTS.format(n=n), encoding="utf-8")
    plugin = [] if any(ep.name == "matrix_qa" for ep in entry_points(group="pytest11")) else ["-p", "qa.pytest_plugin"]
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin, "-o", "addopts=", "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(tmp), "--junitxml", str(tmp / "junit.xml"),
                           "--matrix-qa-report", str(tmp / "report"), str(tmp / "test_canaries.py")],
                          cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"the pytest session failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    times = [float(case.get("time", 0)) for case in ET.parse(tmp / "junit.xml").iter("testcase")]
    starts = (tmp / "report" / "matrix-qa-output.log").read_text().count("starting synapse homeserver")
    summary = json.loads((tmp / "report" / "matrix-qa-summary.json").read_text())
    scenario_s = [s["durationMs"] / 1000 for s in summary["scenarios"]]
    beyond = statistics.mean(t - d for t, d in zip(times[1:], scenario_s[1:], strict=True))
    print(f"(pytest session wall time {wall:.1f}s)")
    return statistics.median(times[1:]), statistics.mean(times[1:]), starts, beyond


def cli_per_scenario(n: int, tmp: Path) -> float:
    """The scheduler's time per scenario, in seconds (attempts run one after the other)."""
    summary, wall = run_matrix_qa(["--scenario", "canary", "--repeat", str(n), "--jobs", "1"], tmp / "cli")
    print(f"(CLI wall time {wall:.1f}s)")
    return float(summary["timings"]["scenariosMs"]) / 1000 / n


def one_round(n: int, tmp: Path) -> float:
    """One pytest session then one CLI run, back to back; their per-test/per-scenario ratio."""
    median_test, mean_test, starts, beyond = pytest_per_test(n, tmp / "pytest")
    per_scenario = cli_per_scenario(n, tmp)
    print(f"pytest: {n} tests, {starts} homeserver start(s); per test (after the first): "
          f"median {median_test:.2f}s, mean {mean_test:.2f}s, of which {beyond * 1000:.0f} ms outside the scenario's "
          "own run (fixture, loop crossing, pytest)")
    print(f"CLI:    --repeat {n} --jobs 1; per scenario: {per_scenario:.2f}s")
    ratio = mean_test / per_scenario
    print(f"ratio pytest/CLI: {ratio:.2f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1,
                        help="pairs of (pytest session, CLI run) run in turn; the ratio is taken pair by pair and "
                        "the median reported, so a machine whose speed drifts moves both sides of a pair alike")
    args = parser.parse_args()
    ratios = []
    for k in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-pytest-") as raw:
            (Path(raw) / "pytest").mkdir()
            print(f"-- round {k + 1} of {args.rounds}")
            ratios.append(one_round(args.n, Path(raw)))
    ratio = statistics.median(ratios)
    verdict = "within" if ratio <= GOAL_RATIO else "OVER"
    print(f"median ratio pytest/CLI over {len(ratios)} pair(s): {ratio:.2f} (pairs: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; {verdict} the {GOAL_RATIO:.1f} goal)")


if __name__ == "__main__":
    main()
