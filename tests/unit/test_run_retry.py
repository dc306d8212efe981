"""One retry of an infrastructure error, and --rerun-failed's refusals: the run's logic with the scenario runner
replaced by a script, so no homeserver is needed."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import qa.run as run_module
from qa.cli import main
from qa.harness.output import Output
from qa.report.summary import ScenarioResult
from qa.run import Run, RunOptions
from qa.run.options import attempts
from qa.scenario.runner import RunResources
from qa.shared.markers import MarkerFactory
from tests.unit.test_report_render import make_summary


class Scenario:
    def __init__(self, sid: str) -> None:
        self.id, self.title, self.steps = sid, sid.title(), []

    def model_copy(self, update: dict[str, Any]) -> Scenario:
        return Scenario(update["id"])


def scripted(outcomes: list[str]) -> tuple[list[tuple[str, str]], Any]:
    """A run_scenario stand-in: each call takes the next outcome; `infra` files a homeserver error as the real
    runner does (qa.scenario.runner: HomeserverError → res.infra_errors)."""
    calls: list[tuple[str, str]] = []

    async def fake(scenario: Any, res: RunResources, say: Any) -> ScenarioResult:
        outcome = outcomes[len(calls)]
        calls.append((scenario.id, res.run_id))
        if outcome == "infra":
            res.infra_errors.append("could not register @mqa-driver: HTTP 502")
            return ScenarioResult(id=scenario.id, title=scenario.title, status="fail", durationMs=5.0,
                                  details="infrastructure (homeserver): could not register @mqa-driver: HTTP 502")
        return ScenarioResult(id=scenario.id, title=scenario.title, status=outcome)  # type: ignore[arg-type]

    return calls, fake


def resources(tmp_path: Path) -> RunResources:
    return RunResources(homeserver=None, provider=None, model_base_url="", model_name="m",  # type: ignore[arg-type]
                        run_id="20260101T000000Z-abcdef", artifact_dir=tmp_path, state_dir=tmp_path,
                        markers=MarkerFactory("seed"), bot_env={}, bot_overrides={}, secrets=[], probes=[],
                        observed=[])


async def run_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcomes: list[str],
                  stop_reason: str | None = None) -> tuple[Run, list[tuple[str, str]]]:
    calls, fake = scripted(outcomes)
    monkeypatch.setattr(run_module, "run_scenario", fake)
    run = Run(RunOptions(output_dir=tmp_path / "out"), Output(io.StringIO()))
    run.lifecycle.reason = stop_reason
    await run.scheduler.run_one(Scenario("canary"), resources(tmp_path))
    return run, calls


async def test_an_infrastructure_error_is_retried_once_as_a_fresh_scenario_and_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, calls = await run_one(tmp_path, monkeypatch, ["infra", "pass"])
    assert [sid for sid, _ in calls] == ["canary", "canary~retry"]
    assert calls[0][1] != calls[1][1], "the retry registers users under names of its own"
    (result,) = run.scheduler.results
    assert (result.id, result.status) == ("canary", "pass")
    assert [(r.ranAs, r.error) for r in result.retries] == [
        ("canary", "infrastructure (homeserver): could not register @mqa-driver: HTTP 502")]
    assert run.scheduler.infra_errors == [], "a retry that worked leaves no run error"
    assert run.scheduler.ran_as == {"canary": "canary~retry"}, "the lock evidence reads the retry's trace"


async def test_an_infrastructure_error_twice_is_the_runs_error_not_a_third_try(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, calls = await run_one(tmp_path, monkeypatch, ["infra", "infra", "pass"])
    assert len(calls) == 2
    assert run.scheduler.infra_errors == ["could not register @mqa-driver: HTTP 502"]
    assert run.scheduler.results[0].retries and run.scheduler.results[0].id == "canary"


@pytest.mark.parametrize(("outcomes", "stop_reason"), [(["fail"], None), (["infra"], "SIGTERM received")])
async def test_no_retry_for_a_scenario_failure_or_a_run_being_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcomes: list[str], stop_reason: str | None) -> None:
    run, calls = await run_one(tmp_path, monkeypatch, [*outcomes, "pass"], stop_reason)
    assert len(calls) == 1 and run.scheduler.results[0].retries == []


def write_summary(path: Path, statuses: dict[str, str]) -> Path:
    summary = make_summary([ScenarioResult(id=i, title=i, status=s) for i, s in statuses.items()])  # type: ignore[arg-type]
    path.write_text(json.dumps(summary.to_json_dict()), encoding="utf-8")
    return path


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read run summary"),
    ("{not json", "not valid JSON"),
    ('{"schema": "other/v9"}', "is not supported"),
])
def test_rerun_failed_with_a_bad_or_missing_file_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str) -> None:
    path = tmp_path / "summary.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["run", "--rerun-failed", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and message in err[0] and "Traceback" not in err[0]


def test_rerun_failed_of_a_green_run_has_nothing_to_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_summary(tmp_path / "s.json", {"canary": "pass"})
    assert main(["run", "--rerun-failed", str(path)]) == 2
    assert "nothing to rerun" in capsys.readouterr().err


def test_rerun_failed_runs_exactly_the_failed_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_summary(tmp_path / "s.json", {"canary": "pass", "matrix-mention-gating": "fail"})
    seen: list[RunOptions] = []
    monkeypatch.setattr(run_module, "run_sync", lambda options: seen.append(options) or 0)
    assert main(["run", "--rerun-failed", str(path), "--repeat", "3", "--min-pass-rate", "60%"]) == 0
    (options,) = seen
    assert (options.scenario_ids, options.repeat, options.min_pass_rate) == (["matrix-mention-gating"], 3, 0.6)


async def test_every_attempt_of_a_repeat_gets_user_names_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner cuts a long id to 40 characters in user names, so "<id>~1" and "<id>~2" alone would collide.
    calls, fake = scripted(["pass", "pass", "pass"])
    monkeypatch.setattr(run_module, "run_scenario", fake)
    run = Run(RunOptions(output_dir=tmp_path / "out", repeat=3), Output(io.StringIO()))
    long_id = "matrix-approval-exec-metadata-single-event"
    for attempt in attempts([Scenario(long_id)], 3):
        await run.scheduler.run_one(attempt, resources(tmp_path))
    assert [sid for sid, _ in calls] == [f"{long_id}~{k}" for k in (1, 2, 3)]
    assert len({run_id[-6:] for _, run_id in calls}) == 3
