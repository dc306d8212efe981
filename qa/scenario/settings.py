"""A scenario's settings beside its steps: rooms, the `bot:` block, provider rule files, live-model tolerance.

Each `bot:` field is declared once, here, with everything other code needs of it: its YAML name and default,
the capability a bot needs when a scenario sets it to something else (`Implies`, read by
qa.harness.capabilities through `BotConfig.needs`), and how it reaches the bot file's template as the `bot`
fact (`Fact`, read by `bot_settings`). Pure (no file access).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic.fields import FieldInfo

from qa.harness.capabilities import Capability
from qa.scenario.fields import ActorName, Duration, Model, error

DEFAULT_MEDIA_MAX_BYTES = 1_000_000


class Implies(NamedTuple):
    """A value other than the field's default needs this capability of the bot under test."""

    capability: Capability
    why: str | None = None  # None: "bot.<the field's YAML name>"


class Fact(Enum):
    """How a `bot:` field reaches the template's `bot` fact; a field without one goes as written."""

    ACTOR_IDS = "actor names become Matrix ids"
    CAMEL = "a nested block, camelCase, only what was set ({} when absent)"
    ANY_ENCRYPTION = "true when the field is, or when any room is encrypted"
    AFTER_ROOMS = "as written, listed after the per-room facts (where it has always stood)"
    NONE = "not a template fact"
    WHEN_SET = "as written, only when set (absent: the bot's own default), after the per-room facts"


def _marker(field: FieldInfo, kind: type[Any]) -> Any:
    return next((m for m in field.metadata if isinstance(m, kind)), None)


def _allow_bots(value: object) -> object:
    # YAML 1.1 reads a bare `off` (also `no`, `false`) as False; that is what people mean by "off".
    if value is False:
        return "off"
    if value is True:
        raise error(
            "allow_bots",
            "allowBots is true/on/yes, which is ambiguous: write 'mentions' or 'all' (or off)",
        )
    return value


def _off(value: object) -> object:
    return "off" if value is False else value


def _on_off(value: object) -> object:
    # YAML 1.1 reads bare on/off as booleans; people mean the words.
    return {False: "off", True: "on"}[value] if isinstance(value, bool) else value


class RoomOverride(Model):
    """Per-room bot settings that beat the account's (`rooms: {side: {bot: {...}}}`) or, in `set_bot_config`,
    replace them. Unset fields keep the account's value."""

    require_mention: bool | None = Field(default=None, alias="requireMention")
    allow_bots: Annotated[Literal["off", "mentions", "all"] | None, BeforeValidator(_allow_bots)] = Field(
        default=None, alias="allowBots")
    allowlist: Annotated[list[ActorName] | None, Fact.ACTOR_IDS] = None

    def settings(self) -> dict[str, Any]:
        """Only what was written, camelCase, so `allowlist: null` (everyone) differs from leaving it out."""
        fields = type(self).model_fields
        return {(f.alias or n): getattr(self, n) for n, f in fields.items() if n in self.model_fields_set}


class RoomSpec(Model):
    encrypted: bool = False
    # None means "every actor"; the scenario check fills it in, so after loading it is always a list.
    members: list[ActorName] | None = None
    # A direct chat: created with is_direct and listed in the creator's m.direct account data, as clients do.
    direct: bool = False
    # false: the bot is not invited when the scenario starts (an `invite` step does it later), nor told of it.
    invite_bot: bool = True
    bot: RoomOverride | None = None


class SessionWriteLock(Model):
    # narrow: release before model I/O (the rule under test); attempt: hold for the whole attempt (the legacy bug).
    scope: Literal["narrow", "attempt"] | None = None
    acquire_timeout_ms: int | None = Field(default=None, alias="acquireTimeoutMs", gt=0)
    stale_ms: int | None = Field(default=None, alias="staleMs", gt=0)
    max_hold_ms: int | None = Field(default=None, alias="maxHoldMs", gt=0)


class Compaction(Model):
    max_records: int | None = Field(default=None, alias="maxRecords", gt=1)
    keep_records: int | None = Field(default=None, alias="keepRecords", ge=0)
    max_bytes: int | None = Field(default=None, alias="maxBytes", gt=0)
    summary: Literal["model", "local"] | None = None


