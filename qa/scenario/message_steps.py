"""Steps that change or remove what was said (edit, redact, expect_redaction), and the reply checks for
formatting and split replies that expect_reply runs. Content builders and checks are pure and unit-tested."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from nio import RoomRedactError

from qa.actors import describe_event, message_content
from qa.clock import mono_ms
from qa.harness.bot_process import describe_record
from qa.scenario.context import Ref, ScenarioContext, StepFailed
from qa.scenario.markers import expand
from qa.waiting import WaitTimeout

HTML_FORMAT = "org.matrix.custom.html"
DEFAULT_TIMEOUT_S = 30.0


def edit_content(target_id: str, new_content: dict[str, Any], previously_mentioned: tuple[str, ...]) -> dict[str, Any]:
    """An m.replace edit as clients send it: the new message in m.new_content, a "* " fallback outside, and
    outer m.mentions naming only users the edit newly mentions (so an edit never pings twice)."""
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


def _timeout(step: Any) -> float:
    return float(step.timeout) if getattr(step, "timeout", None) else DEFAULT_TIMEOUT_S


async def edit(ctx: ScenarioContext, step: Any) -> str:
    target = ctx.refs[step.to]
    if target.actor != step.actor:
        # Clients show an edit only from the original sender; anything else tests nothing a user can do.
        raise StepFailed(f"{step.actor} edits their own message", [f"'{step.to}' was sent by {target.actor}"])
    text = expand(step.body, ctx.markers)
    mention = None
    if step.mention:
        mention = (ctx.user_id_of(step.mention), ctx.bot_name if step.mention == "bot" else step.mention)
    new = message_content(text, mention=mention)
    content = edit_content(target.event_id, new, target.mentions)
    sent_at = mono_ms()
    event_id = await ctx.actors[step.actor].send(target.room_id, content)
    if step.id:
        ctx.refs[step.id] = Ref(target.room_id, event_id, target.thread_root, sent_at, actor=step.actor,
                                body=new["body"], text=text, mentions=tuple(new["m.mentions"].get("user_ids", [])))
    return f"{step.actor} edited {target.event_id} ({event_id})"


async def redact(ctx: ScenarioContext, step: Any) -> str:
    target = ctx.refs[step.to]
    reason = expand(step.reason, ctx.markers) if step.reason else None
    client = ctx.actors[step.actor].client
    sent_at = mono_ms()
    resp = await client.room_redact(target.room_id, target.event_id, reason=reason)
    if isinstance(resp, RoomRedactError):
        raise StepFailed(f"{step.actor} redacts '{step.to}'", [f"homeserver refused: {resp.message}"])
    if step.id:
        ctx.refs[step.id] = Ref(target.room_id, resp.event_id, target.thread_root, sent_at, actor=step.actor,
                                body=reason, text=reason)
    return f"{step.actor} redacted {target.event_id} ({resp.event_id})"


def _defining_step(scenario: Any, step_id: str) -> Any | None:
    return next((s for s in scenario.steps if s.defined_id() == step_id), None)


async def expect_redaction(ctx: ScenarioContext, step: Any) -> str:
    redaction = ctx.refs[step.to]
    watcher = ctx.actors[step.actor]
    try:
        await watcher.events.wait_for(
            lambda e: e.get("type") == "m.room.redaction" and e.get("event_id") == redaction.event_id,
            _timeout(step), f"{step.actor} to see the redaction '{step.to}'")
    except WaitTimeout as exc:
        raise StepFailed(f"{step.actor} sees the redaction '{step.to}'", exc.seen[-10:]) from None
    redact_step = _defining_step(ctx.scenario, step.to)
    removed = _defining_step(ctx.scenario, redact_step.to) if redact_step is not None else None
    if removed is None or removed.kind != "react":
        return f"{step.actor} saw {redaction.event_id}"
    try:
        record = await ctx.bot.trace.wait_for(
            lambda r: r.get("type") == "reaction.removed" and r.get("eventId") == redaction.event_id,
            _timeout(step), "the bot to record the reaction's removal", ctx.trace_start)
    except WaitTimeout:
        seen = ["bot trace: " + describe_record(r) for r in ctx.bot.trace.items[ctx.trace_start:]
                if redaction.event_id in (r.get("eventId"), r.get("redacts"))
                or r.get("eventId") == ctx.refs[redact_step.to].event_id]
        raise StepFailed("the bot records the reaction's removal in its session (trace reaction.removed)",
                         seen or ["bot trace: no record about the redaction or the reaction"]) from None
    if record.get("decision") != "recorded":
        raise StepFailed("the bot records the reaction's removal", ["bot trace: " + describe_record(record)])
    return f"{step.actor} saw {redaction.event_id}; the bot recorded the removal"


# --- expect_reply: formatting and split replies -------------------------------------------------------------


# What a Matrix client may render from formatted_body (the spec's suggested set, img only as mxc://).
MATRIX_TAGS = frozenset({
    "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup", "sub", "li", "b",
    "i", "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead", "tbody", "tr", "th", "td", "caption",
    "pre", "span", "img", "details", "summary", "mx-reply",
})
SAFE_SCHEMES = ("https:", "http:", "mailto:", "matrix:", "mxc:")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in MATRIX_TAGS:
            self.problems.append(f"<{tag}> is not a tag Matrix clients render")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag}> carries an event handler attribute {name}")
            elif name in ("href", "src") and value is not None:
                scheme = value.strip().lower()
                if ":" in scheme.split("/")[0] and not scheme.startswith(SAFE_SCHEMES):
                    self.problems.append(f"<{tag} {name}={value!r}> uses an unsafe URL scheme")
                elif tag == "img" and not scheme.startswith("mxc:"):
                    self.problems.append(f"<img src={value!r}> is not an mxc:// URL")


def html_safety_problems(formatted: str) -> list[str]:
    """Pure: real tags and attributes in formatted_body that no sanitized reply may carry. Escaped text that
    merely looks like HTML (`&lt;script&gt;`) is text, and fine."""
    parser = _Tags()
    parser.feed(formatted)
    parser.close()
    return parser.problems


def format_problems(content: dict[str, Any], contains: list[str], excludes: list[str],
                    body_excludes: list[str], safe: bool = False) -> list[str]:
    """Pure: what is wrong with a reply's formatting (empty = fine)."""
    problems = []
    body = str(content.get("body", ""))
    if contains or excludes or safe:
        formatted = content.get("formatted_body")
        if content.get("format") != HTML_FORMAT or not isinstance(formatted, str):
            problems.append(f"no {HTML_FORMAT} formatted_body (format={content.get('format')!r})")
            formatted = ""
        problems += [f"formatted_body does not contain {t!r}" for t in contains if t not in formatted]
        problems += [f"formatted_body contains {t!r}" for t in excludes if t.lower() in formatted.lower()]
        problems += html_safety_problems(formatted) if safe else []
        if problems and formatted:
            problems.append(f"formatted_body: {formatted[:300]!r}")
    problems += [f"body contains {t!r} (the plain body must be plain)" for t in body_excludes if t in body]
    return problems


