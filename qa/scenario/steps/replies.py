"""Steps about how the bot answers: expect_reply (the reply, its place, text, formatting and parts),
expect_edits (a streamed reply's edit chain), expect_reply_count (no double answers), and the wait for the
reply to a message that other families use. A step about what the bot shows while it answers (an
`expect_typing`, read receipts) belongs here too; one about the bot staying silent goes in silence.py.

Each step gathers the events (the waiting, the I/O); qa.evidence.replies judges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from qa.evidence.edits import ChainRules, Timing, check_chain, describe_chain, edits_of, timing_problems
from qa.evidence.events import describe_event
from qa.evidence.exchange import describe_counts, exchange_counts, exchange_problem, in_exchange
from qa.evidence.fence import redaction_problems
from qa.evidence.model_requests import journal_knows, marker_origins, rounds_carrying
from qa.evidence.pairing import (
    Pairing,
    answers_in_journal,
    body,
    latest_body,
    pair_reply,
    replies_by_journal,
    replies_by_relation,
    unsure_in_thread,
)
from qa.evidence.replies import ReplyWant, answered_dropped_or_failed, delay_problems, judge_reply
from qa.kernel.clock import mono_ms
from qa.scenario.context import Ref, StepFailed
from qa.scenario.fields import BOT, ActorName, Duration, MarkedText, StepId, error
from qa.scenario.steps.base import MESSAGES, REPLY, SENT, ActorUse, StepBase, StepRef, opt_ref
from qa.scenario.steps.common import bot_messages, journal, room_event, strangers, text, trace_about
from qa.waiting import WaitTimeout

FAILED_TURN_WHY_S = 1.0  # how long a failed turn's `error` record is waited for (it follows the turn.end)
EXIT_JUDGED_S = 2.0  # how long a reply wait ended by the bot's exit waits for the exit watch's verdict (moments)

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext


# --- waiting for the reply to a message ---------------------------------------------------------------------


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
        if ctx.bot.trace.closed_reason or ctx.bot.log.closed_reason:
            # The trace closes on the bot's exit as soon as its exit watch sees it: let that watch say (within
            # moments) whether nobody asked for the exit, so the evidence names a crash as one.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.bot.died.wait(), EXIT_JUDGED_S)
        seen = trace_about(ctx, trigger.event_id) + bot_messages(ctx, trigger.room_id) + strangers(ctx, trigger.room_id)
        if ctx.bot.bot.has("model"):  # a bot without a model (`say`) never asks one: nothing to say of it
            seen.append(journal_knows(journal(ctx), trigger.text))
        sent = {f"step {step!r}": ref.text for step, ref in ctx.refs.items()}
        if all(ref.event_id != trigger.event_id for ref in ctx.refs.values()):
            sent["the message waited on"] = trigger.text  # a control message has no step id
        seen += marker_origins([*seen, trigger.text or ""], sent)
        raise StepFailed(f"{what} within {exc.timeout_s:g}s", seen) from None
    ctx.claimed[str(event.get("event_id"))] = trigger.event_id
    seen_at = event["_seenMs"]
    latency = seen_at - trigger.sent_mono_ms - _model_latency_between(ctx, trigger.sent_mono_ms, seen_at)
    ctx.reply_latencies_ms.append(round(max(latency, 0.0), 1))
    return event


async def _reply_by_trace(ctx: ScenarioContext, trigger: Ref, timeout_s: float, what: str) -> dict[str, Any]:
    record = await ctx.bot.trace.wait_for(lambda r: answered_dropped_or_failed(r, trigger.event_id), timeout_s,
                                          what, ctx.trace_start, pure=True)
    if record.get("type") == "inbound":
        raise StepFailed(f"{what}, but the bot dropped it ({record.get('reason')})",
                         trace_about(ctx, trigger.event_id) + bot_messages(ctx, trigger.room_id))
    if record.get("type") == "turn.end":
        # The agent traces why a turn failed after its turn.end (the exception reaches the worker after the
        # turn's own finally): give that record a moment to arrive, so the failure says why. Bounded; without it
        # the failure is reported all the same.
        with contextlib.suppress(WaitTimeout):
            await ctx.bot.trace.wait_for(lambda r: r.get("type") == "error" and r.get("eventId") == trigger.event_id,
                                         FAILED_TURN_WHY_S, "why the turn failed", ctx.trace_start, pure=True)
        raise StepFailed(f"{what}, but the bot's turn for it failed (attempt {record.get('attempt')})",
                         trace_about(ctx, trigger.event_id) + bot_messages(ctx, trigger.room_id))
    return await ctx.observer().events.wait_for(
        lambda e: e.get("event_id") == record.get("eventId"), timeout_s, f"{what} to appear in the room")


def _pair(ctx: ScenarioContext, trigger: Ref) -> Pairing | None:
    """By relation, then the journal, only then by order; never a message the journal ties to another step's
    message (the answer to one the bot should have ignored is not the control's answer)."""
    others = [ref.as_trigger() for ref in ctx.refs.values() if ref.event_id != trigger.event_id]
    return pair_reply(trigger.as_trigger(), ctx.observer().events.items, ctx.bot_ids, journal(ctx),
                      frozenset(ctx.claimed), others)


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


def edit_wait_s(step_left_s: float, cap_s: float | None, streamed: bool) -> float:
    """How long expect_reply waits for an edit that would finish a wrong-bodied reply: the rest of the step's time
    (at least a moment), bounded by --reply-edit-wait (`cap_s`; 0: no wait), except for a `streamed` reply, which
    is edited by definition and always gets the rest of the step."""
    left = max(step_left_s, 0.05)
    return left if cap_s is None or streamed else min(left, cap_s)


def body_now(ctx: ScenarioContext, event: dict[str, Any]) -> str:
    """The reply's text by its latest edit so far."""
    return latest_body(event, ctx.observer().events.items, ctx.bot_ids)


def replies_to(ctx: ScenarioContext, event_id: str) -> list[str]:
    """Every bot message that answers `event_id`: by the bot's trace, and by relation in the room (a threaded
    reply's m.in_reply_to names its trigger too). The claimed pairings of trace-less bots count as well."""
    from_trace = [str(r.get("eventId")) for r in ctx.bot.trace.items[ctx.trace_start:]
                  if r.get("type") == "reply.sent" and r.get("inReplyTo") == event_id]
    ref = next((r for r in ctx.refs.values() if r.event_id == event_id), None)
    room_id = ref.room_id if ref else next(iter(ctx.rooms.values()))
    events = ctx.observer().events.items
    from_room = replies_by_relation(event_id, events, ctx.bot_ids, room_id)
    paired = [reply for reply, trigger in ctx.claimed.items() if trigger == event_id]
    by_journal = replies_by_journal(ref.as_trigger(), events, ctx.bot_ids, journal(ctx)) \
        if ref is not None and not ctx.bot.has_trace else []
    return sorted(set(from_trace + from_room + paired + by_journal))


def unsure_thread_replies(ctx: ScenarioContext, ref: Ref, known: Collection[str] = ()) -> list[str]:
    """For a bot without a trace: its thread messages rooted at `ref` that name no event they reply to, sent after
    someone else wrote in that thread, may answer `ref` or that later message (qa.evidence.pairing.unsure_in_thread)
    and no trace says which. The journal's answers to any of the scenario's messages and the claimed pairings
    settle them; `known`: those already judged. A traced bot's trace settles them (its untraced ones are judged by
    qa.evidence.silence.untraced_plain)."""
    if ctx.bot.has_trace:
        return []
    events = ctx.observer().events.items
    entries = journal(ctx)
    tied = {answer for r in ctx.refs.values() for answer in answers_in_journal(r.text, entries)}
    settled = {*known, *ctx.claimed, *(str(e.get("event_id")) for e in events if body(e) in tied)}
    return unsure_in_thread(ref.event_id, events, ctx.bot_ids, ref.room_id, settled)


def unsure_thread_note(to: str, ids: Sequence[str]) -> str | None:
    """Why a count of the replies to `to`, or its silence, is NOT CHECKED (unsure_thread_replies)."""
    if not ids:
        return None
    return (f"the bot sent {len(ids)} message(s) in the thread of '{to}' after someone else wrote "
            f"there that name no event they answer ({', '.join(ids[:5])}): whether one answers '{to}' cannot be "
            "told without a trace")


async def reply_parts(ctx: ScenarioContext, first: dict[str, Any], trigger: Ref, timeout_s: float
                      ) -> list[dict[str, Any] | None]:
    """The part events of the reply whose first part is `first`, by the bot's `reply.parts` trace record (a
    reply sent whole has none: it is its only part)."""
    record = ctx.bot.trace.find(lambda r: r.get("type") == "reply.parts" and r.get("inReplyTo") == trigger.event_id,
                                ctx.trace_start)
    ids = [str(i) for i in (record or {}).get("parts") or [first["event_id"]]]
    found: list[dict[str, Any] | None] = []
    for event_id in ids:
        try:
            found.append(await ctx.observer().events.wait_for(lambda e, i=event_id: e.get("event_id") == i,
                                                              timeout_s, f"reply part {event_id}"))
        except WaitTimeout:
            found.append(None)
    return found


def _still_says(ctx: ScenarioContext, event: dict[str, Any], expected: str, to: str) -> Any:
    def check() -> str | None:
        now = body_now(ctx, event)
        if now != expected:
            return f"the bot later edited its reply {event['event_id']} to '{to}' into {now!r} (expected {expected!r})"
        return None

    return check


def _not_redacted(ctx: ScenarioContext, replies: list[dict[str, Any]], to: str, trigger_id: str) -> Any:
    # What the check passed on: each message's text by its latest edit now (a later redaction of an edit that
    # leaves it saying that still is no problem).
    passed = {str(e["event_id"]): body_now(ctx, e) for e in replies}

    def check() -> str | None:
        problems = redaction_problems(to, list(passed), ctx.observer().events.items, ctx.bot_ids, trigger_id,
                                      passed)
        return "; ".join(problems) or None

    return check


def _still_counted(ctx: ScenarioContext, trigger_id: str, to: str, count: int) -> Any:
    # A second answer need not come before the step looked: a bot handling each message (or transaction) in its
    # own task may send it after a later message's answer. The room, settled at the end and seen again after the
    # bot stopped, must still hold no more than `count`.
    def check() -> str | None:
        replies = replies_to(ctx, trigger_id)
        if len(replies) > count:
            return f"the bot answered '{to}' {len(replies)} times by the end (expected {count}): {', '.join(replies)}"
        return None

    return check


# --- the steps ----------------------------------------------------------------------------------------------


class ExpectReply(StepBase):
    """The bot answers a sent message; `id` names the reply so later steps can react or thread on it."""

    kind: ClassVar[str] = "expect_reply"
    does: ClassVar[str] = (
        "the bot answers step `to`: optional exact `body` (or `body_contains`), `thread` shape, `top_level` (not in "
        "a thread) or `no_relation` (no `m.relates_to` at all), `after` (order), `streamed` (a draft with a sound "
        "edit chain whose final content is the `body`), `msgtype`, `formatted_contains` / `formatted_excludes` / "
        "`formatted_safe` (sanitized `org.matrix.custom.html`: only tags Matrix renders, no handlers, no unsafe "
        "URLs), `body_excludes`, `parts_min` (a split reply: every part valid, in order, joined = `body`), `from` "
        "(which of the bot's accounts sends it: `bot` or a name of its bot file's `accounts`), `wording` (the "
        "embedded agent's words, checked only for a bot that claims `agent-wording`), `no_slower_than` (an "
        "earlier reply: this one took at most `slack` longer, model time left out), `id`")
    defines_kind: ClassVar[str | None] = REPLY

    to: StepId
    body: MarkedText | None = None  # None: any reply will do
    body_contains: MarkedText | None = None  # the reply's (final) text must contain this
    # The embedded agent's words for this reply (a notice's "HTTP 500 after 3 attempts"): checked like
    # body_contains for a bot that claims `agent-wording`; any other bot is judged by the behaviour the other
    # fields ask for (msgtype, place, body_excludes the model's text), and the step says the wording was not checked.
    wording: MarkedText | None = None
    thread: StepId | None = None  # the reply must be in this thread
    top_level: bool = False  # the reply must not be in any thread (a rich reply, m.in_reply_to alone, is fine)
    no_relation: bool = False  # stricter: the reply carries no m.relates_to at all
    after: StepId | None = None  # the reply must come later in the room than this earlier reply
    encrypted: bool | None = None  # True: the reply must have been sent encrypted (and decrypted by us)
    # True: the reply is a streamed draft with at least one edit, whose chain is sound (see expect_edits); the
    # final edit's content is what `body` matches.
    streamed: bool = False
    msgtype: Literal["m.text", "m.notice"] | None = None  # None: any
    # Formatting: given either, the reply must carry org.matrix.custom.html; each text is looked for in (or
    # must be absent from) its formatted_body. body_excludes: texts the plain body must not carry.
    formatted_contains: list[MarkedText] = Field(default_factory=list)
    formatted_excludes: list[MarkedText] = Field(default_factory=list)
    body_excludes: list[MarkedText] = Field(default_factory=list)
    # The formatted_body holds only tags Matrix clients render, no event handlers, no unsafe URL schemes.
    formatted_safe: bool = False
    # The reply must arrive as at least this many parts (the bot's trace lists them): each a valid message in
    # the reply's place, in order, none lost; `body` is then compared with the parts joined.
    parts_min: int | None = Field(default=None, ge=2)
    # "Does not delay", measured: this reply's latency (its trigger sent -> the reply seen, the model's own time
    # left out) is at most that of an earlier reply (a baseline measured in the same scenario) plus `slack`.
    no_slower_than: StepId | None = None
    slack: Duration = 2.0
    # None: the step default, 30 s (DEFAULT_STEP_TIMEOUT_S), not what is left of the scenario timeout.
    timeout: Duration | None = None
    id: StepId | None = None
    # Which of the bot's accounts must send the reply: "bot" (its main one), a name of its bot file's `accounts`
    # (issue 33), or the name of one it registered itself (its localpart after `registration_prefix`, up to the
    # first character outside [a-z0-9_]); None: any of them. A bot file that has no such account, and does not
    # register its own, skips the scenario.
    from_account: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)] | None = Field(
        default=None, alias="from")

    @model_validator(mode="after")
    def _thread_xor_top_level(self) -> ExpectReply:
        if (self.top_level or self.no_relation) and self.thread is not None:
            raise error("conflict", "top_level: true contradicts thread: a reply can't be in both places")
        if self.wording is not None and (self.body_contains is not None or self.body is not None):
            raise error("conflict", "wording is the agent's words for a reply whose text is otherwise free: "
                                    "give it without body or body_contains")
        return self

    def refs(self) -> list[StepRef]:
        return [
            StepRef(("to",), self.to, frozenset({SENT}), True),
            *opt_ref("thread", self.thread, MESSAGES),
            *opt_ref("after", self.after, frozenset({REPLY}), same_room=False),
            *opt_ref("no_slower_than", self.no_slower_than, frozenset({REPLY}), same_room=False),
        ]

    def answered(self) -> str | None:
        return self.to

    def needs(self) -> list[tuple[str, str | None]]:
        found: list[tuple[str, str | None]] = [("streaming", None)] if self.streamed else []
        if self.parts_min:
            found.append(("trace", "the parts of a split reply are listed in the trace (reply.parts)"))
        if self.formatted_contains or self.formatted_excludes or self.formatted_safe:
            found.append(("markdown", None))
        return found + super().needs()

    def bot_accounts(self) -> list[str]:
        return [self.from_account] if self.from_account and self.from_account != BOT else []

    def wording_checked(self, ctx: ScenarioContext) -> bool:
        return self.wording is not None and ctx.bot.bot.has("agent-wording")

    def want(self, ctx: ScenarioContext) -> ReplyWant:
        """What the reply must be, markers expanded and step ids turned into event ids."""
        contains = self.wording if self.wording_checked(ctx) else self.body_contains
        return ReplyWant(
            body=text(ctx, self.body) if self.body is not None else None,
            contains=text(ctx, contains) if contains else None,
            thread_root=ctx.refs[self.thread].event_id if self.thread else None, top_level=self.top_level,
            no_relation=self.no_relation, after=ctx.refs[self.after].event_id if self.after else None,
            after_step=self.after, streamed=self.streamed, msgtype=self.msgtype, encrypted=self.encrypted,
            formatted_contains=[text(ctx, t) for t in self.formatted_contains],
            formatted_excludes=[text(ctx, t) for t in self.formatted_excludes],
            body_excludes=[text(ctx, t) for t in self.body_excludes], formatted_safe=self.formatted_safe,
            parts_min=self.parts_min, chunk_limit=ctx.scenario.bot.text_chunk_limit)

    async def run(self, ctx: ScenarioContext) -> str:
        trigger = ctx.refs[self.to]
        began = mono_ms()
        event = await wait_for_bot_reply(ctx, trigger, self.wait_s(ctx), f"a bot reply to step '{self.to}'")
        want = self.want(ctx)
        parts = await reply_parts(ctx, event, trigger, self.wait_s(ctx)) if self.parts_min else []
        expected = want.whole_body
        left = edit_wait_s(self.wait_s(ctx) - (mono_ms() - began) / 1000, ctx.reply_edit_wait_s, self.streamed)
        if expected is not None and body_now(ctx, event) != expected and left > 0:
            # A draft that the bot edits as the model speaks: wait (within the step's time) for the edit that
            # finishes it; the final check below still fails a reply that is edited into something else later.
            with contextlib.suppress(WaitTimeout):
                await ctx.observer().events.wait_for(lambda _e: body_now(ctx, event) == expected, left,
                                                      "the reply's final edit")
        if expected is not None:
            ctx.final_checks.append(_still_says(ctx, event, expected, self.to))
        # Whatever it says, the reply the step passed on must still be there when the scenario ends.
        ctx.final_checks.append(_not_redacted(ctx, [event, *(p for p in parts if p)], self.to, trigger.event_id))
        problems = judge_reply(event, trigger, want, ctx.observer().events.items, ctx.bot_ids, parts)
        problems += self._sender_problems(ctx, event)
        latency = ctx.reply_latencies_ms[-1]
        if self.no_slower_than is not None:
            problems += delay_problems(latency, ctx.refs[self.no_slower_than].latency_ms, self.no_slower_than,
                                       self.slack * 1000)
        if problems:
            shape = "in the thread" if want.thread_root else ("top-level" if self.top_level else "")
            what = f"reply to '{self.to}'" + (f" with body {expected!r}" if expected else "") + f" {shape}"
            raise StepFailed(what.strip(), [*problems, "reply: " + describe_event(event)])
        if self.id:
            ctx.refs[self.id] = Ref(event["room_id"], event["event_id"], want.thread_root, event["_seenMs"], actor=BOT,
                                    latency_ms=latency)
        how = "" if ctx.method == "trace" else f"; {Pairing(event, ctx.method).note}"  # type: ignore[arg-type]
        if self.wording is not None and not self.wording_checked(ctx):
            how += f"; wording {self.wording!r} NOT CHECKED: bot {ctx.bot.name} does not claim agent-wording " \
                "(judged by behaviour)"
        said = f" from account '{ctx.account}'" if ctx.several_accounts else ""
        return f"reply {event['event_id']}{said} ({ctx.reply_latencies_ms[-1]:.0f} ms{how})"

    def _sender_problems(self, ctx: ScenarioContext, event: dict[str, Any]) -> list[str]:
        """Which of the bot's accounts spoke (recorded for the report), and whether it is the one `from` names."""
        sender = event.get("sender")
        spoke = ctx.account_of(sender)
        if ctx.several_accounts:  # a bot of one account: nothing to say
            ctx.account = spoke
        if self.from_account is None or ctx.is_account(sender, self.from_account):
            return []
        return [f"the reply came from the bot's account '{spoke}' ({sender}), expected its account "
                f"'{self.from_account}' ({ctx.account_wanted(self.from_account)})"]


