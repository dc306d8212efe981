"""Steps in which a test user says something, changes it or takes it back: send, edit, redact.

A new way for a test user to write to a room (a notice, a poll, a location) goes here; a file upload goes in
media.py, a reaction in reactions.py.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from qa.harness.bot_process import describe_record
from qa.kernel.clock import mono_ms
from qa.scenario.context import Ref, StepFailed
from qa.scenario.fields import ActorName, Duration, MarkedText, RoomName, StepId, error
from qa.scenario.steps.base import (
    MESSAGES,
    REACTION,
    REDACTION,
    REPLY,
    SENT,
    ActorUse,
    InRoom,
    StepBase,
    StepRef,
    mention_use,
    opt_ref,
)
from qa.scenario.steps.common import mention_of, prompt, text
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext

HTML_FORMAT = "org.matrix.custom.html"


class Send(InRoom):
    """An actor sends a message; `id` names it for later steps."""

    kind: ClassVar[str] = "send"
    does: ClassVar[str] = (
        "`as`, `body`, optional `room`, `mention` (`bot` or an actor), `mention_style` (`pill`; `text`: the id typed "
        "in the body while `m.mentions` leaves it out; `spoof`: the pill in `formatted_body` while `m.mentions` "
        "leaves it out; `display_name`: the name typed as plain text, no pill, `m.mentions` naming them; "
        "`metadata_only`: `m.mentions` names them, no visible mention text), `m_mentions: false` (no `m.mentions` "
        "key at all, as older clients and bridges send), `msgtype` (`m.text`, `m.notice`, `m.emote`), `thread`, "
        "`reply_to`, `quote` (inside `thread`: an explicit reply to that message, `is_falling_back: false`), `id`")
    defines_kind: ClassVar[str | None] = SENT

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    body: MarkedText
    mention: ActorName | None = None  # "bot" or an actor: the message mentions them (pill + name in body)
    # pill: an intentional mention (m.mentions + pill), as clients send when you pick a name. text: only the
    # user id typed into the body, with m.mentions present and leaving them out, which must NOT count.
    # spoof: the pill in formatted_body, while m.mentions leaves them out: must NOT count either.
    # display_name: "Name: hi" in plain text (a client without pills, a bridge), m.mentions naming them.
    # metadata_only: m.mentions names them and nothing visible does (a client that hides the mention).
    mention_style: Literal["pill", "text", "spoof", "display_name", "metadata_only"] = "pill"
    # False: the content carries no m.mentions key at all, as clients older than Matrix 1.7 and many bridges
    # send; then the spec's legacy fallback (a pill, the id in the body) is all a bot has to go on.
    m_mentions: bool = True
    # m.notice is what bots send (and must never be answered automatically); m.emote is "/me".
    msgtype: Literal["m.text", "m.notice", "m.emote"] = "m.text"
    thread: StepId | None = None  # thread root
    reply_to: StepId | None = None
    # Inside `thread`: a reply to this specific earlier message, a real quote (is_falling_back: false), as a
    # client sends when someone picks "reply" on a message in a thread rather than just typing in it.
    quote: StepId | None = None
    # Encrypted rooms only: encrypt under a room key nobody else ever receives (a device withholding its keys).
    withhold_room_key: bool = False
    id: StepId | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Send:
        if self.mention_style != "pill" and self.mention is None:
            raise error("conflict", f"mention_style: {self.mention_style} needs `mention` (whom it mentions)")
        if not self.m_mentions and self.mention_style in ("spoof", "metadata_only"):
            raise error("conflict", f"m_mentions: false contradicts mention_style: {self.mention_style}, which "
                                    "is about what m.mentions says")
        if self.quote is not None and self.thread is None:
            raise error("conflict", "quote is an explicit reply inside a thread: give `thread` too (outside a "
                                    "thread, use reply_to)")
        if self.quote is not None and self.reply_to is not None:
            raise error("conflict", "quote and reply_to both name the replied-to message: give one")
        return self

    def refs(self) -> list[StepRef]:
        return (opt_ref("thread", self.thread, MESSAGES) + opt_ref("reply_to", self.reply_to, MESSAGES)
                + opt_ref("quote", self.quote, MESSAGES))

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), *mention_use(("mention",), self.mention)]

    def content(self, ctx: ScenarioContext, typed: str) -> dict[str, Any]:
        from qa.actors import message_content  # the Matrix client is imported when a scenario runs, not loads

        content = message_content(typed, thread_root=self._event(ctx, self.thread),
                                  reply_to=self._event(ctx, self.reply_to))
        content = with_mention(content, typed, mention_of(ctx, self.mention), self.mention_style, self.m_mentions)
        content["msgtype"] = self.msgtype
        if self.quote:
            content["m.relates_to"] = quoted_in_thread(content["m.relates_to"], self._event(ctx, self.quote))
        return content

    @staticmethod
    def _event(ctx: ScenarioContext, step_id: str | None) -> str | None:
        return ctx.refs[step_id].event_id if step_id else None

    async def run(self, ctx: ScenarioContext) -> str:
        actor, room_id = ctx.actors[self.actor], ctx.rooms[self.room]
        typed = prompt(ctx, self.body)
        content = self.content(ctx, typed)
        sent_at = mono_ms()
        if self.withhold_room_key:
            event_id = await actor.send_undecryptable(room_id)
        else:
            event_id = await actor.send(room_id, content)
        if self.id:
            ctx.refs[self.id] = Ref(room_id, event_id, self._event(ctx, self.thread), sent_at, actor=self.actor,
                                    body=content["body"], text=typed,
                                    mentions=tuple((content.get("m.mentions") or {}).get("user_ids", [])),
                                    landed_mono_ms=mono_ms())
        where = f" in thread {self.thread}" if self.thread else ""
        withheld = " (room key withheld)" if self.withhold_room_key else ""
        return f"{self.actor} sent {event_id}{where}{withheld}"


def with_mention(content: dict[str, Any], typed: str, who: tuple[str, str] | None, style: str,
                 m_mentions: bool = True) -> dict[str, Any]:
    """A plain message's content (from qa.actors.message_content) made to mention `who` (user id, display
    name) the way `style` says, with or without the `m.mentions` key. Pure."""
    out = dict(content)
    if who is not None:
        user_id, name = who
        pill = f'<a href="https://matrix.to/#/{user_id}">{html.escape(name)}</a>'
        visible = {"pill": (f"{name}: {typed}", f"{pill}: {html.escape(typed)}"), "spoof": (f"{name}: {typed}",
                   f"{pill}: {html.escape(typed)}"), "text": (f"{user_id}: {typed}", None),
                   "display_name": (f"{name}: {typed}", None), "metadata_only": (typed, None)}[style]
        out["body"] = visible[0]
        if visible[1] is not None:
            out["format"], out["formatted_body"] = HTML_FORMAT, visible[1]
        # Whom the sender meant: text and spoof leave them out, which must win over what the text shows.
        out["m.mentions"] = {} if style in ("text", "spoof") else {"user_ids": [user_id]}
    if not m_mentions:
        out.pop("m.mentions", None)
    return out


def quoted_in_thread(relates: dict[str, Any], quoted: str | None) -> dict[str, Any]:
    """A thread relation turned into an explicit reply to `quoted` inside the thread (is_falling_back false:
    the m.in_reply_to is meant, not the fallback a thread-unaware client would show). Pure."""
    return {**relates, "is_falling_back": False, "m.in_reply_to": {"event_id": quoted}}


def edit_content(target_id: str, new_content: dict[str, Any], previously_mentioned: tuple[str, ...]) -> dict[str, Any]:
    """An m.replace edit as clients send it: the new message in m.new_content, a "* " fallback outside, and
    outer m.mentions naming only users the edit newly mentions (so an edit never pings twice). Pure."""
    new = {k: v for k, v in new_content.items() if k != "m.relates_to"}
    newly = [u for u in (new.get("m.mentions") or {}).get("user_ids") or [] if u not in previously_mentioned]
    outer: dict[str, Any] = {
        "msgtype": new.get("msgtype", "m.text"),
        "body": f"* {new.get('body', '')}",
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": target_id},
        "m.mentions": {"user_ids": newly} if newly else {},
    }
    if "formatted_body" in new:
        outer["format"] = new.get("format", HTML_FORMAT)
        outer["formatted_body"] = f"* {new['formatted_body']}"
    return outer


class Edit(StepBase):
    """The sender of message `to` edits it (m.replace, the new text in m.new_content); `id` names the edit.

    mention: who the new text mentions (its m.mentions, and the edit's own m.mentions for anyone newly
    mentioned, as the spec says, so a naive bot that reads the edit's outer content sees the mention)."""

    kind: ClassVar[str] = "edit"
    does: ClassVar[str] = (
        "the sender of message `to` edits it (`m.replace`, new text in `m.new_content`, `mention` of the new text; "
        "the edit's own `m.mentions` names only the newly mentioned, as the spec says); `id` names the edit")
    defines_kind: ClassVar[str | None] = SENT

    actor: ActorName = Field(alias="as")
    to: StepId
    body: MarkedText
    mention: ActorName | None = None
    id: StepId | None = None

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({SENT}), True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), *mention_use(("mention",), self.mention)]

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.actors import message_content

        target = ctx.refs[self.to]
        if target.actor != self.actor:
            # Clients show an edit only from the original sender; anything else tests nothing a user can do.
            raise StepFailed(f"{self.actor} edits their own message", [f"'{self.to}' was sent by {target.actor}"])
        typed = prompt(ctx, self.body)
        new = message_content(typed, mention=mention_of(ctx, self.mention))
        content = edit_content(target.event_id, new, target.mentions)
        sent_at = mono_ms()
        event_id = await ctx.actors[self.actor].send(target.room_id, content)
        if self.id:
            ctx.refs[self.id] = Ref(target.room_id, event_id, target.thread_root, sent_at, actor=self.actor,
                                    body=new["body"], text=typed, mentions=tuple(new["m.mentions"].get("user_ids", [])))
        return f"{self.actor} edited {target.event_id} ({event_id})"


