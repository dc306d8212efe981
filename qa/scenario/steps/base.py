"""What every step kind is: the base class a family module's step derives from, and the vocabulary of
references (which earlier step, actor or room a step names) the scenario check reads from it.

A step kind is one class: its YAML fields (pydantic), class attributes that say what it is to the rest of
the harness (its kind name, what its `id` names, what it needs of the bot, whether it stops or starts the
bot, uses the fault proxy or must run alone), methods that list its references, and `run(ctx)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from qa.harness.capabilities import Capability
from qa.scenario.fields import BOT, Model

if TYPE_CHECKING:
    from qa.harness.fault_rules import FaultRule
    from qa.scenario.context import ScenarioContext

DEFAULT_STEP_TIMEOUT_S = 30.0

# Kinds of event a step id can name; a reference says which kinds it accepts.
SENT = "sent"  # a message a test actor sent (send)
REPLY = "reply"  # a bot message observed by expect_reply
REACTION = "reaction"  # a reaction a test actor sent (react)
REDACTION = "redaction"  # a redaction a test actor sent (redact)
MESSAGES = frozenset({SENT, REPLY})
# What the bot can be expected not to answer: anything that lands in the room, its own replies included.
SILENCE_TARGETS = frozenset({SENT, REPLY, REACTION, REDACTION})
KIND_WORDS = {SENT: "a sent message", REPLY: "an observed reply", REACTION: "a reaction",
              REDACTION: "a redaction"}

Loc = tuple[str | int, ...]
# (where inside the step, as written in YAML; the message; the offending value)
Problem = tuple[Loc, str, Any]


class StepRef(NamedTuple):
    """A step's reference to the id an earlier step gave its event."""

    loc: tuple[str, ...]  # field path inside the step, as written in YAML
    target: str
    accepts: frozenset[str]
    same_room: bool  # the target must be in the step's room (threads and replies don't cross rooms)


class ActorUse(NamedTuple):
    loc: tuple[str | int, ...]
    name: str
    bot_allowed: bool
    must_be_member: bool  # the actor acts in (or watches) the step's room, so must have joined it


@dataclass
class Scan:
    """What a step's own cross-check sees: the scenario's declarations, and what the steps before it did."""

    rooms: dict[str, Any]
    actors: list[str]
    bot_down: bool = False  # between a step that stops the bot and the next that starts it
    devices: set[str] = field(default_factory=set)  # actor.device names that earlier steps logged in

    def unknown_actor(self, name: str) -> str:
        declared = ", ".join(dict.fromkeys(a for a in self.actors if a != BOT))
        return f"unknown actor {name!r} (declared actors: {declared}; add it to `actors`)"

    def unknown_room(self, name: str) -> str:
        return f"unknown room {name!r} (declared rooms: {', '.join(self.rooms)})"


def opt_ref(loc: str, target: str | None, accepts: frozenset[str], same_room: bool = True) -> list[StepRef]:
    return [] if target is None else [StepRef((loc,), target, accepts, same_room)]


def mention_use(loc: tuple[str, ...], name: str | None) -> list[ActorUse]:
    return [] if name is None else [ActorUse(loc, name, bot_allowed=True, must_be_member=False)]


