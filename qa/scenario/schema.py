"""Scenario schema: what a scenario file may say, as pydantic models.

Pure (no file access); the loader turns the errors raised here into file:line messages. Every model forbids
unknown fields, because a misspelt optional field would otherwise be silently ignored and the scenario would
test something other than what its author meant.

Layout of a scenario file, in short:

    id, title, profiles, timeout       profiles: any ^[a-z0-9-]+$ names; every scenario is also in "all"
    actors: [driver, …]                test users; "bot" is reserved for the bot under test
    rooms: {main: {encrypted, members}} members default to every actor; the bot is always invited
    bot: {requireMention, allowBots, …} the bot's config, camelCase like the bot's own config file
    provider: {rules: [...]}           extra mock-provider rule files, relative to the repo root
    requires: [trace, restart, …]      what the bot must be able to do (qa.harness.capabilities)
    steps: [ {send: {...}}, … ]        each step is a single-key mapping naming its type

Step fields are snake_case. `as` is a Python keyword, so it is the alias of a field named `actor`. Ids given
by `send`, `expect_reply` and `react` name events that later steps refer to (`to`, `thread`, `reply_to`);
a reference must point at an earlier step, which the scenario-level check enforces with the exact field.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from qa.harness.capabilities import Capability
from qa.scenario import markers

BOT = "bot"
IMPLICIT_PROFILE = "all"
# Informational: profiles are free-form names so a new one needs no code change; these are the ones in use.
KNOWN_PROFILES = ("fast", "all", "approvals", "restart", "e2ee", "slow", "lock")
DEFAULT_TIMEOUT_S = 60.0


def _error(kind: str, message: str) -> PydanticCustomError:
    # The message goes through the context so braces in user input (markers!) are not taken as placeholders.
    return PydanticCustomError(kind, "{message}", {"message": message})


# --- durations ---------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
DURATION_HELP = "use e.g. 60s, 1500ms, 2m, or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds from "60s", "1500ms", "2m", "1h", "1.5s", 60 or 1.5 (a bare number is seconds)."""
    # YAML turns `yes`/`no`/`off` into bools, and bool is an int subclass: never let those pass as 1 or 0.
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}; {DURATION_HELP}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.fullmatch(value.strip())
        if m is None:
            raise ValueError(f"invalid duration {value!r}; {DURATION_HELP}")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}; {DURATION_HELP}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive and finite, got {value!r}")
    return seconds


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _error("duration", str(exc)) from None


Duration = Annotated[float, BeforeValidator(_duration)]


# --- names and text ----------------------------------------------------------------------------------------


def _name(what: str, pattern: str, rule: str) -> AfterValidator:
    rx = re.compile(pattern)

    def check(value: str) -> str:
        if not rx.fullmatch(value):
            raise _error("name", f"invalid {what} {value!r}: {rule}")
        return value

    return AfterValidator(check)


ScenarioId = Annotated[
    str, _name("scenario id", r"[a-z0-9][a-z0-9-]*", "lowercase letters, digits and '-', not starting with '-'")
]
ProfileName = Annotated[str, _name("profile", r"[a-z0-9-]+", "lowercase letters, digits and '-'")]
ActorName = Annotated[
    str, _name("actor name", r"[a-z][a-z0-9_]*", "lowercase letters, digits and '_', starting with a letter")
]
RoomName = Annotated[
    str, _name("room name", r"[a-z][a-z0-9_-]*", "lowercase letters, digits, '_' and '-', starting with a letter")
]
StepId = Annotated[str, _name("step id", r"[a-z0-9][a-z0-9_-]*", "lowercase letters, digits, '_' and '-'")]
TraceType = Annotated[str, _name("trace record type", r"[a-z][a-z0-9_.]*", "e.g. inbound, lock.acquire")]
Reason = Annotated[str, _name("reason", r"[a-z0-9][a-z0-9_.-]*", "e.g. mention-required")]


