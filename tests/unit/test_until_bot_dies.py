"""A step that watches the bot's start itself gets the last word when the bot dies during it; any other step
is cut short by the death at once, with the exit in its evidence. Regression: the two watches on one exit
event raced, and a bot that died on a damaged store was reported as a step failure or as "did not become
ready" depending on which waiter the event loop woke first."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from qa.kernel.errors import InfraError
from qa.scenario.context import StepFailed
from qa.scenario.runner import until_bot_dies
from qa.scenario.steps.registry import STEP_TYPES


def _ctx() -> SimpleNamespace:
    bot = SimpleNamespace(died=asyncio.Event(), name="bot", exit_description="exited with code 1",
                          log_path="bot.log", log_tail=lambda lines=20: ["bot.log: boom"], has_trace=False,
                          trace=SimpleNamespace(items=[]))
    return SimpleNamespace(bot=bot)


async def _dies_then_reports(ctx: SimpleNamespace) -> str:
    ctx.bot.died.set()
    for _ in range(3):  # its own watch answers a few loop turns later, as wait_ready's does
        await asyncio.sleep(0)
    raise InfraError("bot bot did not become ready: the bot exited with code 1")


def test_only_the_steps_that_start_the_bot_watch_its_start_themselves() -> None:
    assert {kind for kind, cls in STEP_TYPES.items() if cls.owns_bot_start} == {"start_bot", "restart_bot"}


@pytest.mark.parametrize("kind", ["start_bot", "restart_bot"])
async def test_a_start_step_reports_the_death_itself(kind: str) -> None:
    ctx = _ctx()
    with pytest.raises(InfraError, match="did not become ready"):
        await until_bot_dies(ctx, _dies_then_reports(ctx), 3, kind,
                             watches_own_start=STEP_TYPES[kind].owns_bot_start)


async def test_any_other_step_is_cut_short_by_the_death() -> None:
    ctx = _ctx()

    async def waits_forever() -> str:
        ctx.bot.died.set()
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(StepFailed) as caught:
        await asyncio.wait_for(until_bot_dies(ctx, waits_forever(), 4, "expect_reply",
                                              watches_own_start=STEP_TYPES["expect_reply"].owns_bot_start), 10)
    assert caught.value.expected == "the bot to keep running through step 4 (expect_reply)"
    assert "bot bot: exited with code 1 unexpectedly (log: bot.log)" in caught.value.seen


def test_a_wait_the_death_ended_first_says_it_as_a_death_with_the_log() -> None:
    """A traced bot's reply wait can end on the closed trace before the step's death watch fires: its evidence
    then names the death and shows the log's tail, as the death watch's would."""
    from qa.scenario.steps.common import trace_about

    log = SimpleNamespace(closed_reason="bot process killed by SIGKILL")
    record = {"type": "turn.start", "eventId": "$t"}
    bot = SimpleNamespace(died=asyncio.Event(), name="b", exit_description="killed by SIGKILL", log_path="bot.log",
                          log_tail=lambda lines=20: [f"bot.log: last of {lines}"], has_trace=True, log=log,
                          trace=SimpleNamespace(items=[record], closed_reason=None))
    ctx = SimpleNamespace(bot=bot, trace_start=0)
    # A stop the harness asked for:
    assert trace_about(ctx, "$t")[-1] == "bot: bot process killed by SIGKILL (log: bot.log)"
    bot.died.set()
    assert trace_about(ctx, "$t") == ["bot trace: turn.start eventId=$t",
                                      "bot b: killed by SIGKILL unexpectedly (log: bot.log)", "bot.log: last of 8"]
    bot.has_trace = False  # the tail is then shown once, where an untraced bot's always is
    assert trace_about(ctx, "$t").count("bot.log: last of 8") == 1
