"""The bot's typed config, read from the JSON/YAML file the harness (or a person) writes.

Secrets do not live in the file: the Matrix password comes from the file named by `passwordFile` or the
env var `MATRIX_QA_PASSWORD` (the launch contract's), the model key from `OPENAI_API_KEY`. That keeps the
config safe to copy into artifacts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qa.agent.exec_tool import DEFAULT_ALLOWED_PROGRAMS
from qa.agent.policy import Mutations, RoomPolicy
from qa.kernel.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RoomConfig(_Model):
    require_mention: bool = Field(True, alias="requireMention")
    allowlist: list[str] | None = None
    allow_bots: Literal["off", "mentions", "all"] = Field("off", alias="allowBots")

    @field_validator("allow_bots", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as False; people write `allowBots: off` and mean the string.
        return "off" if value is False else value


class ModelConfig(_Model):
    base_url: str = Field(alias="baseUrl")
    model: str
    # Finite and positive: `inf` or 0 would make a hung provider hang the bot, or fail every request at once.
    timeout_s: float = Field(60.0, alias="timeoutS", gt=0, le=24 * 3600, allow_inf_nan=False)
    max_retries: int = Field(2, alias="maxRetries", ge=0, le=100)
    system_prompt: str = Field(
        "You are a helpful assistant in a Matrix chat room. Follow the user's instructions exactly.",
        alias="systemPrompt",
    )


class ApprovalsConfig(_Model):
    enabled: bool = True
    timeout_s: float = Field(120.0, alias="timeoutS", gt=0, le=7 * 24 * 3600, allow_inf_nan=False)
    text_chunk_limit: int = Field(4000, alias="textChunkLimit", gt=0)
    allowed_programs: list[str] = Field(list(DEFAULT_ALLOWED_PROGRAMS), alias="allowedPrograms")


class MediaConfig(_Model):
    # Attachments over this size are refused with a reply, never downloaded: a bot must not hang or run out of
    # memory on whatever someone uploads.
    max_bytes: int = Field(1_000_000, alias="maxBytes", gt=0)


# Test-only mutations of the streaming and media paths: each one is a bug a scenario must catch (see
# tests/integration/test_media.py and test_streaming.py). Off unless listed.
TestMutation = Literal[
    "preview-pings",  # previews carry m.mentions for @room and user ids in their text
    "final-edit-truncated",  # the final edit drops the answer's last characters
    "lock-while-streaming",  # the session lock is held from the first draft until the final edit
    "preview-abandoned-on-tool-error",  # a failed tool leaves the draft as it was and posts a new message
    "crash-on-unknown-media",  # a non-image attachment raises inside the turn
    "no-media-size-limit",  # attachments are downloaded whatever their size
    "attachment-bypasses-mention",  # any attachment counts as a mention
    "image-not-forwarded",  # images are described in words only, never given to the model
    "encrypted-media-not-decrypted",  # an encrypted attachment's ciphertext is passed on as if it were the file
    "no-resume",  # a turn a crash interrupted is never answered after the restart
    "run-denied-exec",  # a denied or expired exec command runs anyway, untraced, and is reported as not run
    "anyone-approves",  # the room's allowlist does not limit who may decide an approval
    "approval-top-level",  # an approval asked for in a thread is posted (and resolved) at the top level
    "late-approval-runs",  # a ✅ on a request that already ended still runs its command
    "ignore-sync-stall",  # a /sync that never answers is waited on forever
    "no-legacy-media-fallback",  # a 404 from the authenticated media endpoint is the end of the download
    "media-failure-to-model",  # a failed download is told to the model only; the person hears nothing of it
    "crypto-store-per-process",  # the device id survives a restart, its crypto store (Olm/Megolm keys) does not
    "late-crypto-save",  # new Olm and Megolm sessions are written to the crypto store a sync batch late
    "first-megolm-session-only",  # a sender's later Megolm sessions in a room are dropped as undecryptable
    "no-late-decrypt",  # an encrypted message whose room key has not arrived yet is dropped at once
    "sync-retry-at-once",  # a failed /sync is retried at once, with no backoff
    "sync-restart-on-error",  # after a failed /sync it starts over with no position, the new batch taken for history
    "two-members-is-dm",  # a room with two joined members is taken for a direct chat, is_direct or not
    "trust-m-direct",  # a room the bot's m.direct lists is a direct chat, whoever is (still) in it
    "m-direct-any-pair",  # a room m.direct lists for anyone is a direct chat while two are joined, whoever they are
    "no-thread-history",  # a thread older than the bot's first sync is answered without its earlier messages
    "thread-history-first-turn-only",  # such a thread's earlier messages are context for its first turn only
    "buffered-preview",  # the whole answer is awaited, then a draft (quiet: the placeholder) and edits in one burst
    "slow-on-blocked",  # each message from a sender not allowed holds the sync loop up (a slow lookup) for 3 s
]


class FaultMutations(_Model):
    """Test-only mutations, all off by default: each breaks one fault-recovery behaviour, so the fault scenarios
    can be shown failing on exactly the bug they guard against (tests/integration/test_faults.py)."""

    new_txn_id_on_retry: bool = Field(False, alias="newTxnIdOnRetry")  # a retried send is a new event: twice
    ignore_retry_after: bool = Field(False, alias="ignoreRetryAfter")  # retry at once, whatever the server said
    give_up_on_sync_error: bool = Field(False, alias="giveUpOnSyncError")  # the first sync error stops the bot
    crash_on_send_error: bool = Field(False, alias="crashOnSendError")  # a refused send kills the process
    no_model_retry: bool = Field(False, alias="noModelRetry")  # one model error fails the turn
    no_model_timeout: bool = Field(False, alias="noModelTimeout")  # wait for a hung model (nearly) forever
    keep_partial_reply: bool = Field(False, alias="keepPartialReply")  # send what a broken stream gave so far


class RepliesConfig(_Model):
    # A reply longer than this many characters is sent as ordered parts (qa.agent.formatting.split_text).
    text_chunk_limit: int = Field(4000, alias="textChunkLimit", gt=0)
    # inbound: answer where the message was; always: a top-level message is answered in a thread on it;
    # off: every answer at the top level (as a rich reply).
    thread_replies: Literal["off", "inbound", "always"] = Field("inbound", alias="threadReplies")
    # Send markdown as sanitized org.matrix.custom.html next to the plain body.
    markdown: bool = True

    @field_validator("thread_replies", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value


class MutationsConfig(FaultMutations):
    """Test-only bugs, every one off by default: each makes the bot misbehave the way a real Matrix bot does,
    so a scenario can be shown catching it (tests/integration/test_message_semantics.py; the fault ones above:
    tests/integration/test_faults.py)."""

    react_on_edits: bool = Field(False, alias="reactOnEdits")  # an edit is handled as its m.new_content
    trust_formatted_mentions: bool = Field(False, alias="trustFormattedMentions")  # a pill beats m.mentions
    mxid_prefix_is_mention: bool = Field(False, alias="mxidPrefixIsMention")  # "@bot:hs …" typed = addressed
    answer_own_messages: bool = Field(False, alias="answerOwnMessages")  # no own-sender check
    answer_notices: bool = Field(False, alias="answerNotices")  # m.notice answered like m.text
    thread_root_from_reply: bool = Field(False, alias="threadRootFromReply")  # replied-to event as thread root
    ignore_legacy_mentions: bool = Field(False, alias="ignoreLegacyMentions")  # no m.mentions: nothing counts
    display_name_is_mention: bool = Field(False, alias="displayNameIsMention")  # the name typed in the body counts
    visible_mention_required: bool = Field(False, alias="visibleMentionRequired")  # m.mentions alone is ignored
    quote_leaves_thread: bool = Field(False, alias="quoteLeavesThread")  # an in-thread quote answered top-level
    known_bots_ignored: bool = Field(False, alias="knownBotsIgnored")  # bots treated as people: allowBots moot
    reply_fallback_to_root: bool = Field(False, alias="replyFallbackToRoot")  # m.in_reply_to names the root
    answer_reactions: bool = Field(False, alias="answerReactions")  # a reaction is answered like a message
    reactions_to_main_session: bool = Field(False, alias="reactionsToMainSession")  # thread target lost
    raw_html: bool = Field(False, alias="rawHtml")  # the model's HTML passes into formatted_body unsanitized
    truncate_long_replies: bool = Field(False, alias="truncateLongReplies")  # only the first part is sent
    ignore_redactions: bool = Field(False, alias="ignoreRedactions")  # a removed reaction is not recorded
    redactions_as_messages: bool = Field(False, alias="redactionsAsMessages")  # a redaction handled as text

    def policy(self) -> Mutations:
        return Mutations(
            react_on_edits=self.react_on_edits, trust_formatted_mentions=self.trust_formatted_mentions,
            mxid_prefix_is_mention=self.mxid_prefix_is_mention, answer_own_messages=self.answer_own_messages,
            answer_notices=self.answer_notices, thread_root_from_reply=self.thread_root_from_reply,
            ignore_legacy_mentions=self.ignore_legacy_mentions, display_name_is_mention=self.display_name_is_mention,
            visible_mention_required=self.visible_mention_required, quote_leaves_thread=self.quote_leaves_thread,
            known_bots_ignored=self.known_bots_ignored,
        )


class CompactionConfig(_Model):
    enabled: bool = True
    max_records: int = Field(400, alias="maxRecords", gt=1)
    max_bytes: int = Field(1_000_000, alias="maxBytes", gt=0)
    keep_records: int = Field(40, alias="keepRecords", ge=0)
    # model: the summary comes from a model call (made with no lock held); local: the folded lines, cut short.
    summary: Literal["model", "local"] = "model"


# Test-only mutations of the session lock's life, each the bug one scenario must catch (none by default).
# append-behind-turn: a message's inbound append queued until the session's running turn is over (model call
# included), then a free lock taken at once (waitMs 0): it waits for the turn without waiting on the lock.
LockLifeBug = Literal["compact-under-model", "hook-under-lock", "skip-fence", "skip-startup-cleanup",
                      "leak-skipped", "append-behind-turn"]


class SessionLifeConfig(_Model):
    """The lock's life beyond the turn (qa.agent.session_life): compaction, post-turn work, test knobs."""

    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    # After each reply: ask the model for a short note on the turn and keep it in the transcript.
    post_turn_memory: bool = Field(False, alias="postTurnMemory")
    # Fault injection: the first reply write of the process keeps its lock (a stalled disk) until a waiter takes it
    # over past maxHoldMs, or at most this long; then the fence must stop the stale attempt.
    stall_first_reply_ms: int = Field(0, alias="stallFirstReplyMs", ge=0, le=60_000)
    test_bugs: list[LockLifeBug] = Field(default_factory=list, alias="testBugs")


