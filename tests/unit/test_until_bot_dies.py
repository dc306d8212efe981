"""A step that watches the bot's start itself gets the last word when the bot dies during it; any other step
is cut short by the death at once, with the exit in its evidence. Regression: the two watches on one exit
event raced, and a bot that died on a damaged store was reported as a step failure or as "did not become
ready" depending on which waiter the event loop woke first."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from qa.kernel.errors import InfraError
from qa.scenario.bot_death import until_bot_dies
from qa.scenario.context import StepFailed
from qa.scenario.steps.registry import STEP_TYPES
from qa.waiting import WaitTimeout


def _proc(name: str = "bot") -> SimpleNamespace:
    return SimpleNamespace(died=asyncio.Event(), name=name, exit_description="exited with code 1",
                           log_path=f"{name}.log", log_tail=lambda lines=20: [f"{name}.log: boom"], has_trace=False,
                           trace=SimpleNamespace(items=[], closed_reason=None),
                           log=SimpleNamespace(closed_reason=None))


def _ctx() -> SimpleNamespace:
    return SimpleNamespace(bot=_proc())


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


# The death wins over the step's own failure, whichever wait noticed it first (no-reply, edits, trace waits).

async def _run(ctx: SimpleNamespace, step: object, kind: str = "expect_edit") -> StepFailed:
    with pytest.raises(StepFailed) as caught:
        await asyncio.wait_for(until_bot_dies(ctx, step, 5, kind), 10)
    return caught.value


async def test_a_wait_ended_by_the_closed_trace_before_the_exit_is_judged_reports_the_death() -> None:
    """The trace closes as the process ends; the exit watch sets `died` a few loop turns later: the step's wait,
    ended by the closed trace, fails first with its own words."""
    ctx = _ctx()

    async def died_under_it() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        ctx.bot.died.set()

    async def step() -> str:
        ctx.bot.trace.closed_reason = "bot process exited with code 1"
        judged = asyncio.ensure_future(died_under_it())
        ctx.judged = judged  # held: the exit watch's own task
        raise StepFailed("no edit of the reply within 5s (stream ended)")

    failure = await _run(ctx, step())
    assert failure.expected == "the bot to keep running through step 5 (expect_edit)", failure.expected
    assert failure.seen[:2] == ["bot bot: exited with code 1 unexpectedly (log: bot.log)", "bot.log: boom"]


async def test_a_step_that_fails_in_its_teardown_grace_after_the_death_reports_the_death() -> None:
    """Cut short by the death, a step whose teardown turns the cancellation into its own failure (within the
    grace) does not get the last word."""
    ctx = _ctx()

    async def step() -> str:
        ctx.bot.died.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise StepFailed("no reply to 'ignored' (dropped: any reason)") from None
        return "never"

    failure = await _run(ctx, step(), "expect_no_reply")
    assert failure.expected == "the bot to keep running through step 5 (expect_no_reply)", failure.expected


async def test_the_peers_death_wins_over_the_steps_failure_and_is_named() -> None:
    ctx = _ctx()
    ctx.peer = _proc("peer")

    async def step() -> str:
        ctx.peer.log.closed_reason = "bot process exited with code 1"
        ctx.peer.died.set()
        raise WaitTimeout("the bot's trace record", 5.0, [])

    failure = await _run(ctx, step(), "expect_trace")
    assert failure.expected == "the peer bot to keep running through step 5 (expect_trace)", failure.expected
    assert failure.seen[0] == "peer bot peer: exited with code 1 unexpectedly (log: peer.log)", failure.seen


async def test_a_step_failing_on_its_own_while_the_bot_runs_keeps_its_own_failure() -> None:
    ctx = _ctx()

    async def step() -> str:
        raise StepFailed("no edit of the reply within 5s")

    assert (await _run(ctx, step())).expected == "no edit of the reply within 5s"


async def test_an_exit_the_harness_asked_for_leaves_the_steps_failure_standing() -> None:
    """The streams close on a stop the harness asked for too; `died` then never comes, and the wait for it is
    bounded (qa.scenario.bot_death.EXIT_JUDGED_S)."""
    ctx = _ctx()

    async def step() -> str:
        ctx.bot.log.closed_reason = "bot process stopped"
        raise StepFailed("no edit of the reply within 5s")

    assert (await _run(ctx, step())).expected == "no edit of the reply within 5s"


async def test_a_harness_error_in_the_step_is_never_relabelled_a_death() -> None:
    ctx = _ctx()

    async def step() -> str:
        ctx.bot.died.set()
        raise RuntimeError("a harness bug")

    with pytest.raises(RuntimeError, match="a harness bug"):
        await asyncio.wait_for(until_bot_dies(ctx, step(), 5, "expect_edit"), 10)
