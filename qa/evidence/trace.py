"""What the bot's trace says about one message: the attempts of the turns it started, the records about it, and
whether a record (or a series of them: one per failed sync, say) keeps within a step's bounds; and which events
the bot says it sent, so the final checks wait for the test users' clients to receive them. Pure: over trace
records (docs/trace-format.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal


def attempts_for(records: Iterable[dict[str, Any]], event_id: str) -> set[str]:
    """The bot's attempt ids for the turn(s) a message started, from its turn.start records."""
    return {str(r.get("attempt")) for r in records if r.get("type") == "turn.start" and r.get("eventId") == event_id}


def record_matches(record: dict[str, Any], kind: str, fields: Mapping[str, Any], event_id: str | None,
                   attempts: set[str]) -> bool:
    """A record of type `kind` with these field values, about `event_id` when one is given: records about a
    message name its event, or the attempt of a turn it started (lock records do)."""
    if record.get("type") != kind or any(record.get(k) != v for k, v in fields.items()):
        return False
    return event_id is None or record.get("eventId") == event_id or record.get("attempt") in attempts


def contention_slack_ms(bounds: Mapping[str, float]) -> float:
    """How long after the other message's model request ended a bounded record may come and still be too close to
    that end to tell a queue from a moment's delay: the step's largest `max` bound on a duration in milliseconds
    (a field whose name ends in `Ms`, the trace format's name for one: waitMs, heldMs), 0 when it bounds none. The
    bound is what the step allows the record to wait, so a record later than that after the message arrived waited
    for something longer than the bot may: the other turn."""
    return max((limit for name, limit in bounds.items() if name.endswith("Ms")), default=0)


@dataclass(frozen=True)
class Contention:
    """Whether a bounded record about a message proves what it waited for while another message's model request
    was in flight (contention_during). `verdict`: `counts` (it did: the bounds stand), `no-contention` (the message
    did not reach the bot during that request: nothing to bound, NOT CHECKED), `waited` (the record came only after
    that request ended, longer than the slack after the message arrived: it waited for the other turn, a fail) or
    `unsure` (it came after the end, but too close to it, or with no times to tell: NOT CHECKED). `why` says which
    (empty for `counts`)."""

    verdict: Literal["counts", "no-contention", "waited", "unsure"]
    why: str = ""


def contention_during(records: Sequence[dict[str, Any]], event_id: str, other_id: str, record: dict[str, Any],
                      slack_ms: float) -> Contention:
    """Whether `record` (what a step bounds about message `event_id`, e.g. its lock acquire) shows how the message
    fared against message `other_id`'s turn. Two tests over the same lookups (the first record about the message,
    the other turn's request), each made once.

    The message must have reached the bot while the other's model request was in flight: the bot's first record
    about it (its turn's start, in any bot that traces; or a record naming its turn's attempt) comes after that
    request's model.request.start and before its model.request.end (or while no end is traced yet). A bound on
    what the message waited for proves nothing about contention otherwise: on a loaded machine the message can
    reach the bot after the other turn is over, and then nothing was in its way.

    Then `record` must come before that request ended: a bot that queues the message behind the running turn, then
    takes a free lock, traces `waitMs: 0` whatever it waited. Past the end by more than `slack_ms` after the
    message's first record it waited for the other turn; within the slack (or without times) it cannot be told."""
    mine, others = attempts_for(records, event_id), attempts_for(records, other_id)
    first = next((n for n, r in enumerate(records) if r.get("eventId") == event_id or r.get("attempt") in mine), None)
    start = next((n for n, r in enumerate(records)
                  if record_matches(r, "model.request.start", {}, other_id, others)), None)
    end = next((n for n, r in enumerate(records) if record_matches(r, "model.request.end", {}, other_id, others)), None)
    if first is None:
        return Contention("no-contention", "left no trace record about it")
    if start is None or first < start:
        return Contention("no-contention", "reached the bot before the other message's model request started")
    if end is not None and first > end:
        return Contention("no-contention", "reached the bot only after the other message's model request had ended")
    at = next((n for n, r in enumerate(records) if r is record), None)
    if end is None or at is None or at < end:
        return Contention("counts")
    arrived = records[first]
    if not all(isinstance(r.get("t"), int | float) for r in (record, arrived)):
        return Contention("unsure", "came after the other message's model request ended, and the trace has no "
                                    "times to tell how long")
    gap = float(record["t"]) - float(arrived["t"])
    if gap > slack_ms:
        return Contention("waited", f"came only after the other message's model request ended, {gap:.0f} ms after "
                                    "it reached the bot mid request: it waited for the other turn")
    return Contention("unsure", f"came after the other message's model request ended, {gap:.0f} ms after it "
                                "reached the bot: too close to the request's end to tell")


