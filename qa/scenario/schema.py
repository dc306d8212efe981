"""Scenario schema: what a scenario file may say, as pydantic models.

Pure (no file access); the loader turns the errors raised here into file:line messages. Every model forbids
unknown fields, because a misspelt optional field would otherwise be silently ignored and the scenario would
test something other than what its author meant.

Layout of a scenario file, in short:

    id, title, profiles, timeout       profiles: any ^[a-z0-9-]+$ names; every scenario is also in "all"
    actors: [driver, …]                test users; "bot" is reserved for the bot under test
    rooms: {main: {encrypted, members}} members default to every actor; the bot is invited unless
                                       invite_bot: false; direct: true makes a DM; bot: {...} per room
    bot: {requireMention, allowBots, …} the bot's config, camelCase like the bot's own config file
    provider: {rules: [...]}           extra mock-provider rule files, relative to the repo root
    requires: [trace, restart, …]      what the bot must be able to do (qa.harness.capabilities)
    faults: [ {name, path, …}, … ]    homeserver faults for the bot, via a fault proxy (qa.harness.fault_rules)
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
from qa.harness.fault_rules import FaultRule, check_unique
from qa.scenario import markers

BOT = "bot"
IMPLICIT_PROFILE = "all"
# Informational: profiles are free-form names so a new one needs no code change; these are the ones in use.
KNOWN_PROFILES = ("fast", "all", "approvals", "restart", "e2ee", "slow", "transport", "media", "faults", "lock")
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


def _off(value: object) -> object:
    return "off" if value is False else value


def _on_off(value: object) -> object:
    # YAML 1.1 reads bare on/off as booleans; people mean the words.
    return {False: "off", True: "on"}[value] if isinstance(value, bool) else value


DEFAULT_MEDIA_MAX_BYTES = 1_000_000


class RoomOverride(_Model):
    """Per-room bot settings that beat the account's (`rooms: {side: {bot: {...}}}`) or, in `set_bot_config`,
    replace them. Unset fields keep the account's value."""

    require_mention: bool | None = Field(default=None, alias="requireMention")
    allow_bots: Annotated[Literal["off", "mentions", "all"] | None, BeforeValidator(_allow_bots)] = Field(
        default=None, alias="allowBots")
    allowlist: list[ActorName] | None = None

    def settings(self) -> dict[str, Any]:
        """Only what was written, camelCase, so `allowlist: null` (everyone) differs from leaving it out."""
        fields = type(self).model_fields
        return {(f.alias or n): getattr(self, n) for n, f in fields.items() if n in self.model_fields_set}


class RoomSpec(_Model):
    encrypted: bool = False
    # None means "every actor"; the scenario check fills it in, so after loading it is always a list.
    members: list[ActorName] | None = None
    # A direct chat: created with is_direct and listed in the creator's m.direct account data, as clients do.
    direct: bool = False
    # false: the bot is not invited when the scenario starts (an `invite` step does it later), nor told of it.
    invite_bot: bool = True
    bot: RoomOverride | None = None


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
    # Streaming previews and media (capabilities `streaming` and `media`); see qa.agent.streaming / qa.agent.media.
    streaming: Annotated[Literal["off", "partial", "quiet"], BeforeValidator(_on_off)] = "off"
    tool_progress: Annotated[Literal["on", "off"], BeforeValidator(_on_off)] = Field(default="on", alias="toolProgress")
    media_max_bytes: int = Field(default=DEFAULT_MEDIA_MAX_BYTES, alias="mediaMaxBytes", gt=0)
    # Who gets the bot's room keys: every device (trust on first use) or verified devices only.
    room_keys: Literal["all", "verified"] = Field(default="all", alias="roomKeys")
    # Invites to rooms the bot was not configured for: always join, join when the inviter is on
    # autoJoinAllowlist, or decline. The rooms it is configured for are always joined.
    auto_join: Literal["always", "allowlist", "off"] = Field(default="off", alias="autoJoin")
    auto_join_allowlist: list[ActorName] = Field(default_factory=list, alias="autoJoinAllowlist")
    # Direct chats need no mention unless this says they do.
    dm_require_mention: bool = Field(default=False, alias="dmRequireMention")
    # How long the bot waits for the model before it gives up on a request (None: the bot's default).
    model_timeout: Duration | None = Field(default=None, alias="modelTimeout")
    # Where answers go: inbound (where the message was), always (a top-level message gets a thread on it),
    # off (always the top level).
    thread_replies: Annotated[Literal["off", "inbound", "always"], BeforeValidator(_off)] = Field(
        default="inbound", alias="threadReplies")


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
REDACTION = "redaction"  # a redaction a test actor sent (redact)
MESSAGES = frozenset({SENT, REPLY})
# What the bot can be expected not to answer: anything that lands in the room, its own replies included.
SILENCE_TARGETS = frozenset({SENT, REPLY, REACTION, REDACTION})
_KIND_WORDS = {SENT: "a sent message", REPLY: "an observed reply", REACTION: "a reaction",
               REDACTION: "a redaction"}


