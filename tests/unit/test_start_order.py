"""The start order under --jobs: longest expected first (qa.harness.plan.longest_first), the canary still first
and alone, a homeserver restart still last and alone, one job in plan order, the record in plan order, and the
built-in estimates file readable and covering the library."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from qa.harness.jobs import default_jobs
from qa.harness.output import Output
from qa.harness.plan import longest_first
from qa.library import builtin_estimates, builtin_scenarios_dir
from qa.report.summary import ScenarioResult
from qa.run.scheduler import Scheduler
from qa.scenario.steps.lifecycle import RestartHomeserver
from qa.shared.canary import CANARY
from tests.unit.test_run_retry import Scenario, resources


def ids(plan: list[Any]) -> list[str]:
    return [s.id for s in plan]


def test_longest_first_orders_by_estimate_and_keeps_plan_order_on_ties() -> None:
    plan = [Scenario(i) for i in "abcde"]
    order = longest_first(plan, {"a": 100.0, "b": 900.0, "c": 500.0, "d": 900.0, "e": 50.0})
    assert ids(order) == ["b", "d", "c", "a", "e"]


def test_unknown_ids_weigh_the_median_of_the_known() -> None:
    plan = [Scenario(i) for i in "abcdx"]
    # Known 100, 300, 700 (median 300); a tie with b keeps plan order (b before x).
    order = longest_first(plan, {"a": 100.0, "b": 300.0, "c": 700.0, "q": 10_000.0})
    assert ids(order) == ["c", "b", "d", "x", "a"]


def test_without_known_estimates_the_order_is_the_plans() -> None:
    plan = [Scenario(i) for i in "cab"]
    assert ids(longest_first(plan, {})) == ["c", "a", "b"]
    assert ids(longest_first(plan, {"zz": 5.0})) == ["c", "a", "b"]


def test_an_attempt_is_looked_up_under_its_scenarios_id() -> None:
    plan = [Scenario(i) for i in ("a~1", "b~1", "a~2", "b~2")]
    order = longest_first(plan, {"a": 1.0, "b": 2.0}, key=lambda i: i.split("~")[0])
    assert ids(order) == ["b~1", "b~2", "a~1", "a~2"]


class Restarts(Scenario):
    def __init__(self, sid: str) -> None:
        super().__init__(sid)
        self.steps = [RestartHomeserver()]


def started_order(tmp_path: Path, plan: list[Any], jobs: int, estimates: dict[str, float]) -> tuple[list[str], Any]:
    started: list[str] = []

    async def fake(scenario: Any, res: Any, say: Any) -> ScenarioResult:
        started.append(scenario.id)
        await asyncio.sleep(0)
        return ScenarioResult(id=scenario.id, title=scenario.title, status="pass")

    scheduler = Scheduler(jobs=jobs, repeat=1, fail_fast=False, run_id="r", out=Output(io.StringIO()),
                          run_scenario=fake, stop_reason=lambda: None, estimates=estimates)
    asyncio.run(scheduler.run(plan, resources(tmp_path)))
    scheduler.settle(plan)
    return started, scheduler


def test_side_by_side_the_longest_start_first_between_the_canary_and_the_restart(tmp_path: Path) -> None:
    plan = [Scenario(CANARY), Scenario("a"), Restarts("hs"), Scenario("b"), Scenario("c")]
    estimates = {CANARY: 9e9, "hs": 9e9, "a": 1.0, "b": 3.0, "c": 2.0}
    started, scheduler = started_order(tmp_path, plan, 2, estimates)
    assert started == [CANARY, "b", "c", "a", "hs"]
    assert [r.id for r in scheduler.results] == [CANARY, "a", "hs", "b", "c"]  # the record keeps plan order


def test_one_job_runs_in_plan_order_whatever_the_estimates(tmp_path: Path) -> None:
    plan = [Scenario(CANARY), Scenario("a"), Scenario("b")]
    started, _ = started_order(tmp_path, plan, 1, {"a": 1.0, "b": 3.0})
    assert started == [CANARY, "a", "b"]


def test_the_built_in_estimates_cover_the_library_and_are_positive() -> None:
    library = builtin_scenarios_dir()
    assert library is not None
    estimates = builtin_estimates()
    library_ids = {p.stem for p in library.glob("*.yaml")}
    assert estimates, "scenarios/durations.json is missing or unreadable: regenerate it (bench/scenario_estimates.py)"
    assert set(estimates) <= library_ids, "an estimate for a scenario that no longer exists: regenerate the file"
    assert all(v > 0 for v in estimates.values())


@pytest.mark.parametrize("text", ["", "{", "[]", '{"durationsMs": 3}', '{"durationsMs": {"a": "soon"}}'])
def test_an_unreadable_estimates_file_means_plan_order_not_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "durations.json").write_text(text)
    monkeypatch.setattr("qa.library.library_root", lambda: tmp_path)
    assert builtin_estimates() == {}
    (tmp_path / "scenarios" / "durations.json").write_text(json.dumps({"durationsMs": {"a": 12}}))
    assert builtin_estimates() == {"a": 12.0}


@pytest.mark.parametrize(("cores", "jobs"), [(None, 2), (0, 2), (1, 2), (2, 4), (3, 6), (4, 8), (5, 8), (64, 8)])
def test_the_default_jobs_are_two_per_core_capped(cores: int | None, jobs: int) -> None:
    assert default_jobs(cores) == jobs


def test_a_run_without_jobs_takes_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qa.run import Run, RunOptions

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr("os.cpu_count", lambda: 64)  # the host's count: a CPU set of 3 is what the run may use
    assert Run(RunOptions(output_dir=tmp_path), Output(io.StringIO())).jobs == 6
    assert Run(RunOptions(output_dir=tmp_path, jobs=1), Output(io.StringIO())).jobs == 1


def test_usable_cores_are_the_cpu_set_and_the_host_count_only_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.harness.jobs import usable_cores

    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1} if pid == 0 else set(range(64)))  # 0: ours
    assert usable_cores() == 2

    def refused(pid: int) -> set[int]:
        raise OSError("no affinity here")

    monkeypatch.setattr("os.sched_getaffinity", refused)
    assert usable_cores() == 64