class AgentConfig(_Model):
    homeserver: str
    user_id: str = Field(alias="userId")
    password_file: str | None = Field(None, alias="passwordFile")
    device_id: str = Field("MATRIXQABOT", alias="deviceId")
    state_dir: str = Field(alias="stateDir")
    trace_path: str | None = Field(None, alias="tracePath")
    rooms: dict[str, RoomConfig]
    # The account's settings: what a room joined at run time (an invite, see autoJoin) is served with.
    defaults: RoomConfig = Field(default_factory=RoomConfig)
    # Invites to rooms not listed above: always join, join when the inviter is on autoJoinAllowlist, or decline.
    auto_join: Literal["always", "allowlist", "off"] = Field("off", alias="autoJoin")
    auto_join_allowlist: list[str] = Field(default_factory=list, alias="autoJoinAllowlist")
    # Direct chats (an invite flagged is_direct) need no mention unless this says so.
    dm_require_mention: bool = Field(False, alias="dmRequireMention")
    # Which rendering of the config this is; traced on every reload (SIGHUP) so a reader can tell them apart.
    config_generation: int = Field(1, alias="configGeneration")
    known_bots: list[str] = Field(default_factory=list, alias="knownBots")
    # The loop guard: at most this many answers in a row to known bots in one conversation with no person speaking
    # in between; the next bot message is dropped (`bot-loop`, traced). null: no guard (two bots talk forever).
    bot_loop_limit: int | None = Field(3, alias="botLoopLimit", ge=1)
    model: ModelConfig
    session: dict[str, Any] = Field(default_factory=dict)
    session_life: SessionLifeConfig = Field(default_factory=SessionLifeConfig, alias="sessionLife")
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    encryption: bool = False
    # The /sync long-poll timeout the bot asks for; a sync silent well past it is given up on (qa.agent.matrix).
    sync_timeout_ms: int = Field(30_000, alias="syncTimeoutMs", gt=0, le=300_000)
    # How long an encrypted message waits for its room key before it is dropped as undecryptable. A dropped
    # message is lost for good while a late one is only answered late, and a key can come seconds after its
    # message (to-device delivery, an Olm session set up for a new device, a loaded homeserver): 3 s dropped a
    # message whose key was on its way under load. Scenarios whose key never comes set a short one
    # (`bot: {decryptRetry: 3s}`), so the drop they check comes soon.
    # Finite and at most a week (a scenario's longest duration): `inf` would hold an undecryptable message forever.
    decrypt_retry_s: float = Field(30.0, alias="decryptRetryS", gt=0, le=7 * 24 * 3600, allow_inf_nan=False)
    # Test-only mutation, off by default: behave like a bot whose state is not persistent — every start
    # forgets the sync position and the transcripts, and treats its first sync as new messages. It is the
    # bug class the restart scenarios must catch (answering old messages again).
    forget_state_on_start: bool = Field(False, alias="forgetStateOnStart")
    # Draft replies edited as the model speaks (qa.agent.streaming): off, partial (a draft edited at a bounded
    # rate) or quiet (an m.notice placeholder, then the answer).
    streaming: Literal["off", "partial", "quiet"] = "off"
    tool_progress: Literal["on", "off"] = Field("on", alias="toolProgress")
    stream_edit_interval_ms: int = Field(250, alias="streamEditIntervalMs", gt=0)
    media: MediaConfig = Field(default_factory=MediaConfig)
    test_mutations: list[TestMutation] = Field(default_factory=list, alias="testMutations")
    replies: RepliesConfig = Field(default_factory=RepliesConfig)
    mutations: MutationsConfig = Field(default_factory=MutationsConfig)

    @field_validator("streaming", "tool_progress", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads bare on/off as booleans.
        return {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value

    def mutated(self, name: str) -> bool:
        return name in self.test_mutations
    # --- E2EE beyond trust on first use (qa.agent.verification) ---
    # Who gets the bot's room keys: every device of the room's members ("all", trust on first use) or only
    # devices the bot has verified ("verified"; unverified ones are blacklisted and traced e2ee.withheld).
    room_keys: Literal["all", "verified"] = Field("all", alias="roomKeys")
    # Take part in SAS verification others start; off cancels every request (m.user) and traces it.
    accept_verification: bool = Field(True, alias="acceptVerification")
    # After the server deleted our device (M_UNKNOWN_TOKEN): log in again as a new device.
    relogin_on_device_deleted: bool = Field(True, alias="reloginOnDeviceDeleted")
    # A crypto store that cannot be opened is moved aside and the bot starts as a new device (fail closed:
    # what was encrypted for the old device stays undecryptable). Off: the bot dies on it.
    reset_corrupt_crypto_store: bool = Field(True, alias="resetCorruptCryptoStore")
    # Test-only mutations: the bug classes the deeper E2EE scenarios must catch.
    keep_megolm_session: bool = Field(False, alias="keepMegolmSession")  # never a new session: leave/join/devices
    answer_verification_notices: bool = Field(False, alias="answerVerificationNotices")
    log_decrypted_bodies: bool = Field(False, alias="logDecryptedBodies")
    send_in_the_clear: bool = Field(False, alias="sendInTheClear")
    # More test-only mutations, each a bug class a scenario of issue 13 must catch (all off by default):
    # trustSyncPosition: no dedupe at the door, the saved sync position is trusted to never repeat a message; a
    # redelivered one starts a second turn and model request (only the transcript's fence stops a 2nd answer).
    trust_sync_position: bool = Field(False, alias="trustSyncPosition")
    # catchupAsHistory: every start's first batch is taken for history, so messages sent while down are lost.
    catchup_as_history: bool = Field(False, alias="catchupAsHistory")
    # answerBacklogOnJoin: what a room shows from before the bot (re)joined it counts as new messages.
    answer_backlog_on_join: bool = Field(False, alias="answerBacklogOnJoin")
    # staleReloadPolicy: a reload is traced but the rooms' policy stays what it was at start.
    stale_reload_policy: bool = Field(False, alias="staleReloadPolicy")
    # crossRoomMemory: a sender's messages in other rooms (a DM, another group) ride along in each model request.
    cross_room_memory: bool = Field(False, alias="crossRoomMemory")
    # replyInFirstRoom: every answer goes to the first room of the config, wherever it was asked.
    reply_in_first_room: bool = Field(False, alias="replyInFirstRoom")

    def room_policy(self, room_id: str, *, joined_at_runtime: bool = False, direct: bool = False
                    ) -> RoomPolicy | None:
        """A listed room's policy; for a room joined through an invite, the account's defaults; else None."""
        room = self.rooms.get(room_id) or (self.defaults if joined_at_runtime else None)
        if room is None:
            return None
        return RoomPolicy(
            require_mention=self.dm_require_mention if direct else room.require_mention,
            allowlist=frozenset(room.allowlist) if room.allowlist is not None else None,
            allow_bots=room.allow_bots,
            known_bots=frozenset(self.known_bots),
        )

    def approvers(self, room_id: str) -> frozenset[str] | None:
        """Who may decide an approval in a room: its allowlist, or anyone but the bot when it has none."""
        room = self.rooms.get(room_id)
        return frozenset(room.allowlist) if room is not None and room.allowlist is not None else None

    def password(self, env: Mapping[str, str]) -> str:
        if self.password_file:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        for name in ("MATRIX_QA_PASSWORD", "MATRIX_QA_BOT_PASSWORD"):  # the launch contract's, then the old name
            if env.get(name):
                return env[name]
        raise ConfigError("bot config: no password (set passwordFile or MATRIX_QA_PASSWORD)")


def load_agent_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read bot config: {exc.strerror}") from exc
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc


def model_api_key(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("OPENAI_API_KEY") or env.get("MATRIX_QA_LIVE_OPENAI_KEY") or ""
