"""Homeserver fault rules: what the fault proxy does to which of the bot's requests. Pure: no I/O.

A scenario's `faults:` block (and the `set_faults` step) is a list of rules, tried in order; the first rule
whose match holds *and* whose occurrence window includes this request acts on it:

    faults:
      - name: reply-429                      # unique within the list; names the hits in the report
        method: PUT                          # optional; any method when absent
        path: "/send/m\\.room\\.message/"    # re.search on the request path (never the query string)
        nth: 1                               # the first matching request this rule acts on (1 = the first)
        count: 2                             # how many consecutive matching requests from nth on ("all": every one)
        status: 429                          # answer instead of the homeserver, with a Matrix error body
        errcode: M_LIMIT_EXCEEDED
        retry_after_ms: 300                  # in the body, and as a Retry-After header (rounded up to seconds)
      - {name: slow, path: "/sync", delay_ms: 500}             # forward after a delay
      - {name: cut, path: "/sync", drop: before}               # close the connection, never forwarded
      - {name: lost, path: "/send/", drop: after}              # forwarded, then the answer is lost
      - {name: stall, path: "/sync", stall_ms: 3000}           # say nothing for 3 s, then close
      - {name: silent, path: "/sync", hold_ms: 60000}          # say nothing, keep it open (no answer, no
                                                               # error) until the client gives up, the rules
                                                               # change, or 60 s pass; then forward it
      - {name: legacy-media, path: "^/_matrix/media/v3/download/",     # forward to another path: the match
         rewrite_to: "/_matrix/client/v1/media/download/"}             # replaced (plays an older server)
      - {name: late-type, path: "/sync$", hold_to_device: m.room.encrypted}
        # forwarded, but the answer's to-device events of that type are kept back until new rules are set;
        # then the next /sync answer carries them
      - {name: late-key, path: "/sync$", hold_to_device: m.room_key}
        # the same for room keys only: a room key travels Olm-encrypted (m.room.encrypted, its type hidden),
        # so the proxy knows one by its ciphertext, which the test user's client reported when it shared a
        # Megolm session (qa.actors); any other Olm message (a key request, a dummy) goes through

Every rule counts every request its method and path match, from the moment it is installed, whether or not
an earlier rule acted on that request: `nth` is about the requests the rule matches, not the ones it hit.

`target: push` rules act instead on the transactions the homeserver pushes to an application-service bot (bot
file `appservice:`), in the harness's endpoint (qa.homeserver.appservice_host; matching: qa.harness.push_faults):

      - {name: again, target: push, event_type: m.room.message, redeliver: 2}  # after the bot's 200, PUT the
                                                               # same transaction (same id, same body) twice more
      - {name: late, target: push, body: "slow push", delay_ms: 1500}         # hold it 1.5 s, then forward it

A push rule matches a transaction carrying an event of `event_type` whose `content.body` `body` searches (each
optional), counted with `nth`/`count` like a client rule. The field is `target`, not `on`: YAML 1.1 reads an
unquoted `on` as the boolean true, so `on: push` would reach the model as `{True: "push"}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from qa.patterns import Regex
from qa.shared.olm import olm_bodies

# A stall with no end would wait out the scenario; the proxy's teardown is bounded by this too.
MAX_STALL_MS = 120_000
# Matrix's own error codes for the statuses scenarios use; another status needs an explicit errcode.
# What a rule can do to a request: exactly one per rule.
ACTIONS = ("delay_ms", "status", "drop", "stall_ms", "hold_ms", "rewrite_to", "hold_to_device")
PUSH_ACTIONS = ("delay_ms", "redeliver")
# Fields only a client rule (a request of the bot's) or only a push rule (a transaction to the bot) can use.
CLIENT_ONLY = ("method", "path", "status", "errcode", "error", "retry_after_ms", "drop", "stall_ms", "hold_ms",
               "rewrite_to", "hold_to_device")
PUSH_ONLY = ("redeliver", "event_type", "body")
MAX_REDELIVER = 10
DEFAULT_ERRCODES = {400: "M_BAD_JSON", 401: "M_UNKNOWN_TOKEN", 403: "M_FORBIDDEN", 404: "M_NOT_FOUND",
                    429: "M_LIMIT_EXCEEDED"}



class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    # Before every field whose validator reads it: pydantic validates fields in the order they are declared.
    target: Literal["client", "push"] = "client"
    method: Literal["GET", "PUT", "POST", "DELETE", "OPTIONS"] | None = None
    path: Regex | None = None  # a client rule's; required there
    nth: int = Field(1, ge=1)
    count: int | Literal["all"] = 1
    delay_ms: int | None = Field(None, gt=0, le=MAX_STALL_MS)
    status: int | None = Field(None, ge=400, le=599)
    errcode: str | None = Field(None, pattern=r"^M_[A-Z_]+$")
    error: str | None = None
    retry_after_ms: int | None = Field(None, ge=0)
    drop: Literal["before", "after"] | None = None
    stall_ms: int | None = Field(None, gt=0, le=MAX_STALL_MS)
    hold_ms: int | None = Field(None, gt=0, le=MAX_STALL_MS)
    rewrite_to: str | None = Field(None, pattern=r"^/")
    hold_to_device: str | None = Field(None, pattern=r"^[a-z][a-z0-9_.]*$")
    # target: push only: PUT the same transaction this many more times after the bot's 200; which transactions.
    redeliver: int | None = Field(None, ge=1, le=MAX_REDELIVER)
    event_type: str | None = Field(None, pattern=r"^[a-z][a-z0-9_.]*$")
    body: Regex | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and True in data:
            raise ValueError("`on` is read as YAML's boolean true: write `target: push` (or `target: client`)")
        return data

    @field_validator(*CLIENT_ONLY)
    @classmethod
    def _client_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("target") == "push":
            raise ValueError(f"{info.field_name} is for a client rule; a push rule (target: push) takes "
                             f"{' or '.join(PUSH_ACTIONS)}, matched by event_type, body, nth and count")
        return value

    @field_validator(*PUSH_ONLY)
    @classmethod
    def _push_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("target", "client") != "push":
            raise ValueError(f"{info.field_name} is for a push rule: give the rule `target: push` (the "
                             "homeserver's transactions to an application-service bot)")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> FaultRule:
        if isinstance(self.count, int) and self.count < 1:
            raise ValueError("count must be at least 1 (or \"all\")")
        if self.target == "push":
            self._one_of(PUSH_ACTIONS, "a push fault rule")
            return self
        if self.path is None:
            raise ValueError("a client fault rule needs `path` (a regex on the bot's request path)")
        self._one_of(ACTIONS, "a fault rule")
        if self.status is None and (self.errcode or self.error or self.retry_after_ms is not None):
            raise ValueError("errcode, error and retry_after_ms belong to a `status` rule")
        if self.status is not None and self.errcode is None and self.status not in DEFAULT_ERRCODES \
                and self.status < 500:
            raise ValueError(f"status {self.status} has no default Matrix errcode; give `errcode`")
        return self

    def _one_of(self, actions: tuple[str, ...], what: str) -> None:
        found = [n for n in actions if getattr(self, n) is not None]
        if len(found) != 1:
            raise ValueError(f"{what} needs exactly one of {', '.join(actions)} (found: {', '.join(found) or 'none'})")

    def matches(self, method: str, path: str) -> bool:
        """Whether a client rule matches a request of the bot's (a push rule matches none)."""
        return self.path is not None and (self.method is None or self.method == method.upper()) \
            and self.path.search(path) is not None

    def rewritten(self, path: str) -> str:
        """The path a `rewrite_to` rule forwards this request to: its first match replaced, literally."""
        assert self.rewrite_to is not None and self.path is not None
        found = self.path.search(path)
        return path if found is None else path[:found.start()] + self.rewrite_to + path[found.end():]

    def covers(self, occurrence: int) -> bool:
        """Whether the rule acts on its `occurrence`-th matching request (1-based)."""
        if occurrence < self.nth:
            return False
        return self.count == "all" or occurrence < self.nth + self.count

    @property
    def action(self) -> str:
        if self.redeliver is not None:
            return "redeliver"
        if self.status is not None:
            return "status"
        if self.drop is not None:
            return f"drop-{self.drop}"
        if self.hold_ms is not None:
            return "hold"
        if self.rewrite_to is not None:
            return "rewrite"
        if self.hold_to_device is not None:
            return "hold-to-device"
        return "delay" if self.delay_ms is not None else "stall"

    def error_body(self) -> dict[str, Any]:
        assert self.status is not None
        code = self.errcode or DEFAULT_ERRCODES.get(self.status, "M_UNKNOWN")
        body: dict[str, Any] = {"errcode": code, "error": self.error or f"matrix-qa fault {self.name!r}"}
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        return body

    def headers(self) -> dict[str, str]:
        if self.retry_after_ms is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after_ms / 1000))}

    def which(self) -> str:
        """The occurrences it acts on: `#2`, `#2-#3`, `#2+`."""
        return f"#{self.nth}" + ("+" if self.count == "all" else (f"-#{self.nth + self.count - 1}"
                                                                  if self.count > 1 else ""))

    def describe(self) -> str:
        """One line for the report: what the rule does."""
        if self.target == "push":
            return push_description(self)
        if self.status is not None:
            body = self.error_body()
            after = f" retry_after_ms={self.retry_after_ms}" if self.retry_after_ms is not None else ""
            what = f"{self.status} {body['errcode']}{after}"
        elif self.drop is not None:
            what = "connection dropped " + ("before forwarding" if self.drop == "before" else "after forwarding")
        elif self.delay_ms is not None:
            what = f"delayed {self.delay_ms} ms"
        elif self.hold_ms is not None:
            what = f"held open with no answer (up to {self.hold_ms} ms, until the client gives up or a release)"
        elif self.rewrite_to is not None:
            what = f"forwarded as {self.rewrite_to}…"
        elif self.hold_to_device == ROOM_KEY:
            what = "to-device room keys the test users shared kept back until released"
        elif self.hold_to_device is not None:
            what = f"to-device {self.hold_to_device} kept back until released"
        else:
            what = f"stalled {self.stall_ms} ms, then dropped"
        assert self.path is not None  # a client rule has one (_one_action)
        return f"{self.method or 'any'} {self.path.pattern} {self.which()}: {what}"


