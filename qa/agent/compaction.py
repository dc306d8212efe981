"""Transcript compaction: fold the older turns of a long transcript into one `summary` record.

Pure planning and rewriting. The I/O lives elsewhere: the summary's model call, outside the lock, in
qa.agent.post_turn; the brief hold and the atomic replace in qa.agent.transcript. The protocol, and why it is safe:

  1. plan      read the transcript with no lock; `plan_compaction` picks a prefix (every record with
               seq <= cut_seq) once the transcript passes `maxRecords` or `maxBytes`, keeping the newest
               `keepRecords` records as they are;
  2. summarise model I/O with no lock held (the summary may come from the model);
  3. rewrite   under a brief hold: read again, `rewrite_bytes` puts the summary in place of exactly the
               planned prefix (compared as bytes) and keeps every later line, including any that landed during
               step 2; the caller writes that aside and renames it over the transcript.
A record that lands during step 2 is appended after the prefix, so step 3 keeps it (not lost); the prefix is
replaced by seq, never re-appended (not duplicated). If the prefix changed meanwhile (another compaction),
`rewrite_bytes` returns None and nothing is written.

The prefix never splits a turn that is still open: it ends before the first `user` record whose event has no
claim (assistant / failed / skipped) inside the prefix, because the fence and the restart resume read those
records. What the folded records proved is carried in the summary record: the user events it saw (dedupe on
restart) and the claims (the fence's rule (a)), so folding never lets an answered message be answered again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Kinds by which an attempt claims an inbound event as handled (qa.agent.transcript.CLAIM_KINDS is this set).
CLAIMS = frozenset({"assistant", "failed", "skipped"})
# How much of each folded record the summary prompt (and the local summary) sees.
_LINE_CHARS = 300


@dataclass(frozen=True)
class CompactionLimits:
    max_records: int = 400
    max_bytes: int = 1_000_000
    keep_records: int = 40


@dataclass(frozen=True)
class CompactionPlan:
    cut_seq: int
    folded: tuple[Mapping[str, Any], ...]
    reason: str  # why now: "records" or "bytes"
    last_seq: int  # the newest record's seq when planned: anything above it landed meanwhile


def _seq(record: Mapping[str, Any]) -> int | None:
    seq = record.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def over_limit(count: int, size_bytes: int, limits: CompactionLimits) -> str | None:
    if count > limits.max_records:
        return "records"
    if size_bytes > limits.max_bytes:
        return "bytes"
    return None


def plan_compaction(
    records: Sequence[Mapping[str, Any]], size_bytes: int, limits: CompactionLimits
) -> CompactionPlan | None:
    """Which prefix to fold, or None when the transcript is within its limits or nothing can be folded."""
    reason = over_limit(len(records), size_bytes, limits)
    if reason is None:
        return None
    # A record without a seq cannot be matched again under the hold; fold only up to the first one.
    candidates: list[Mapping[str, Any]] = []
    for record in records[: max(0, len(records) - limits.keep_records)]:
        if _seq(record) is None:
            break
        candidates.append(record)
    prefix = _closed_turns(candidates)
    # Folding only the previous summary would rewrite the file for nothing.
    if len(prefix) < 2:
        return None
    last = max((s for r in records if (s := _seq(r)) is not None), default=0)
    cut = max(s for r in prefix if (s := _seq(r)) is not None)
    return CompactionPlan(cut_seq=cut, folded=tuple(prefix), reason=reason, last_seq=last)


def _closed_turns(candidates: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The longest start of `candidates` in which every user record's event is claimed within it."""
    claimed = {str(r.get("eventId")) for r in candidates if r.get("kind") in CLAIMS and r.get("eventId")}
    for index, record in enumerate(candidates):
        if record.get("kind") == "user" and str(record.get("eventId")) not in claimed:
            return list(candidates[:index])
    return list(candidates)


def summary_prompt(folded: Sequence[Mapping[str, Any]]) -> str:
    """The user message asking the model for the summary: the folded conversation as plain lines."""
    lines = [_line(r) for r in folded]
    body = "\n".join(line for line in lines if line)
    return (
        "Summarize the earlier conversation below in a few sentences. Keep every fact, name, number and "
        f"instruction a later answer may need.\n\n{body}"
    )


def local_summary(folded: Sequence[Mapping[str, Any]]) -> str:
    """A summary without the model: the folded lines themselves, each cut short."""
    return "\n".join(line for line in (_line(r) for r in folded) if line)


def _line(record: Mapping[str, Any]) -> str:
    kind = record.get("kind")
    content = record.get("content")
    if kind == "summary" and isinstance(content, Mapping):
        text = str(content.get("text", ""))
        return f"earlier: {text[:_LINE_CHARS * 4]}"
    if kind in ("user", "assistant", "notice", "memory"):
        return f"{kind}: {str(content)[:_LINE_CHARS]}"
    return ""


def summary_content(folded: Sequence[Mapping[str, Any]], text: str) -> dict[str, Any]:
    """The summary record's content: the text, and what the folded records proved (events seen, claims)."""
    events: list[str] = []
    claims: dict[str, list[str]] = {}
    for record in folded:
        if record.get("kind") == "summary" and isinstance(record.get("content"), Mapping):
            previous = record["content"]
            events.extend(str(e) for e in previous.get("events", []) if isinstance(e, str))
            for event, attempts in (previous.get("claims") or {}).items():
                claims.setdefault(str(event), []).extend(str(a) for a in attempts)
            continue
        event = record.get("eventId")
        if not isinstance(event, str):
            continue
        if record.get("kind") == "user":
            events.append(event)
        elif record.get("kind") in CLAIMS:
            claims.setdefault(event, []).append(str(record.get("attempt")))
    seqs = [s for r in folded if (s := _seq(r)) is not None]
    return {
        "text": text,
        "folded": len(folded),
        "fromSeq": min(seqs, default=0),
        "toSeq": max(seqs, default=0),
        "events": list(dict.fromkeys(events)),
        "claims": {event: sorted(set(attempts)) for event, attempts in claims.items()},
    }


def rewrite_bytes(current: bytes, prefix: bytes, summary_line: bytes) -> bytes | None:
    """The compacted file: `summary_line` in place of the planned prefix, every later byte kept as it is. None
    when the file no longer starts with exactly the planned prefix (another compaction rewrote it)."""
    if not prefix or not current.startswith(prefix):
        return None
    return summary_line + current[len(prefix):]


def landed_after(tail: Sequence[Mapping[str, Any]], plan: CompactionPlan) -> int:
    """How many of the kept records arrived after the plan was made (they must survive the rewrite)."""
    return sum(1 for r in tail if (_seq(r) or 0) > plan.last_seq)
