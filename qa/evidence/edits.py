"""Pure checks of a streamed reply's edit chain: the draft and the `m.replace` edits the bot made of it.

A sound chain: every edit is the bot's and replaces the draft; edits come in the order the bot sent them
(server timestamps never go back); their count is within bounds; the last edit carries the complete answer
in `m.new_content`; nothing in the chain pings anyone (the draft, every edit and every `m.new_content` carry
an empty `m.mentions`); a reader that ignores edits sees a sensible body (the draft is not empty).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qa.evidence.events import BotIds, is_bot_sender


@dataclass(frozen=True)
class ChainRules:
    min_edits: int = 1
    max_edits: int | None = None
    final_body: str | None = None
    draft_msgtype: str | None = None
    some_edit_contains: list[str] = field(default_factory=list)
    no_edit_contains: list[str] = field(default_factory=list)


def _content(event: Mapping[str, Any]) -> Mapping[str, Any]:
    content = event.get("content")
    return content if isinstance(content, Mapping) else {}


def edits_of(reply_id: str, events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every event that says it replaces `reply_id`, by anyone, in the order they were observed."""
    return [e for e in events if e.get("type") == "m.room.message"
            and (_content(e).get("m.relates_to") or {}).get("rel_type") == "m.replace"
            and (_content(e).get("m.relates_to") or {}).get("event_id") == reply_id]


def new_body(edit: Mapping[str, Any]) -> str:
    new = _content(edit).get("m.new_content")
    return str(new.get("body", "")) if isinstance(new, Mapping) else ""


def _pings(content: Mapping[str, Any]) -> str | None:
    mentions = content.get("m.mentions")
    if not isinstance(mentions, Mapping):
        return "no m.mentions (clients then fall back to pinging whoever the body names)"
    if mentions.get("room") or mentions.get("user_ids"):
        return f"m.mentions {dict(mentions)!r}"
    return None


def check_chain(draft: Mapping[str, Any], edits: list[Mapping[str, Any]], bot_user_id: BotIds,
                rules: ChainRules) -> list[str]:
    """What is wrong with the chain, as readable problems (empty: sound)."""
    problems: list[str] = []
    draft_content = _content(draft)
    if not str(draft_content.get("body", "")).strip():
        problems.append("the draft has an empty body: a reader that ignores edits sees nothing")
    if rules.draft_msgtype and draft_content.get("msgtype") != rules.draft_msgtype:
        problems.append(f"the draft is {draft_content.get('msgtype')!r}, expected {rules.draft_msgtype!r}")
    if (why := _pings(draft_content)) is not None:
        problems.append(f"the draft pings: {why}")
    foreign = [e.get("event_id") for e in edits if not is_bot_sender(e.get("sender"), bot_user_id)
               or e.get("sender") != draft.get("sender")]
    if foreign:
        problems.append(f"edits not sent by the bot: {', '.join(map(str, foreign))}")
    count = len(edits)
    if count < rules.min_edits:
        problems.append(f"{count} edit(s), expected at least {rules.min_edits}")
    if rules.max_edits is not None and count > rules.max_edits:
        problems.append(f"{count} edit(s), expected at most {rules.max_edits} (edits must be paced)")
    stamps = [e.get("origin_server_ts") for e in edits]
    if any(isinstance(a, int) and isinstance(b, int) and b < a for a, b in itertools.pairwise(stamps)):
        problems.append("edits arrived out of order (a later edit has an earlier server timestamp)")
    for i, edit in enumerate(edits, start=1):
        content = _content(edit)
        new = content.get("m.new_content")
        if not isinstance(new, Mapping):
            problems.append(f"edit {i} ({edit.get('event_id')}) has no m.new_content")
            continue
        for where, part in (("", content), (" m.new_content", new)):
            if (why := _pings(part)) is not None:
                problems.append(f"edit {i} ({edit.get('event_id')}){where} pings: {why}")
    if rules.final_body is not None:
        final = new_body(edits[-1]) if edits else str(draft_content.get("body", ""))
        if final.strip() != rules.final_body:
            problems.append(f"the final text is {final!r}, expected the complete answer {rules.final_body!r}")
        elif edits:
            last = _content(edits[-1]).get("m.new_content")
            if isinstance(last, Mapping) and last.get("msgtype") != "m.text":
                problems.append(f"the final edit is {last.get('msgtype')!r}, not an m.text answer")
    shown = [str(draft_content.get("body", ""))] + [new_body(e) for e in edits]
    for text in rules.some_edit_contains:
        if not any(text in s for s in shown):
            problems.append(f"no preview showed {text!r}")
    for text in rules.no_edit_contains:
        hits = [i for i, s in enumerate(shown) if text in s]
        if hits:
            problems.append(f"{'the draft' if hits[0] == 0 else f'edit {hits[0]}'} showed {text!r}, which it must not")
    return problems