class StepBase(Model):
    """One step kind. Subclasses set `kind` (the YAML key) and `does` (its row in docs/scenarios.md)."""

    kind: ClassVar[str]
    does: ClassVar[str]
    # Which kind of event this step's `id` names, for steps that can have one.
    defines_kind: ClassVar[str | None] = None
    # What the bot must be able to do for this step, whatever its fields say (qa.harness.capabilities).
    capabilities: ClassVar[tuple[Capability, ...]] = ()
    stops_bot: ClassVar[bool] = False  # leaves the bot down until a step that starts it
    starts_bot: ClassVar[bool] = False  # the bot runs after it
    # Waits for the bot's readiness and watches its exit itself, so the runner's watch must not race it.
    owns_bot_start: ClassVar[bool] = False
    uses_fault_proxy: ClassVar[bool] = False  # the scenario's bot reaches the homeserver through a fault proxy
    # Touches what other scenarios depend on (the shared homeserver), so its scenario never overlaps another.
    runs_alone: ClassVar[bool] = False
    # Judges the peer bot too (qa.harness.peer): its scenario must name one (`peer_bot:`).
    needs_peer: ClassVar[bool] = False

    def defined_id(self) -> str | None:
        return getattr(self, "id", None) if self.defines_kind else None

    def refs(self) -> list[StepRef]:
        return []

    def actor_uses(self) -> list[ActorUse]:
        return []

    def own_room(self) -> str | None:
        """The room the step names itself; None when it follows from what it refers to."""
        return None

    def room_anchor(self) -> str | None:
        """The step id whose room this step happens in, when the step doesn't name a room."""
        return getattr(self, "to", None)

    def timeouts(self) -> list[tuple[tuple[str, ...], float]]:
        timeout = getattr(self, "timeout", None)
        return [(("timeout",), timeout)] if timeout is not None else []

    def needs(self) -> list[tuple[Capability, str | None]]:
        """(capability, why beyond the step's name) for what this step, as written, needs of the bot."""
        return [(c, None) for c in self.capabilities] + ([("threads", None)] if getattr(self, "thread", None) else [])

    def answered(self) -> str | None:
        """The id of a message this step expects the bot to answer: its text must be one the bot can answer (a
        say-able prompt, or a bot with a model; Scenario.implied_needs)."""
        return None

    def state_mutations(self) -> list[str]:
        """Named state mutations of the bot file this step runs."""
        return []

    def bot_accounts(self) -> list[str]:
        """Names of the bot's accounts (a bot file's `accounts`) this step names, e.g. `from:` of expect_reply."""
        return []

    def media_fixtures(self) -> list[tuple[tuple[str, ...], str]]:
        """(field, file name) of each file under fixtures/media/ the step sends, so `validate` can look."""
        return []

    def provider_holds(self) -> list[tuple[tuple[str, ...], str]]:
        """(field, hold name) of each mock-provider hold (a rule's `hold: NAME`) the step names, so `validate` can
        look for it in the scenario's rule files."""
        return []

    def declared_fault_rules(self) -> list[FaultRule]:
        """Fault rules this step installs from here on."""
        return []

    def fault_problems(self, known: dict[str, FaultRule]) -> Iterator[Problem]:
        """What is wrong with the fault rules this step installs or names; `known` holds the rules so far, by
        name (a step that installs rules adds its own)."""
        return iter(())

    def check(self, scan: Scan) -> Iterator[Problem]:
        """This kind's own cross-checks against the scenario so far (what it adds, e.g. a device, it records in
        `scan`); the scenario check reads `stops_bot`/`starts_bot` itself after it."""
        return iter(())

    def declared_wait_s(self) -> float:
        """The step's own timeout, or the default: what the scenario gives it."""
        value = getattr(self, "timeout", None)
        return float(value) if value else DEFAULT_STEP_TIMEOUT_S

    def wait_s(self, ctx: ScenarioContext) -> float:
        """How long the step may wait for what it looks for: its timeout, cut to --step-timeout-cap when the run
        has one. Only for waits a passing step ends early (something it looks for came); a window a passing step
        waits out to its end (expect_no_reply's watch after the control) takes declared_wait_s, so the cap never
        shortens a negative check."""
        declared = self.declared_wait_s()
        cap = ctx.step_timeout_cap_s
        return declared if cap is None else min(declared, cap)

    async def run(self, ctx: ScenarioContext) -> str:
        """Act and check through real clients: a one-line detail for the report, or StepFailed with evidence."""
        raise NotImplementedError(f"step kind {self.kind} has no run()")


class InRoom(StepBase):
    """A step that names its room itself (its `room:` field), rather than following what it refers to. Each
    subclass declares `room` in its own place: error messages list a step's fields in declaration order."""

    def own_room(self) -> str | None:
        return str(getattr(self, "room"))  # noqa: B009 - the field is the subclass's, not declared here

    def room_anchor(self) -> str | None:
        return None