class ExpectEdits(StepBase):
    """The edit chain of a bot reply (a streamed draft): how many edits, in order, all by the bot and replacing
    that reply, none pinging anyone (empty m.mentions on the draft and every edit), the last one carrying
    `final_body` whole. `draft_msgtype` checks the draft (m.notice for a quiet preview); `some_edit_contains`
    and `no_edit_contains` check what the previews showed (tool progress)."""

    kind: ClassVar[str] = "expect_edits"
    does: ClassVar[str] = (
        "the edit chain of a streamed reply `to`: `min`/`max` edits, in order, all the bot's, `final_body` carried "
        "whole by the last edit, every `m.mentions` empty, `draft_msgtype`, `some_edit_contains` / "
        "`no_edit_contains` (what the previews showed); timing: `paced` (the bot's edit interval: the draft and "
        "preview edits at least that far apart, within `tolerance`), `grows` (each edit's text starts with the "
        "last one's), `draft_before_stream_end` (the draft reached the server before the model's stream ended)")
    capabilities: ClassVar[tuple[str, ...]] = ("streaming",)

    to: StepId
    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=0)
    final_body: MarkedText | None = None
    draft_msgtype: Literal["m.text", "m.notice"] | None = None
    some_edit_contains: list[MarkedText] = Field(default_factory=list)
    no_edit_contains: list[MarkedText] = Field(default_factory=list)
    # What an edit count cannot tell from a bot that buffers the answer and bursts a draft and edits out:
    paced: Duration | None = None  # the bot's streamEditIntervalMs: the draft and preview edits this far apart
    tolerance: Duration = 0.05  # for `paced`: clock granularity, a send's way to the server
    grows: bool = False  # each edit's text starts with the text shown before it (no tool progress in between)
    draft_before_stream_end: bool = False  # the mock's journal says when the stream ended; the draft came before
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ExpectEdits:
        if self.max is not None and self.max < self.min:
            raise error("conflict", f"max ({self.max}) is below min ({self.min})")
        return self

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({REPLY}), True)]

    async def run(self, ctx: ScenarioContext) -> str:
        """With `final_body`, waits (within the step's time) until the last edit says it, since the chain may
        still be growing when the step starts."""
        reply = ctx.refs[self.to]
        draft = await room_event(ctx, reply.event_id, self.wait_s(ctx), f"the reply '{self.to}' in the room")
        final = text(ctx, self.final_body) if self.final_body is not None else None
        if final is not None:
            with contextlib.suppress(WaitTimeout):
                await ctx.observer().events.wait_for(lambda _e: body_now(ctx, draft) == final, self.wait_s(ctx),
                                                      "the final edit")
        rules = ChainRules(min_edits=self.min, max_edits=self.max, final_body=final, draft_msgtype=self.draft_msgtype,
                           some_edit_contains=[text(ctx, t) for t in self.some_edit_contains],
                           no_edit_contains=[text(ctx, t) for t in self.no_edit_contains])
        edits = edits_of(reply.event_id, ctx.observer().events.items)
        timing, unchecked = self._timing(ctx, reply.event_id)
        problems = check_chain(draft, edits, ctx.bot_ids, rules) + timing_problems(draft, edits, timing)
        if problems:
            raise StepFailed(f"a sound edit chain on the reply '{self.to}'", problems + describe_chain(draft, edits))
        return f"{len(edits)} edit(s) of {reply.event_id}, final text complete, no pings{unchecked}"

    def _timing(self, ctx: ScenarioContext, reply_id: str) -> tuple[Timing, str]:
        """The timing rules, the stream's end put on the homeserver's clock (the host's wall clock: the journal
        keeps monotonic times). Without a journal (a live model) that part is NOT CHECKED, said in the detail."""
        stream_end, unchecked = None, ""
        if self.draft_before_stream_end:
            trigger = next((r for r in ctx.refs.values() if r.event_id == ctx.claimed.get(reply_id)), None)
            found = rounds_carrying(journal(ctx) or [], (trigger.text or trigger.body or "") if trigger else "")
            ends = [e.finished_at for e in found if e.finished_at is not None]
            if ends:
                stream_end = max(ends) + time.time() * 1000 - mono_ms()
            else:
                unchecked = "; NOT CHECKED: when the model's stream ended (no journal entry for the trigger)"
        return Timing(min_interval_ms=self.paced * 1000 if self.paced is not None else None,
                      tolerance_ms=self.tolerance * 1000, stream_end_ms=stream_end, grows=self.grows), unchecked