def over_bounds(record: dict[str, Any], bounds: Mapping[str, float]) -> dict[str, Any]:
    """The bounded fields the record exceeds, or does not carry as a number."""
    return {k: record.get(k) for k, limit in bounds.items()
            if not isinstance(record.get(k), int | float) or record[k] > limit}


def under_bounds(record: dict[str, Any], floors: Mapping[str, float]) -> dict[str, Any]:
    """The fields the record holds below their floor, or does not carry as a number (a backoff's wait of 0 s)."""
    return {k: record.get(k) for k, floor in floors.items()
            if not isinstance(record.get(k), int | float) or record[k] < floor}


def describe_bounds(kind: str, bounds: Mapping[str, float], floors: Mapping[str, float] | None = None) -> str:
    limits = [*(f'{k} >= {v:g}' for k, v in (floors or {}).items()), *(f'{k} <= {v:g}' for k, v in bounds.items())]
    return f"{kind} with {', '.join(limits)}"


def series_problems(records: Sequence[dict[str, Any]], at_least: int, bounds: Mapping[str, float],
                    growing: str | None, floors: Mapping[str, float] | None = None) -> list[str]:
    """What is wrong with a series of matching records (e.g. one `error {where: sync, retryInS}` per failed sync,
    a backoff): fewer than `at_least`, any record over `bounds` or under `floors`, or the `growing` field
    shrinking from one record to the next (a backoff that grows, or at least never shortens; a retry at once,
    0 s every time, never shrinks either: only a floor tells it from a backoff)."""
    problems = []
    if len(records) < at_least:
        problems.append(f"{len(records)} matching record(s), expected at least {at_least}")
    over = [str(i) for i, record in enumerate(records, start=1) if over_bounds(record, bounds)]
    if over:
        problems.append(f"record(s) {', '.join(over)} of {len(records)} over the bounds")
    under = [str(i) for i, record in enumerate(records, start=1) if under_bounds(record, floors or {})]
    if under:
        problems.append(f"record(s) {', '.join(under)} of {len(records)} under the bounds")
    if growing is not None:
        values = [record.get(growing) for record in records]
        if not all(isinstance(v, int | float) for v in values):
            problems.append(f"record(s) without a number in {growing}")
        else:
            shrank = [f"{values[i - 1]:g} then {values[i]:g}" for i in range(1, len(values))
                      if values[i] < values[i - 1]]
            if shrank:
                problems.append(f"{growing} shrank: {'; '.join(shrank)}")
    return problems


@dataclass(frozen=True)
class TracedSends:
    """What the bot's trace says it sent: the events' ids (each once, in trace order), the preview sends it
    started and has not yet ended (their requestIds: an edit still on its way), and how many sends it recorded
    without an event id (nothing to wait for by id)."""

    ids: tuple[str, ...]
    in_flight: tuple[str, ...]
    unnamed: int


def traced_sends(records: Iterable[dict[str, Any]]) -> TracedSends:
    """The events a bot says it sent: `reply.sent` (eventId), `reply.parts` (parts) and a `preview.edit.end` that
    says ok (eventId: the draft, or the edit's own event); a `preview.edit.start` stays in flight until the
    `preview.edit.end` with its requestId, or until the bot starts again (`start`; `ready` when it traces no
    `start`). A start without a requestId, or a send recorded as done without an event id, is unnamed."""
    ids: dict[str, None] = {}
    started: dict[str, None] = {}
    unnamed = 0
    starts = False
    for record in records:
        kind = record.get("type")
        # A new process of the bot: the sends its previous one began never end. `start` says so; `ready` only for
        # a bot that never traces `start`, since the format does not make `ready` once per process (a bot may
        # trace it again after a reconnect, with an edit still on its way).
        if kind == "start" or (kind == "ready" and not starts):
            starts = starts or kind == "start"
            started.clear()
            continue
        if kind == "preview.edit.start":
            request = record.get("requestId")
            if isinstance(request, str):
                started[request] = None
            else:
                unnamed += 1
            continue
        if kind == "preview.edit.end":
            started.pop(str(record.get("requestId")), None)
            if not record.get("ok"):
                continue  # a send that failed: no event to wait for
        elif kind == "reply.parts":
            parts = record.get("parts")
            if isinstance(parts, list):
                ids.update((part, None) for part in parts if isinstance(part, str) and part)
            continue
        elif kind != "reply.sent":
            continue
        event_id = record.get("eventId")
        if isinstance(event_id, str) and event_id:
            ids[event_id] = None
        else:
            unnamed += 1
    return TracedSends(tuple(ids), tuple(started), unnamed)