class Ref(NamedTuple):
    loc: tuple[str, ...]  # field path inside the step, as written in YAML
    target: str
    accepts: frozenset[str]
    same_room: bool  # the target must be in the step's room (threads and replies don't cross rooms)


class ActorUse(NamedTuple):
    loc: tuple[str | int, ...]
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


class _InRoom(StepBase):
    """A step that names its room itself (its `room:` field), rather than following what it refers to. Each
    subclass declares `room` in its own place: error messages list a step's fields in declaration order."""

    def own_room(self) -> str | None:
        return str(getattr(self, "room"))  # noqa: B009 - the field is the subclass's, not declared here

    def room_anchor(self) -> str | None:
        return None


def _opt_ref(loc: str, target: str | None, accepts: frozenset[str], same_room: bool = True) -> list[Ref]:
    return [] if target is None else [Ref((loc,), target, accepts, same_room)]


def _mention(loc: tuple[str, ...], name: str | None) -> list[ActorUse]:
    return [] if name is None else [ActorUse(loc, name, bot_allowed=True, must_be_member=False)]


class Send(_InRoom):
    """An actor sends a message; `id` names it for later steps."""

    kind: ClassVar[str] = "send"
    defines_kind: ClassVar[str | None] = SENT

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    body: MarkedText
    mention: ActorName | None = None  # "bot" or an actor: the message mentions them (pill + name in body)
    # pill: an intentional mention (m.mentions + pill), as clients send when you pick a name. text: only the
    # user id typed into the body, with m.mentions present and leaving them out, which must NOT count.
    # spoof: the pill in formatted_body, while m.mentions leaves them out: must NOT count either.
    mention_style: Literal["pill", "text", "spoof"] = "pill"
    # m.notice is what bots send (and must never be answered automatically); m.emote is "/me".
    msgtype: Literal["m.text", "m.notice", "m.emote"] = "m.text"
    thread: StepId | None = None  # thread root
    reply_to: StepId | None = None
    # Encrypted rooms only: encrypt under a room key nobody else ever receives (a device withholding its keys).
    withhold_room_key: bool = False
    id: StepId | None = None

    def refs(self) -> list[Ref]:
        return _opt_ref("thread", self.thread, MESSAGES) + _opt_ref("reply_to", self.reply_to, MESSAGES)

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), *_mention(("mention",), self.mention)]


