"""From a bot file and the facts of one scenario to a concrete launch: argv, environment and rendered config.

The launch contract (always in the bot's environment, whatever its bot file says):

    MATRIX_QA_HOMESERVER_URL  MATRIX_QA_USER_ID  MATRIX_QA_PASSWORD  MATRIX_QA_ACCESS_TOKEN  MATRIX_QA_DEVICE_ID
    MATRIX_QA_ROOM_IDS (comma-separated)  MATRIX_QA_STATE_DIR  MATRIX_QA_TRACE_FILE  MATRIX_QA_EXEC_DIR
    MATRIX_QA_SCENARIO  MATRIX_QA_MODEL  OPENAI_BASE_URL  OPENAI_API_KEY  ANTHROPIC_BASE_URL  ANTHROPIC_API_KEY
    (+ MATRIX_QA_CONFIG when a config is rendered, MATRIX_QA_MODEL_TIMEOUT_S when the scenario's bot.modelTimeout
     or --model-timeout sets one, MATRIX_QA_ACCOUNTS when the bot file names `accounts`,
     MATRIX_QA_REGISTRATION_TOKEN with `registration: token`: in the environment only, never in a template;
     with `appservice:` MATRIX_QA_APPSERVICE_REGISTRATION (a registration file the bot may read),
     MATRIX_QA_AS_TOKEN and MATRIX_QA_HS_TOKEN: the tokens in the environment and that file only)

The openai SDK reads OPENAI_BASE_URL and OPENAI_API_KEY by itself, and the anthropic SDK ANTHROPIC_BASE_URL and
ANTHROPIC_API_KEY, so a bot that uses either reaches the scenario's own scope of the mock provider with no
configuration at all. Both pairs name the same provider and key; Anthropic's base URL is without the `/v1`
(the anthropic SDK adds `/v1/messages` itself).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from qa import processes
from qa.harness.botfile import BotFile
from qa.harness.contract_env import inherited_env
from qa.kernel.dotted import set_dotted as dotted_set
from qa.kernel.errors import ConfigError

# Never handed to a bot, not even through the inherited environment: they are the harness's, not the bot's.
WITHHELD_ENV_PREFIXES = processes.WITHHELD_ENV_PREFIXES
# The scenario's exec directory, beside the bot's state dir (MATRIX_QA_EXEC_DIR).
EXEC_DIR_NAME = "exec"


@dataclass
class LaunchFacts:
    """Everything a bot may be told about one scenario. Secrets are here; the launch never writes them into
    an artifact (the rendered config lives in the scenario's temporary state dir)."""

    homeserver_url: str
    server_name: str
    user_id: str
    password: str
    password_file: Path
    access_token: str
    device_id: str
    rooms: dict[str, str]
    actors: dict[str, str]
    provider_base_url: str
    provider_api_key: str
    model: str
    scenario_id: str
    scenario_title: str
    bot: dict[str, Any]
    encryption: bool
    state_dir: Path
    trace_file: Path
    provider_timeout_s: float | None = None
    provider_max_retries: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # The bot's extra accounts (its bot file's `accounts`): name -> user_id, password, access_token, device_id.
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    # `registration: token`: a token valid on the run's own homeserver (or the user's, on theirs).
    registration_token: str | None = None
    # Where the bot's exec tool runs its commands; the harness looks there for what a command made. Outside the
    # bot's state (default: beside it), so only a command that really ran can leave a file in it.
    exec_dir: Path | None = None
    # `appservice:`: registration (path of the bot's copy), as_token, hs_token, as_port, prefix.
    appservice: dict[str, str] | None = None

    def exec_directory(self) -> Path:
        return self.exec_dir or self.state_dir.parent / EXEC_DIR_NAME


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    config_path: Path | None
    config_text: str | None
    # The placeholder values of this launch, so a bot file's state mutations are filled in the same way.
    values: dict[str, str] = field(default_factory=dict)


def placeholders(bot: BotFile, facts: LaunchFacts, config_path: Path | None) -> dict[str, str]:
    return {
        "config": str(config_path or ""), "state_dir": str(facts.state_dir), "trace_file": str(facts.trace_file),
        "python": sys.executable, "bot_dir": str(bot.directory), "scenario": facts.scenario_id,
        "as_port": (facts.appservice or {}).get("as_port", ""),
    }


def fill(text: str, values: Mapping[str, str]) -> str:
    """`{name}` placeholders only (the bot file was checked for unknown ones); other braces stay as written."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def contract_env(facts: LaunchFacts, config_path: Path | None) -> dict[str, str]:
    env = {
        "MATRIX_QA_HOMESERVER_URL": facts.homeserver_url,
        "MATRIX_QA_USER_ID": facts.user_id,
        "MATRIX_QA_PASSWORD": facts.password,
        "MATRIX_QA_ACCESS_TOKEN": facts.access_token,
        "MATRIX_QA_DEVICE_ID": facts.device_id,
        "MATRIX_QA_ROOM_IDS": ",".join(facts.rooms.values()),
        "MATRIX_QA_STATE_DIR": str(facts.state_dir),
        "MATRIX_QA_TRACE_FILE": str(facts.trace_file),
        "MATRIX_QA_EXEC_DIR": str(facts.exec_directory()),
        "MATRIX_QA_SCENARIO": facts.scenario_id,
        "MATRIX_QA_MODEL": facts.model,
        "OPENAI_BASE_URL": facts.provider_base_url,
        "OPENAI_API_KEY": facts.provider_api_key,
        "ANTHROPIC_BASE_URL": facts.provider_base_url.removesuffix("/v1"),
        "ANTHROPIC_API_KEY": facts.provider_api_key,
    }
    if config_path is not None:
        env["MATRIX_QA_CONFIG"] = str(config_path)
    if facts.provider_timeout_s is not None:
        env["MATRIX_QA_MODEL_TIMEOUT_S"] = f"{float(facts.provider_timeout_s):g}"
    if facts.accounts:
        env["MATRIX_QA_ACCOUNTS"] = json.dumps(facts.accounts, sort_keys=True)
    if facts.registration_token:
        env["MATRIX_QA_REGISTRATION_TOKEN"] = facts.registration_token
    if facts.appservice:
        env["MATRIX_QA_APPSERVICE_REGISTRATION"] = facts.appservice["registration"]
        env["MATRIX_QA_AS_TOKEN"] = facts.appservice["as_token"]
        env["MATRIX_QA_HS_TOKEN"] = facts.appservice["hs_token"]
    return env


def template_context(bot: BotFile, facts: LaunchFacts, config_path: Path | None, generation: int = 1
                     ) -> dict[str, Any]:
    return {
        # Which rendering this is: 1 at launch, +1 for every set_bot_config step (a bot traces it on reload).
        "config_generation": generation,
        **placeholders(bot, facts, config_path),
        "homeserver_url": facts.homeserver_url, "server_name": facts.server_name, "user_id": facts.user_id,
        "password": facts.password, "password_file": str(facts.password_file), "access_token": facts.access_token,
        "device_id": facts.device_id, "rooms": dict(facts.rooms), "room_ids": list(facts.rooms.values()),
        "actors": dict(facts.actors), "encryption": facts.encryption, "bot": facts.bot,
        "scenario_title": facts.scenario_title, "accounts": {k: dict(v) for k, v in facts.accounts.items()},
        # Never the tokens (they are in the environment): where the registration is, the port, the namespace.
        "appservice": {k: v for k, v in (facts.appservice or {}).items() if not k.endswith("_token")} or None,
        "provider": {"base_url": facts.provider_base_url, "api_key": facts.provider_api_key, "model": facts.model,
                     "timeout_s": facts.provider_timeout_s, "max_retries": facts.provider_max_retries},
    }


def render_config(bot: BotFile, context: Mapping[str, Any], overrides: Mapping[str, Any]) -> str | None:
    path = bot.template_path()
    if path is None:
        if overrides:
            raise ConfigError(f"--bot-set needs a bot file whose rendered config it can edit; {bot.source} has no "
                              "config_template (with config_format: json|yaml)")
        return None
    try:
        text = compiled_template(path.read_text(encoding="utf-8")).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{path}: template uses an unknown variable: {exc.message}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config template: {exc.strerror or exc}") from None
    if not overrides:
        return text
    if bot.config_format is None:
        raise ConfigError(f"--bot-set edits the rendered config only when {bot.source} says config_format: "
                          "json or yaml")
    return apply_overrides(text, bot.config_format, overrides, str(path))


@functools.lru_cache(maxsize=16)
def compiled_template(text: str) -> jinja2.Template:
    """A config template compiled once per text: compiling the agent's costs ~12 ms of CPU on the harness's event
    loop (which also serves the mock provider and every scenario's test users; 160-190 ms of wall time at a load
    of 16), and each scenario renders it again (its launch, each set_bot_config). The file is still read every
    time, so a template edited mid-run is compiled anew; a syntax error is raised, never kept."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["tojson"] = lambda value: json.dumps(value)
    return env.from_string(text)


def apply_overrides(text: str, fmt: str, overrides: Mapping[str, Any], where: str) -> str:
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: the rendered config is not valid {fmt}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the rendered config is not a {fmt} mapping, so --bot-set cannot edit it")
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data, sort_keys=False)


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """`a.b.c=v` (qa.kernel.dotted, the same code that checked the override before the run started)."""
    blocked = dotted_set(config, dotted, value)
    if blocked:
        raise ConfigError(f"--bot-set {dotted}: {blocked[-1]} is not a mapping in the bot's config")


def build_launch(bot: BotFile, facts: LaunchFacts, overrides: Mapping[str, Any], base_env: Mapping[str, str],
                 generation: int = 1) -> Launch:
    config_path = facts.state_dir.parent / f"{facts.state_dir.name}-{bot.config_file_name()}" \
        if bot.config_template else None
    context = template_context(bot, facts, config_path, generation)
    config_text = render_config(bot, context, overrides)
    values = placeholders(bot, facts, config_path)
    env = {**inherited_env(base_env), **facts.extra_env, **contract_env(facts, config_path)}
    env.update({k: fill(v, values) for k, v in bot.env.items()})
    cwd = Path(fill(bot.cwd, values)) if bot.cwd else bot.directory
    if not cwd.is_absolute():
        cwd = bot.directory / cwd
    return Launch(argv=[fill(a, values) for a in bot.command], env=env, cwd=cwd,
                  config_path=config_path, config_text=config_text, values=values)
