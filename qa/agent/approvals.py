"""Exec approvals: what the request says, how it is split into messages, and how reactions decide it.

Pure: the Matrix side posts what `build_request_messages` returns and feeds reactions to `ApprovalState`.

Wire shape (content key `org.matrix_qa.approval`, on the FIRST chunk only):
  request     {version: 1, type: "approval.request", kind: "exec", id, state: "pending", command,
               allowedDecisions: ["allow-once", "deny"], expiresAt}
  resolution  {version: 1, type: "approval.resolution", kind: "exec", id, state: approved|denied|expired,
               decidedBy?, requestEventId}
Option reactions and decisions target the first event; later chunks carry the rest of the text only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

METADATA_KEY = "org.matrix_qa.approval"
ALLOW = "✅"
DENY = "❌"
DECISIONS = {ALLOW: "allow-once", DENY: "deny"}
OUTCOME_BY_DECISION = {"allow-once": "approved", "deny": "denied"}

Outcome = Literal["pending", "approved", "denied", "expired"]


def request_text(command: str, approval_id: str) -> str:
    return (
        f"Approval needed ({approval_id}): the assistant wants to run this command:\n{command}\n"
        f"React {ALLOW} to allow it once or {DENY} to deny it."
    )


def chunk_text(text: str, limit: int) -> list[str]:
    """Split on line or word boundaries where possible, never producing a chunk longer than `limit`."""
    if limit <= 0:
        raise ValueError("chunk limit must be positive")
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut])
        rest = rest[cut:].lstrip("\n ") if rest[cut:cut + 1] in ("\n", " ") else rest[cut:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def request_metadata(approval_id: str, command: str, expires_at: datetime) -> dict[str, Any]:
    return {
        "version": 1,
        "type": "approval.request",
        "kind": "exec",
        "id": approval_id,
        "state": "pending",
        "command": command,
        "allowedDecisions": ["allow-once", "deny"],
        "expiresAt": expires_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def build_request_messages(
    approval_id: str, command: str, limit: int, now: datetime, timeout_s: float
) -> list[dict[str, Any]]:
    """Message contents to post, in order; metadata rides on the first one only."""
    expires = now + timedelta(seconds=timeout_s)
    contents: list[dict[str, Any]] = []
    for index, chunk in enumerate(chunk_text(request_text(command, approval_id), limit)):
        content: dict[str, Any] = {"msgtype": "m.notice", "body": chunk, "m.mentions": {}}
        if index == 0:
            content[METADATA_KEY] = request_metadata(approval_id, command, expires)
        contents.append(content)
    return contents


def resolution_content(
    approval_id: str, outcome: Outcome, request_event_id: str, decided_by: str | None
) -> dict[str, Any]:
    # The other outcomes read as themselves ("Approval ap-1 denied by @x.").
    words = {"expired": "expired without a decision"}
    meta: dict[str, Any] = {
        "version": 1, "type": "approval.resolution", "kind": "exec", "id": approval_id,
        "state": outcome, "requestEventId": request_event_id,
    }
    if decided_by:
        meta["decidedBy"] = decided_by
    by = f" by {decided_by}" if decided_by else ""
    return {"msgtype": "m.notice", "body": f"Approval {approval_id} {words.get(outcome, outcome)}{by}.",
            "m.mentions": {}, METADATA_KEY: meta}


@dataclass
class ApprovalState:
    """One pending request. `offer` is called for every reaction on its first event."""

    approval_id: str
    request_event_id: str
    allowed: frozenset[str] | None  # None: anyone but the bot may decide
    bot_user_id: str
    outcome: Outcome = "pending"
    decided_by: str | None = None
    ignored: list[tuple[str, str, str]] = field(default_factory=list)  # (sender, key, why)

    def offer(self, sender: str, key: str, target: str) -> bool:
        """Returns True when this reaction decided the request."""
        if self.outcome != "pending" or target != self.request_event_id:
            return False
        if sender == self.bot_user_id:
            return False  # our own option reactions
        if key not in DECISIONS:
            self.ignored.append((sender, key, "not-a-decision"))
            return False
        if self.allowed is not None and sender not in self.allowed:
            self.ignored.append((sender, key, "sender-not-allowed"))
            return False
        self.outcome = OUTCOME_BY_DECISION[DECISIONS[key]]  # type: ignore[assignment]
        self.decided_by = sender
        return True

    def expire(self) -> None:
        if self.outcome == "pending":
            self.outcome = "expired"

    def tool_result(self, output: str | None = None) -> str:
        if self.outcome == "approved":
            return output if output is not None else ""
        if self.outcome == "denied":
            return f"The user denied running this command (approval {self.approval_id}); it was not run."
        return f"Nobody approved this command in time (approval {self.approval_id}); it was not run."