class ExpectReply(StepBase):
    """The bot answers a sent message; `id` names the reply so later steps can react or thread on it."""

    kind: ClassVar[str] = "expect_reply"
    defines_kind: ClassVar[str | None] = REPLY

    to: StepId
    body: MarkedText | None = None  # None: any reply will do
    body_contains: MarkedText | None = None  # the reply's (final) text must contain this
    thread: StepId | None = None  # the reply must be in this thread
    top_level: bool = False  # the reply must not be in any thread (a rich reply, m.in_reply_to alone, is fine)
    no_relation: bool = False  # stricter: the reply carries no m.relates_to at all
    after: StepId | None = None  # the reply must come later in the room than this earlier reply
    encrypted: bool | None = None  # True: the reply must have been sent encrypted (and decrypted by us)
    # True: the reply is a streamed draft with at least one edit, whose chain is sound (see expect_edits); the
    # final edit's content is what `body` matches.
    streamed: bool = False
    msgtype: Literal["m.text", "m.notice"] | None = None  # None: any
    # Formatting: given either, the reply must carry org.matrix.custom.html; each text is looked for in (or
    # must be absent from) its formatted_body. body_excludes: texts the plain body must not carry.
    formatted_contains: list[MarkedText] = Field(default_factory=list)
    formatted_excludes: list[MarkedText] = Field(default_factory=list)
    body_excludes: list[MarkedText] = Field(default_factory=list)
    # The formatted_body holds only tags Matrix clients render, no event handlers, no unsafe URL schemes.
    formatted_safe: bool = False
    # The reply must arrive as at least this many parts (the bot's trace lists them): each a valid message in
    # the reply's place, in order, none lost; `body` is then compared with the parts joined.
    parts_min: int | None = Field(default=None, ge=2)
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
        refs = [Ref(("to",), self.to, SILENCE_TARGETS, True)]
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


class Edit(StepBase):
    """The sender of message `to` edits it (m.replace, the new text in m.new_content); `id` names the edit.

    mention: who the new text mentions (its m.mentions, and the edit's own m.mentions for anyone newly
    mentioned, as the spec says, so a naive bot that reads the edit's outer content sees the mention)."""

    kind: ClassVar[str] = "edit"
    defines_kind: ClassVar[str | None] = SENT

    actor: ActorName = Field(alias="as")
    to: StepId
    body: MarkedText
    mention: ActorName | None = None
    id: StepId | None = None

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({SENT}), True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), *_mention(("mention",), self.mention)]


class Redact(StepBase):
    """An actor redacts an earlier message or reaction; `id` names the redaction event."""

    kind: ClassVar[str] = "redact"
    defines_kind: ClassVar[str | None] = REDACTION

    actor: ActorName = Field(alias="as")
    to: StepId
    reason: MarkedText | None = None
    id: StepId | None = None

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({SENT, REPLY, REACTION}), True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]


class ExpectRedaction(StepBase):
    """Actor `as` sees redaction `to`; when it removed a reaction, the bot recorded the removal in the
    reaction's session (trace `reaction.removed`, decision `recorded`)."""

    kind: ClassVar[str] = "expect_redaction"

    actor: ActorName = Field(alias="as")
    to: StepId
    timeout: Duration | None = None

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({REDACTION}), True)]

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]


class ExpectModelRequest(StepBase):
    """The model request the bot made to answer a sent message carried (`contains`) or did not carry
    (`excludes`) these texts — evidence from the mock provider's request journal, e.g. for session isolation."""

    kind: ClassVar[str] = "expect_model_request"

    to: StepId
    contains: list[MarkedText] = Field(default_factory=list)
    excludes: list[MarkedText] = Field(default_factory=list)
    images: int | None = Field(default=None, ge=0)  # exactly this many image content parts reached the model
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ExpectModelRequest:
        if not self.contains and not self.excludes and self.images is None:
            raise _error("evidence", "expect_model_request needs `contains`, `excludes` and/or `images`")
        return self

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({SENT}), True)]


MediaKind = Literal["image", "audio", "video", "file"]
_FIXTURE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class SendMedia(_InRoom):
    """An actor uploads a file to the homeserver's content repository and sends it as m.image / m.audio /
    m.video / m.file (encrypted, attachment included, in an encrypted room). The file is `fixture` (a name under
    fixtures/media/) or `generate_bytes` random bytes; `caption` is the message body (Matrix 1.10 captions)."""

    kind: ClassVar[str] = "send_media"
    defines_kind: ClassVar[str | None] = SENT

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    media: MediaKind
    fixture: Annotated[str, Field(pattern=_FIXTURE_NAME, max_length=100)] | None = None
    generate_bytes: int | None = Field(default=None, gt=0, le=20_000_000)
    mimetype: Annotated[str, Field(pattern=r"^[a-z]+/[A-Za-z0-9.+-]+$")] | None = None  # None: from the name
    filename: Annotated[str, Field(pattern=_FIXTURE_NAME, max_length=100)] | None = None
    caption: MarkedText | None = None
    mention: ActorName | None = None  # the caption mentions them (m.mentions + pill); needs a caption
    thread: StepId | None = None
    id: StepId | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SendMedia:
        if (self.fixture is None) == (self.generate_bytes is None):
            raise _error("conflict", "send_media needs exactly one of `fixture` (a file in fixtures/media/) "
                                     "or `generate_bytes`")
        if self.mention is not None and self.caption is None:
            raise _error("conflict", "a mention lives in the caption: give `caption` too")
        return self

    def refs(self) -> list[Ref]:
        return _opt_ref("thread", self.thread, MESSAGES)

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), *_mention(("mention",), self.mention)]


