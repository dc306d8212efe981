"""The step that proves the bot stayed silent: expect_no_reply, by the bot's traced decision, a control
message it does answer, and the absence of any answer to the trigger (a fixed quiet window only when asked).
Each check gathers its evidence here; qa.evidence.silence and qa.evidence.order judge it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from qa.evidence.events import describe_event
from qa.evidence.order import Unwanted, unwanted_replies
from qa.evidence.pairing import answers_in_journal
from qa.evidence.silence import (
    accepted,
    answering,
    control_problems,
    decision_problems,
    echo_or_answer,
    is_decision,
    unnamed_sends_note,
    untraced_answer_problem,
    untraced_echo_note,
    untraced_edit_problem,
    untraced_edits,
    untraced_note,
    untraced_plain,
    watch_after_control_s,
)
from qa.evidence.trace import traced_sends
from qa.harness.capabilities import say_marker
from qa.kernel.clock import mono_ms
from qa.scenario.context import Ref, StepFailed
from qa.scenario.fields import BOT, ActorName, Duration, MarkedText, Model, Reason, StepId, error
from qa.scenario.steps.base import MESSAGES, SILENCE_TARGETS, ActorUse, StepBase, StepRef, mention_use
from qa.scenario.steps.common import bot_messages, journal, mention_of, prompt, text, trace_about
from qa.scenario.steps.replies import (
    body_now,
    edit_wait_s,
    replies_to,
    unsure_thread_note,
    unsure_thread_replies,
    wait_for_bot_reply,
)
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.report.summary import NegativeCheck
    from qa.scenario.context import ScenarioContext


class ControlMessage(Model):
    """A later message the bot must answer, proving it was alive and listening while it stayed silent."""

    actor: ActorName = Field(alias="as")
    body: MarkedText
    # The bot by default: a control must be answered, and most rooms require a mention. null: no mention.
    mention: ActorName | None = BOT
    thread: StepId | None = None  # None: the trigger's own thread (or top level), i.e. the same session
    expect_body: MarkedText | None = None  # None: any reply to the control counts


class ExpectNoReply(StepBase):
    """The bot stays silent about a message, proved by evidence rather than by waiting.

    Evidence is the bot's trace (`reason`: the inbound record for the message was dropped for that reason)
    and/or a `control` message sent afterwards that does get answered. `quiet_window` is the fallback for
    bots without a trace and must be asked for explicitly.
    """

    kind: ClassVar[str] = "expect_no_reply"
    does: ClassVar[str] = (
        "silence proved by evidence: the bot traced `to` (a message, an edit, a reaction, a redaction, or the bot's "
        "own reply) as not answered for `reason`, answered a `control` message (its `expect_body` judged on the "
        "answer's latest edit: a streamed draft is waited for, within the step's time, to be edited into it, as in "
        "`expect_reply`), and sent nothing for `to` "
        "(`quiet_window` is a fallback for bots without a trace)")

    to: StepId
    reason: Reason | None = None
    control: ControlMessage | None = None
    quiet_window: Duration | None = None
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _needs_evidence(self) -> ExpectNoReply:
        if self.reason is None and self.control is None and self.quiet_window is None:
            raise error(
                "evidence",
                "expect_no_reply needs evidence: a `reason` to find in the bot's trace and/or a `control` "
                "message the bot must answer (or, as a last resort, an explicit `quiet_window`)",
            )
        return self

    def refs(self) -> list[StepRef]:
        refs = [StepRef(("to",), self.to, SILENCE_TARGETS, True)]
        if self.control is not None and self.control.thread is not None:
            refs.append(StepRef(("control", "thread"), self.control.thread, MESSAGES, True))
        return refs

    def actor_uses(self) -> list[ActorUse]:
        if self.control is None:
            return []
        return [
            ActorUse(("control", "as"), self.control.actor, False, True),
            *mention_use(("control", "mention"), self.control.mention),
        ]

    def timeouts(self) -> list[tuple[tuple[str, ...], float]]:
        found = super().timeouts()
        if self.quiet_window is not None:
            found.append((("quiet_window",), self.quiet_window))
        return found

    def needs(self) -> list[tuple[str, str | None]]:
        found: list[tuple[str, str | None]] = []
        if self.control is None and self.quiet_window is None:
            found.append(("trace", "only the trace can prove this silence (no control message)"))
        if self.control is not None and self.control.thread:
            found.append(("threads", None))
        if self.control is not None and say_marker(self.control.body) is None:
            found.append(("model", "the control message is a prompt only a model answers (not say-able)"))
        return found

    async def run(self, ctx: ScenarioContext) -> str:
        """Silence proved by evidence, not by waiting. With a trace: the bot traced the trigger as dropped for
        the expected reason. Without one: order (qa.evidence.order), the room watched after the control's answer
        until it falls quiet (a bot answering each message in its own task may answer the trigger last). Either
        way a later control message must be answered, and every bot message that answers the trigger is looked
        for and listed. A fixed quiet window only when the scenario asks for one."""
        from qa.report.summary import NegativeCheck

        trigger = ctx.refs[self.to]
        # The step's own number, so a failing check is numbered too (the runner only fills in passing ones).
        index = next((i for i, s in enumerate(ctx.scenario.steps, start=1) if s is self), 0)
        check = NegativeCheck(step=index, triggerEventId=trigger.event_id, expectedReason=self.reason or "")
        ctx.negative_checks.append(check)
        if self.quiet_window:
            return await self._quiet_window(ctx, trigger, check, float(self.quiet_window))
        problems: list[str] = []
        if ctx.bot.has_trace:
            problems += await self._traced_decision(ctx, trigger, check)
        else:
            check.method = "order"
            if self.reason:
                check.notes.append(f"reason {self.reason!r} NOT CHECKED: bot {ctx.bot.name} writes no trace")
        control_reply: dict[str, Any] | None = None
        control_text = None
        if self.control is not None:
            # What the user typed: a say command for a bot without a model.
            control_text = prompt(ctx, self.control.body)
            control_reply, control_found = await self._control(ctx, self.control, trigger, check, control_text)
            problems += control_found
        watched_s = None
        if check.method == "order" and control_reply is not None:
            # Order proves nothing about a bot that answers each message in a task of its own: the trigger's
            # answer may land after the control's. Watch on (qa.evidence.silence.watch_after_control_s).
            watched_s = await self._watch_after_control(ctx, trigger, control_reply, control_text)
        if ctx.bot.has_trace:
            unwanted = [(e, "replies to the trigger") for e in replies_to(ctx, trigger.event_id)]
        else:
            unwanted = [(u.event_id, u.why) for u in self._unwanted(ctx, trigger, control_reply, control_text)]
        check.unwantedReplies = sorted({e for e, _ in unwanted})
        ctx.final_checks.append(_still_silent(ctx, trigger, self.to, check))
        if ctx.bot.has_trace:
            ctx.silenced.append((trigger, self.to))
            ctx.after_exit_notes.append(_untraced_after(ctx, trigger, self.to))
        else:
            ctx.after_exit_notes.append(_thread_unsure_after(ctx, trigger, self.to, check))
        if unwanted:
            problems.append(f"the bot answered '{self.to}': " + "; ".join(f"{e} ({why})" for e, why in unwanted))
        ctx.method = check.method
        if problems:
            raise StepFailed(f"no reply to '{self.to}' (dropped: {self.reason or 'any reason'})",
                             problems + bot_messages(ctx, trigger.room_id))
        if check.method == "order":
            watched = f", nor in the {watched_s:.1f}s watched after it" if watched_s else ""
            note = f"; {check.notes[0]}" if check.notes else ""
            return f"no bot message for '{self.to}' before the control's answer {check.controlReplyEventId}" \
                f"{watched} (order; judged again when the scenario ends){note}"
        return f"dropped ({check.botReason}); control answered by {check.controlReplyEventId}"

    @staticmethod
    def _unwanted(ctx: ScenarioContext, trigger: Ref, control_reply: dict[str, Any] | None,
                  control_text: str | None, events: list[dict[str, Any]] | None = None) -> list[Unwanted]:
        reply_id = control_reply["event_id"] if control_reply is not None else None
        seen = ctx.observer().events.items if events is None else events
        return unwanted_replies(trigger.as_trigger(), reply_id, seen, ctx.bot_ids, journal(ctx), control_text)

    async def _watch_after_control(self, ctx: ScenarioContext, trigger: Ref, control_reply: dict[str, Any],
                                   control_text: str | None) -> float:
        """Keep watching after the control's answer, for as long as the bot's turnaround on the control says an
        answer to the trigger could still come, then until the room falls quiet (qa.scenario.settling: sized by
        the model's latency, a request still in flight counting its planned latency). Ends early on an unwanted
        message. How long it watched, in s."""
        from qa.scenario.settling import room_settles

        started = mono_ms()
        window_s = watch_after_control_s(trigger.sent_mono_ms, control_reply["_controlSentMs"],
                                         float(control_reply.get("_seenMs", started)), self.declared_wait_s())

        def unwanted(event: dict[str, Any]) -> bool:  # judged as coming after the control's answer
            return bool(self._unwanted(ctx, trigger, control_reply, control_text, [control_reply, event]))

        try:
            await ctx.observer().events.wait_for(unwanted, window_s, "an answer to the trigger after the control's")
        except WaitTimeout:
            await room_settles(ctx)
        return (mono_ms() - started) / 1000.0

    async def _quiet_window(self, ctx: ScenarioContext, trigger: Ref, check: NegativeCheck, quiet: float) -> str:
        check.method = "quiet-window"
        ctx.method = "quiet-window"
        try:
            event = await ctx.observer().events.wait_for(
                lambda e: e.get("sender") in ctx.bot_ids and e.get("room_id") == trigger.room_id
                and e.get("type") == "m.room.message" and e["_seenMs"] > trigger.sent_mono_ms, quiet,
                "any bot message")
        except WaitTimeout:
            return f"no bot message within the {quiet:g}s quiet window"
        check.unwantedReplies.append(event["event_id"])
        raise StepFailed(f"no bot reply to '{self.to}' within the quiet window", ["room: " + describe_event(event)])

    async def _traced_decision(self, ctx: ScenarioContext, trigger: Ref, check: NegativeCheck) -> list[str]:
        timeout_s = self.wait_s(ctx)
        try:
            decision = await ctx.bot.trace.wait_for(lambda r: is_decision(r, trigger.event_id), timeout_s,
                                                    f"the bot's decision on step '{self.to}'", ctx.trace_start,
                                                    pure=True)
        except WaitTimeout:
            # No decision is no proof of silence; the unwanted replies are still looked for by the caller.
            return [f"the bot traced no decision on '{self.to}' within {timeout_s:g}s",
                    *trace_about(ctx, trigger.event_id)]
        check.botReason = decision.get("reason")
        problems = decision_problems(decision, self.to, self.reason)
        if accepted(decision):
            problems += await _unwanted_reply_evidence(ctx, trigger, timeout_s)
        return problems

    async def _control(self, ctx: ScenarioContext, control: ControlMessage, trigger: Ref, check: NegativeCheck,
                       typed: str) -> tuple[dict[str, Any] | None, list[str]]:
        """Send the control message and wait for its answer: (the answer, with `_controlSentMs` the monotonic
        ms the control was sent; problems)."""
        from qa.actors import message_content

        room_id = trigger.room_id
        # Same session as the trigger unless told otherwise: then the control's answer also shows the session
        # was not stuck behind the trigger.
        thread_root = ctx.refs[control.thread].event_id if control.thread else trigger.thread_root
        content = message_content(typed, mention=mention_of(ctx, control.mention), thread_root=thread_root)
        sent_at = mono_ms()
        control_id = await ctx.actors[control.actor].send(room_id, content)
        check.controlEventId = control_id
        control_ref = Ref(room_id, control_id, thread_root, sent_at, actor=control.actor, body=content["body"],
                          text=typed)
        try:
            reply = await wait_for_bot_reply(ctx, control_ref, self.wait_s(ctx),
                                             "the bot's reply to the control message")
        except StepFailed as exc:
            return None, [f"control message was not answered: {exc.expected}", *exc.seen]
        check.controlReplyEventId = reply["event_id"]
        if ctx.method == "order-guess":
            check.notes.append("the control's answer was paired as a guess (first bot message after it)")
        expected = text(ctx, control.expect_body) if control.expect_body is not None else None
        left = edit_wait_s(self.wait_s(ctx) - (mono_ms() - sent_at) / 1000, ctx.reply_edit_wait_s, False)
        if expected is not None and body_now(ctx, reply) != expected and left > 0:
            # A bot that streams answers the control with a draft ("Working on it…") and edits it into the answer:
            # as expect_reply does, wait (within the step's time) for the edit that finishes it, then judge the
            # text the reply shows by its latest edit, not the draft's.
            with contextlib.suppress(WaitTimeout):
                await ctx.observer().events.wait_for(lambda _e: body_now(ctx, reply) == expected, left,
                                                      "the control reply's final edit")
        shown = {**reply, "content": {**(reply.get("content") or {}), "body": body_now(ctx, reply)}}
        return {**reply, "_controlSentMs": sent_at}, control_problems(shown, expected)


def _still_silent(ctx: ScenarioContext, trigger: Ref, to: str, check: NegativeCheck) -> Any:
    def final() -> str | None:
        late = sorted(set(replies_to(ctx, trigger.event_id)) - set(check.unwantedReplies))
        if late:
            check.unwantedReplies.extend(late)
            return f"the bot answered '{to}' after its check had passed: {', '.join(late)}"
        if not ctx.bot.has_trace:
            return None
        # A traced bot's message that relates to nothing is no reply by relation: it answers the ignored message
        # when it says what that message asked for and the trace does not account for it (docs/trace-format.md).
        # An untraced edit of one of its messages into that answer answers it too.
        said = _answering(ctx, trigger, to, _untraced(ctx, trigger))
        edited = _answering(ctx, trigger, to, _untraced_edits(ctx, trigger))
        unnamed, total = _sends(ctx).unnamed, _answers_in_scenario(ctx, trigger, to)
        if total > unnamed:  # else each may be a send traced without its id: NOT CHECKED after the exit
            check.unwantedReplies.extend(e for e in [*said, *edited] if e not in check.unwantedReplies)
        problems = [untraced_answer_problem(to, said, unnamed, total),
                    untraced_edit_problem(to, edited, unnamed, total)]
        return "; ".join(p for p in problems if p) or None

    return final


def _untraced_after(ctx: ScenarioContext, trigger: Ref, to: str) -> Any:
    """After the bot's exit: its untraced messages relating to nothing from the first look on, none of them the
    ignored message's answer (that fails the final check), leave the silence NOT CHECKED."""
    def note(mark: int) -> str | None:
        late = _untraced(ctx, trigger, mark)
        said = set(_answering(ctx, trigger, to, late))
        unsure = unnamed_sends_note(to, _answering(ctx, trigger, to, [*_untraced(ctx, trigger),
                                                                      *_untraced_edits(ctx, trigger)]),
                                    _sends(ctx).unnamed, _answers_in_scenario(ctx, trigger, to))
        everything = [*_untraced(ctx, trigger), *_untraced_edits(ctx, trigger)]
        echoes = _echoes(ctx, trigger, to, everything)
        other = untraced_note(to, [str(e.get("event_id")) for e in late
                                   if e.get("event_id") not in said and e.get("event_id") not in echoes])
        return "; ".join(filter(None, [unsure, untraced_echo_note(to, echoes), other])) or None

    return note


def _thread_unsure_after(ctx: ScenarioContext, trigger: Ref, to: str, check: NegativeCheck) -> Any:
    """After the bot's exit, for a bot without a trace: its thread messages in the ignored message's thread that
    name no event they answer, sent after someone else wrote there, may answer it or that later message
    (replies.unsure_thread_replies): the silence is NOT CHECKED, naming them (those it already failed on aside)."""
    def note(_mark: int) -> str | None:
        return unsure_thread_note(to, unsure_thread_replies(ctx, trigger, check.unwantedReplies))

    return note


def _answers_in_scenario(ctx: ScenarioContext, trigger: Ref, to: str) -> int:
    """How many untraced messages and edits answer any message the scenario's expect_no_reply checked with a
    trace (this one included): the sends traced without an event id are the scenario's, each may be one of them
    and only one, so they are shared by all, not counted again for each ignored message. A union: a message
    answering two ignored ones is one message."""
    found: set[str] = set()
    for ignored, name in [*ctx.silenced, (trigger, to)]:
        found.update(_answering(ctx, ignored, name, [*_untraced(ctx, ignored), *_untraced_edits(ctx, ignored)]))
    return len(found)


def _sends(ctx: ScenarioContext) -> Any:
    return traced_sends(ctx.bot.trace.items[ctx.trace_start:])


def _untraced(ctx: ScenarioContext, trigger: Ref, start: int = 0) -> list[Any]:
    accounted = _sends(ctx).ids
    return untraced_plain(ctx.observer().events.items, trigger.event_id, trigger.room_id, ctx.bot_ids, accounted,
                          start)


def _untraced_edits(ctx: ScenarioContext, trigger: Ref) -> list[Any]:
    return untraced_edits(ctx.observer().events.items, trigger.event_id, trigger.room_id, ctx.bot_ids,
                          _sends(ctx).ids)


def _answering(ctx: ScenarioContext, trigger: Ref, to: str, events: list[Any]) -> list[str]:
    """Which of `events` say what the ignored message asked for: the marker of a say-able prompt (contained, not
    in a quote of the prompt), or whatever the model answered to its text (a bot that asked the model about a
    message it traced as ignored)."""
    markers, prompts = _marker_of(ctx, trigger, to)
    return answering(events, answers_in_journal(trigger.text, journal(ctx)), markers, prompts)


def _echoes(ctx: ScenarioContext, trigger: Ref, to: str, events: list[Any]) -> list[str]:
    """Which of `events` carry the marker that is the whole ignored message beside other words (a bot whose `say`
    is the bare text): an echo and an answer read alike (qa.evidence.silence.echo_or_answer)."""
    return echo_or_answer(events, *_marker_of(ctx, trigger, to))


def _marker_of(ctx: ScenarioContext, trigger: Ref, to: str) -> tuple[list[str], list[str]]:
    """The ignored message's marker (when its prompt is say-able) and what its sender typed."""
    step = next((s for s in ctx.scenario.steps if s.defined_id() == to), None)
    marker = say_marker(str(getattr(step, "body", None) or ""))
    return [text(ctx, marker)] if marker else [], [trigger.text] if trigger.text else []


async def _unwanted_reply_evidence(ctx: ScenarioContext, trigger: Ref, timeout_s: float) -> list[str]:
    """The bot accepted a message it should have dropped: wait for that turn to end, and for its reply to show
    in the room, so the failure report shows what the bot actually said rather than just "accepted"."""
    try:
        end = await ctx.bot.trace.wait_for(
            lambda r: r.get("type") == "turn.end" and r.get("eventId") == trigger.event_id,
            timeout_s, "the end of the unwanted turn", ctx.trace_start, pure=True)
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
