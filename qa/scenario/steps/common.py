"""What many step kinds do while they run: expand markers, wait for a room event, and gather the evidence a
failure shows (the bot's trace about an event, what the bot said in the room)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qa.evidence.events import describe_event, strangers_messages
from qa.evidence.trace import attempts_for
from qa.harness.bot_process import describe_record
from qa.harness.capabilities import say_marker
from qa.scenario.context import StepFailed
from qa.scenario.fields import BOT
from qa.shared.markers import expand
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext

# Trace records worth showing whatever event a failure is about: what went wrong, and how turns ended.
_ALWAYS_SHOWN = ("error", "lock.timeout", "turn.stale", "model.request.end", "turn.end")


def text(ctx: ScenarioContext, template: str) -> str:
    """Scenario text with this run's markers filled in."""
    return expand(template, ctx.markers)


def prompt(ctx: ScenarioContext, template: str) -> str:
    """What a test user types for `template`: the text with markers filled in; for a bot without a model (a bot
    file with `say`), a say-able prompt (qa.harness.capabilities.say_marker) becomes its say command instead."""
    marker = say_marker(template)
    bot = ctx.bot.bot
    if marker is None or bot.has("model"):
        return text(ctx, template)
    return bot.say_text(text(ctx, marker))


def mention_of(ctx: ScenarioContext, name: str | None) -> tuple[str, str] | None:
    """(user id, display name) for a message that mentions `name` (the bot or an actor)."""
    if not name:
        return None
    return ctx.user_id_of(name), ctx.bot_name if name == BOT else name


def trace_about(ctx: ScenarioContext, event_id: str | None = None) -> list[str]:
    """The bot trace lines that explain what happened to an event (or the run's problems)."""
    lines = []
    for record in ctx.bot.trace.items[ctx.trace_start:]:
        about_event = event_id is not None and event_id in (record.get("eventId"), record.get("inReplyTo"))
        if about_event or record.get("type") in _ALWAYS_SHOWN:
            lines.append("bot trace: " + describe_record(record))
    if not ctx.bot.has_trace:
        lines.append(f"(bot {ctx.bot.name} writes no trace; the last lines of {ctx.bot.log_path}:)")
        lines.extend(ctx.bot.log_tail(8))
    if ctx.bot.died.is_set():
        # A crash (an OOM kill) that ended the wait before the step's own death watch did: said as the death it
        # is, with the last lines of the log (the trace's, when it writes one, are above).
        lines.append(f"bot {ctx.bot.name}: {ctx.bot.exit_description} unexpectedly (log: {ctx.bot.log_path})")
        if ctx.bot.has_trace:
            lines.extend(ctx.bot.log_tail(8))
    elif ctx.bot.trace.closed_reason or ctx.bot.log.closed_reason:
        lines.append(f"bot: {ctx.bot.trace.closed_reason or ctx.bot.log.closed_reason} (log: {ctx.bot.log_path})")
    return lines


def trace_lines(ctx: ScenarioContext, types: tuple[str, ...]) -> list[str]:
    """This scenario's bot trace records of these types, as evidence lines."""
    return ["bot trace: " + describe_record(r) for r in ctx.bot.trace.items[ctx.trace_start:] if r.get("type") in types]


def bot_messages(ctx: ScenarioContext, room_id: str) -> list[str]:
    """Everything the bot said in a room, as evidence lines."""
    return [
        "room: " + describe_event(e)
        for e in ctx.observer().events.items
        # State events (the bot's own join) are not things it said.
        if e.get("room_id") == room_id and e.get("sender") in ctx.bot_ids and "state_key" not in e
    ]


def strangers(ctx: ScenarioContext, room_id: str) -> list[str]:
    """What accounts that are neither the bot's nor the scenario's users said in a room: an answer from an account
    that is not the bot's (an application service speaking outside its namespace), as evidence lines."""
    known = {a.user_id for a in ctx.actors.values()} | ({ctx.peer_user_id} if ctx.peer_user_id else set())
    return strangers_messages(ctx.observer().events.items, room_id, ctx.bot_ids, known)


def attempts(ctx: ScenarioContext, event_id: str) -> set[str]:
    """The bot's attempt ids for the turn(s) a message started in this scenario."""
    return attempts_for(ctx.bot.trace.items[ctx.trace_start:], event_id)


def journal(ctx: ScenarioContext) -> list[Any] | None:
    """The mock provider's request journal; None for a live model, which keeps none."""
    return list(ctx.provider.journal) if ctx.provider is not None and hasattr(ctx.provider, "journal") else None


async def room_event(ctx: ScenarioContext, event_id: str, timeout_s: float, what: str) -> dict[str, Any]:
    """The event with this id, once the observer has seen it."""
    try:
        return await ctx.observer().events.wait_for(lambda e: e.get("event_id") == event_id, timeout_s, what)
    except WaitTimeout as exc:
        raise StepFailed(what, exc.seen[-10:]) from None


async def bot_trace(ctx: ScenarioContext, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
    """The first trace record of this scenario that `predicate` accepts."""
    try:
        return await ctx.bot.trace.wait_for(predicate, timeout_s, what, ctx.trace_start)
    except WaitTimeout as exc:
        raise StepFailed(what, exc.seen[-12:]) from None