class ExpectEdits(StepBase):
    """The edit chain of a bot reply (a streamed draft): how many edits, in order, all by the bot and replacing
    that reply, none pinging anyone (empty m.mentions on the draft and every edit), the last one carrying
    `final_body` whole. `draft_msgtype` checks the draft (m.notice for a quiet preview); `some_edit_contains`
    and `no_edit_contains` check what the previews showed (tool progress)."""

    kind: ClassVar[str] = "expect_edits"

    to: StepId
    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=0)
    final_body: MarkedText | None = None
    draft_msgtype: Literal["m.text", "m.notice"] | None = None
    some_edit_contains: list[MarkedText] = Field(default_factory=list)
    no_edit_contains: list[MarkedText] = Field(default_factory=list)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ExpectEdits:
        if self.max is not None and self.max < self.min:
            raise _error("conflict", f"max ({self.max}) is below min ({self.min})")
        return self

    def refs(self) -> list[Ref]:
        return [Ref(("to",), self.to, frozenset({REPLY}), True)]


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


# --- E2EE steps: devices, verification, membership, Megolm sessions, artifacts -----------------------------

DeviceName = Annotated[
    str, _name("device name", r"[a-z][a-z0-9_]*", "lowercase letters, digits and '_', starting with a letter")
]
# An actor's device: `driver` (the one it started with) or `driver.phone` (one `login_device` added).
DeviceRef = Annotated[
    str, _name("device", r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?", "an actor (driver) or actor.device (driver.phone)")
]


def _device_uses(loc: tuple[str, ...], refs: list[str]) -> list[ActorUse]:
    return [ActorUse((*loc, i), r.split(".")[0], False, False) for i, r in enumerate(refs)]


class LoginDevice(StepBase):
    """The actor logs in a further device (its own crypto store); later steps name it `actor.device`. The
    step waits until the bot's trace shows the bot knows the new device, so key sharing is not a race."""

    kind: ClassVar[str] = "login_device"

    actor: ActorName = Field(alias="as")
    device: DeviceName
    timeout: Duration | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]


class Verify(StepBase):
    """The actor's device and the bot's device verify each other interactively (to-device SAS: start,
    accept, keys, the short authentication string compared with the one the bot traces, MACs)."""

    kind: ClassVar[str] = "verify"

    actor: ActorName = Field(alias="as")
    device: DeviceName | None = None  # None: the device the actor started with
    method: Literal["sas"]
    timeout: Duration | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]


class ExpectVerified(StepBase):
    """Whether the actor's device and the bot's current device have verified each other: on the actor's side
    its device store, on the bot's side its trace (verification.done); `by` narrows it to one side."""

    kind: ClassVar[str] = "expect_verified"

    actor: ActorName = Field(alias="as")
    device: DeviceName | None = None
    verified: bool = True
    by: Literal["both", "actor", "bot"] = "both"

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]


class Leave(_InRoom):
    """A test actor leaves a room (in an encrypted room, the bot's next message must use a new Megolm session)."""

    kind: ClassVar[str] = "leave"

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, False)]


# --- membership and config changes (issue 13) ---------------------------------------------------------------


class Invite(_InRoom):
    """Actor `as` invites `who` (the bot unless said otherwise) to a room it is not in."""

    kind: ClassVar[str] = "invite"

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    who: ActorName = BOT

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True), ActorUse(("who",), self.who, True, False)]