@dataclass(frozen=True)
class Timing:
    """How a streamed preview must move in time, beyond counting its edits: what a bot that buffers the whole
    answer and then bursts a draft and edits out cannot fake. Times are the homeserver's (origin_server_ts)."""

    min_interval_ms: float | None = None  # the bot's streamEditIntervalMs: preview edits at least this far apart
    tolerance_ms: float = 50.0  # clock granularity and the gap between a send and its server timestamp
    stream_end_ms: float | None = None  # when the model's stream ended, on the homeserver's clock
    grows: bool = False  # each edit's text starts with the text shown before it


def _ts(event: Mapping[str, Any]) -> int | None:
    stamp = event.get("origin_server_ts")
    return stamp if isinstance(stamp, int) else None


def timing_problems(draft: Mapping[str, Any], edits: list[Mapping[str, Any]], timing: Timing) -> list[str]:
    """What is wrong with the chain's timing and growth (empty: none). The final edit may follow the last preview
    edit at once (the answer is complete), so only the draft and the preview edits before it are paced."""
    problems: list[str] = []
    draft_at = _ts(draft)
    if timing.stream_end_ms is not None and draft_at is not None and draft_at > timing.stream_end_ms:
        problems.append(f"the draft reached the homeserver {draft_at - timing.stream_end_ms:.0f} ms after the model's "
                        "stream ended: the answer was buffered, not previewed as it came")
    if timing.min_interval_ms is not None:
        paced = [draft, *edits[:-1]]
        for i, (a, b) in enumerate(itertools.pairwise(paced), start=1):
            at, bt = _ts(a), _ts(b)
            if at is not None and bt is not None and bt - at < timing.min_interval_ms - timing.tolerance_ms:
                problems.append(f"edit {i} came {bt - at} ms after {'the draft' if i == 1 else f'edit {i - 1}'}, "
                                f"under the edit interval of {timing.min_interval_ms:g} ms "
                                f"(tolerance {timing.tolerance_ms:g} ms)")
    if timing.grows:
        shown = [str(_content(draft).get("body", ""))] + [new_body(e) for e in edits]
        for i, (before, after) in enumerate(itertools.pairwise(shown), start=1):
            if not after.startswith(_without_cursor(before)):
                problems.append(f"edit {i} does not grow from the text before it: {before[:60]!r} -> {after[:60]!r}")
    return problems


# What previews append to show the answer is still coming (a typing cursor); the next edit replaces it.
_CURSORS = (" …", "…", "...", "▍", "▌", "█")


def _without_cursor(text: str) -> str:
    text = text.rstrip()
    for cursor in _CURSORS:
        if text.endswith(cursor):
            return text[: -len(cursor)].rstrip()
    return text


def describe_chain(draft: Mapping[str, Any], edits: list[Mapping[str, Any]]) -> list[str]:
    lines = [f"draft {draft.get('event_id')} {_content(draft).get('msgtype')}: "
             f"{str(_content(draft).get('body', ''))[:80]!r} mentions={_content(draft).get('m.mentions')!r}"]
    lines += [f"edit {i} {e.get('event_id')}: {new_body(e)[:80]!r} mentions={_content(e).get('m.mentions')!r}"
              for i, e in enumerate(edits, start=1)]
    return lines
