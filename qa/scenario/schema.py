"""Scenario schema: what a scenario file may say, as pydantic models, and the checks across its parts.

Pure (no file access); the loader turns the errors raised here into file:line messages. Every model forbids
unknown fields, because a misspelt optional field would otherwise be silently ignored and the scenario would
test something other than what its author meant.

Layout of a scenario file, in short:

    id, title, profiles, timeout       profiles: any ^[a-z0-9-]+$ names; every scenario is also in "all";
                                       a scenario without profiles is in every profile
    actors: [driver, …]                test users; "bot" is reserved for the bot under test
    rooms: {main: {encrypted, members}} members default to every actor; the bot is invited unless
                                       invite_bot: false; direct: true makes a DM; bot: {...} per room
    bot: {requireMention, allowBots, …} the bot's config, camelCase like the bot's own config file
    provider: {rules: [...]}           extra mock-provider rule files, relative to the repo root
    requires: [trace, restart, …]      what the bot must be able to do (qa.harness.capabilities)
    faults: [ {name, path, …}, … ]    homeserver faults for the bot, via a fault proxy (qa.harness.fault_rules);
                                       `target: push` ones on the homeserver's pushes to an application service
    peer_bot: NAME                     a second bot process in the bot's rooms (--peer-bot; qa.harness.peer),
                                       known to `bot:` settings by NAME; without a peer the scenario is skipped
    steps: [ {send: {...}}, … ]        each step is a single-key mapping naming its type

Field types live in qa.scenario.fields, the settings (rooms, `bot:`, provider, live) in qa.scenario.settings,
and every step kind in its family module under qa.scenario.steps (the registry builds the `Step` union).

Step fields are snake_case. `as` is a Python keyword, so it is the alias of a field named `actor`. Ids given
by steps such as `send`, `expect_reply` and `react` name events that later steps refer to (`to`, `thread`,
`reply_to`); a reference must point at an earlier step, which the scenario-level check enforces with the
exact field.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails

from qa.harness.capabilities import Capability, say_marker
from qa.harness.fault_rules import FaultRule, check_unique
from qa.scenario.fields import BOT, ActorName, Duration, Model, ProfileName, RoomName, ScenarioId, error
from qa.scenario.fields import parse_duration as parse_duration  # re-exported: qa.run reads --timeout with it
from qa.scenario.settings import BotConfig, LiveSpec, ProviderConfig, RoomSpec, uses_encryption
from qa.scenario.steps.base import KIND_WORDS, SENT, Problem, Scan, StepBase
from qa.scenario.steps.registry import STEP_TYPES, Step

IMPLICIT_PROFILE = "all"
# Informational: profiles are free-form names so a new one needs no code change; these are the ones in use.
KNOWN_PROFILES = ("fast", "all", "approvals", "restart", "e2ee", "slow", "transport", "media", "faults", "lock")
DEFAULT_TIMEOUT_S = 60.0


class Scenario(Model):
    id: ScenarioId
    title: str = Field(min_length=1)
    # None given: in every profile (an author's own scenario runs by default; qa.harness.plan.in_profile).
    profiles: list[ProfileName] = Field(default_factory=list)
    timeout: Duration = DEFAULT_TIMEOUT_S
    actors: list[ActorName] = Field(default_factory=lambda: ["driver"], min_length=1)
    rooms: dict[RoomName, RoomSpec] = Field(default_factory=lambda: {"main": RoomSpec()}, min_length=1)
    bot: BotConfig = Field(default_factory=BotConfig)
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    live: LiveSpec = Field(default_factory=LiveSpec)
    # What the bot under test must be able to do beyond what the steps imply (qa.harness.capabilities); a bot
    # whose bot file lacks one skips the scenario with the reason.
    requires: list[Capability] = Field(default_factory=list)
    # Homeserver faults for the bot's requests (qa.harness.fault_rules), served by a per-scenario fault proxy.
    faults: list[FaultRule] = Field(default_factory=list)
    # A second bot process beside the bot under test, named as `bot:` settings name it (knownBots, allowlist):
    # the run's --peer-bot (qa.harness.peer); a run without one skips the scenario with the reason.
    peer_bot: ActorName | None = None
    steps: list[Step] = Field(min_length=1)

    # Private, so a scenario file cannot set it; the loader passes it through the validation context.
    _source_path: Path | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    def in_profile(self, profile: str) -> bool:
        return profile == IMPLICIT_PROFILE or not self.profiles or profile in self.profiles

    def step_index(self, step_id: str) -> int | None:
        for i, step in enumerate(self.steps):
            if step.defined_id() == step_id:
                return i
        return None

    def implied_needs(self) -> Iterator[tuple[str, str]]:
        """(capability, why) for what the settings and steps need of the bot, beyond `requires:`; the first
        reason for a capability is the one a skip shows (qa.harness.capabilities.needs)."""
        if uses_encryption(self):
            yield "e2ee", "encrypted room"
        for i, rule in enumerate(self.faults):
            if rule.target == "push":
                yield "appservice", f"faults[{i}] target: push"
        yield from self.bot.needs()
        for name, spec in self.rooms.items():
            if spec.bot is not None:
                yield "policy", f"rooms.{name}.bot"
        for index, step in enumerate(self.steps, start=1):
            where = f"step {index} ({step.kind})"
            for capability, why in step.needs():
                yield capability, f"{where}: {why}" if why else where
        yield from self._model_needs()

    def _model_needs(self) -> Iterator[tuple[str, str]]:
        """A model is needed to use the mock's rules, and to answer any message that is not a say-able prompt
        (qa.harness.capabilities.say_marker): a bot with only a `say` template cannot answer it."""
        if self.provider.rules:
            yield "model", "provider.rules"
        prompts: dict[str, int] = {}
        for index, step in enumerate(self.steps, start=1):
            sent = step.defined_id() if step.defines_kind == SENT else None
            if sent and say_marker(getattr(step, "body", None) or "") is None:
                prompts[sent] = index
            answered = step.answered()
            if answered in prompts:
                yield "model", (f"step {index} ({step.kind}): an answer to step {prompts[answered]}, a prompt only "
                                "a model answers (not say-able)")

    def state_mutations(self) -> Iterator[tuple[str, str]]:
        """(mutation name, which step) for every named state mutation of the bot file the steps run."""
        for index, step in enumerate(self.steps, start=1):
            for name in step.state_mutations():
                yield name, f"step {index} ({step.kind})"

    def bot_accounts(self) -> Iterator[tuple[str, str]]:
        """(account name, which step) for every account of the bot's (its bot file's `accounts`) a step names."""
        for index, step in enumerate(self.steps, start=1):
            for name in step.bot_accounts():
                yield name, f"step {index} ({step.kind})"

    @model_validator(mode="after")
    def _cross_check(self, info: ValidationInfo) -> Scenario:
        if isinstance(info.context, dict) and info.context.get("source_path") is not None:
            self._source_path = Path(info.context["source_path"])
        for spec in self.rooms.values():
            if spec.members is None:
                spec.members = [a for a in self.actors if a != BOT]
        problems = list(self._problems())
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=error("reference", msg), loc=loc, input=value) for loc, msg, value in problems],
            )
        return self

    def _problems(self) -> Iterator[Problem]:
        scan = Scan(rooms=dict(self.rooms), actors=list(self.actors))
        actors = set(self.actors)
        seen: set[str] = set()
        for i, name in enumerate(self.actors):
            if name == BOT:
                yield ("actors", i), "'bot' is reserved for the bot under test; it is always present", name
            elif name in seen:
                yield ("actors", i), f"actor {name!r} is listed twice", name
            seen.add(name)

        for room, spec in self.rooms.items():
            for j, member in enumerate(spec.members or []):
                if member == BOT:
                    yield ("rooms", room, "members", j), "the bot is invited to every room; don't list it", member
                elif member not in actors:
                    yield ("rooms", room, "members", j), scan.unknown_actor(member), member

        yield from self._peer_problems(actors)
        # The bot's settings may name the peer bot too: it is a sender the bot sees, like a test user.
        known = actors | ({self.peer_bot} if self.peer_bot else set())
        for field, names in (("knownBots", self.bot.known_bots), ("allowlist", self.bot.allowlist or []),
                             ("autoJoinAllowlist", self.bot.auto_join_allowlist)):
            for j, name in enumerate(names):
                if name not in known:
                    yield ("bot", field, j), scan.unknown_actor(name), name
        for room, spec in self.rooms.items():
            for j, name in enumerate((spec.bot.allowlist if spec.bot else None) or []):
                if name not in known:
                    yield ("rooms", room, "bot", "allowlist", j), scan.unknown_actor(name), name
            if spec.direct and len(spec.members or []) != 1:
                yield ("rooms", room, "direct"), "a direct room is the bot and exactly one member; give it " \
                    f"`members: [one actor]` (has {len(spec.members or [])})", spec.direct

        yield from self._fault_problems()
        yield from self._step_problems(scan)

    def _peer_problems(self, actors: set[str]) -> Iterator[Problem]:
        if self.peer_bot == BOT:
            yield ("peer_bot",), "'bot' is the bot under test; name the peer bot otherwise", self.peer_bot
        elif self.peer_bot in actors:
            yield ("peer_bot",), f"{self.peer_bot!r} is a test user of this scenario; the peer bot is another " \
                "account: name it otherwise", self.peer_bot
        if self.peer_bot is None:
            for i, step in enumerate(self.steps):
                if step.needs_peer:
                    yield ("steps", i, step.kind), "this step judges the peer bot: the scenario needs " \
                        "`peer_bot: NAME`", step.kind

    def _fault_problems(self) -> Iterator[Problem]:
        for i, problem in check_unique(self.faults):
            yield ("faults", i, "name"), problem, self.faults[i].name
        names = {r.name: r for r in self.faults}
        for i, step in enumerate(self.steps):
            for loc, problem, value in step.fault_problems(names):
                yield ("steps", i, step.kind, *loc), problem, value

    def _step_problems(self, scan: Scan) -> Iterator[Problem]:
        first_definition: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            sid = step.defined_id()
            if sid is not None and sid not in first_definition:
                first_definition[sid] = i

        # id -> (kind, room) for ids defined so far; room is None when it could not be worked out.
        defined: dict[str, tuple[str, str | None]] = {}
        for i, step in enumerate(self.steps):
            base: tuple[str | int, ...] = ("steps", i, step.kind)
            for loc, problem, value in step.check(scan):
                yield (*base, *loc), problem, value
            if step.stops_bot:
                scan.bot_down = True
            elif step.starts_bot:
                scan.bot_down = False
            room = step.own_room()
            if room is not None and room not in self.rooms:
                yield (*base, "room"), scan.unknown_room(room), room
                room = None
            anchor = step.room_anchor()
            if room is None and anchor is not None and anchor in defined:
                room = defined[anchor][1]
            yield from self._ref_problems(step, base, room, defined, first_definition)
            yield from self._actor_problems(step, base, room, scan)
            for loc_suffix, seconds in step.timeouts():
                if seconds > self.timeout:
                    yield ((*base, *loc_suffix), f"{seconds:g}s is longer than the scenario timeout "
                           f"({self.timeout:g}s)", seconds)
            sid = step.defined_id()
            if sid is not None:
                if sid in defined:
                    first = first_definition[sid]
                    yield (*base, "id"), f"duplicate step id {sid!r} (first defined by steps[{first}])", sid
                else:
                    defined[sid] = (step.defines_kind or "", room)

    @staticmethod
    def _ref_problems(step: StepBase, base: tuple[str | int, ...], room: str | None,
                      defined: dict[str, tuple[str, str | None]], first_definition: dict[str, int]
                      ) -> Iterator[Problem]:
        for ref in step.refs():
            loc = (*base, *ref.loc)
            if ref.target not in defined:
                later = first_definition.get(ref.target)
                if later is not None:
                    msg = (
                        f"step id {ref.target!r} is defined by a later step (steps[{later}]); "
                        "a step can only refer to earlier steps"
                    )
                else:
                    so_far = ", ".join(defined) or "none"
                    msg = f"unknown step id {ref.target!r} (ids defined before this step: {so_far})"
                yield loc, msg, ref.target
                continue
            kind, target_room = defined[ref.target]
            if kind not in ref.accepts:
                wanted = " or ".join(KIND_WORDS[k] for k in sorted(ref.accepts))
                yield loc, f"{ref.target!r} is {KIND_WORDS[kind]}; this field needs {wanted}", ref.target
            elif ref.same_room and room is not None and target_room is not None and target_room != room:
                yield loc, f"{ref.target!r} is in room {target_room!r}, this step is in {room!r}", ref.target

    def _actor_problems(self, step: StepBase, base: tuple[str | int, ...], room: str | None, scan: Scan
                        ) -> Iterator[Problem]:
        members = set(self.rooms[room].members or []) if room in self.rooms else None
        for use in step.actor_uses():
            loc = (*base, *use.loc)
            if use.name == BOT:
                if not use.bot_allowed:
                    yield loc, "the bot can't be driven by a step; name a test actor", use.name
            elif use.name not in scan.actors:
                yield loc, scan.unknown_actor(use.name), use.name
            elif use.must_be_member and members is not None and use.name not in members:
                yield loc, f"actor {use.name!r} is not a member of room {room!r}", use.name


# --- schema introspection for error messages ---------------------------------------------------------------


def _strip(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def model_at(loc: tuple[str | int, ...], root: type[BaseModel] = Scenario) -> type[BaseModel] | None:
    """The model class found at an error location, e.g. steps.1.send -> Send; None if not a model."""
    tp: Any = root
    for part in loc:
        tp = _strip(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            tp = field.annotation
        elif origin is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin in (Union, types.UnionType) and isinstance(part, str):
            tp = STEP_TYPES.get(part)
            if tp is None:
                return None
        else:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def field_keys(model: type[BaseModel]) -> list[str]:
    """Field names as written in a scenario file (aliases where they exist)."""
    return [f.alias or name for name, f in model.model_fields.items()]
