"""A configuration error found while a scenario runs (issue 28): the run's error, exit 2, naming the scenario
file, the step's line and its field; the scenario is cut short (NOT CHECKED), never failed as the bot's fault."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.kernel.errors import ConfigError
from qa.report.summary import ScenarioResult
from qa.report.verdict import run_verdict
from qa.scenario.loader import ScenarioError, located
from qa.scenario.runner import _run_steps, config_error

SCENARIO = """id: media-swapped
title: a fixture swapped for a link after the scenario loaded
steps:
  - send: hello
  - send_media:
      fixture: cat.png
"""
WHY = "send_media fixture 'cat.png': a link leading outside fixtures/media"


class _Step:
    def __init__(self, kind: str, error: Exception | None = None) -> None:
        self.kind, self.error, self.owns_bot_start = kind, error, False

    async def run(self, ctx: Any) -> str:
        if self.error is not None:
            raise self.error
        return "done"


async def _steps(*steps: _Step) -> Any:
    for step in steps:
        yield step


def _ctx(path: Path | None) -> Any:
    scenario = SimpleNamespace(source_path=path)
    return SimpleNamespace(scenario=scenario, method=None, negative_checks=[],
                           bot=SimpleNamespace(died=asyncio.Event(), name="b"))


def test_a_config_error_in_a_step_names_the_file_the_steps_line_and_its_field(tmp_path: Path) -> None:
    path = tmp_path / "media-swapped.yaml"
    path.write_text(SCENARIO)
    result = ScenarioResult(id="media-swapped", title="t", status="fail")
    with pytest.raises(ScenarioError) as caught:
        asyncio.run(_run_steps(_ctx(path), _steps(_Step("send"), _Step("send_media", ConfigError(WHY))), result,
                               lambda _: None))
    assert str(caught.value) == f"{path}:5: steps[1].send_media: {WHY}"
    assert [s.status for s in result.steps] == ["pass", "fail"]


def test_without_a_file_the_field_still_says_where() -> None:
    assert str(located(SimpleNamespace(source_path=None), ("steps", 0, "restart"), ConfigError("x"))) \
        == "steps[0].restart: x"
    gone = located(SimpleNamespace(source_path=Path("/nonexistent/s.yaml")), ("steps", 2, "send"), ConfigError("y"))
    assert str(gone) == "/nonexistent/s.yaml: steps[2].send: y"
    already = ScenarioError("z", path=Path("a.yaml"), line=3, field="steps[0]")
    assert located(None, ("steps", 1), already) is already


def test_the_scenario_is_cut_short_not_failed_and_the_run_exits_2(tmp_path: Path) -> None:
    result = ScenarioResult(id="s", title="t", status="fail")
    result.steps.append(_step_result("send", "pass"))
    result.steps.append(_step_result("send_media", "fail"))
    errors: list[str] = []
    config_error(result, ScenarioError(WHY, path=Path("s.yaml"), line=5, field="steps[1].send_media"), errors)
    assert result.status == "interrupted"
    assert result.details == f"configuration error: s.yaml:5: steps[1].send_media: {WHY}"
    assert [s.status for s in result.steps] == ["pass", "interrupted"]
    assert result.steps[1].detail.startswith("NOT CHECKED: configuration error: s.yaml:5:")
    assert errors == [f"s.yaml:5: steps[1].send_media: {WHY}"]
    assert run_verdict([result.status], errors=bool(errors), lock=None) == ("error", 2)


def _step_result(kind: str, status: str) -> Any:
    from qa.report.summary import StepResult

    return StepResult(index=1, kind=kind, status=status)  # type: ignore[arg-type]