class SessionLife(Model):
    """The session lock's life beyond the turn (our agent's qa.agent.post_turn; needs capability `lock`)."""

    compaction: Compaction | None = None
    post_turn_memory: bool | None = Field(default=None, alias="postTurnMemory")
    # Fault injection: the bot's first reply write keeps its lock (a stalled disk) until it is taken over, or this long.
    stall_first_reply_ms: int | None = Field(default=None, alias="stallFirstReplyMs", ge=0, le=60_000)


POLICY = Implies("policy")


class BotConfig(Model):
    """The bot's config for one scenario; None for an optional setting means "the bot's own default"."""

    require_mention: Annotated[bool, POLICY] = Field(default=True, alias="requireMention")
    allow_bots: Annotated[Literal["off", "mentions", "all"], BeforeValidator(_allow_bots), POLICY] = Field(
        default="off", alias="allowBots")
    known_bots: Annotated[list[ActorName], POLICY, Fact.ACTOR_IDS] = Field(default_factory=list, alias="knownBots")
    # None: everyone may trigger the bot; a list (even empty) restricts it to those actors.
    allowlist: Annotated[list[ActorName] | None, POLICY, Fact.ACTOR_IDS] = None
    session_write_lock: Annotated[SessionWriteLock | None, Implies("lock"), Fact.CAMEL] = Field(
        default=None, alias="sessionWriteLock")
    session_life: Annotated[SessionLife | None, Implies("lock"), Fact.CAMEL] = Field(default=None, alias="sessionLife")
    text_chunk_limit: int = Field(default=4000, alias="textChunkLimit", gt=0)
    encryption: Annotated[bool, Implies("e2ee", "encrypted room"), Fact.ANY_ENCRYPTION] = False
    # Streaming previews and media (capabilities `streaming` and `media`); see qa.agent.streaming / qa.agent.media.
    streaming: Annotated[Literal["off", "partial", "quiet"], BeforeValidator(_on_off), Implies("streaming")] = "off"
    tool_progress: Annotated[Literal["on", "off"], BeforeValidator(_on_off), Implies("streaming")] = Field(
        default="on", alias="toolProgress")
    media_max_bytes: Annotated[int, Implies("media")] = Field(
        default=DEFAULT_MEDIA_MAX_BYTES, alias="mediaMaxBytes", gt=0)
    # Who gets the bot's room keys: every device (trust on first use) or verified devices only.
    room_keys: Annotated[Literal["all", "verified"], Implies("verification")] = Field(default="all", alias="roomKeys")
    # Invites to rooms the bot was not configured for: always join, join when the inviter is on
    # autoJoinAllowlist, or decline. The rooms it is configured for are always joined.
    auto_join: Annotated[Literal["always", "allowlist", "off"], Implies("membership")] = Field(
        default="off", alias="autoJoin")
    auto_join_allowlist: Annotated[list[ActorName], Implies("membership", "bot.autoJoin"), Fact.ACTOR_IDS] = Field(
        default_factory=list, alias="autoJoinAllowlist")
    # Direct chats need no mention unless this says they do.
    dm_require_mention: Annotated[bool, POLICY] = Field(default=False, alias="dmRequireMention")
    # How long the bot waits for the model before it gives up on a request (None: the bot's default). It
    # reaches the bot as the launch's provider timeout ($MATRIX_QA_MODEL_TIMEOUT_S, template provider.timeout_s),
    # not as a `bot` fact; a bot that does not claim to take it skips the scenario with the reason.
    model_timeout: Annotated[Duration | None, Implies("model-timeout"), Fact.NONE] = Field(
        default=None, alias="modelTimeout")
    # Where answers go: inbound (where the message was), always (a top-level message gets a thread on it),
    # off (always the top level).
    thread_replies: Annotated[Literal["off", "inbound", "always"], BeforeValidator(_off), POLICY,
                              Fact.AFTER_ROOMS] = Field(default="inbound", alias="threadReplies")
    # The /sync long-poll timeout the bot should ask for (None: the bot's own); the sync-stall scenario keeps it
    # short so a bot that notices a silent /sync past it does so within the scenario's time.
    sync_timeout: Annotated[Duration | None, Fact.WHEN_SET] = Field(default=None, alias="syncTimeout")
    # How long an exec-approval request waits for a decision before it expires, in seconds (None: the bot's).
    approval_timeout: Annotated[Duration | None, Implies("approvals"), Fact.WHEN_SET] = Field(
        default=None, alias="approvalTimeout")
    # How long the bot holds an encrypted message whose room key has not come before it drops it as undecryptable
    # (None: the bot's own). Scenarios whose key never comes keep it short, so the drop they check comes soon.
    decrypt_retry: Annotated[Duration | None, Implies("e2ee"), Fact.WHEN_SET] = Field(
        default=None, alias="decryptRetry")

    def needs(self) -> Iterator[tuple[str, str]]:
        """(capability, why) for each field set to something other than its default, in field order."""
        for name, field in type(self).model_fields.items():
            implied = _marker(field, Implies)
            if implied is not None and getattr(self, name) != field.get_default(call_default_factory=True):
                yield implied.capability, implied.why or f"bot.{field.alias or name}"


