"""How long to wait for a bot to fall quiet: before the first message (readiness `joined`) and after the last step,
before the final checks (a late answer to an ignored message must still be seen)."""

from __future__ import annotations

import asyncio
from typing import Any

from qa.evidence.silence import settle_window_s
from qa.evidence.trace import traced_sends
from qa.harness.bot_process import BotUnderTest
from qa.scenario.context import ScenarioContext
from qa.waiting import WaitTimeout

# `ready: {joined: true}` knows only that the bot joined; before the first message it waits until the bot's
# output has been quiet this long (at most SETTLE_MAX_S), so a bot still busy with its first sync is not sent
# a message it would take for history. It is the weakest readiness; a `log` or `trace` condition is exact.
SETTLE_QUIET_S = 0.3
SETTLE_MAX_S = 2.0
FINAL_QUIET_S = 0.15
FINAL_MAX_S = 1.0
SETTLE_CAP_S = 10.0  # the longest the room is watched for late answers after the last step


async def settle(bot: BotUnderTest) -> None:
    """Until the bot's log and trace have been quiet for SETTLE_QUIET_S, for at most SETTLE_MAX_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_MAX_S
    while loop.time() < deadline:
        marks = (bot.log.count, len(bot.trace.items))
        try:
            await asyncio.wait_for(_any_output(bot, marks), min(SETTLE_QUIET_S, deadline - loop.time()))
        except TimeoutError:
            return


async def bot_says_it_is_idle(ctx: ScenarioContext) -> bool:
    """A bot that traces its turns says when it is done: every turn its running process started has ended (its
    turn.end may land a moment after the reply the last step saw)."""
    if not ctx.bot.has_trace:
        return False

    def idle(_record: Any = None) -> bool:
        items = current_process(ctx.bot.trace.items)
        started = {r.get("attempt") for r in items if r.get("type") == "turn.start"}
        return bool(started) and started <= {r.get("attempt") for r in items if r.get("type") == "turn.end"}

    if idle():
        return True
    try:
        await ctx.bot.trace.wait_for(idle, FINAL_MAX_S, "every turn to end")
    except WaitTimeout:
        return False
    return True


def current_process(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trace records of the bot's running process: those from its last `start` record on (the file is kept
    across restarts, and the harness stops a bot before it starts the next). A turn of a process killed mid-turn
    never ends, but a dead process sends nothing: without this cut, every scenario that kills a bot mid-turn
    waited out the whole settle window (4.3 s of matrix-crash-mid-turn's 6.6 s). No `start` record: every record."""
    starts = [n for n, r in enumerate(items) if r.get("type") == "start"]
    return items[starts[-1]:] if starts else items


def _model_times_ms(ctx: ScenarioContext) -> list[float | None]:
    """How long the model took for each request of this scenario (the mock's journal: a request still in flight
    counts its planned latency); for a live model, which keeps no journal, the replies' own latencies."""
    entries = getattr(ctx.provider, "journal", None) if ctx.provider is not None else None
    if entries is None:
        return list(ctx.reply_latencies_ms)
    return [e.finished_at - e.started_at if e.finished_at is not None else float(e.latency_ms) for e in entries]


async def late_evidence_in(ctx: ScenarioContext) -> str | None:
    """Before the final checks: what the bot sent after the last step must have reached the test users' clients.
    A traced bot that says every turn ended is waited on by the events its trace says it sent (a send still in
    flight, then every event id until a client received it); a bot without a trace, or one whose turns have not
    ended, or that traced a send without its event id, gets the room's quiet window. None when the evidence is
    in; else what was still missing when the bounded wait ended, for the result to say NOT CHECKED."""
    if not await bot_says_it_is_idle(ctx):
        await room_settles(ctx)
        return None
    missing = await _traced_sends_received(ctx, max(FINAL_MAX_S, 2 * _settle_s(ctx)))
    if missing is None and traced_sends(ctx.bot.trace.items[ctx.trace_start:]).unnamed:
        await room_settles(ctx)
    return missing


async def _traced_sends_received(ctx: ScenarioContext, bound_s: float) -> str | None:
    """Until no send the trace shows is in flight and every event id it names has reached a test user's client
    (the bot got its id back before the homeserver told the clients: an edit that turned a right answer wrong
    was otherwise never judged); at most `bound_s`. What was missing at the bound, or None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    trace = ctx.bot.trace

    def in_flight(_record: Any = None) -> tuple[str, ...]:
        return traced_sends(trace.items[ctx.trace_start:]).in_flight

    if in_flight():
        try:
            await trace.wait_for(lambda _r: not in_flight(), bound_s, "the bot's sends in flight to end",
                                 ctx.trace_start)
        except WaitTimeout:
            return (f"the bot's trace still shows {len(in_flight())} send(s) in flight (preview.edit.start without "
                    f"its end) after {bound_s:g}s")
    streams = [actor.events for actor in ctx.actors.values()]
    while True:
        marks = [stream.count for stream in streams]
        seen = {e.get("event_id") for stream in streams for e in stream.items}
        missing = [i for i in traced_sends(trace.items[ctx.trace_start:]).ids if i not in seen]
        if not missing or not streams:
            return None
        left = deadline - loop.time()
        if left <= 0 or not await _any_received(streams, marks, set(missing), left):
            return (f"{len(missing)} event(s) the bot's trace says it sent never reached a test user's client "
                    f"within {bound_s:g}s: {', '.join(missing[:5])}")


async def _any_received(streams: list[Any], marks: list[int], wanted: set[str], timeout_s: float) -> bool:
    """Whether any of `wanted` reaches any of the clients' streams (from `marks` on) within `timeout_s`."""
    tasks = [asyncio.ensure_future(s.wait_for(lambda e: e.get("event_id") in wanted, timeout_s, "a traced send", m))
             for s, m in zip(streams, marks, strict=True)]
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                await next_done
            except WaitTimeout:  # this client's wait ran out (or its stream closed); another may still see it
                continue
            return True
        return False
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _settle_s(ctx: ScenarioContext) -> float:
    return settle_window_s(_model_times_ms(ctx), FINAL_QUIET_S, SETTLE_CAP_S, ctx.reply_latencies_ms)


async def room_settles(ctx: ScenarioContext) -> None:
    """Until the watcher has seen no bot event for the settle window (qa.evidence.silence: sized by the model's
    latency in this scenario, so an out-of-order bot answering an ignored message after the last step is seen,
    and by how long the bot's replies took to reach the room, so an edit sent right after a reply is seen on a
    slow homeserver too), at most twice that. Only ever adds evidence for the final checks."""
    quiet_s = _settle_s(ctx)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(FINAL_MAX_S, 2 * quiet_s)
    events = ctx.observer().events
    while loop.time() < deadline:
        mark = len(events.items)
        try:
            await events.wait_for(lambda e: e.get("sender") in ctx.bot_ids,
                                  min(quiet_s, deadline - loop.time()), "bot events", mark)
        except WaitTimeout:
            return


async def _any_output(bot: BotUnderTest, marks: tuple[int, int]) -> None:
    log = asyncio.ensure_future(bot.log.wait_for(lambda _: True, SETTLE_MAX_S, "output", marks[0]))
    trace = asyncio.ensure_future(bot.trace.wait_for(lambda _: True, SETTLE_MAX_S, "trace", marks[1]))
    try:
        await asyncio.wait({log, trace}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (log, trace):
            task.cancel()
        await asyncio.gather(log, trace, return_exceptions=True)