class ExpectReplyCount(StepBase):
    """The bot has answered message `to` exactly `count` times so far (across restarts): no double answers.

    Put it after a step that proves the bot is past the point where a duplicate would have been sent (e.g. the
    reply to a later message in the same session). The count is judged again when the scenario ends (the room
    settled, then once more after the bot stopped): a bot that answers out of order, a duplicate after a later
    message's answer, fails then."""

    kind: ClassVar[str] = "expect_reply_count"
    does: ClassVar[str] = ("the bot has answered `to` exactly `count` times, across restarts; judged again when the "
                           "scenario ends")

    to: StepId
    count: int = Field(ge=0, strict=True)  # strict: YAML's `yes` would be read as 1

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({SENT}), same_room=False)]

    def answered(self) -> str | None:
        return self.to if self.count else None

    async def run(self, ctx: ScenarioContext) -> str:
        trigger = ctx.refs[self.to]
        replies = replies_to(ctx, trigger.event_id)
        maybe = unsure_thread_replies(ctx, trigger, replies)
        unsure = unsure_thread_note(self.to, maybe)
        # A message that may or may not answer `to` fails the count only when it is wrong either way.
        if len(replies) > self.count or len(replies) + len(maybe) < self.count:
            raise StepFailed(f"exactly {self.count} bot repl{'y' if self.count == 1 else 'ies'} to '{self.to}'",
                             [f"{len(replies)} replies: {', '.join(replies) or 'none'}", *filter(None, [unsure]),
                              *trace_about(ctx, trigger.event_id)])
        ctx.final_checks.append(_still_counted(ctx, trigger.event_id, self.to, self.count))
        found = f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'} to {trigger.event_id}"
        return f"{found}; NOT CHECKED: {unsure}" if unsure else found