def _check_markers(value: str) -> str:
    try:
        markers.check(value)
    except markers.MarkerError as exc:
        raise _error("marker", str(exc)) from None
    return value


# Text that may carry markers; checked here so a typo like {tokn} fails at load time, not mid-run.
MarkedText = Annotated[str, Field(min_length=1), AfterValidator(_check_markers)]


class _Model(BaseModel):
    # populate_by_name lets Python code (runner, tests) write `actor=` where YAML writes `as:`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- scenario-level settings -------------------------------------------------------------------------------


class RoomSpec(_Model):
    encrypted: bool = False
    # None means "every actor"; the scenario check fills it in, so after loading it is always a list.
    members: list[ActorName] | None = None


def _allow_bots(value: object) -> object:
    # YAML 1.1 reads a bare `off` (also `no`, `false`) as False; that is what people mean by "off".
    if value is False:
        return "off"
    if value is True:
        raise _error(
            "allow_bots",
            "allowBots is true/on/yes, which is ambiguous: write 'mentions' or 'all' (or off)",
        )
    return value


class SessionWriteLock(_Model):
    # narrow: release before model I/O (the rule under test); attempt: hold for the whole attempt (the legacy bug).
    scope: Literal["narrow", "attempt"] | None = None
    acquire_timeout_ms: int | None = Field(default=None, alias="acquireTimeoutMs", gt=0)
    stale_ms: int | None = Field(default=None, alias="staleMs", gt=0)
    max_hold_ms: int | None = Field(default=None, alias="maxHoldMs", gt=0)


class Compaction(_Model):
    max_records: int | None = Field(default=None, alias="maxRecords", gt=1)
    keep_records: int | None = Field(default=None, alias="keepRecords", ge=0)
    max_bytes: int | None = Field(default=None, alias="maxBytes", gt=0)
    summary: Literal["model", "local"] | None = None


class SessionLife(_Model):
    """The session lock's life beyond the turn (our agent's qa.agent.post_turn; needs capability `lock`)."""

    compaction: Compaction | None = None
    post_turn_memory: bool | None = Field(default=None, alias="postTurnMemory")
    # Fault injection: the bot's first reply write keeps its lock this long (a stalled disk).
    stall_first_reply_ms: int | None = Field(default=None, alias="stallFirstReplyMs", ge=0, le=60_000)


class BotConfig(_Model):
    """The bot's config for one scenario; None for an optional setting means "the bot's own default"."""

    require_mention: bool = Field(default=True, alias="requireMention")
    allow_bots: Annotated[Literal["off", "mentions", "all"], BeforeValidator(_allow_bots)] = Field(
        default="off", alias="allowBots"
    )
    known_bots: list[ActorName] = Field(default_factory=list, alias="knownBots")
    # None: everyone may trigger the bot; a list (even empty) restricts it to those actors.
    allowlist: list[ActorName] | None = None
    session_write_lock: SessionWriteLock | None = Field(default=None, alias="sessionWriteLock")
    session_life: SessionLife | None = Field(default=None, alias="sessionLife")
    text_chunk_limit: int = Field(default=4000, alias="textChunkLimit", gt=0)
    encryption: bool = False


def _relative_path(value: str) -> str:
    # Rule files are resolved against the repo root; an absolute path would make a scenario machine-specific.
    if Path(value).is_absolute() or ".." in Path(value).parts:
        raise _error("path", f"{value!r} must be relative to the repo root, without '..'")
    return value


class ProviderConfig(_Model):
    rules: list[Annotated[str, Field(min_length=1), AfterValidator(_relative_path)]] = Field(default_factory=list)


class LiveSpec(_Model):
    """How the scenario fares against a live model, which is not deterministic like the mock.

    tolerance: what a live model may do differently and what the scenario then allows or reports (shown in the
    report). skip: the scenario only makes sense with the mock; a live run reports it skipped with the reason."""

    tolerance: str | None = Field(default=None, min_length=1)
    skip: bool = False


