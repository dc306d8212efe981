"""Whether a bot reply is the one a step expects: its place (thread or top level), its text, its formatting,
its parts when it was split, its edit chain. Pure: the expect_reply step gathers the events, this judges them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Protocol

from qa.evidence.edits import ChainRules, check_chain, describe_chain, edits_of
from qa.evidence.events import BotIds, describe_event
from qa.evidence.pairing import latest_body

HTML_FORMAT = "org.matrix.custom.html"
# What a Matrix client may render from formatted_body (the spec's suggested set, img only as mxc://).
MATRIX_TAGS = frozenset({
    "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup", "sub", "li", "b",
    "i", "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead", "tbody", "tr", "th", "td", "caption",
    "pre", "span", "img", "details", "summary", "mx-reply",
})
SAFE_SCHEMES = ("https:", "http:", "mailto:", "matrix:", "mxc:")


class TriggerLike(Protocol):
    """The message a reply answers (qa.scenario.context.Ref, qa.evidence.pairing.Trigger)."""

    @property
    def event_id(self) -> str: ...

    @property
    def room_id(self) -> str: ...


def answered_dropped_or_failed(record: dict[str, Any], trigger_id: str) -> bool:
    """A trace record that settles a wait for the reply to `trigger_id`: the bot's `reply.sent` for it, or a
    traced drop or a failed turn, which are final (a drop as a redelivered duplicate or history is not: the
    message is handled already)."""
    kind = record.get("type")
    if kind == "reply.sent":
        return record.get("inReplyTo") == trigger_id
    if record.get("eventId") != trigger_id:
        return False
    if kind == "turn.end":
        return record.get("outcome") == "failed"
    return kind == "inbound" and record.get("decision") == "dropped" and record.get("reason") not in (
        "duplicate", "history")


def check_reply_shape(event: dict[str, Any], trigger: TriggerLike, expect_thread: str | None, top_level: bool,
                      no_relation: bool = False) -> list[str]:
    """What is wrong with the reply's relation, as a list of problems (empty = fine).

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
    """Real tags and attributes in formatted_body that no sanitized reply may carry. Escaped text that merely
    looks like HTML (`&lt;script&gt;`) is text, and fine."""
    parser = _Tags()
    parser.feed(formatted)
    parser.close()
    return parser.problems


def format_problems(content: dict[str, Any], contains: list[str], excludes: list[str],
                    body_excludes: list[str], safe: bool = False) -> list[str]:
    """What is wrong with a reply's formatting (empty = fine)."""
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


def parts_problems(parts: Sequence[dict[str, Any] | None], order: list[str], expected_body: str | None,
                   parts_min: int, limit: int) -> list[str]:
    """What is wrong with a reply sent in parts. `parts` are the part events (None: never seen in the room), in
    the bot's sending order; `order` is the room's event order; words are compared, not whitespace."""
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
        if joined.split() != expected_body.split():
            problems.append(f"the parts joined do not read as the expected text: {joined[:200]!r}…")
    return problems


def chain_problems(draft: dict[str, Any], events: Sequence[dict[str, Any]], bot_user_id: BotIds,
                   rules: ChainRules) -> list[str]:
    """What is wrong with the edit chain of a bot message, followed by the chain itself when anything is."""
    edits = edits_of(str(draft.get("event_id")), events)
    problems = check_chain(draft, edits, bot_user_id, rules)
    return [*problems, *describe_chain(draft, edits)] if problems else []


def delay_problems(latency_ms: float, baseline_ms: float | None, baseline: str, slack_ms: float) -> list[str]:
    """A reply that took longer than an earlier one (the baseline, measured in the same scenario) by more than
    `slack_ms`: something held it up. Latencies leave the model's own time out. Empty: in time."""
    if baseline_ms is None:
        return [f"the reply '{baseline}' has no measured latency to compare with"]
    if latency_ms > baseline_ms + slack_ms:
        return [f"the reply took {latency_ms:.0f} ms, the baseline '{baseline}' {baseline_ms:.0f} ms: "
                f"{latency_ms - baseline_ms:.0f} ms slower, more than the {slack_ms:.0f} ms slack"]
    return []


