"""Which model requests answered a message, and whether they carried what a step expects; what the journal knows
of a message no reply came for. Pure: over the bot's trace records and the mock provider's request journal, which
the expect_model_request step and the wait for a reply gather."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from qa.shared.markers import TOKEN_RE

Window = tuple[dict[str, Any], dict[str, Any]]


def model_request_windows(records: Sequence[dict[str, Any]], event_id: str) -> list[Window] | None:
    """The model.request.start/end pairs of the turn that answered `event_id`, once that turn has ended (a
    turn with tool calls asks the model more than once); None while it is still running, or when it made none."""
    attempts = {r.get("attempt") for r in records if r.get("type") == "turn.start" and r.get("eventId") == event_id}
    if not any(r.get("type") == "turn.end" and r.get("attempt") in attempts for r in records):
        return None
    ends = {r.get("requestId"): r for r in records if r.get("type") == "model.request.end"}
    windows = [(r, ends[r.get("requestId")]) for r in records if r.get("type") == "model.request.start"
               and r.get("attempt") in attempts and r.get("requestId") in ends]
    return windows or None


def find_model_request(journal: Iterable[Any], start_ms: float, end_ms: float, body: str | None) -> Any | None:
    """The journal entry for one traced model request. Bot and provider stamp the same system-wide monotonic
    clock, so the request the provider received inside the bot's start/end window is the one; the trigger's
    body narrows it when sessions overlap, and the last one wins when the client retried."""
    slack = 1.0  # trace timestamps are rounded to the microsecond
    inside = [e for e in journal if getattr(e, "is_chat", False)
              and start_ms - slack <= float(e.started_at) <= end_ms + slack]
    if body is not None:
        inside = [e for e in inside if any(m.get("content") == body for m in e.messages)] or inside
    return inside[-1] if inside else None


def rounds_carrying(journal: Iterable[Any], text: str) -> list[Any]:
    """Without a trace: every finished chat request whose latest user message carries `text` (each round of a
    turn with tool calls does)."""
    return [e for e in journal if e.is_chat and e.state != "in_flight" and text and text in (e.latest_user or "")]


def model_request_problems(found: Sequence[Any], contains: list[str], excludes: list[str],
                           images: int | None) -> list[str]:
    """What the requests that answered a message lack or carry against the step's texts and image count."""
    problems = [f"does not carry {t!r}" for t in contains if not any(e.contains(t) for e in found)]
    if images is not None:
        # The most any one round carried: every round of a turn re-sends the same conversation.
        carried = max((int(getattr(e, "images", 0)) for e in found), default=0)
        if carried != images:
            problems.append(f"carries {carried} image content part(s), expected {images}")
    problems += [f"carries {t!r}, which it must not" for t in excludes if any(e.contains(t) for e in found)]
    return problems


def request_lines(found: Iterable[Any]) -> list[str]:
    """Each message of each request, shortened: what the report shows when a check fails."""
    return [f"request {e.id} {m.get('role')}: {str(m.get('content'))[:120]!r}" for e in found for m in e.messages]


def journal_knows(journal: Sequence[Any] | None, text: str | None) -> str:
    """What the provider journal says of a trigger no reply came for: did the bot ask the model about it at all,
    and how did the last such request end."""
    if journal is None:
        return "provider journal: none (a live model keeps none), so whether the model was asked is unknown"
    if not text:
        return "provider journal: the trigger has no text to look for"
    chats = [e for e in journal if e.is_chat]
    carrying = [e for e in chats if text in (e.latest_user or "")]
    if not carrying:
        return f"provider journal: none of its {len(chats)} model request(s) carried the trigger's text: the bot " \
            "never asked the model about it"
    last = carrying[-1]
    if last.state == "in_flight":
        how = "is still in flight"
    elif last.error is not None:
        how = f"was answered with an error (HTTP {last.status})"
    elif last.reply is not None:
        how = f"was answered {str(last.reply.text or '')[:80]!r}"
    else:
        how = "ended without an answer"
    return f"provider journal: {len(carrying)} model request(s) carried the trigger's text; the last ({last.id}) {how}"


def marker_origins(lines: Iterable[str], sent: Mapping[str, str | None]) -> list[str]:
    """Where each run marker in these lines came from: "MQA-… = step 'ask'" for a marker the message of step
    'ask' carried (`sent`: what each message said, by a label such as "step 'ask'"), so a reader can tell whose
    context a reply or a request holds."""
    seen = dict.fromkeys(m for line in lines for m in TOKEN_RE.findall(line))
    out = []
    for marker in seen:
        origins = [label for label, text in sent.items() if text and marker in text]
        out.append(f"{marker} = {' and '.join(origins) if origins else 'no message of this scenario'}")
    return out