# --- steps -------------------------------------------------------------------------------------------------

# Kinds of event a step id can name; a reference says which kinds it accepts.
SENT = "sent"  # a message a test actor sent (send)
REPLY = "reply"  # a bot message observed by expect_reply
REACTION = "reaction"  # a reaction a test actor sent (react)
MESSAGES = frozenset({SENT, REPLY})
_KIND_WORDS = {SENT: "a sent message", REPLY: "an observed reply", REACTION: "a reaction"}


class Ref(NamedTuple):
    loc: tuple[str, ...]  # field path inside the step, as written in YAML
    target: str
    accepts: frozenset[str]
    same_room: bool  # the target must be in the step's room (threads and replies don't cross rooms)


class ActorUse(NamedTuple):
    loc: tuple[str, ...]
    name: str
    bot_allowed: bool
    must_be_member: bool  # the actor acts in (or watches) the step's room, so must have joined it


class StepBase(_Model):
    kind: ClassVar[str]
    # Which kind of event this step's `id` names, for steps that can have one.
    defines_kind: ClassVar[str | None] = None

    def defined_id(self) -> str | None:
        return getattr(self, "id", None) if self.defines_kind else None

    def refs(self) -> list[Ref]:
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


def _opt_ref(loc: str, target: str | None, accepts: frozenset[str], same_room: bool = True) -> list[Ref]:
    return [] if target is None else [Ref((loc,), target, accepts, same_room)]


def _mention(loc: tuple[str, ...], name: str | None) -> list[ActorUse]:
    return [] if name is None else [ActorUse(loc, name, bot_allowed=True, must_be_member=False)]


class Send(StepBase):
    """An actor sends a message; `id` names it for later steps."""

    kind: ClassVar[str] = "send"
    defines_kind: ClassVar[str | None] = SENT

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    body: MarkedText
    mention: ActorName | None = None  # "bot" or an actor: the message mentions them (pill + name in body)
    # pill: an intentional mention (m.mentions + pill), as clients send when you pick a name. text: only the
    # user id typed into the body, with m.mentions present and leaving them out, which must NOT count.
    mention_style: Literal["pill", "text"] = "pill"
    thread: StepId | None = None  # thread root
    reply_to: StepId | None = None
    # Encrypted rooms only: encrypt under a room key nobody else ever receives (a device withholding its keys).
    withhold_room_key: bool = False
    id: StepId | None = None

    def refs(self) -> list[Ref]:
        return _opt_ref("thread", self.thread, MESSAGES) + _opt_ref("reply_to", self.reply_to, MESSAGES)

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), *_mention(("mention",), self.mention)]

    def own_room(self) -> str | None:
        return self.room

    def room_anchor(self) -> str | None:
        return None


class ExpectReply(StepBase):
    """The bot answers a sent message; `id` names the reply so later steps can react or thread on it."""

    kind: ClassVar[str] = "expect_reply"
    defines_kind: ClassVar[str | None] = REPLY

    to: StepId
    body: MarkedText | None = None  # None: any reply will do
    thread: StepId | None = None  # the reply must be in this thread
    top_level: bool = False  # the reply must not be in any thread (a rich reply, m.in_reply_to alone, is fine)
    no_relation: bool = False  # stricter: the reply carries no m.relates_to at all
    after: StepId | None = None  # the reply must come later in the room than this earlier reply
    encrypted: bool | None = None  # True: the reply must have been sent encrypted (and decrypted by us)
    timeout: Duration | None = None  # None: whatever is left of the scenario timeout
    id: StepId | None = None

    @model_validator(mode="after")
    def _thread_xor_top_level(self) -> ExpectReply:
        if (self.top_level or self.no_relation) and self.thread is not None:
            raise _error("conflict", "top_level: true contradicts thread: a reply can't be in both places")
        return self

    def refs(self) -> list[Ref]:
        return [
            Ref(("to",), self.to, frozenset({SENT}), True),
            *_opt_ref("thread", self.thread, MESSAGES),
            *_opt_ref("after", self.after, frozenset({REPLY}), same_room=False),
        ]


