"""Whether the bot's exec-approval request and its outcome are what a step expects. Pure: over the room
events and trace records the approval steps gather."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from qa.evidence.events import BotIds, is_bot_sender

APPROVAL_KEY = "org.matrix_qa.approval"
REQUIRED_APPROVAL_FIELDS = {"version": 1, "type": "approval.request", "kind": "exec", "state": "pending",
                            "allowedDecisions": ["allow-once", "deny"]}
OPTIONS = ("✅", "❌")  # allow once, deny: the reactions the bot offers and an actor answers with


def decision_key(decision: str) -> str:
    return OPTIONS[0] if decision == "allow-once" else OPTIONS[1]


def request_or_turn_over(record: dict[str, Any], attempts: set[str]) -> bool:
    """The bot's approval request for one of `attempts`, or the end of such a turn: a turn that ended without
    asking never will, so the wait ends on that evidence instead of at its timeout."""
    return record.get("type") in ("approval.request", "turn.end") and record.get("attempt") in attempts


def check_request_metadata(meta: Any, command_contains: str | None) -> list[str]:
    """What is wrong with an approval request's metadata."""
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


def request_problems(first: dict[str, Any], later: Sequence[dict[str, Any]], chunked: bool | None,
                     command_contains: str | None) -> list[str]:
    """A pending request: complete metadata on its first chunk only, and split (or not) as the step says."""
    problems = check_request_metadata((first.get("content") or {}).get(APPROVAL_KEY), command_contains)
    problems += [f"chunk {e['event_id']} carries metadata" for e in later if APPROVAL_KEY in (e.get("content") or {})]
    if chunked is True and not later:
        problems.append("the request was a single event, expected several chunks")
    if chunked is False and later:
        problems.append(f"the request was split into {len(later) + 1} chunks, expected one event")
    return problems


def is_option(event: dict[str, Any], bot_user_id: BotIds, first_id: str, key: str) -> bool:
    """The bot's option reaction `key` on the request's first chunk."""
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    return (event.get("type") == "m.reaction" and is_bot_sender(event.get("sender"), bot_user_id)
            and relates.get("event_id") == first_id and relates.get("key") == key)


def is_outcome(event: dict[str, Any], first_id: str) -> bool:
    """The bot's message that says how the request whose first chunk is `first_id` ended."""
    meta = (event.get("content") or {}).get(APPROVAL_KEY) or {}
    return meta.get("type") == "approval.resolution" and meta.get("requestEventId") == first_id


def commands_run(records: Iterable[dict[str, Any]], approval_id: Any) -> list[dict[str, Any]]:
    """The bot's exec.run records for the command of one approval."""
    return [r for r in records if r.get("type") == "exec.run" and r.get("approvalId") == approval_id]


def outcome_problems(outcome: dict[str, Any], wanted: str, ran: Sequence[str], decided_by: str | None = None
                     ) -> list[str]:
    """What is wrong with how the approval ended; `ran` describes each run of its command; `decided_by`, when
    given, is who must have decided it."""
    meta = outcome["content"][APPROVAL_KEY]
    state = meta.get("state")
    problems = [] if state == wanted else [f"outcome {state!r}, expected {wanted!r}"]
    if decided_by is not None and meta.get("decidedBy") != decided_by:
        problems.append(f"decided by {meta.get('decidedBy')!r}, expected {decided_by!r}")
    if wanted != "approved" and ran:
        problems.append(f"the command ran anyway: {ran[0]}")
    return problems


def exec_file_problems(present_names: Iterable[str], name: str, wanted: bool) -> list[str]:
    """Whether the file a command makes (`touch NAME`) is in the exec directory as the step expects; the
    directory's listing is the evidence, not anything the bot says."""
    names = sorted(present_names)
    if (name in names) == wanted:
        return []
    listing = ", ".join(names) or "nothing"
    if wanted:
        return [f"{name!r} is not in the exec directory (it holds: {listing}): the command never ran there"]
    return [f"{name!r} is in the exec directory: the command ran although the bot said it did not"]


def plain_file_name(name: str) -> str:
    """A file name inside the exec directory: no path, no parent."""
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"must be a plain file name inside the exec directory, not a path: {name!r}")
    return name


def thread_problems(events: Sequence[dict[str, Any]], root_id: str) -> list[str]:
    """Each of the approval's events (its chunks, its outcome) is in the thread on `root_id`."""
    problems = []
    for event in events:
        relates = (event.get("content") or {}).get("m.relates_to") or {}
        if relates.get("rel_type") != "m.thread" or relates.get("event_id") != root_id:
            where = (f"in the thread on {relates.get('event_id')}" if relates.get("rel_type") == "m.thread"
                     else "at the top level")
            problems.append(f"{event.get('event_id')} is {where}, not in the thread on {root_id}")
    return problems
