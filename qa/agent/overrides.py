"""Check `--bot-set KEY=VALUE` overrides against the bot's config model before anything starts.

Without this, a typo (`rooms.*.requireMentions`) or a wrong value (`approvals.timeoutS=-1`) is only noticed
when the bot validates its config file, dies, and the scenario reports a timeout. Each override is applied on
its own to a representative valid config (the shape `qa.scenario.runner.bot_agent_config` writes) and
validated with the same pydantic model the bot uses, so every problem names the one key that caused it.

Dotted keys follow the runner's rules: `a.b.c` sets a nested field, creating mappings on the way, and a `*`
part means every entry of a mapping (`rooms.*.requireMention`: room ids are not known before the run).
`session` is a free mapping in the model; its one known key, `writeLock`, is checked by the lock settings'
own parser (qa.kernel.lock_settings), as the bot does at start. The same parser judges the lock settings'
environment variables (`validate_agent_env`, bot.yaml's env_check).
"""

from __future__ import annotations

import copy
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from qa.agent import event_loop
from qa.kernel.dotted import set_dotted
from qa.kernel.lock_settings import LockConfigError, resolve_lock_settings

_ROOMS = ("!one:qa.invalid", "!two:qa.invalid")
_SESSION_KEYS = ("writeLock",)


def representative_config() -> dict[str, Any]:
    """A valid config of the shape the runner writes, with placeholder values."""
    room = {"requireMention": True, "allowlist": None, "allowBots": "off"}
    return {
        "homeserver": "http://127.0.0.1:8008",
        "userId": "@bot:qa.invalid",
        "passwordFile": "/nonexistent/password",
        "stateDir": "/nonexistent/state",
        "tracePath": "/nonexistent/trace.jsonl",
        "rooms": {room_id: dict(room) for room_id in _ROOMS},
        "knownBots": [],
        "model": {"baseUrl": "http://127.0.0.1:1/v1", "model": "mock"},
        "session": {"writeLock": {}},
        "approvals": {"textChunkLimit": 4000},
        "encryption": False,
    }


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text)} characters)"


def apply_override(config: dict[str, Any], key: str, value: object) -> str | None:
    """Set one dotted key in `config` in place, exactly as the launch does (qa.kernel.dotted); a problem or None."""
    blocked = set_dotted(config, key, value)
    return f"{'.'.join(blocked)} is not a mapping" if blocked else None


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model inside an annotation, whether it sits inside a dict[str, ...]) for Optional/dict/plain types."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is dict:
        inner, _ = _model_in(get_args(annotation)[1])
        return inner, True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """Config keys (aliases, as the file spells them) of the model at a pydantic error location."""
    from qa.agent.config import AgentConfig

    model: type[BaseModel] | None = AgentConfig
    skip_key = False
    for part in loc:
        if skip_key:  # a dict key such as a room id
            skip_key = False
            continue
        if model is None:
            return []
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return []
        model, skip_key = _model_in(field.annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        known = _known_keys(tuple(err["loc"])[:-1])
        return f"unknown key (known: {', '.join(known)})" if known else "unknown key"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg[:1].lower()}{msg[1:]}, got {_shown(err.get('input'))}"


def _check_session(session: object) -> str | None:
    if not isinstance(session, dict):
        return None  # pydantic reports a session that is not a mapping
    unknown = sorted(set(session) - set(_SESSION_KEYS))
    if unknown:
        return f"unknown key session.{unknown[0]} (known: {', '.join('session.' + k for k in _SESSION_KEYS)})"
    try:
        # env={}: the environment is checked on its own (validate_agent_env); here only the override.
        resolve_lock_settings(session.get("writeLock"), {})
    except LockConfigError as exc:
        return str(exc)
    return None


def validate_agent_override(key: str, value: object) -> str | None:
    """The problem with one override, naming its key, or None when the bot would accept it."""
    # Here, not at the top: the harness loads this module with every bot file's checks (bot.yaml's env_check), and
    # the config model (and the agent modules it needs) costs a run without --bot-set ~0.1 s of CPU (issue 29).
    from qa.agent.config import AgentConfig

    parts = key.split(".")
    if not key or any(not p for p in parts):
        return f"--bot-set {key!r}: not a dotted key such as session.writeLock.scope"
    if parts[-1] == "*":
        return f"--bot-set {key}: `*` stands for every entry of a mapping and cannot be the last part"
    config = representative_config()
    problem = apply_override(config, key, value)
    if problem:
        return f"--bot-set {key}: {problem}"
    try:
        validated = AgentConfig.model_validate(copy.deepcopy(config))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        return f"--bot-set {key}: {_message(dict(err))}"
    session_problem = _check_session(validated.session)
    if session_problem:
        return f"--bot-set {key}: {session_problem}"
    return None


def validate_agent_overrides(overrides: dict[str, object]) -> list[str]:
    """Every problem with the overrides, one per offending key (in the order given); empty when all are fine."""
    return [p for key, value in overrides.items() if (p := validate_agent_override(key, value)) is not None]


def validate_agent_env(env: dict[str, str]) -> list[str]:
    """bot.yaml's env_check: a bad MATRIX_QA_SESSION_WRITE_LOCK_* value in the environment the bot will inherit,
    as the bot itself would refuse it at start (the first one, in the lock settings' own words), and a bad
    MATRIX_QA_AGENT_LOOP (qa.agent.event_loop)."""
    problems = event_loop.env_problems(env)
    try:
        resolve_lock_settings(None, env)
    except LockConfigError as exc:
        return [str(exc), *problems]
    return problems