class ControlMessage(_Model):
    """A later message the bot must answer, proving it was alive and listening while it stayed silent."""

    actor: ActorName = Field(alias="as")
    body: MarkedText
    # The bot by default: a control must be answered, and most rooms require a mention. null: no mention.
    mention: ActorName | None = BOT
    thread: StepId | None = None  # None: the trigger's own thread (or top level), i.e. the same session
    expect_body: MarkedText | None = None  # None: any reply to the control counts


class ExpectNoReply(StepBase):
    """The bot stays silent about a message, proved by evidence rather than by waiting.

    Evidence is the bot's trace (`reason`: the inbound record for the message was dropped for that reason)
    and/or a `control` message sent afterwards that does get answered. `quiet_window` is the fallback for
    bots without a trace and must be asked for explicitly.
    """

    kind: ClassVar[str] = "expect_no_reply"

    to: StepId
    reason: Reason | None = None
    control: ControlMessage | None = None
    quiet_window: Duration | None = None
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _needs_evidence(self) -> ExpectNoReply:
        if self.reason is None and self.control is None and self.quiet_window is None:
            raise _error(
                "evidence",
                "expect_no_reply needs evidence: a `reason` to find in the bot's trace and/or a `control` "
                "message the bot must answer (or, as a last resort, an explicit `quiet_window`)",
            )
        return self

    def refs(self) -> list[Ref]:
        refs = [Ref(("to",), self.to, frozenset({SENT}), True)]
        if self.control is not None and self.control.thread is not None:
            refs.append(Ref(("control", "thread"), self.control.thread, MESSAGES, True))
        return refs

    def actor_uses(self) -> list[ActorUse]:
        if self.control is None:
            return []
        return [
            ActorUse(("control", "as"), self.control.actor, False, True),
            *_mention(("control", "mention"), self.control.mention),
        ]

    def timeouts(self) -> list[tuple[tuple[str, ...], float]]:
        found = super().timeouts()
        if self.quiet_window is not None:
            found.append((("quiet_window",), self.quiet_window))
        return found


class ExpectModelRequest(StepBase):
    """The model request the bot made to answer a sent message carried (`contains`) or did not carry
    (`excludes`) these texts — evidence from the mock provider's request journal, e.g. for session isolation."""

    kind: ClassVar[str] = "expect_model_request"

    to: StepId
    contains: list[MarkedText] = Field(default_factory=list)
    excludes: list[MarkedText] = Field(default_factory=list)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ExpectModelRequest:
        if not self.contains and not self.excludes:
            raise _error("evidence", "expect_model_request needs `contains` and/or `excludes`")
        return self

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({SENT}), True)]


class React(StepBase):
    """An actor reacts to a message; `id` names the reaction event."""

    kind: ClassVar[str] = "react"
    defines_kind: ClassVar[str | None] = REACTION

    actor: ActorName = Field(alias="as")
    to: StepId
    key: str = Field(min_length=1)
    id: StepId | None = None

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, MESSAGES, True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]


class ExpectReaction(StepBase):
    """Actor `as` sees a reaction by `by` (the bot unless said otherwise) on a message."""

    kind: ClassVar[str] = "expect_reaction"

    actor: ActorName = Field(alias="as")
    by: ActorName = BOT
    to: StepId
    key: str | None = Field(default=None, min_length=1)  # None: any key
    timeout: Duration | None = None

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, MESSAGES, True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), ActorUse(("by",), self.by, True, False)]