class Redact(StepBase):
    """An actor redacts an earlier message or reaction; `id` names the redaction event."""

    kind: ClassVar[str] = "redact"
    does: ClassVar[str] = "an actor redacts a message or reaction `to`, optional `reason`; `id` names the redaction"
    defines_kind: ClassVar[str | None] = REDACTION
    capabilities: ClassVar[tuple[str, ...]] = ("redactions",)

    actor: ActorName = Field(alias="as")
    to: StepId
    reason: MarkedText | None = None
    id: StepId | None = None

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({SENT, REPLY, REACTION}), True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        from nio import RoomRedactError

        target = ctx.refs[self.to]
        reason = text(ctx, self.reason) if self.reason else None
        sent_at = mono_ms()
        resp = await ctx.actors[self.actor].client.room_redact(target.room_id, target.event_id, reason=reason)
        if isinstance(resp, RoomRedactError):
            raise StepFailed(f"{self.actor} redacts '{self.to}'", [f"homeserver refused: {resp.message}"])
        if self.id:
            ctx.refs[self.id] = Ref(target.room_id, resp.event_id, target.thread_root, sent_at, actor=self.actor,
                                    body=reason, text=reason)
        return f"{self.actor} redacted {target.event_id} ({resp.event_id})"


def _defining_step(scenario: Any, step_id: str) -> Any | None:
    return next((s for s in scenario.steps if s.defined_id() == step_id), None)


