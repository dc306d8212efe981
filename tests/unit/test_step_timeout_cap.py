"""--step-timeout-cap: its values, that a bad one is exit 2 naming the flag, that it cuts a step's wait for what it
looks for (the same step fails, sooner), and that it never shortens a window a passing step waits out
(expect_no_reply's watch after the control). No servers: steps run over fake streams."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.cli_run import step_timeout_cap
from qa.kernel.clock import mono_ms
from qa.run.options import RunOptions
from qa.scenario.context import ScenarioContext, StepFailed
from qa.scenario.steps.base import DEFAULT_STEP_TIMEOUT_S
from qa.scenario.steps.silence import ExpectNoReply
from qa.scenario.steps.trace import ExpectTrace
from qa.waiting import Stream
from tests.unit.test_silence_by_order import _answers_control, _ctx, _message, _step


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("1500ms", 1.5), ("2", 2.0), ("1m", 60.0)])
def test_values(text: str, seconds: float) -> None:
    assert step_timeout_cap(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1", "soon", "", "5 parsecs", "nan", "1e400"])
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        step_timeout_cap(text)


def test_by_default_each_step_waits_its_own_timeout() -> None:
    assert RunOptions(output_dir=None).step_timeout_cap_s is None


def test_a_bad_value_on_the_command_line_is_exit_2_naming_the_flag() -> None:
    done = subprocess.run([sys.executable, "-m", "qa.cli", "run", "--step-timeout-cap", "0s"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "--step-timeout-cap" in done.stderr and "Traceback" not in done.stderr


def _cap(cap_s: float | None) -> Any:
    return SimpleNamespace(step_timeout_cap_s=cap_s)


def test_the_cap_cuts_only_longer_timeouts() -> None:
    default, own = ExpectTrace.model_validate({"type": "ready"}), ExpectTrace.model_validate({"type": "ready",
                                                                                             "timeout": "5s"})
    assert default.wait_s(_cap(None)) == DEFAULT_STEP_TIMEOUT_S
    assert own.wait_s(_cap(None)) == 5.0
    assert default.wait_s(_cap(10.0)) == 10.0
    assert own.wait_s(_cap(10.0)) == 5.0  # a step's own shorter timeout stands
    assert own.wait_s(_cap(2.5)) == 2.5
    assert (default.declared_wait_s(), own.declared_wait_s()) == (DEFAULT_STEP_TIMEOUT_S, 5.0)


def _trace_ctx(step: ExpectTrace, cap_s: float | None) -> ScenarioContext:
    bot = SimpleNamespace(has_trace=True, name="b", trace=Stream(), bot=SimpleNamespace(has=lambda _need: True))
    return ScenarioContext(scenario=SimpleNamespace(steps=[step]), homeserver=None, provider=None,  # type: ignore[arg-type]
                           actors={}, bot=bot, bot_user_id="@bot:hs", bot_name="bot",  # type: ignore[arg-type]
                           rooms={}, markers=None, artifact_dir=Path("."), step_timeout_cap_s=cap_s)


async def test_a_capped_wait_fails_the_same_step_with_the_same_failure_sooner() -> None:
    """A record that never comes: with the cap the step fails after the cap, not its own 60 s, saying the same."""
    step = ExpectTrace.model_validate({"type": "sync.stall", "timeout": "60s"})
    ctx = _trace_ctx(step, 0.05)
    await ctx.bot.trace.append({"type": "ready", "t": 1})
    started = mono_ms()
    with pytest.raises(StepFailed) as failed:
        async with asyncio.timeout(30):  # far below the step's own 60 s, far above the cap: load cannot blur it
            await step.run(ctx)
    assert failed.value.expected == "a bot trace record sync.stall matching {}", failed.value.expected
    assert any("ready" in line for line in failed.value.seen), failed.value.seen
    assert mono_ms() - started < 30_000


async def test_the_cap_does_not_shorten_the_watch_after_the_controls_answer(monkeypatch) -> None:
    """The same late answer as tests/unit/test_silence_by_order.py's: 0.4 s after the control's answer, inside the
    1 s turnaround's watch. Capped far below that (0.05 s), the watch must still see it and fail the step: cutting
    a negative check's window would let the answer through."""
    events: Any = Stream()
    step: ExpectNoReply = _step()
    ctx = _ctx(step, events)
    ctx.step_timeout_cap_s = 0.05
    late = _message("$late", "answer to the ignored one", reply_to="$trigger")
    _answers_control(monkeypatch, events, late, after_s=0.4, turnaround_ms=1000.0)
    with pytest.raises(StepFailed) as failed:
        await step.run(ctx)
    assert failed.value.seen[0].startswith("the bot answered 'ignored': $late"), failed.value.seen
