"""The scenario runner's steps may come one at a time (the pytest plugin feeds a test's calls): the steps run in
the order fed, numbered from 1, each recorded, and the scenario ends when the feed does."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from qa.report.summary import ScenarioResult
from qa.scenario.context import StepFailed
from qa.scenario.runner import _run_steps


class _Step:
    owns_bot_start = False

    def __init__(self, kind: str, ran: list[str], fails: bool = False) -> None:
        self.kind, self._ran, self._fails = kind, ran, fails

    async def run(self, ctx: Any) -> str:
        self._ran.append(self.kind)
        if self._fails:
            raise StepFailed(f"{self.kind} holds")
        return f"{self.kind} done"


def _ctx() -> Any:
    return SimpleNamespace(bot=SimpleNamespace(died=asyncio.Event()), negative_checks=[], method=None)


async def _fed(queue: asyncio.Queue[Any]) -> Any:
    while (step := await queue.get()) is not None:
        yield step


def test_steps_fed_one_at_a_time_run_in_order_and_are_recorded() -> None:
    async def scenario() -> tuple[list[str], ScenarioResult]:
        ran: list[str] = []
        queue: asyncio.Queue[Any] = asyncio.Queue()
        result = ScenarioResult(id="s", title="t", status="fail")
        runner = asyncio.ensure_future(_run_steps(_ctx(), _fed(queue), result, lambda _line: None))
        await queue.put(_Step("send", ran))
        await asyncio.sleep(0)
        await queue.put(_Step("expect_reply", ran))
        await queue.put(None)
        await asyncio.wait_for(runner, 5)
        return ran, result

    ran, result = asyncio.run(scenario())
    assert ran == ["send", "expect_reply"]
    assert [(s.index, s.kind, s.status, s.detail) for s in result.steps] == [
        (1, "send", "pass", "send done"), (2, "expect_reply", "pass", "expect_reply done")]


def test_a_failing_fed_step_ends_the_feed_with_its_failure() -> None:
    async def scenario() -> tuple[list[str], ScenarioResult]:
        ran: list[str] = []
        result = ScenarioResult(id="s", title="t", status="fail")

        async def steps() -> Any:
            yield _Step("send", ran, fails=True)
            yield _Step("never", ran)

        with pytest.raises(StepFailed, match="send holds"):
            await _run_steps(_ctx(), steps(), result, lambda _line: None)
        return ran, result

    ran, result = asyncio.run(scenario())
    assert ran == ["send"] and [(s.index, s.status, s.detail) for s in result.steps] == [(1, "fail", "send holds")]