class ExpectRedaction(StepBase):
    """Actor `as` sees redaction `to`; when it removed a reaction, the bot recorded the removal in the
    reaction's session (trace `reaction.removed`, decision `recorded`)."""

    kind: ClassVar[str] = "expect_redaction"
    does: ClassVar[str] = "actor `as` sees redaction `to`; when it removed a reaction, the bot recorded the removal " \
        "(trace `reaction.removed`)"
    capabilities: ClassVar[tuple[str, ...]] = ("redactions", "trace")

    actor: ActorName = Field(alias="as")
    to: StepId
    timeout: Duration | None = None

    def refs(self) -> list[StepRef]:
        return [StepRef(("to",), self.to, frozenset({REDACTION}), True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]

    async def run(self, ctx: ScenarioContext) -> str:
        redaction = ctx.refs[self.to]
        try:
            await ctx.actors[self.actor].events.wait_for(
                lambda e: e.get("type") == "m.room.redaction" and e.get("event_id") == redaction.event_id,
                self.wait_s(ctx), f"{self.actor} to see the redaction '{self.to}'")
        except WaitTimeout as exc:
            raise StepFailed(f"{self.actor} sees the redaction '{self.to}'", exc.seen[-10:]) from None
        redact_step = _defining_step(ctx.scenario, self.to)
        removed = _defining_step(ctx.scenario, redact_step.to) if redact_step is not None else None
        if removed is None or removed.defines_kind != REACTION:
            return f"{self.actor} saw {redaction.event_id}"
        try:
            record = await ctx.bot.trace.wait_for(
                lambda r: r.get("type") == "reaction.removed" and r.get("eventId") == redaction.event_id,
                self.wait_s(ctx), "the bot to record the reaction's removal", ctx.trace_start)
        except WaitTimeout:
            seen = ["bot trace: " + describe_record(r) for r in ctx.bot.trace.items[ctx.trace_start:]
                    if redaction.event_id in (r.get("eventId"), r.get("redacts"))
                    or r.get("eventId") == ctx.refs[redact_step.to].event_id]
            raise StepFailed("the bot records the reaction's removal in its session (trace reaction.removed)",
                             seen or ["bot trace: no record about the redaction or the reaction"]) from None
        if record.get("decision") != "recorded":
            raise StepFailed("the bot records the reaction's removal", ["bot trace: " + describe_record(record)])
        return f"{self.actor} saw {redaction.event_id}; the bot recorded the removal"