class ExpectTrace(StepBase):
    """A record of `type` whose fields include `match` appears in the bot's trace (see qa.agent.trace)."""

    kind: ClassVar[str] = "expect_trace"

    type: TraceType
    match: dict[str, Any] = Field(default_factory=dict)
    # Upper bounds on numeric fields, e.g. {waitMs: 25}: the first matching record must respect them.
    max: dict[str, float] = Field(default_factory=dict)
    to: StepId | None = None  # only records about that sent message's event (or its turn's attempt)
    timeout: Duration | None = None

    def refs(self) -> list[Ref]:
        return _opt_ref("to", self.to, frozenset({SENT}), same_room=False)


class RestartBot(StepBase):
    """Restart the bot process and wait until it is syncing again."""

    kind: ClassVar[str] = "restart_bot"

    mode: Literal["graceful", "kill"] = "graceful"  # kill: SIGKILL, no chance to clean up


class StopBot(StepBase):
    """Stop the bot (gracefully or with SIGKILL) and leave it down: messages sent now wait for `start_bot`."""

    kind: ClassVar[str] = "stop_bot"

    mode: Literal["graceful", "kill"] = "graceful"


class StartBot(StepBase):
    """Start a stopped bot again and wait until it is syncing with its rooms joined."""

    kind: ClassVar[str] = "start_bot"

    timeout: Duration | None = None


class MutateBotState(StepBase):
    """Run one of the bot file's named `state_mutations` while the bot is stopped (between `stop_bot` and
    `start_bot`): a stale sync position, a lock file left by a dead process, a damaged store. The command gets
    the bot's launch environment and placeholders; `args` are appended to its argv (markers expanded)."""

    kind: ClassVar[str] = "mutate_bot_state"

    mutation: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]
    args: list[MarkedText] = Field(default_factory=list)
    timeout: Duration | None = None


class ExpectReplyCount(StepBase):
    """The bot has answered message `to` exactly `count` times so far (across restarts): no double answers.

    Put it after a step that proves the bot is past the point where a duplicate would have been sent (e.g. the
    reply to a later message in the same session, since a session answers in order)."""

    kind: ClassVar[str] = "expect_reply_count"

    to: StepId
    count: int = Field(ge=0)

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({SENT}), same_room=False)]


class RestartHomeserver(StepBase):
    kind: ClassVar[str] = "restart_homeserver"


class Approve(StepBase):
    """An actor answers the bot's exec-approval request message."""

    kind: ClassVar[str] = "approve"

    actor: ActorName = Field(alias="as")
    to: StepId
    decision: Literal["allow-once", "deny"]

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, MESSAGES, True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]


class ExpectApproval(StepBase):
    """The bot's exec-approval request for the turn `to` started, or (state other than pending) its outcome.

    pending: the first chunk carries complete `org.matrix_qa.approval` metadata, later chunks carry none, and
    the bot's ✅/❌ option reactions are seen on the first chunk. approved|denied|expired: the outcome message
    says so; for denied and expired the command provably never ran (no exec.run in the bot's trace)."""

    kind: ClassVar[str] = "expect_approval"

    to: StepId
    state: Literal["pending", "approved", "denied", "expired"] = "pending"
    chunked: bool | None = None  # None: either
    command_contains: MarkedText | None = None
    timeout: Duration | None = None

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({SENT}), True)]


def _step_tag(value: Any) -> str | None:
    if isinstance(value, StepBase):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if isinstance(key, str) else None
    return None


def _unwrap(kind: str) -> BeforeValidator:
    # `- restart_homeserver:` with nothing after it is YAML null; treat it as an empty mapping.
    def unwrap(value: Any) -> Any:
        if isinstance(value, dict):
            inner = value.get(kind)
            return {} if inner is None else inner
        return value

    return BeforeValidator(unwrap)