def push_description(rule: FaultRule) -> str:
    """A push rule in one line: `push m.room.message /slow/ #1: delayed 1500 ms`."""
    match = " ".join([*([rule.event_type] if rule.event_type else []),
                      *([f"/{rule.body.pattern}/"] if rule.body is not None else [])]) or "any"
    what = f"delayed {rule.delay_ms} ms" if rule.delay_ms is not None else \
        f"redelivered {rule.redeliver} more time(s) under the same transaction id after the bot's 200"
    return f"push {match} {rule.which()}: {what}"


# `hold_to_device: m.room_key`: the room keys the test users shared, not every Olm message.
ROOM_KEY = "m.room_key"
OLM_ENVELOPE = "m.room.encrypted"


def is_held(event: Any, event_type: str, room_keys: Collection[str] = ()) -> bool:
    """Whether a to-device event is one a `hold_to_device: event_type` rule keeps back: of that type, or for
    m.room_key an Olm envelope whose ciphertext is one of the `room_keys` shared."""
    if not isinstance(event, dict):
        return False
    if event_type == ROOM_KEY:
        return event.get("type") == OLM_ENVELOPE and not olm_bodies(event.get("content")).isdisjoint(room_keys)
    return event.get("type") == event_type


def take_to_device(body: Any, event_type: str, room_keys: Collection[str] = ()) -> tuple[Any, list[Any]]:
    """A /sync answer without the to-device events a `hold_to_device: event_type` rule keeps back, and those
    events, in order."""
    events = ((body.get("to_device") or {}).get("events") if isinstance(body, dict) else None) or []
    if not isinstance(events, list):
        return body, []
    held = [e for e in events if is_held(e, event_type, room_keys)]
    if not held:
        return body, []
    kept = [e for e in events if not is_held(e, event_type, room_keys)]
    return {**body, "to_device": {**body["to_device"], "events": kept}}, held