def _relative_path(value: str) -> str:
    # Rule files are resolved against the repo root; an absolute path would make a scenario machine-specific.
    if Path(value).is_absolute() or ".." in Path(value).parts:
        raise error("path", f"{value!r} must be relative to the repo root, without '..'")
    return value


class ProviderConfig(Model):
    rules: list[Annotated[str, Field(min_length=1), AfterValidator(_relative_path)]] = Field(default_factory=list)


class LiveSpec(Model):
    """How the scenario fares against a live model, which is not deterministic like the mock.

    tolerance: what a live model may do differently and what the scenario then allows or reports (shown in the
    report). skip: the scenario only makes sense with the mock; a live run reports it skipped with the reason."""

    tolerance: str | None = Field(default=None, min_length=1)
    skip: bool = False


# --- the bot file template's `bot` fact --------------------------------------------------------------------


def uses_encryption(scenario: Any) -> bool:
    return bool(scenario.bot.encryption) or any(spec.encrypted for spec in scenario.rooms.values())


def _as_facts(model: type[BaseModel], values: dict[str, Any], ids: Callable[[Any], Any]) -> dict[str, Any]:
    """Camel-cased settings of `model` with every actor-name field turned into Matrix ids."""
    fields = {f.alias or n: f for n, f in model.model_fields.items()}
    return {k: ids(v) if _marker(fields[k], Fact) is Fact.ACTOR_IDS else v for k, v in values.items()}


def _fact(fact: Fact | None, value: Any, ids: Callable[[Any], Any], scenario: Any) -> Any:
    if fact is Fact.ACTOR_IDS:
        return ids(value)
    if fact is Fact.CAMEL:
        return value.model_dump(by_alias=True, exclude_none=True) if value is not None else {}
    if fact is Fact.ANY_ENCRYPTION:
        return uses_encryption(scenario)
    return value


def bot_settings(scenario: Any, actor_ids: dict[str, str], room_ids: dict[str, str] | None = None,
                 changes: list[Any] | None = None) -> dict[str, Any]:
    """The scenario's `bot:` block as a bot file's template sees it: camelCase, actor names as Matrix ids.

    `rooms` maps each room id the bot is told of to that room's own settings (only what the scenario set for
    it), `roomSettings` to the account's merged with them, which is what a bot without a notion of per-room
    overrides can render. `changes` are the set_bot_config steps run so far, applied in order."""
    bot = scenario.bot

    def ids(names: list[str] | None) -> list[str] | None:
        return [actor_ids[a] for a in names] if names is not None else None

    # The account's settings that a room may override first, as actor names until every change is applied.
    account = {f.alias or n: getattr(bot, n) for n, f in RoomOverride.model_fields.items()}
    per_room = {name: spec.bot.settings() if spec.bot else {} for name, spec in scenario.rooms.items()}
    for change in changes or []:
        account.update(change.bot.settings())
        for name, override in change.rooms.items():
            per_room[name] = {**per_room[name], **override.settings()}
    account = _as_facts(RoomOverride, account, ids)
    rooms = {room_id: _as_facts(RoomOverride, per_room.get(name, {}), ids)
             for name, room_id in (room_ids or {}).items()}
    facts: dict[str, Any] = {}
    late: dict[str, Any] = {}
    for name, field in BotConfig.model_fields.items():
        fact = _marker(field, Fact)
        value = getattr(bot, name)
        if name in RoomOverride.model_fields or fact is Fact.NONE or (fact is Fact.WHEN_SET and value is None):
            continue
        (late if fact in (Fact.AFTER_ROOMS, Fact.WHEN_SET) else facts)[field.alias or name] = _fact(fact, value, ids,
                                                                                                    scenario)
    return {
        **account, **facts, "rooms": rooms,
        "roomSettings": {room_id: {**account, **own} for room_id, own in rooms.items()},
        "directRooms": [room_ids[n] for n, spec in scenario.rooms.items() if spec.direct and n in (room_ids or {})],
        **late,
    }