# The tag is the YAML key, so pydantic's error locations (steps.3.send.body) match the file's own layout.
Step = Annotated[
    Union[  # noqa: UP007 - a `|` chain of Annotated aliases reads worse than one Union
        Annotated[Send, _unwrap("send"), Tag("send")],
        Annotated[ExpectReply, _unwrap("expect_reply"), Tag("expect_reply")],
        Annotated[ExpectNoReply, _unwrap("expect_no_reply"), Tag("expect_no_reply")],
        Annotated[ExpectModelRequest, _unwrap("expect_model_request"), Tag("expect_model_request")],
        Annotated[React, _unwrap("react"), Tag("react")],
        Annotated[ExpectReaction, _unwrap("expect_reaction"), Tag("expect_reaction")],
        Annotated[ExpectTrace, _unwrap("expect_trace"), Tag("expect_trace")],
        Annotated[RestartBot, _unwrap("restart_bot"), Tag("restart_bot")],
        Annotated[RestartHomeserver, _unwrap("restart_homeserver"), Tag("restart_homeserver")],
        Annotated[StopBot, _unwrap("stop_bot"), Tag("stop_bot")],
        Annotated[StartBot, _unwrap("start_bot"), Tag("start_bot")],
        Annotated[ExpectReplyCount, _unwrap("expect_reply_count"), Tag("expect_reply_count")],
        Annotated[MutateBotState, _unwrap("mutate_bot_state"), Tag("mutate_bot_state")],
        Annotated[Approve, _unwrap("approve"), Tag("approve")],
        Annotated[ExpectApproval, _unwrap("expect_approval"), Tag("expect_approval")],
    ],
    # The message is refined by describe_step_problem, which can see the offending input.
    Discriminator(_step_tag, custom_error_type="step_type", custom_error_message="not a known step"),
]

STEP_TYPES: dict[str, type[StepBase]] = {
    cls.kind: cls
    for cls in (
        Send,
        ExpectReply,
        ExpectNoReply,
        ExpectModelRequest,
        React,
        ExpectReaction,
        ExpectTrace,
        RestartBot,
        RestartHomeserver,
        Approve,
        ExpectApproval,
        StopBot,
        StartBot,
        ExpectReplyCount,
        MutateBotState,
    )
}