class Kick(Invite):
    """Actor `as` (the room's creator has the power) removes `who` from a room."""

    kind: ClassVar[str] = "kick"

    reason: str | None = Field(default=None, min_length=1)


class Join(Leave):
    """The actor joins the room (invited first by the room's creator: scenario rooms are invite-only). The
    step waits until the bot's trace shows it knows the newcomer's devices."""

    kind: ClassVar[str] = "join"


class DeleteBotDevice(StepBase):
    """The bot's current device is deleted on the server (as from another session of the bot's account); the
    bot must notice, log in as a new device, and every test user must then know that device."""

    kind: ClassVar[str] = "delete_bot_device"

    timeout: Duration | None = None


class ExpectBotDevice(StepBase):
    """Every test user knows the device the bot's trace last named (`new`: one other than it started with)."""

    kind: ClassVar[str] = "expect_bot_device"

    new: bool = False
    timeout: Duration | None = None


class ExpectEncrypted(StepBase):
    """Which Megolm session message `event` used and who holds its room key, read from the crypto stores:
    `session: new|same` compares with message `than`; `readable_by` devices decrypt it, `unreadable_by`
    devices provably hold no key for it (a to-device barrier, not a wait)."""

    kind: ClassVar[str] = "expect_encrypted"

    event: StepId
    session: Literal["new", "same"] | None = None
    than: StepId | None = None
    readable_by: list[DeviceRef] = Field(default_factory=list)
    unreadable_by: list[DeviceRef] = Field(default_factory=list)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ExpectEncrypted:
        if (self.session is None) != (self.than is None):
            raise _error("conflict", "session: new|same and than: <step id> go together")
        if self.session is None and not self.readable_by and not self.unreadable_by:
            raise _error("evidence", "expect_encrypted needs session/than, readable_by and/or unreadable_by")
        both = sorted(set(self.readable_by) & set(self.unreadable_by))
        if both:
            raise _error("conflict", f"{', '.join(both)} cannot be in both readable_by and unreadable_by")
        return self

    def refs(self) -> list[Ref]:
        return [Ref(("event",), self.event, MESSAGES, False), *_opt_ref("than", self.than, MESSAGES, False)]

    def room_anchor(self) -> str | None:
        return self.event

    def actor_uses(self) -> list[ActorUse]:
        return _device_uses(("readable_by",), self.readable_by) + _device_uses(("unreadable_by",), self.unreadable_by)


class SendVerificationRequest(_InRoom):
    """An in-room verification request (msgtype m.key.verification.request, as Element sends in a DM) to the
    bot: a notice about verification, never a question to answer."""

    kind: ClassVar[str] = "send_verification_request"
    defines_kind: ClassVar[str | None] = SENT

    actor: ActorName = Field(alias="as")
    room: RoomName = "main"
    id: StepId | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("as",), self.actor, False, True)]


class ExpectArtifactsClean(StepBase):
    """None of these texts (markers expanded: decrypted bodies) is in the run's artifacts so far, nor in what
    this scenario is about to write (transcripts, observed events) — unless the run has --include-bodies."""

    kind: ClassVar[str] = "expect_artifacts_clean"

    markers: list[MarkedText] = Field(min_length=1)


class ExpectMembership(_InRoom):
    """The room's timeline shows `who` (the bot by default) reaching `membership`: the bot joined an invite,
    or declined it (leave), seen by the room's first member."""

    kind: ClassVar[str] = "expect_membership"

    room: RoomName = "main"
    who: ActorName = BOT
    membership: Literal["join", "leave", "invite"]
    timeout: Duration | None = None

    def actor_uses(self) -> list[ActorUse]:
        return [ActorUse(("who",), self.who, True, False)]


class SetBotConfig(StepBase):
    """Change the running bot's settings: the harness renders its config again with these changes and a new
    generation, writes it over the old one and sends SIGHUP; the step passes when the bot traces
    `config.reload` with that generation (capability `hot-reload`)."""

    kind: ClassVar[str] = "set_bot_config"

    bot: RoomOverride = Field(default_factory=RoomOverride)  # account-level changes
    rooms: dict[RoomName, RoomOverride] = Field(default_factory=dict)  # per-room changes
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> SetBotConfig:
        if not self.bot.model_fields_set and not any(r.model_fields_set for r in self.rooms.values()):
            raise _error("evidence", "set_bot_config changes nothing: give `bot: {...}` and/or `rooms: {...}`")
        return self