@dataclass
class ReplyWant:
    """What an expect_reply step asks of the reply, markers expanded."""

    body: str | None = None  # exact (final) text; compared with the parts joined when the reply is split
    contains: str | None = None
    thread_root: str | None = None  # event id of the thread the reply must be in
    top_level: bool = False
    no_relation: bool = False
    after: str | None = None  # event id of an earlier reply this one must come after
    after_step: str | None = None  # the id of the step that saw that reply
    streamed: bool = False
    msgtype: str | None = None
    encrypted: bool | None = None
    formatted_contains: list[str] = field(default_factory=list)
    formatted_excludes: list[str] = field(default_factory=list)
    body_excludes: list[str] = field(default_factory=list)
    formatted_safe: bool = False
    parts_min: int | None = None
    chunk_limit: int = 4000  # the longest part the bot may send (bot.textChunkLimit)

    @property
    def whole_body(self) -> str | None:
        """The text the reply itself must end up saying: none when it is split (the parts say it together)."""
        return None if self.parts_min else self.body


def _split_problems(trigger: TriggerLike, want: ReplyWant, events: Sequence[dict[str, Any]],
                    parts: Sequence[dict[str, Any] | None]) -> list[str]:
    problems = parts_problems(parts, [str(e.get("event_id")) for e in events], want.body, want.parts_min or 0,
                              want.chunk_limit)
    # Every part stands where the reply does (same thread, same top-level shape).
    for index, part in enumerate(parts[1:], start=2):
        if part is not None:
            problems += [f"part {index}: {problem}" for problem in check_reply_shape(
                part, trigger, want.thread_root, want.top_level, want.no_relation)]
    return problems


def judge_reply(event: dict[str, Any], trigger: TriggerLike, want: ReplyWant, events: Sequence[dict[str, Any]],
                bot_user_id: BotIds, parts: Sequence[dict[str, Any] | None] = ()) -> list[str]:
    """Every problem with the reply `event` to `trigger`, judged by its latest edit among `events` (what the
    room showed); `parts` are the part events of a split reply. Kinds of problem the reader looks for first
    (msgtype, text) come first."""
    problems = _split_problems(trigger, want, events, parts) if want.parts_min else []
    problems += format_problems(event.get("content") or {}, want.formatted_contains, want.formatted_excludes,
                                want.body_excludes, want.formatted_safe)
    body = latest_body(event, events, bot_user_id)
    problems += check_reply_shape(event, trigger, want.thread_root, want.top_level, want.no_relation)
    expected = want.whole_body
    if expected is not None and body.strip() != expected:
        problems.insert(0, f"body {body.strip()!r} != expected {expected!r}")
    if want.contains and want.contains not in body:
        problems.insert(0, f"body {body!r} does not contain {want.contains!r}")
    if want.streamed:
        problems += chain_problems(event, events, bot_user_id, ChainRules(min_edits=1, final_body=expected))
    if event.get("room_id") != trigger.room_id:
        problems.append(f"the reply is in room {event.get('room_id')}, the message was in {trigger.room_id}")
    msgtype = (event.get("content") or {}).get("msgtype")
    if want.msgtype and msgtype != want.msgtype:
        problems.insert(0, f"msgtype {msgtype!r} != expected {want.msgtype!r}")
    if want.encrypted is not None and bool(event.get("decrypted")) != want.encrypted:
        problems.append("the reply was sent in the clear" if want.encrypted else "the reply was encrypted")
    if want.after:
        order = [e.get("event_id") for e in events]
        if want.after not in order or order.index(want.after) > order.index(event["event_id"]):
            problems.append(f"reply {event['event_id']} came before the reply of '{want.after_step}' ({want.after})")
    return problems