class AnswerEveryReply(StepBase):
    """A test user behaving like a second bot that answers everything (the bot knows it as a bot): it answers
    each of the bot's replies, starting from the reply to `to`, until the bot stays quiet. A loop guard must
    stop the exchange within `max` bot answers; the step fails with the count when it does not."""

    kind: ClassVar[str] = "answer_every_reply"
    does: ClassVar[str] = (
        "`as` answers every bot reply, from the reply to `to` on, with `body` (like a second bot that answers "
        "everything); the exchange must stop within `max` bot answers (no answer within `quiet`, or a traced "
        "drop); fails with the number of answers")
    capabilities: ClassVar[tuple[str, ...]] = ("policy",)

    actor: ActorName = Field(alias="as")
    to: StepId
    body: MarkedText
    max: int = Field(ge=1)
    quiet: Duration = 3.0

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({SENT}), True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.actors import message_content

        trigger, answers = ctx.refs[self.to], 0
        while True:
            try:
                await wait_for_bot_reply(ctx, trigger, self.quiet, f"a bot answer to message {answers + 1}")
            except StepFailed as stopped:
                return f"the exchange stopped after {answers} bot answer(s): {stopped.expected}"
            answers += 1
            if answers > self.max:
                raise StepFailed(f"the bot-to-bot exchange to stop within {self.max} bot answers",
                                 [f"the bot answered {answers} messages in a row from {self.actor}, who answers "
                                  "everything; it would go on", *trace_about(ctx, trigger.event_id)[-6:]])
            typed = f"{text(ctx, self.body)} {answers}"
            sent_at = mono_ms()
            event_id = await ctx.actors[self.actor].send(trigger.room_id, message_content(typed))
            trigger = Ref(trigger.room_id, event_id, None, sent_at, actor=self.actor, body=typed, text=typed)