def describe_step_problem(raw: Any) -> str:
    """Why `raw` is not a step, in words that point at the usual mistakes."""
    known = ", ".join(STEP_TYPES)
    if not isinstance(raw, dict):
        return f"a step is a single-key mapping like `send: {{...}}`, got {type(raw).__name__} (known: {known})"
    if not raw:
        return f"empty step (known step types: {known})"
    keys = [str(k) for k in raw]
    if len(keys) == 1:
        close = difflib.get_close_matches(keys[0], STEP_TYPES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown step type {keys[0]!r} ({hint}known: {known})"
    step_keys = [k for k in keys if k in STEP_TYPES]
    if len(step_keys) == 1:
        # Typically `id:` written at the step's level instead of inside it.
        others = ", ".join(k for k in keys if k != step_keys[0])
        return (
            f"a step is a single-key mapping: {others} must be indented under {step_keys[0]}: "
            f"(found keys: {', '.join(keys)})"
        )
    return f"a step is a single-key mapping naming one step type, found keys: {', '.join(keys)}"


# --- the scenario ------------------------------------------------------------------------------------------


class Scenario(_Model):
    id: ScenarioId
    title: str = Field(min_length=1)
    profiles: list[ProfileName] = Field(min_length=1)
    timeout: Duration = DEFAULT_TIMEOUT_S
    actors: list[ActorName] = Field(default_factory=lambda: ["driver"], min_length=1)
    rooms: dict[RoomName, RoomSpec] = Field(default_factory=lambda: {"main": RoomSpec()}, min_length=1)
    bot: BotConfig = Field(default_factory=BotConfig)
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    live: LiveSpec = Field(default_factory=LiveSpec)
    # What the bot under test must be able to do beyond what the steps imply (qa.harness.capabilities); a bot
    # whose bot file lacks one skips the scenario with the reason.
    requires: list[Capability] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)

    # Private, so a scenario file cannot set it; the loader passes it through the validation context.
    _source_path: Path | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    def in_profile(self, profile: str) -> bool:
        return profile == IMPLICIT_PROFILE or profile in self.profiles

    def step_index(self, step_id: str) -> int | None:
        for i, step in enumerate(self.steps):
            if step.defined_id() == step_id:
                return i
        return None

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
                [InitErrorDetails(type=_error("reference", msg), loc=loc, input=value) for loc, msg, value in problems],
            )
        return self

    def _problems(self) -> Iterator[tuple[tuple[str | int, ...], str, Any]]:
        actors = set(self.actors)
        declared = ", ".join(dict.fromkeys(a for a in self.actors if a != BOT))

        def unknown_actor(name: str) -> str:
            return f"unknown actor {name!r} (declared actors: {declared}; add it to `actors`)"

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
                    yield ("rooms", room, "members", j), unknown_actor(member), member

        for field, names in (("knownBots", self.bot.known_bots), ("allowlist", self.bot.allowlist or [])):
            for j, name in enumerate(names):
                if name not in actors:
                    yield ("bot", field, j), unknown_actor(name), name

        yield from self._step_problems(actors, unknown_actor)

    def _step_problems(
        self, actors: set[str], unknown_actor: Callable[[str], str]
    ) -> Iterator[tuple[tuple[str | int, ...], str, Any]]:
        first_definition: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            sid = step.defined_id()
            if sid is not None and sid not in first_definition:
                first_definition[sid] = i

        # id -> (kind, room) for ids defined so far; room is None when it could not be worked out.
        defined: dict[str, tuple[str, str | None]] = {}
        bot_down = False  # between a stop_bot and the next start_bot
        for i, step in enumerate(self.steps):
            base: tuple[str | int, ...] = ("steps", i, step.kind)
            if step.kind == "mutate_bot_state" and not bot_down:
                # A running bot may rewrite its own state at any moment, so a change made under it proves nothing.
                yield (*base, "mutation"), "the bot must be stopped first: put a stop_bot step before it", \
                    getattr(step, "mutation", None)
            elif step.kind == "stop_bot":
                bot_down = True
            elif step.kind in ("start_bot", "restart_bot"):
                bot_down = False

            room = step.own_room()
            if room is not None and room not in self.rooms:
                known_rooms = ", ".join(self.rooms)
                yield (*base, "room"), f"unknown room {room!r} (declared rooms: {known_rooms})", room
                room = None
            anchor = step.room_anchor()
            if room is None and anchor is not None and anchor in defined:
                room = defined[anchor][1]

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
                    wanted = " or ".join(_KIND_WORDS[k] for k in sorted(ref.accepts))
                    yield loc, f"{ref.target!r} is {_KIND_WORDS[kind]}; this field needs {wanted}", ref.target
                elif ref.same_room and room is not None and target_room is not None and target_room != room:
                    yield loc, f"{ref.target!r} is in room {target_room!r}, this step is in {room!r}", ref.target

            members = set(self.rooms[room].members or []) if room in self.rooms else None
            for use in step.actor_uses():
                loc = (*base, *use.loc)
                if use.name == BOT:
                    if not use.bot_allowed:
                        yield loc, "the bot can't be driven by a step; name a test actor", use.name
                elif use.name not in actors:
                    yield loc, unknown_actor(use.name), use.name
                elif use.must_be_member and members is not None and use.name not in members:
                    yield loc, f"actor {use.name!r} is not a member of room {room!r}", use.name

            for loc_suffix, seconds in step.timeouts():
                if seconds > self.timeout:
                    yield (
                        (*base, *loc_suffix),
                        f"{seconds:g}s is longer than the scenario timeout ({self.timeout:g}s)",
                        seconds,
                    )

            sid = step.defined_id()
            if sid is not None:
                if sid in defined:
                    first = first_definition[sid]
                    yield (*base, "id"), f"duplicate step id {sid!r} (first defined by steps[{first}])", sid
                else:
                    defined[sid] = (step.defines_kind or "", room)


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
    """The model class found at an error location, e.g. ("steps", 1, "send") -> Send; None if not a model."""
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
