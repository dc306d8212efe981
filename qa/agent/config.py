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
from qa.agent.policy import RoomPolicy
from qa.errors import ConfigError


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
    timeout_s: float = Field(60.0, alias="timeoutS")
    max_retries: int = Field(2, alias="maxRetries")
    system_prompt: str = Field(
        "You are a helpful assistant in a Matrix chat room. Follow the user's instructions exactly.",
        alias="systemPrompt",
    )


class ApprovalsConfig(_Model):
    enabled: bool = True
    timeout_s: float = Field(120.0, alias="timeoutS", gt=0)
    text_chunk_limit: int = Field(4000, alias="textChunkLimit", gt=0)
    allowed_programs: list[str] = Field(list(DEFAULT_ALLOWED_PROGRAMS), alias="allowedPrograms")


class CompactionConfig(_Model):
    enabled: bool = True
    max_records: int = Field(400, alias="maxRecords", gt=1)
    max_bytes: int = Field(1_000_000, alias="maxBytes", gt=0)
    keep_records: int = Field(40, alias="keepRecords", ge=0)
    # model: the summary comes from a model call (made with no lock held); local: the folded lines, cut short.
    summary: Literal["model", "local"] = "model"


# Test-only mutations of the session lock's life, each the bug one scenario must catch (none by default).
LockLifeBug = Literal["compact-under-model", "hook-under-lock", "skip-fence", "skip-startup-cleanup",
                      "leak-skipped"]


class SessionLifeConfig(_Model):
    """The lock's life beyond the turn (qa.agent.session_life): compaction, post-turn work, test knobs."""

    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    # After each reply: ask the model for a short note on the turn and keep it in the transcript.
    post_turn_memory: bool = Field(False, alias="postTurnMemory")
    # Fault injection: the first reply write of the process keeps its lock this long before writing (a stalled
    # disk), so a waiter takes it over past maxHoldMs and the fence must stop the stale attempt.
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
    known_bots: list[str] = Field(default_factory=list, alias="knownBots")
    model: ModelConfig
    session: dict[str, Any] = Field(default_factory=dict)
    session_life: SessionLifeConfig = Field(default_factory=SessionLifeConfig, alias="sessionLife")
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    encryption: bool = False
    # How long an encrypted message waits for its room key before it is dropped as undecryptable.
    decrypt_retry_s: float = Field(3.0, alias="decryptRetryS", gt=0)
    # Test-only mutation, off by default: behave like a bot whose state is not persistent — every start
    # forgets the sync position and the transcripts, and treats its first sync as new messages. It is the
    # bug class the restart scenarios must catch (answering old messages again).
    forget_state_on_start: bool = Field(False, alias="forgetStateOnStart")

    def room_policy(self, room_id: str) -> RoomPolicy | None:
        room = self.rooms.get(room_id)
        if room is None:
            return None
        return RoomPolicy(
            require_mention=room.require_mention,
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
