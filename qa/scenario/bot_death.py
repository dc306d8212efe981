"""A step cut short by the bot's (or its peer's) exit that nobody asked for: the death is the verdict, whichever
of the step's waits noticed it first, with the exit and the tail of the log."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from qa.harness.bot_process import BotUnderTest, describe_record
from qa.scenario.context import ScenarioContext, StepFailed
from qa.scenario.peer import raise_if_peer_died, until_either_dies
from qa.waiting import WaitTimeout, run_unless

STEP_GRACE_S = 5.0  # how long a step cut short by a death gets for its own teardown
# How long a step's own failure waits, when a process it depends on has exited, for the exit watch's verdict
# (moments: the exit watch reads the trace's last records, then says whether nobody asked for the exit).
EXIT_JUDGED_S = 2.0


async def until_bot_dies(ctx: ScenarioContext, step: Any, index: int, kind: str, *,
                         watches_own_start: bool = False) -> str:
    """Run a step, but fail it at once when the bot exits while nobody asked it to (a crash, an OOM kill):
    with the exit and the tail of its log, rather than waiting out the step's timeout. A step that failed on
    its own as the bot died (its wait ended by the closed trace, or its failure raised during the teardown
    grace) is reported as the death: the step's failure is a consequence, the death is the cause."""
    bot = ctx.bot
    if watches_own_start:
        # A step that starts the bot waits for readiness and watches the exit itself, and says which it was
        # ("did not become ready", with the log's tail). Racing its own watch against this one made the verdict
        # depend on which waiter the event loop woke first.
        return await step
    peer = getattr(ctx, "peer", None)  # a scenario without a peer bot, or a stand-in context
    stopped, work = await run_unless(step, until_either_dies(bot, peer), grace_s=STEP_GRACE_S)
    if not stopped:
        failure = work.exception()
        if not isinstance(failure, StepFailed | WaitTimeout) or not await died_meanwhile(bot, peer):
            return work.result()
    if not bot.died.is_set():
        raise_if_peer_died(peer, f"step {index} ({kind})")
    raise StepFailed(f"the bot to keep running through step {index} ({kind})",
                     [f"bot {bot.name}: {bot.exit_description} unexpectedly (log: {bot.log_path})",
                      *bot.log_tail(), *recent_evidence(bot)[-10:]])


async def died_meanwhile(bot: BotUnderTest, peer: BotUnderTest | None) -> bool:
    """Whether the bot or the peer died while nobody asked it to. One whose output streams have closed has
    exited; its exit watch then says within moments whether that was asked for."""
    procs = [p for p in (bot, peer) if p is not None]
    if any(p.died.is_set() for p in procs):
        return True
    exited = [p for p in procs if _exited(p)]
    if not exited:
        return False
    waits = [asyncio.ensure_future(p.died.wait()) for p in exited]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED), EXIT_JUDGED_S)
    finally:
        for wait in waits:
            wait.cancel()
    return any(p.died.is_set() for p in procs)


def _exited(proc: BotUnderTest) -> bool:
    return any(getattr(getattr(proc, name, None), "closed_reason", None) for name in ("trace", "log"))


def recent_evidence(bot: BotUnderTest | None) -> list[str]:
    if bot is None:
        return []
    if bot.trace.items:
        return ["bot trace: " + describe_record(r) for r in bot.trace.items[-10:]]
    return bot.log_tail(10)