MAX_EXCHANGE = 1000  # the most messages an expect_exchange_stops bound may allow


class ExpectExchangeStops(StepBase):
    """The bot and the scenario's peer bot (a second bot process that answers everything) talk after `after`;
    a loop guard must end the exchange within `max` messages of theirs (an edit is no new message), seen as
    `quiet` without a new one. Fails with the count when the bots go on, the count of each bot in the evidence."""

    kind: ClassVar[str] = "expect_exchange_stops"
    does: ClassVar[str] = (
        "the bot and the peer bot (`peer_bot:`) exchange messages after `after`; the exchange must stop (no new "
        "message within `quiet`) within `max` messages of theirs; fails with the count of each")
    capabilities: ClassVar[tuple[str, ...]] = ("policy",)
    needs_peer: ClassVar[bool] = True

    after: StepId
    # strict: YAML's `yes`/`true` would otherwise pass as 1. A bound past MAX_EXCHANGE bounds nothing a scenario
    # could wait out.
    max: int = Field(ge=1, le=MAX_EXCHANGE, strict=True)
    quiet: Duration = 3.0

    def refs(self) -> list[StepRef]:
        return [StepRef(("after",), self.after, frozenset({SENT}), True)]

    def timeouts(self) -> list[tuple[tuple[str, ...], float]]:
        # The step ends only after `quiet` without a message: a longer quiet than the scenario's timeout never ends.
        return [*super().timeouts(), (("quiet",), self.quiet)]

    async def run(self, ctx: ScenarioContext) -> str:
        opener = ctx.refs[self.after]
        speakers = {ctx.bot_user_id: "bot", ctx.peer_user_id: f"peer bot {ctx.peer_name}"}
        events = ctx.observer().events
        while True:
            mark = events.count
            counts = exchange_counts(events.items, opener.event_id, opener.room_id, speakers)
            if problem := exchange_problem(counts, self.max):
                raise StepFailed(f"the bot-to-bot exchange to stop within {self.max} messages",
                                 [problem, *trace_about(ctx, opener.event_id)[-6:]])
            try:
                await events.wait_for(lambda e: in_exchange(e, opener.room_id, speakers), self.quiet,
                                      "a further message of the exchange", mark)
            except WaitTimeout:
                ctx.method = "room"
                return f"the exchange stopped after {describe_counts(counts)}: none more within {self.quiet:g}s"
