"""Push fault rules (`target: push`, qa.harness.fault_rules): which transaction pushed to an application-service bot
a rule acts on, and the hit it leaves. Pure: no I/O; the harness's endpoint (qa.homeserver.appservice_host) delays
or redelivers what `PushFaults.decide` chose.

A push rule matches a transaction (one scenario's share of a homeserver push) carrying at least one event of its
`event_type` whose `content.body` its `body` regex searches (either optional); like a client rule, it counts every
transaction it matches from the moment it is installed, and acts on its `nth` for `count` (`all`). The first rule
in order that covers a transaction acts on it; the others still count it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qa.harness.fault_rules import FaultRule, choose_rule
from qa.kernel.errors import ConfigError

TRANSACTION_PATH = "/_matrix/app/v1/transactions/"


def event_matches(rule: FaultRule, event: Any) -> bool:
    """Whether one pushed event is of the rule's type and its body matches the rule's `body`."""
    if not isinstance(event, Mapping):
        return False
    if rule.event_type is not None and event.get("type") != rule.event_type:
        return False
    if rule.body is None:
        return True
    content = event.get("content")
    text = content.get("body") if isinstance(content, Mapping) else None
    return isinstance(text, str) and rule.body.search(text) is not None


def push_matches(rule: FaultRule, events: Sequence[Any]) -> bool:
    """Whether a push rule matches a transaction: one of its events does (a client rule matches none)."""
    return rule.target == "push" and any(event_matches(rule, e) for e in events)


@dataclass
class PushFaults:
    """One scenario's push rules and how many transactions each has matched; `decide` picks the one that acts."""

    rules: list[FaultRule] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    # Each set of push rules: when (monotonic ms), by what, and what the rules do (fault-hits.json).
    installed: list[dict[str, Any]] = field(default_factory=list)
    # A `body` pattern that ran out of time on a pushed body: the rule is taken as not matching, and said here.
    problems: list[str] = field(default_factory=list)

    def install(self, rules: Sequence[FaultRule], why: str, at: float) -> None:
        """Replace the push rules (client rules are the fault proxy's); counting starts afresh."""
        self.rules = [r for r in rules if r.target == "push"]
        self.seen = {}
        self.installed.append({"at": round(at, 1), "by": why,
                               "rules": [{"name": r.name, "what": r.describe()} for r in self.rules]})

    def decide(self, events: Sequence[Any]) -> tuple[FaultRule, int] | None:
        """The rule acting on this transaction and its occurrence number for that rule, or None to deliver it as
        it is."""
        return choose_rule(self.rules, self.seen, lambda rule: self._matches(rule, events))

    def _matches(self, rule: FaultRule, events: Sequence[Any]) -> bool:
        try:
            return push_matches(rule, events)
        except ConfigError as exc:  # a pathological `body` pattern: bounded, reported, never a crash
            self.problems.append(f"fault rule {rule.name!r}: {exc}")
            return False

    @staticmethod
    def hit(rule: FaultRule, occurrence: int, txn_id: str, started_at: float) -> dict[str, Any]:
        """A hit in the fault proxy's shape (Faults served, fault-hits.json): the transaction as a PUT to the bot;
        the endpoint fills in `status` (the bot's answer to a redelivery) and `endedAt`."""
        return {"rule": rule.name, "occurrence": occurrence, "action": rule.action, "method": "PUT",
                "path": TRANSACTION_PATH + txn_id, "status": None, "startedAt": round(started_at, 1),
                "endedAt": None, "what": rule.describe()}