def _words(text: str) -> list[str]:
    return text.split()


def parts_problems(parts: list[dict[str, Any] | None], order: list[str], expected_body: str | None,
                   parts_min: int, limit: int) -> list[str]:
    """Pure: what is wrong with a reply sent in parts. `parts` are the part events (None: never seen in the
    room), in the bot's sending order; `order` is the room's event order; words are compared, not whitespace."""
    problems = []
    if len(parts) < parts_min:
        problems.append(f"the reply came as {len(parts)} part(s), expected at least {parts_min}")
    seen = [p for p in parts if p is not None]
    if len(seen) < len(parts):
        problems.append(f"{len(parts) - len(seen)} part(s) never appeared in the room")
    for index, part in enumerate(seen, start=1):
        content = part.get("content") or {}
        body = content.get("body")
        if part.get("type") != "m.room.message" or content.get("msgtype") != "m.text" or not body:
            problems.append(f"part {index} is not a text message with a body: {describe_event(part)}")
        elif len(str(body)) > limit:
            problems.append(f"part {index} has {len(str(body))} characters, over the limit of {limit}")
    positions = [order.index(p["event_id"]) for p in seen if p.get("event_id") in order]
    if positions != sorted(positions):
        problems.append("the parts appeared in the room out of order")
    if expected_body is not None:
        joined = " ".join(str((p.get("content") or {}).get("body", "")) for p in seen)
        if _words(joined) != _words(expected_body):
            problems.append(f"the parts joined do not read as the expected text: {joined[:200]!r}…")
    return problems


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