def give_to_device(body: Any, events: Sequence[Any]) -> Any:
    """A /sync answer with `events` added to its to-device events, after the ones it had."""
    if not isinstance(body, dict) or not events:
        return body
    to_device = body.get("to_device") if isinstance(body.get("to_device"), dict) else {}
    had = to_device.get("events") if isinstance(to_device.get("events"), list) else []
    return {**body, "to_device": {**to_device, "events": [*had, *events]}}


def check_unique(rules: Sequence[FaultRule]) -> list[tuple[int, str]]:
    """(index, problem) for each rule whose name an earlier rule already used."""
    seen: dict[str, int] = {}
    problems = []
    for i, rule in enumerate(rules):
        if rule.name in seen:
            problems.append((i, f"duplicate fault rule name {rule.name!r} (first used by faults[{seen[rule.name]}])"))
        seen.setdefault(rule.name, i)
    return problems


@dataclass
class FaultState:
    """The installed rules and how many requests each has matched so far; `decide` is the proxy's brain."""

    rules: list[FaultRule] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)

    def install(self, rules: Sequence[FaultRule]) -> None:
        """Replace the rules; counting starts afresh, so `nth` is relative to the moment they were set."""
        self.rules = list(rules)
        self.seen = {}

    def decide(self, method: str, path: str) -> tuple[FaultRule, int] | None:
        """The rule acting on this request and the request's occurrence number for it, or None to forward."""
        return choose_rule(self.rules, self.seen, lambda rule: rule.matches(method, path))


def choose_rule(rules: Sequence[FaultRule], seen: dict[str, int], matches: Callable[[FaultRule], bool],
                ) -> tuple[FaultRule, int] | None:
    """The first rule in order that `matches` and covers its occurrence, with that occurrence number. Every
    matching rule counts the occurrence in `seen` (updated in place), the ones that do not act included, so each
    rule's `nth` counts what it matched (a client request or a pushed transaction) since it was installed."""
    chosen: tuple[FaultRule, int] | None = None
    for rule in rules:
        if not matches(rule):
            continue
        occurrence = seen.get(rule.name, 0) + 1
        seen[rule.name] = occurrence
        if chosen is None and rule.covers(occurrence):
            chosen = (rule, occurrence)
    return chosen


def retry_gaps(hits: Sequence[dict[str, Any]], requests: Sequence[dict[str, Any]], rule: FaultRule | None,
               ) -> list[float | None]:
    """For each hit: ms from the end of its faulty answer to the start of the next request its rule matches
    (None when no such request came, or the hit is still open): whether a client waited as long as it was told."""
    gaps: list[float | None] = []
    for hit in hits:
        if hit.get("endedAt") is None:  # still being answered: nothing can have followed it yet
            gaps.append(None)
            continue
        later = [r for r in requests if r["startedAt"] >= hit["endedAt"]
                 and (rule is None or rule.matches(r["method"], r["path"]))]
        gaps.append(round(min(r["startedAt"] for r in later) - hit["endedAt"], 1) if later else None)
    return gaps
