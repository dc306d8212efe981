"""Step implementations. Each takes the scenario context and its step model, acts through real clients,
and either returns a one-line detail for the report or raises StepFailed with the evidence it saw."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from qa.actors import describe_event, media_content, message_content
from qa.clock import mono_ms
from qa.evidence.edits import ChainRules, check_chain, describe_chain, edits_of
from qa.evidence.order import unwanted_replies
from qa.evidence.pairing import Pairing, latest_body, pair_reply, replies_by_journal, replies_by_relation
from qa.harness.bot_process import describe_record
from qa.report.summary import NegativeCheck
from qa.scenario import message_steps
from qa.scenario.context import Ref, ScenarioContext, StepFailed
from qa.scenario.e2ee_steps import E2EE_STEPS
from qa.scenario.markers import expand
from qa.waiting import WaitTimeout

DEFAULT_STEP_TIMEOUT_S = 30.0


def _timeout(step: Any) -> float:
    value = getattr(step, "timeout", None)
    return float(value) if value else DEFAULT_STEP_TIMEOUT_S


def _text(ctx: ScenarioContext, template: str) -> str:
    return expand(template, ctx.markers)


def _trace_about(ctx: ScenarioContext, event_id: str | None = None) -> list[str]:
    """The bot trace lines that explain what happened to an event (or the run's problems)."""
    lines = []
    for record in ctx.bot.trace.items[ctx.trace_start:]:
        about_event = event_id is not None and event_id in (record.get("eventId"), record.get("inReplyTo"))
        if about_event or record.get("type") in ("error", "lock.timeout", "turn.stale", "model.request.end",
                                                  "turn.end"):
            lines.append("bot trace: " + describe_record(record))
    if not ctx.bot.has_trace:
        lines.append(f"(bot {ctx.bot.name} writes no trace; the last lines of {ctx.bot.log_path}:)")
        lines.extend(ctx.bot.log_tail(8))
    if ctx.bot.trace.closed_reason or ctx.bot.log.closed_reason:
        lines.append(f"bot: {ctx.bot.trace.closed_reason or ctx.bot.log.closed_reason} (log: {ctx.bot.log_path})")
    return lines


def _bot_messages(ctx: ScenarioContext, room_id: str) -> list[str]:
    return [
        "room: " + describe_event(e)
        for e in ctx.observer().events.items
        # State events (the bot's own join) are not things it said.
        if e.get("room_id") == room_id and e.get("sender") == ctx.bot_user_id and "state_key" not in e
    ]


async def send(ctx: ScenarioContext, step: Any) -> str:
    actor = ctx.actors[step.actor]
    room_id = ctx.rooms[step.room]
    thread_root = ctx.refs[step.thread].event_id if step.thread else None
    reply_to = ctx.refs[step.reply_to].event_id if step.reply_to else None
    body = _text(ctx, step.body)
    typed = body
    mention = None
    if step.mention:
        user_id = ctx.user_id_of(step.mention)
        if getattr(step, "mention_style", "pill") == "text":
            # Only the id typed into the body; message_content still sends an empty m.mentions, which says
            # "this message mentions nobody" and must win over the text.
            body = f"{user_id}: {body}"
        else:
            mention = (user_id, ctx.bot_name if step.mention == "bot" else step.mention)
    content = message_content(body, mention=mention, thread_root=thread_root, reply_to=reply_to)
    content["msgtype"] = getattr(step, "msgtype", "m.text")
    if getattr(step, "mention_style", "pill") == "spoof":
        content["m.mentions"] = {}  # the pill stays in formatted_body; the intentional mentions leave them out
    sent_at = mono_ms()
    if step.withhold_room_key:
        event_id = await actor.send_undecryptable(room_id)
    else:
        event_id = await actor.send(room_id, content)
    if step.id:
        ctx.refs[step.id] = Ref(room_id, event_id, thread_root, sent_at, actor=step.actor, body=content["body"],
                                text=typed, mentions=tuple(content["m.mentions"].get("user_ids", [])))
    where = f" in thread {step.thread}" if step.thread else ""
    withheld = " (room key withheld)" if step.withhold_room_key else ""
    return f"{step.actor} sent {event_id}{where}{withheld}"


_MEDIA_MSGTYPES = {"image": "m.image", "audio": "m.audio", "video": "m.video", "file": "m.file"}


def media_bytes(ctx: ScenarioContext, step: Any) -> tuple[bytes, str, str]:
    """(data, filename, mimetype) of a send_media step: its fixture file, or fresh random bytes."""
    import mimetypes
    import os

    from qa.library import media_fixture

    if step.fixture is not None:
        data = media_fixture(ctx.scenario.source_path, step.fixture).read_bytes()
        name = step.filename or step.fixture
    else:
        data = os.urandom(step.generate_bytes)
        name = step.filename or f"generated-{step.generate_bytes}.bin"
    mimetype = step.mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return data, name, mimetype


async def send_media(ctx: ScenarioContext, step: Any) -> str:
    actor = ctx.actors[step.actor]
    room_id = ctx.rooms[step.room]
    thread_root = ctx.refs[step.thread].event_id if step.thread else None
    data, filename, mimetype = media_bytes(ctx, step)
    encrypt = bool(ctx.scenario.rooms[step.room].encrypted)
    mxc, keys = await actor.upload(data, mimetype, filename, encrypt=encrypt)
    caption = _text(ctx, step.caption) if step.caption is not None else None
    mention = None
    if step.mention:
        mention = (ctx.user_id_of(step.mention), ctx.bot_name if step.mention == "bot" else step.mention)
    content = media_content(_MEDIA_MSGTYPES[step.media], mxc, filename=filename, mimetype=mimetype, size=len(data),
                            caption=caption, encrypted_keys=keys, mention=mention, thread_root=thread_root)
    sent_at = mono_ms()
    event_id = await actor.send(room_id, content)
    if step.id:
        ctx.refs[step.id] = Ref(room_id, event_id, thread_root, sent_at, actor=step.actor, body=content["body"],
                                text=caption)
    how = "encrypted " if encrypt else ""
    return f"{step.actor} sent {how}{content['msgtype']} {filename} ({mimetype}, {len(data)} bytes) as {event_id}"


async def wait_for_bot_reply(ctx: ScenarioContext, trigger: Ref, timeout_s: float, what: str) -> dict[str, Any]:
    """The bot message that answers `trigger`, by the strongest evidence the bot gives (ctx.method says which).

    With a trace, the bot's `reply.sent` record names it; a traced drop of the trigger (other than as a
    redelivered duplicate, which means it is handled already) is final, so the step fails on that evidence at
    once instead of waiting out its timeout. Without a trace: qa.evidence.pairing."""
    try:
        if ctx.bot.has_trace:
            event = await _reply_by_trace(ctx, trigger, timeout_s, what)
            ctx.method = "trace"
        else:
            pairing = await _reply_by_pairing(ctx, trigger, timeout_s, what)
            event, ctx.method = pairing.event, pairing.method
    except WaitTimeout as exc:
        seen = _trace_about(ctx, trigger.event_id) + _bot_messages(ctx, trigger.room_id)
        raise StepFailed(f"{what} within {exc.timeout_s:g}s", seen) from None
    ctx.claimed[str(event.get("event_id"))] = trigger.event_id
    seen_at = event["_seenMs"]
    latency = seen_at - trigger.sent_mono_ms - _model_latency_between(ctx, trigger.sent_mono_ms, seen_at)
    ctx.reply_latencies_ms.append(round(max(latency, 0.0), 1))
    return event


async def _reply_by_trace(ctx: ScenarioContext, trigger: Ref, timeout_s: float, what: str) -> dict[str, Any]:
    def answered_dropped_or_failed(r: dict[str, Any]) -> bool:
        kind = r.get("type")
        if kind == "reply.sent":
            return r.get("inReplyTo") == trigger.event_id
        if r.get("eventId") != trigger.event_id:
            return False
        # A traced drop or a failed turn is final: fail on that evidence now, not after the step's timeout.
        if kind == "turn.end":
            return r.get("outcome") == "failed"
        return kind == "inbound" and r.get("decision") == "dropped" and r.get("reason") not in ("duplicate", "history")

    record = await ctx.bot.trace.wait_for(answered_dropped_or_failed, timeout_s, what, ctx.trace_start)
    if record.get("type") == "inbound":
        raise StepFailed(f"{what}, but the bot dropped it ({record.get('reason')})",
                         _trace_about(ctx, trigger.event_id) + _bot_messages(ctx, trigger.room_id))
    if record.get("type") == "turn.end":
        raise StepFailed(f"{what}, but the bot's turn for it failed (attempt {record.get('attempt')})",
                         _trace_about(ctx, trigger.event_id) + _bot_messages(ctx, trigger.room_id))
    return await ctx.observer().events.wait_for(
        lambda e: e.get("event_id") == record.get("eventId"), timeout_s, f"{what} to appear in the room")


def _journal(ctx: ScenarioContext) -> list[Any] | None:
    return list(ctx.provider.journal) if ctx.provider is not None and hasattr(ctx.provider, "journal") else None


def _pair(ctx: ScenarioContext, trigger: Ref) -> Pairing | None:
    return pair_reply(trigger.as_trigger(), ctx.observer().events.items, ctx.bot_user_id, _journal(ctx),
                      frozenset(ctx.claimed))


def _body_now(ctx: ScenarioContext, event: dict[str, Any]) -> str:
    return latest_body(event, ctx.observer().events.items, ctx.bot_user_id)


async def _reply_by_pairing(ctx: ScenarioContext, trigger: Ref, timeout_s: float, what: str) -> Pairing:
    # The journal entry is complete before the bot can post the model's answer, so re-pairing on each new room
    # event is enough: a journal change alone never completes a pairing.
    await ctx.observer().events.wait_for(lambda _e: _pair(ctx, trigger) is not None, timeout_s, what)
    pairing = _pair(ctx, trigger)
    assert pairing is not None
    return pairing


def _model_latency_between(ctx: ScenarioContext, start: float, end: float) -> float:
    """Simulated model time inside a reply window, so latency figures measure the harness and bot, not the mock."""
    if ctx.provider is None:
        return 0.0
    return sum(
        float(getattr(e, "latency_ms", 0) or 0)
        for e in ctx.provider.journal
        if start <= float(getattr(e, "started_at", 0) or 0) <= end
    )


def check_reply_shape(event: dict[str, Any], trigger: Ref, expect_thread: str | None, top_level: bool,
                      no_relation: bool = False) -> list[str]:
    """Pure: what is wrong with the reply's relation, as a list of problems (empty = fine).

    top_level: not in a thread (a rich reply, m.in_reply_to alone, is still top-level: most bots quote what they
    answer). no_relation: stricter, no m.relates_to at all (how the embedded agent answers at the top level)."""
    relates = (event.get("content") or {}).get("m.relates_to")
    problems: list[str] = []
    if expect_thread:
        if not isinstance(relates, dict) or relates.get("rel_type") != "m.thread":
            problems.append(f"expected rel_type m.thread, got m.relates_to={relates!r}")
        else:
            if relates.get("event_id") != expect_thread:
                problems.append(f"thread root {relates.get('event_id')} != {expect_thread}")
            if relates.get("is_falling_back") is not True:
                problems.append("is_falling_back is not true")
            in_reply = (relates.get("m.in_reply_to") or {}).get("event_id")
            if in_reply != trigger.event_id:
                problems.append(f"m.in_reply_to {in_reply} != triggering event {trigger.event_id}")
    elif no_relation and relates is not None:
        problems.append(f"expected a top-level reply with no m.relates_to, got m.relates_to={relates!r}")
    elif top_level and relates is not None and (not isinstance(relates, dict) or relates.get("rel_type")):
        problems.append(f"expected a top-level reply (not in a thread), got m.relates_to={relates!r}")
    return problems


async def expect_reply(ctx: ScenarioContext, step: Any) -> str:
    trigger = ctx.refs[step.to]
    began = mono_ms()
    event = await wait_for_bot_reply(ctx, trigger, _timeout(step), f"a bot reply to step '{step.to}'")
    expected_body = _text(ctx, step.body) if step.body is not None else None
    parts_min = getattr(step, "parts_min", None)
    problems: list[str] = []
    if parts_min:
        # The body is the whole of the parts, so it is checked there, not against the first part alone.
        parts = await message_steps.reply_parts(ctx, event, trigger, _timeout(step))
        order = [str(e.get("event_id")) for e in ctx.observer().events.items]
        problems += message_steps.parts_problems(parts, order, expected_body, parts_min,
                                                 ctx.scenario.bot.text_chunk_limit)
        # Every part stands where the reply does (same thread, same top-level shape).
        root = ctx.refs[step.thread].event_id if step.thread else None
        for index, part in enumerate(parts[1:], start=2):
            problems += [f"part {index}: {problem}" for problem in check_reply_shape(
                part, trigger, root, bool(getattr(step, "top_level", False)),
                bool(getattr(step, "no_relation", False)))] if part is not None else []
        expected_body = None
    problems += message_steps.format_problems(
        event.get("content") or {}, [_text(ctx, t) for t in getattr(step, "formatted_contains", [])],
        [_text(ctx, t) for t in getattr(step, "formatted_excludes", [])],
        [_text(ctx, t) for t in getattr(step, "body_excludes", [])], bool(getattr(step, "formatted_safe", False)))
    if expected_body is not None and _body_now(ctx, event) != expected_body:
        # A draft that the bot edits as the model speaks: wait (within the step's time) for the edit that
        # finishes it; the final check below still fails a reply that is edited into something else later.
        left = max(_timeout(step) - (mono_ms() - began) / 1000, 0.05)
        with contextlib.suppress(WaitTimeout):
            await ctx.observer().events.wait_for(lambda _e: _body_now(ctx, event) == expected_body, left,
                                                  "the reply's final edit")
    body = _body_now(ctx, event)
    if expected_body is not None:
        ctx.final_checks.append(_still_says(ctx, event, expected_body, step.to))
    thread_root = ctx.refs[step.thread].event_id if step.thread else None
    problems += check_reply_shape(event, trigger, thread_root, bool(getattr(step, "top_level", False)),
                                  bool(getattr(step, "no_relation", False)))
    if expected_body is not None and body.strip() != expected_body:
        problems.insert(0, f"body {body.strip()!r} != expected {expected_body!r}")
    contains = getattr(step, "body_contains", None)
    if contains and _text(ctx, contains) not in body:
        problems.insert(0, f"body {body!r} does not contain {_text(ctx, contains)!r}")
    if getattr(step, "streamed", False):
        problems += _chain_problems(ctx, event, ChainRules(min_edits=1, final_body=expected_body))
    if event.get("room_id") != trigger.room_id:
        problems.append(f"the reply is in room {event.get('room_id')}, the message was in {trigger.room_id}")
    msgtype = (event.get("content") or {}).get("msgtype")
    if getattr(step, "msgtype", None) and msgtype != step.msgtype:
        problems.insert(0, f"msgtype {msgtype!r} != expected {step.msgtype!r}")
    if step.encrypted is not None and bool(event.get("decrypted")) != step.encrypted:
        problems.append("the reply was sent in the clear" if step.encrypted else "the reply was encrypted")
    if step.after:
        earlier = ctx.refs[step.after].event_id
        order = [e.get("event_id") for e in ctx.observer().events.items]
        if earlier not in order or order.index(earlier) > order.index(event["event_id"]):
            problems.append(f"reply {event['event_id']} came before the reply of '{step.after}' ({earlier})")
    if problems:
        shape = "in the thread" if thread_root else ("top-level" if getattr(step, "top_level", False) else "")
        expected = f"reply to '{step.to}'" + (f" with body {expected_body!r}" if expected_body else "") + f" {shape}"
        raise StepFailed(expected.strip(), [*problems, "reply: " + describe_event(event)])
    if step.id:
        ctx.refs[step.id] = Ref(event["room_id"], event["event_id"], thread_root, event["_seenMs"], actor="bot")
    how = "" if ctx.method == "trace" else f"; {Pairing(event, ctx.method).note}"  # type: ignore[arg-type]
    return f"reply {event['event_id']} ({ctx.reply_latencies_ms[-1]:.0f} ms{how})"


def _chain_problems(ctx: ScenarioContext, draft: dict[str, Any], rules: ChainRules) -> list[str]:
    edits = edits_of(str(draft.get("event_id")), ctx.observer().events.items)
    problems = check_chain(draft, edits, ctx.bot_user_id, rules)
    return [*problems, *describe_chain(draft, edits)] if problems else []


async def expect_edits(ctx: ScenarioContext, step: Any) -> str:
    """The edit chain of a streamed reply (qa.evidence.edits). With `final_body`, waits (within the step's
    time) until the last edit says it, since the chain may still be growing when the step starts."""
    reply = ctx.refs[step.to]
    draft = await _room_event(ctx, reply.event_id, step, f"the reply '{step.to}' in the room")
    final = _text(ctx, step.final_body) if step.final_body is not None else None
    if final is not None:
        with contextlib.suppress(WaitTimeout):
            await ctx.observer().events.wait_for(lambda _e: _body_now(ctx, draft) == final, _timeout(step),
                                                  "the final edit")
    rules = ChainRules(min_edits=step.min, max_edits=step.max, final_body=final, draft_msgtype=step.draft_msgtype,
                       some_edit_contains=[_text(ctx, t) for t in step.some_edit_contains],
                       no_edit_contains=[_text(ctx, t) for t in step.no_edit_contains])
    problems = _chain_problems(ctx, draft, rules)
    if problems:
        raise StepFailed(f"a sound edit chain on the reply '{step.to}'", problems)
    count = len(edits_of(reply.event_id, ctx.observer().events.items))
    return f"{count} edit(s) of {reply.event_id}, final text complete, no pings"


def _still_says(ctx: ScenarioContext, event: dict[str, Any], expected: str, to: str) -> Any:
    def check() -> str | None:
        now = _body_now(ctx, event)
        if now != expected:
            return f"the bot later edited its reply {event['event_id']} to '{to}' into {now!r} (expected {expected!r})"
        return None

    return check


def _still_silent(ctx: ScenarioContext, trigger: Ref, to: str, check: NegativeCheck) -> Any:
    def final() -> str | None:
        late = sorted(set(_replies_to(ctx, trigger.event_id)) - set(check.unwantedReplies))
        if late:
            check.unwantedReplies.extend(late)
            return f"the bot answered '{to}' after its check had passed: {', '.join(late)}"
        return None

    return final


async def expect_no_reply(ctx: ScenarioContext, step: Any) -> str:
    """Silence proved by evidence, not by waiting. With a trace: the bot traced the trigger as dropped for the
    expected reason. Without one: order (qa.evidence.order). Either way a later control message must be
    answered, and every bot message that answers the trigger is looked for and listed. A fixed quiet window
    only when the scenario asks for one."""
    trigger = ctx.refs[step.to]
    timeout_s = _timeout(step)
    # The step's own number, so a failing check is numbered too (the runner only fills in passing ones).
    index = next((i for i, s in enumerate(ctx.scenario.steps, start=1) if s is step), 0)
    check = NegativeCheck(step=index, triggerEventId=trigger.event_id, expectedReason=step.reason or "")
    ctx.negative_checks.append(check)
    quiet = getattr(step, "quiet_window", None)
    if quiet:
        return await _quiet_window(ctx, step, trigger, check, float(quiet))
    problems: list[str] = []
    if ctx.bot.has_trace:
        problems += await _traced_decision(ctx, step, trigger, check, timeout_s)
    else:
        check.method = "order"
        if step.reason:
            check.notes.append(f"reason {step.reason!r} NOT CHECKED: bot {ctx.bot.name} writes no trace")
    control_reply = None
    if step.control is not None:
        control_reply, control_problems = await _control(ctx, step.control, trigger, check, timeout_s)
        problems += control_problems
    if ctx.bot.has_trace:
        unwanted = [(e, "replies to the trigger") for e in _replies_to(ctx, trigger.event_id)]
    else:
        found = unwanted_replies(trigger.as_trigger(), control_reply, ctx.observer().events.items, ctx.bot_user_id,
                                 _journal(ctx))
        unwanted = [(u.event_id, u.why) for u in found]
    check.unwantedReplies = sorted({e for e, _ in unwanted})
    ctx.final_checks.append(_still_silent(ctx, trigger, step.to, check))
    if unwanted:
        problems.append(f"the bot answered '{step.to}': " + "; ".join(f"{e} ({why})" for e, why in unwanted))
    ctx.method = check.method
    if problems:
        raise StepFailed(f"no reply to '{step.to}' (dropped: {step.reason or 'any reason'})",
                         problems + _bot_messages(ctx, trigger.room_id))
    if check.method == "order":
        return f"no bot message for '{step.to}' before the control's answer {check.controlReplyEventId} (order)" \
            + (f"; {check.notes[0]}" if check.notes else "")
    return f"dropped ({check.botReason}); control answered by {check.controlReplyEventId}"


async def _quiet_window(ctx: ScenarioContext, step: Any, trigger: Ref, check: NegativeCheck, quiet: float) -> str:
    check.method = "quiet-window"
    ctx.method = "quiet-window"
    try:
        event = await ctx.observer().events.wait_for(
            lambda e: e.get("sender") == ctx.bot_user_id and e.get("room_id") == trigger.room_id
            and e.get("type") == "m.room.message" and e["_seenMs"] > trigger.sent_mono_ms, quiet, "any bot message")
    except WaitTimeout:
        return f"no bot message within the {quiet:g}s quiet window"
    check.unwantedReplies.append(event["event_id"])
    raise StepFailed(f"no bot reply to '{step.to}' within the quiet window", ["room: " + describe_event(event)])


async def _traced_decision(ctx: ScenarioContext, step: Any, trigger: Ref, check: NegativeCheck,
                           timeout_s: float) -> list[str]:
    try:
        # A reaction is never a message: its `reaction` record (recorded or ignored) is the bot's decision on it.
        decision = await ctx.bot.trace.wait_for(
            lambda r: r.get("type") in ("inbound", "reaction") and r.get("eventId") == trigger.event_id, timeout_s,
            f"the bot's decision on step '{step.to}'", ctx.trace_start)
    except WaitTimeout:
        # No decision is no proof of silence; the unwanted replies are still looked for by the caller.
        return [f"the bot traced no decision on '{step.to}' within {timeout_s:g}s",
                *_trace_about(ctx, trigger.event_id)]
    check.botReason = decision.get("reason")
    if decision.get("decision") not in ("dropped", "recorded", "ignored"):
        return [f"the bot accepted '{step.to}' ({decision.get('reason')})",
                *await _unwanted_reply_evidence(ctx, trigger, timeout_s)]
    if step.reason and decision.get("reason") != step.reason:
        return [f"dropped for {decision.get('reason')!r}, expected {step.reason!r}"]
    return []


async def _control(ctx: ScenarioContext, control: Any, trigger: Ref, check: NegativeCheck,
                   timeout_s: float) -> tuple[str | None, list[str]]:
    """Send the control message and wait for its answer: (the answer's event id, problems)."""
    room_id = trigger.room_id
    # Same session as the trigger unless told otherwise: then the control's answer also shows the session
    # was not stuck behind the trigger.
    thread_root = ctx.refs[control.thread].event_id if control.thread else trigger.thread_root
    mention = None
    if control.mention:
        mention = (ctx.user_id_of(control.mention), ctx.bot_name if control.mention == "bot" else control.mention)
    text = _text(ctx, control.body)
    content = message_content(text, mention=mention, thread_root=thread_root)
    sent_at = mono_ms()
    control_id = await ctx.actors[control.actor].send(room_id, content)
    check.controlEventId = control_id
    control_ref = Ref(room_id, control_id, thread_root, sent_at, actor=control.actor, body=content["body"], text=text)
    problems = []
    try:
        reply = await wait_for_bot_reply(ctx, control_ref, timeout_s, "the bot's reply to the control message")
    except StepFailed as exc:
        return None, [f"control message was not answered: {exc.expected}", *exc.seen]
    check.controlReplyEventId = reply["event_id"]
    if ctx.method == "order-guess":
        check.notes.append("the control's answer was paired as a guess (first bot message after it)")
    got = str((reply.get("content") or {}).get("body", "")).strip()
    if control.expect_body is not None and got != _text(ctx, control.expect_body):
        problems.append(f"control reply body {got!r} != expected {_text(ctx, control.expect_body)!r}")
    return reply["event_id"], problems


async def _unwanted_reply_evidence(ctx: ScenarioContext, trigger: Ref, timeout_s: float) -> list[str]:
    """The bot accepted a message it should have dropped: wait for that turn to end, and for its reply to show
    in the room, so the failure report shows what the bot actually said rather than just "accepted"."""
    try:
        end = await ctx.bot.trace.wait_for(
            lambda r: r.get("type") == "turn.end" and r.get("eventId") == trigger.event_id,
            timeout_s, "the end of the unwanted turn", ctx.trace_start)
        if end.get("outcome") != "replied":
            return [f"the unwanted turn ended without a reply ({end.get('outcome')})"]
        sent = ctx.bot.trace.find(
            lambda r: r.get("type") == "reply.sent" and r.get("inReplyTo") == trigger.event_id, ctx.trace_start)
        reply_id = (sent or {}).get("eventId")
        event = await ctx.observer().events.wait_for(
            lambda e: e.get("event_id") == reply_id, timeout_s, "the unwanted reply to appear in the room")
    except WaitTimeout as exc:
        return [f"(no unwanted reply seen: {exc.what})"]
    return ["unwanted reply: " + describe_event(event)]


def _replies_to(ctx: ScenarioContext, event_id: str) -> list[str]:
    """Every bot message that answers `event_id`: by the bot's trace, and by relation in the room (a threaded
    reply's m.in_reply_to names its trigger too). The claimed pairings of trace-less bots count as well."""
    from_trace = [str(r.get("eventId")) for r in ctx.bot.trace.items[ctx.trace_start:]
                  if r.get("type") == "reply.sent" and r.get("inReplyTo") == event_id]
    ref = next((r for r in ctx.refs.values() if r.event_id == event_id), None)
    room_id = ref.room_id if ref else next(iter(ctx.rooms.values()))
    events = ctx.observer().events.items
    from_room = replies_by_relation(event_id, events, ctx.bot_user_id, room_id)
    paired = [reply for reply, trigger in ctx.claimed.items() if trigger == event_id]
    by_journal = replies_by_journal(ref.as_trigger(), events, ctx.bot_user_id, _journal(ctx)) \
        if ref is not None and not ctx.bot.has_trace else []
    return sorted(set(from_trace + from_room + paired + by_journal))


async def react(ctx: ScenarioContext, step: Any) -> str:
    target = ctx.refs[step.to]
    event_id = await ctx.actors[step.actor].react(target.room_id, target.event_id, step.key)
    if step.id:
        ctx.refs[step.id] = Ref(target.room_id, event_id, target.thread_root, mono_ms(), actor=step.actor)
    return f"{step.actor} reacted {step.key} to {target.event_id}"


async def expect_reaction(ctx: ScenarioContext, step: Any) -> str:
    """Another user sees the reaction, and (when the reactor is a person) the bot records it."""
    target = ctx.refs[step.to]
    by_id = ctx.user_id_of(step.by)
    watcher = ctx.actors[step.actor] if getattr(step, "actor", None) else ctx.observer()

    def matches(e: dict[str, Any]) -> bool:
        rel = (e.get("content") or {}).get("m.relates_to") or {}
        return (e.get("type") == "m.reaction" and e.get("sender") == by_id
                and rel.get("event_id") == target.event_id and (step.key is None or rel.get("key") == step.key))

    try:
        seen = await watcher.events.wait_for(matches, _timeout(step), f"{step.by}'s {step.key} reaction")
    except WaitTimeout as exc:
        raise StepFailed(f"{watcher.name} sees {step.by} react {step.key} to '{step.to}'", exc.seen[-10:]) from None
    if getattr(step, "recorded_by_bot", True) and step.by != "bot":
        try:
            await ctx.bot.trace.wait_for(
                lambda r: r.get("type") == "reaction" and r.get("eventId") == seen["event_id"]
                and r.get("decision") == "recorded", _timeout(step), "the bot to record the reaction", ctx.trace_start)
        except WaitTimeout:
            evidence = _trace_about(ctx, seen["event_id"])
            raise StepFailed("the bot records the reaction in its session", evidence) from None
    return f"{watcher.name} saw {seen['event_id']}"


def _attempts_for(ctx: ScenarioContext, event_id: str) -> set[str]:
    """The bot's attempt ids for the turn(s) a message started, from its turn.start records."""
    return {str(r.get("attempt")) for r in ctx.bot.trace.items[ctx.trace_start:]
            if r.get("type") == "turn.start" and r.get("eventId") == event_id}


async def expect_trace(ctx: ScenarioContext, step: Any) -> str:
    wanted = dict(step.match or {})
    event_id = ctx.refs[step.to].event_id if step.to else None

    def matches(r: dict[str, Any]) -> bool:
        if r.get("type") != step.type or any(r.get(k) != v for k, v in wanted.items()):
            return False
        # Records about a message name its event, or the attempt of the turn it started (lock records do).
        return event_id is None or r.get("eventId") == event_id or r.get("attempt") in _attempts_for(ctx, event_id)

    what = f"trace {step.type} {wanted}" + (f" about '{step.to}'" if step.to else "")
    try:
        record = await ctx.bot.trace.wait_for(matches, _timeout(step), what, ctx.trace_start)
    except WaitTimeout as exc:
        # About one message: what the bot did with it says more than the last records of the whole trace.
        seen = _trace_about(ctx, event_id) if event_id else exc.seen[-15:]
        raise StepFailed(f"a bot trace record {step.type} matching {wanted}", seen) from None
    over = {k: record.get(k) for k, limit in step.max.items()
            if not isinstance(record.get(k), int | float) or record[k] > limit}
    if over:
        raise StepFailed(f"{step.type} with {', '.join(f'{k} <= {v:g}' for k, v in step.max.items())}",
                         ["bot trace: " + describe_record(record)])
    return describe_record(record)


def _model_request_windows(ctx: ScenarioContext, event_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
    """The model.request.start/end pairs of the turn that answered `event_id`, once that turn has ended
    (a turn with tool calls asks the model more than once); None while it is still running."""
    items = ctx.bot.trace.items[ctx.trace_start:]
    attempts = {r.get("attempt") for r in items if r.get("type") == "turn.start" and r.get("eventId") == event_id}
    if not any(r.get("type") == "turn.end" and r.get("attempt") in attempts for r in items):
        return None
    ends = {r.get("requestId"): r for r in items if r.get("type") == "model.request.end"}
    windows = [(r, ends[r.get("requestId")]) for r in items if r.get("type") == "model.request.start"
               and r.get("attempt") in attempts and r.get("requestId") in ends]
    return windows or None


def find_model_request(journal: list[Any], start_ms: float, end_ms: float, body: str | None) -> Any | None:
    """Pure: the journal entry for one traced model request. Bot and provider stamp the same system-wide
    monotonic clock, so the request the provider received inside the bot's start/end window is the one;
    the trigger's body narrows it when sessions overlap, and the last one wins when the client retried."""
    slack = 1.0  # trace timestamps are rounded to the microsecond
    inside = [e for e in journal if getattr(e, "is_chat", False)
              and start_ms - slack <= float(e.started_at) <= end_ms + slack]
    if body is not None:
        inside = [e for e in inside if any(m.get("content") == body for m in e.messages)] or inside
    return inside[-1] if inside else None


async def expect_model_request(ctx: ScenarioContext, step: Any) -> str:
    """What the model was told while answering a message (every round of its turn): evidence from the mock
    provider's journal."""
    trigger = ctx.refs[step.to]
    if ctx.provider is None or not hasattr(ctx.provider, "journal"):
        # A live provider keeps no journal; say so in the step detail instead of pretending to have checked.
        ctx.method = "not-checked"
        return "NOT CHECKED: the provider keeps no request journal"
    if not ctx.bot.has_trace:
        return await _model_request_by_text(ctx, step, trigger)
    ctx.method = "trace"
    try:
        await ctx.bot.trace.wait_for(
            lambda _: _model_request_windows(ctx, trigger.event_id) is not None, _timeout(step),
            f"the bot's turn answering '{step.to}' to finish", ctx.trace_start)
    except WaitTimeout:
        raise StepFailed(f"a finished model request answering '{step.to}'",
                         _trace_about(ctx, trigger.event_id)) from None
    windows = _model_request_windows(ctx, trigger.event_id) or []
    entries = [find_model_request(ctx.provider.journal, float(start["t"]), float(end["t"]), trigger.body)
               for start, end in windows]
    found = [e for e in entries if e is not None]
    if not found:
        raise StepFailed(f"the provider journal holds the model request for '{step.to}'",
                         ["provider: " + e.summary() for e in ctx.provider.journal[-10:]])
    return _judge_model_requests(ctx, step, found)


async def _model_request_by_text(ctx: ScenarioContext, step: Any, trigger: Ref) -> str:
    """No trace to say which requests answered the trigger: the scenario's own journal scope, every finished
    request whose latest user message carries the trigger's text (each round of a turn with tool calls does)."""
    ctx.method = "journal"
    text = trigger.text or trigger.body or ""

    def rounds() -> list[Any]:
        return [e for e in ctx.provider.journal if e.is_chat and e.state != "in_flight"
                and text and text in (e.latest_user or "")]

    try:
        await ctx.provider.wait_for(lambda _e: bool(rounds()), _timeout(step))
    except TimeoutError:
        raise StepFailed(f"a model request carrying the text of '{step.to}' in the provider journal",
                         ["provider: " + e.summary() for e in ctx.provider.journal[-10:]]) from None
    return _judge_model_requests(ctx, step, rounds())


def _judge_model_requests(ctx: ScenarioContext, step: Any, found: list[Any]) -> str:
    problems = [f"does not carry {t!r}" for t in (_text(ctx, x) for x in step.contains)
                if not any(e.contains(t) for e in found)]
    wanted_images = getattr(step, "images", None)
    if wanted_images is not None:
        # The most any one round carried: every round of a turn re-sends the same conversation.
        images = max((int(getattr(e, "images", 0)) for e in found), default=0)
        if images != wanted_images:
            problems.append(f"carries {images} image content part(s), expected {wanted_images}")
    problems += [f"carries {t!r}, which it must not" for t in (_text(ctx, x) for x in step.excludes)
                 if any(e.contains(t) for e in found)]
    if problems:
        messages = [f"request {e.id} {m.get('role')}: {str(m.get('content'))[:120]!r}"
                    for e in found for m in e.messages]
        raise StepFailed(f"the model request(s) for '{step.to}' ({', '.join(e.id for e in found)})",
                         problems + messages)
    return f"request(s) {', '.join(e.id for e in found)} as expected"


async def restart_bot(ctx: ScenarioContext, step: Any) -> str:
    mode = getattr(step, "mode", "graceful")
    code = await (ctx.bot.kill() if mode == "kill" else ctx.bot.stop())
    start = await ctx.bot.start()
    await ctx.bot.wait_ready(min(_timeout(step), ctx.bot.bot.ready.timeout), start)
    return f"bot {mode} restart (exit {code}), ready again"


async def stop_bot(ctx: ScenarioContext, step: Any) -> str:
    code = await (ctx.bot.kill() if step.mode == "kill" else ctx.bot.stop())
    return f"bot stopped ({step.mode}, exit {code})"


async def start_bot(ctx: ScenarioContext, step: Any) -> str:
    start = await ctx.bot.start()
    await ctx.bot.wait_ready(min(_timeout(step), ctx.bot.bot.ready.timeout), start)
    return "bot started and ready"


async def mutate_bot_state(ctx: ScenarioContext, step: Any) -> str:
    from qa.harness.state_mutation import run_state_mutation

    args = [_text(ctx, a) for a in step.args]
    result = await run_state_mutation(ctx.bot, step.mutation, args, _timeout(step),
                                      ctx.artifact_dir / "bot-mutations.log", ctx.bot.secrets)
    if not result.ok:
        how = "did not finish in time" if result.code is None else f"exited with code {result.code}"
        raise StepFailed(f"state mutation {step.mutation!r} succeeds", [f"{step.mutation} {how}", *result.tail],
                         hints=["its whole output is in bot-mutations.log"])
    return f"state mutation {step.mutation} done" + (f": {result.tail[-1]}" if result.tail else "")


async def expect_reply_count(ctx: ScenarioContext, step: Any) -> str:
    trigger = ctx.refs[step.to]
    replies = _replies_to(ctx, trigger.event_id)
    if len(replies) != step.count:
        raise StepFailed(f"exactly {step.count} bot repl{'y' if step.count == 1 else 'ies'} to '{step.to}'",
                         [f"{len(replies)} replies: {', '.join(replies) or 'none'}",
                          *_trace_about(ctx, trigger.event_id)])
    return f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'} to {trigger.event_id}"


async def restart_homeserver(ctx: ScenarioContext, step: Any) -> str:
    await ctx.homeserver.restart()
    return f"homeserver restarted ({ctx.homeserver.boot_ms:.0f} ms)"


APPROVAL_KEY = "org.matrix_qa.approval"
REQUIRED_APPROVAL_FIELDS = {"version": 1, "type": "approval.request", "kind": "exec", "state": "pending",
                            "allowedDecisions": ["allow-once", "deny"]}


async def _approval_request(ctx: ScenarioContext, step: Any) -> dict[str, Any]:
    """The bot's approval.request trace record for the turn that message `to` started."""
    trigger = ctx.refs[step.to]
    expected = f"the bot asks for approval of a command for '{step.to}'"

    def request_or_turn_over(r: dict[str, Any]) -> bool:
        # A turn that ended without asking never will: fail on that evidence instead of waiting out the timeout.
        return r.get("type") in ("approval.request", "turn.end") and r.get("attempt") in _attempts_for(
            ctx, trigger.event_id)

    try:
        record = await ctx.bot.trace.wait_for(request_or_turn_over, _timeout(step),
                                              f"an approval request for '{step.to}'", ctx.trace_start)
    except WaitTimeout:
        record = None
    if record is None or record.get("type") != "approval.request":
        raise StepFailed(expected, _trace_about(ctx, trigger.event_id) + _bot_messages(ctx, trigger.room_id))
    return record


async def _room_event(ctx: ScenarioContext, event_id: str, step: Any, what: str) -> dict[str, Any]:
    try:
        return await ctx.observer().events.wait_for(lambda e: e.get("event_id") == event_id, _timeout(step), what)
    except WaitTimeout as exc:
        raise StepFailed(what, exc.seen[-10:]) from None


def check_request_metadata(meta: Any, command_contains: str | None) -> list[str]:
    """Pure: what is wrong with an approval request's metadata."""
    if not isinstance(meta, dict):
        return [f"first chunk has no {APPROVAL_KEY} metadata"]
    problems = [f"{k} is {meta.get(k)!r}, expected {v!r}" for k, v in REQUIRED_APPROVAL_FIELDS.items()
                if meta.get(k) != v]
    for key in ("id", "command", "expiresAt"):
        if not isinstance(meta.get(key), str) or not meta.get(key):
            problems.append(f"{key} missing")
    if command_contains and command_contains not in str(meta.get("command", "")):
        problems.append(f"command {meta.get('command')!r} does not contain {command_contains!r}")
    return problems


async def expect_approval(ctx: ScenarioContext, step: Any) -> str:
    record = await _approval_request(ctx, step)
    first_id = str(record.get("eventId"))
    chunk_ids = [str(c) for c in record.get("chunks") or [first_id]]
    first = await _room_event(ctx, first_id, step, "the approval request to appear in the room")
    if step.state != "pending":
        return await _expect_outcome(ctx, step, record, first_id)
    problems = check_request_metadata((first.get("content") or {}).get(APPROVAL_KEY),
                                      _text(ctx, step.command_contains) if step.command_contains else None)
    later = [await _room_event(ctx, c, step, "every chunk of the approval request") for c in chunk_ids[1:]]
    problems += [f"chunk {e['event_id']} carries metadata" for e in later if APPROVAL_KEY in (e.get("content") or {})]
    if step.chunked is True and not later:
        problems.append("the request was a single event, expected several chunks")
    if step.chunked is False and later:
        problems.append(f"the request was split into {len(chunk_ids)} chunks, expected one event")
    for key in ("✅", "❌"):
        try:
            await ctx.observer().events.wait_for(
                lambda e, k=key: e.get("type") == "m.reaction" and e.get("sender") == ctx.bot_user_id
                and ((e.get("content") or {}).get("m.relates_to") or {}).get("event_id") == first_id
                and ((e.get("content") or {}).get("m.relates_to") or {}).get("key") == k,
                _timeout(step), f"the bot's {key} option")
        except WaitTimeout:
            problems.append(f"the bot's {key} option reaction on the first chunk was not seen")
    if problems:
        raise StepFailed(f"an approval request for '{step.to}' with complete metadata on its first chunk",
                         [*problems, "request: " + describe_event(first),
                          *("chunk: " + describe_event(e) for e in later)])
    return f"approval {record.get('approvalId')} pending in {len(chunk_ids)} event(s), options offered"


async def _expect_outcome(ctx: ScenarioContext, step: Any, record: dict[str, Any], first_id: str) -> str:
    def is_outcome(e: dict[str, Any]) -> bool:
        meta = (e.get("content") or {}).get(APPROVAL_KEY) or {}
        return meta.get("type") == "approval.resolution" and meta.get("requestEventId") == first_id

    try:
        event = await ctx.observer().events.wait_for(is_outcome, _timeout(step), "the approval's outcome message")
    except WaitTimeout as exc:
        raise StepFailed(f"the approval for '{step.to}' ends {step.state}", exc.seen[-10:]) from None
    state = event["content"][APPROVAL_KEY].get("state")
    problems = [] if state == step.state else [f"outcome {state!r}, expected {step.state!r}"]
    ran = [r for r in ctx.bot.trace.items[ctx.trace_start:]
           if r.get("type") == "exec.run" and r.get("approvalId") == record.get("approvalId")]
    if step.state != "approved" and ran:
        problems.append(f"the command ran anyway: {describe_record(ran[0])}")
    if problems:
        raise StepFailed(f"the approval for '{step.to}' ends {step.state}",
                         [*problems, "outcome: " + describe_event(event)])
    return f"approval {record.get('approvalId')} {state}" + ("" if step.state == "approved" else "; command not run")


async def approve(ctx: ScenarioContext, step: Any) -> str:
    record = await _approval_request(ctx, step)
    key = "✅" if step.decision == "allow-once" else "❌"
    target = str(record.get("eventId"))
    event_id = await ctx.actors[step.actor].react(ctx.refs[step.to].room_id, target, key)
    return f"{step.actor} reacted {key} to approval {record.get('approvalId')} ({event_id})"


async def membership_change(ctx: ScenarioContext, step: Any) -> str:
    """invite / kick / leave, through the acting user's own client."""
    room_id = ctx.rooms[step.room]
    who = ctx.user_id_of(getattr(step, "who", step.actor))
    # expect_membership looks only at what the room shows from here on: the bot's join before a kick is old news.
    ctx.membership_marks[room_id] = len(ctx.observer().events.items)
    await ctx.actors[step.actor].membership(step.kind, room_id, who, getattr(step, "reason", None))
    return f"{step.actor}: {step.kind} {room_id}" if step.kind == "leave" else \
        f"{step.actor}: {step.kind} {who} in {room_id}"


async def expect_membership(ctx: ScenarioContext, step: Any) -> str:
    room_id = ctx.rooms[step.room]
    who = ctx.user_id_of(step.who)
    expected = f"{step.who} reaches membership {step.membership!r} in room {step.room!r}"

    def membership(e: dict[str, Any]) -> str | None:
        if e.get("type") == "m.room.member" and e.get("state_key") == who and e.get("room_id") == room_id:
            return str((e.get("content") or {}).get("membership"))
        return None

    def settled(e: dict[str, Any]) -> bool:
        # Waiting for a join, a decline (leave) is as final an answer as the join: fail on it at once.
        found = membership(e)
        return found is not None and (found == step.membership or found != "invite")

    try:
        event = await ctx.observer().events.wait_for(settled, _timeout(step), f"{step.who} {step.membership} "
                                                     f"{room_id}", ctx.membership_marks.get(room_id, 0))
    except WaitTimeout as exc:
        seen = [line for line in exc.seen if "m.room.member" in line][-8:]
        raise StepFailed(expected, seen + _trace_about(ctx)[-8:]) from None
    ctx.method = "room"
    if membership(event) != step.membership:
        raise StepFailed(expected, [f"{who} reached {membership(event)!r} instead: " + describe_event(event),
                                    *_trace_about(ctx)[-8:]])
    return f"{who} {step.membership} in {room_id} ({event.get('event_id')})"


async def set_bot_config(ctx: ScenarioContext, step: Any) -> str:
    """Render the bot's config again with this change, write it where the bot reads it, send SIGHUP, and wait
    for the bot to trace the new generation (without a trace, only the signal's delivery is known)."""
    launch = ctx.bot.launch
    text = ctx.rerender([*ctx.config_changes, step]) if ctx.rerender else None
    if text is None or launch.config_path is None or ctx.bot.pid is None:
        raise StepFailed("a running bot with a rendered config to change",
                         [f"bot {ctx.bot.name}: config {launch.config_path}, pid {ctx.bot.pid}"])
    ctx.config_changes.append(step)
    generation = len(ctx.config_changes) + 1
    launch.config_text = text  # a later restart starts from the changed config too
    tmp = launch.config_path.with_suffix(".next")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(launch.config_path)  # whole or not at all: a bot never reads half a config
    mark = len(ctx.bot.trace.items)
    os.kill(ctx.bot.pid, signal.SIGHUP)
    if not ctx.bot.has_trace:
        ctx.method = "signal"
        return f"config generation {generation} written, SIGHUP sent (NOT CHECKED: the bot writes no trace)"
    ctx.method = "trace"
    try:
        record = await ctx.bot.trace.wait_for(lambda r: r.get("type") == "config.reload"
                                              and r.get("generation") == generation, _timeout(step),
                                              f"config.reload generation {generation}", mark)
    except WaitTimeout as exc:
        raise StepFailed(f"the bot reloads its config (trace config.reload with generation {generation})",
                         exc.seen[-10:]) from None
    if record.get("ok") is not True:
        raise StepFailed(f"the bot applies config generation {generation}", ["bot trace: " + describe_record(record)])
    return describe_record(record)


async def set_faults(ctx: ScenarioContext, step: Any) -> str:
    proxy = ctx.fault_proxy
    assert proxy is not None  # the runner starts one for every scenario with a set_faults step
    cut = proxy.set_rules(step.rules, drop_in_flight=step.drop_in_flight)
    names = ", ".join(r.name for r in step.rules) or "none (faults off)"
    return f"fault rules now: {names}" + (f"; cut {cut} open request(s)" if step.drop_in_flight else "")


async def expect_faults(ctx: ScenarioContext, step: Any) -> str:
    from qa.harness.fault_rules import retry_gaps  # only fault scenarios need it

    wanted = step.hits or 1
    what = f"{'exactly' if step.hits else 'at least'} {wanted} hit(s) of {step.source} fault rule {step.rule!r}"
    if step.retried_after_ms is not None:
        what += f", each retried no sooner than {step.retried_after_ms} ms later"

    def complete() -> bool:
        hits, requests, rule = _fault_evidence(ctx, step)
        return len(hits) >= wanted and (step.retried_after_ms is None or None not in retry_gaps(hits, requests, rule))

    # Hits land as the bot retries: wait (bounded) on the evidence's own change signal, then judge it.
    with contextlib.suppress(WaitTimeout, TimeoutError):
        if step.source == "homeserver":
            await ctx.fault_proxy.wait_until(complete, _timeout(step))
        elif ctx.provider is not None:
            await ctx.provider.wait_for(lambda _entry: complete(), _timeout(step))
    hits, requests, rule = _fault_evidence(ctx, step)
    gaps = retry_gaps(hits, requests, rule) if step.retried_after_ms is not None else [None] * len(hits)
    seen = [f"hit {i}: {h['method']} {h['path']} {h['action']}" + (f" status={h['status']}" if h.get("status") else "")
            + ("" if step.retried_after_ms is None else f", next matching request {g} ms later" if g is not None
               else ", no later matching request")
            for i, (h, g) in enumerate(zip(hits, gaps, strict=True), start=1)]
    problems = []
    if len(hits) < wanted or (step.hits is not None and len(hits) != step.hits):
        problems.append(f"{len(hits)} hit(s) of {step.rule!r}")
    early = [g for g in gaps if step.retried_after_ms is not None and (g is None or g < step.retried_after_ms)]
    if early:
        problems.append(f"retried sooner than {step.retried_after_ms} ms (or never) after {len(early)} hit(s)")
    if problems:
        raise StepFailed(what, [*problems, *seen, *_trace_about(ctx)[-8:]])
    shown = f"; retried after {', '.join(f'{g:.0f}' for g in gaps if g is not None)} ms" \
        if step.retried_after_ms is not None else ""
    return f"{len(hits)} hit(s) of {step.rule}{shown}"


def _fault_evidence(ctx: ScenarioContext, step: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """(hits, every request, the rule that matches later requests) from the fault proxy or the provider journal."""
    if step.source == "homeserver":
        proxy = ctx.fault_proxy
        declared = [*ctx.scenario.faults, *(r for s in ctx.scenario.steps if s.kind == "set_faults" for r in s.rules)]
        rule = next((r for r in declared if r.name == step.rule), None)
        return [h for h in proxy.hits if h["rule"] == step.rule], list(proxy.requests), rule
    # A provider retry is the next chat request: every journaled chat request counts as "the next one".
    requests = [{"method": e.method, "path": e.path, "startedAt": e.started_at, "endedAt": e.finished_at,
                 "status": e.status, "rule": e.rule, "action": getattr(e, "fault", None)}
                for e in ctx.provider.journal if e.is_chat] if ctx.provider is not None else []
    hits = [r for r in requests if r["rule"] == step.rule and r["action"] and r["endedAt"] is not None]
    return hits, requests, None


STEPS: dict[str, Callable[[ScenarioContext, Any], Awaitable[str]]] = {
    "send": send,
    "expect_reply": expect_reply,
    "expect_no_reply": expect_no_reply,
    "expect_model_request": expect_model_request,
    "react": react,
    "expect_reaction": expect_reaction,
    "expect_trace": expect_trace,
    "restart_bot": restart_bot,
    "restart_homeserver": restart_homeserver,
    "stop_bot": stop_bot,
    "start_bot": start_bot,
    "expect_reply_count": expect_reply_count,
    "mutate_bot_state": mutate_bot_state,
    "approve": approve,
    "expect_approval": expect_approval,
    "send_media": send_media,
    "expect_edits": expect_edits,
    # E2EE (issue 15)
    **E2EE_STEPS,
    "invite": membership_change,
    "kick": membership_change,
    "leave": membership_change,
    "expect_membership": expect_membership,
    "set_bot_config": set_bot_config,
    "set_faults": set_faults,
    "expect_faults": expect_faults,
    "edit": message_steps.edit,
    "redact": message_steps.redact,
    "expect_redaction": message_steps.expect_redaction,
}