class SetFaults(StepBase):
    """Replace the fault proxy's rules (qa.harness.fault_rules) from here on; their counts start afresh.
    drop_in_flight: also cut the bot's open requests the new rules match (its current /sync long-poll), so
    the very next ones meet the new rules."""

    kind: ClassVar[str] = "set_faults"

    rules: list[FaultRule] = Field(default_factory=list)
    drop_in_flight: bool = False


class ExpectFaults(StepBase):
    """A fault rule was hit: a homeserver rule of the fault proxy, or (source: provider) a mock-provider rule
    that served a fault. hits: exactly that many (at least one by default). retried_after_ms: after each hit
    the client's next matching request came no sooner than this (it waited as long as it was told)."""

    kind: ClassVar[str] = "expect_faults"

    rule: str = Field(min_length=1)
    source: Literal["homeserver", "provider"] = "homeserver"
    hits: int | None = Field(default=None, ge=1)
    retried_after_ms: int | None = Field(default=None, ge=0)
    timeout: Duration | None = None


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
        Annotated[SendMedia, _unwrap("send_media"), Tag("send_media")],
        Annotated[ExpectEdits, _unwrap("expect_edits"), Tag("expect_edits")],
        # E2EE (issue 15)
        Annotated[LoginDevice, _unwrap("login_device"), Tag("login_device")],
        Annotated[Verify, _unwrap("verify"), Tag("verify")],
        Annotated[ExpectVerified, _unwrap("expect_verified"), Tag("expect_verified")],
        Annotated[Leave, _unwrap("leave"), Tag("leave")],
        Annotated[Join, _unwrap("join"), Tag("join")],
        Annotated[DeleteBotDevice, _unwrap("delete_bot_device"), Tag("delete_bot_device")],
        Annotated[ExpectBotDevice, _unwrap("expect_bot_device"), Tag("expect_bot_device")],
        Annotated[ExpectEncrypted, _unwrap("expect_encrypted"), Tag("expect_encrypted")],
        Annotated[SendVerificationRequest, _unwrap("send_verification_request"), Tag("send_verification_request")],
        Annotated[ExpectArtifactsClean, _unwrap("expect_artifacts_clean"), Tag("expect_artifacts_clean")],
        Annotated[Invite, _unwrap("invite"), Tag("invite")],
        Annotated[Kick, _unwrap("kick"), Tag("kick")],
        Annotated[ExpectMembership, _unwrap("expect_membership"), Tag("expect_membership")],
        Annotated[SetBotConfig, _unwrap("set_bot_config"), Tag("set_bot_config")],
        Annotated[SetFaults, _unwrap("set_faults"), Tag("set_faults")],
        Annotated[ExpectFaults, _unwrap("expect_faults"), Tag("expect_faults")],
        Annotated[Edit, _unwrap("edit"), Tag("edit")],
        Annotated[Redact, _unwrap("redact"), Tag("redact")],
        Annotated[ExpectRedaction, _unwrap("expect_redaction"), Tag("expect_redaction")],
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
        SendMedia,
        ExpectEdits,
        # E2EE (issue 15)
        LoginDevice,
        Verify,
        ExpectVerified,
        Leave,
        Join,
        DeleteBotDevice,
        ExpectBotDevice,
        ExpectEncrypted,
        SendVerificationRequest,
        ExpectArtifactsClean,
        Invite,
        Kick,
        ExpectMembership,
        SetBotConfig,
        SetFaults,
        ExpectFaults,
        Edit,
        Redact,
        ExpectRedaction,
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
    # Homeserver faults for the bot's requests (qa.harness.fault_rules), served by a per-scenario fault proxy.
    faults: list[FaultRule] = Field(default_factory=list)
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

        for field, names in (("knownBots", self.bot.known_bots), ("allowlist", self.bot.allowlist or []),
                             ("autoJoinAllowlist", self.bot.auto_join_allowlist)):
            for j, name in enumerate(names):
                if name not in actors:
                    yield ("bot", field, j), unknown_actor(name), name
        for room, spec in self.rooms.items():
            for j, name in enumerate((spec.bot.allowlist if spec.bot else None) or []):
                if name not in actors:
                    yield ("rooms", room, "bot", "allowlist", j), unknown_actor(name), name
            if spec.direct and len(spec.members or []) != 1:
                yield ("rooms", room, "direct"), "a direct room is the bot and exactly one member; give it " \
                    f"`members: [one actor]` (has {len(spec.members or [])})", spec.direct

        yield from self._fault_problems()
        yield from self._step_problems(actors, unknown_actor)

    def _fault_problems(self) -> Iterator[tuple[tuple[str | int, ...], str, Any]]:
        for i, problem in check_unique(self.faults):
            yield ("faults", i, "name"), problem, self.faults[i].name
        names = {r.name for r in self.faults}
        for i, step in enumerate(self.steps):
            if isinstance(step, SetFaults):
                for j, problem in check_unique(step.rules):
                    yield ("steps", i, step.kind, "rules", j, "name"), problem, step.rules[j].name
                names |= {r.name for r in step.rules}
            elif isinstance(step, ExpectFaults) and step.source == "homeserver" and step.rule not in names:
                known = ", ".join(sorted(names)) or "none"
                yield (("steps", i, step.kind, "rule"),
                       f"unknown fault rule {step.rule!r} (rules in `faults` and earlier set_faults: {known})",
                       step.rule)

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
        devices: set[str] = set()  # actor.device names login_device steps so far have added
        for i, step in enumerate(self.steps):
            base: tuple[str | int, ...] = ("steps", i, step.kind)
            yield from _device_problems(step, base, devices)
            if step.kind == "mutate_bot_state" and not bot_down:
                # A running bot may rewrite its own state at any moment, so a change made under it proves nothing.
                yield (*base, "mutation"), "the bot must be stopped first: put a stop_bot step before it", \
                    getattr(step, "mutation", None)
            elif step.kind == "stop_bot":
                bot_down = True
            elif step.kind in ("start_bot", "restart_bot"):
                bot_down = False

            if step.kind == "set_bot_config":
                yield from self._config_change_problems(base, step, actors, unknown_actor)
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


    def _config_change_problems(
        self, base: tuple[str | int, ...], step: Any, actors: set[str], unknown_actor: Callable[[str], str]
    ) -> Iterator[tuple[tuple[str | int, ...], str, Any]]:
        changes = [(("bot",), step.bot), *((("rooms", name), o) for name, o in step.rooms.items())]
        for loc, override in changes:
            if loc[0] == "rooms" and loc[1] not in self.rooms:
                yield (*base, *loc), f"unknown room {loc[1]!r} (declared rooms: {', '.join(self.rooms)})", loc[1]
            for j, name in enumerate(override.allowlist or []):
                if name not in actors:
                    yield (*base, *loc, "allowlist", j), unknown_actor(name), name


def _device_problems(step: StepBase, base: tuple[str | int, ...], devices: set[str]) -> Iterator[
        tuple[tuple[str | int, ...], str, Any]]:
    """A device named as `actor.device` (or `device:` beside `as:`) must come from an earlier login_device."""
    if isinstance(step, LoginDevice):
        name = f"{step.actor}.{step.device}"
        if name in devices:
            yield (*base, "device"), f"{name} is logged in already by an earlier login_device", step.device
        devices.add(name)
        return
    named: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(step, Verify | ExpectVerified) and step.device is not None:
        named.append(((*base, "device"), f"{step.actor}.{step.device}"))
    if isinstance(step, ExpectEncrypted):
        named += [((*base, field, j), ref) for field in ("readable_by", "unreadable_by")
                  for j, ref in enumerate(getattr(step, field)) if "." in ref]
    for loc, name in named:
        if name not in devices:
            known = ", ".join(sorted(devices)) or "none"
            yield loc, f"unknown device {name!r}: add a login_device step before (devices so far: {known})", name


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
