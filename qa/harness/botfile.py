"""The bot file: how to launch a bot under test, what it is told, when it is ready, and what it can do.

    name: my-bot
    command: ["python", "-m", "mybot", "--config", "{config}"]   # argv, no shell; placeholders below
    env: {MYBOT_LOG: debug}                                      # extra env; values may use placeholders
    config_template: mybot.ini.j2    # optional jinja2 file, rendered to {config} (relative to the bot file)
    config_format: json              # optional: json|yaml; then --bot-set KEY=VALUE edits the rendered config
    cwd: "{bot_dir}"                 # optional: the working directory (default: the bot file's folder)
    ready: {joined: true}            # or {trace: true} or {log: "Starting sync loop"}; optional timeout
    capabilities: [threads, restart] # what the bot claims; scenarios needing more are skipped with the reason
    state_mutations:                 # optional: named commands that change the bot's saved state while it
      rewind-sync: ["{python}", "tools/rewind.py", "{state_dir}"]   # is stopped (step mutate_bot_state)
    overrides_check: mybot.check:overrides   # optional: module:function judging --bot-set values first
    env_check: mybot.check:environment       # optional: module:function judging the environment first
    lock_probe: ["{python}", "-m", "mybot.probe", "{state_dir}"]   # optional, with capability lock: the
                                     # contention probe's second writer (qa.harness.probe)
    fork_server: {preload: [mybot.main]}     # optional, for `{python} -m MODULE` bots: fork them from one
                                             # pre-imported process (qa.harness.fork_server)
    accounts: [router]               # optional: the bot's accounts beside its main one (MATRIX_QA_ACCOUNTS)
    registration: token              # optional: a registration token for the bot (MATRIX_QA_REGISTRATION_TOKEN);
    registration_prefix: mybot-      # the localparts of the accounts it registers start with this
    appservice: {localpart: bot}     # optional: an application service; its command or env uses {as_port}
    say: "!echo {text}"              # optional: a bot without a model; the message it answers with {text}

Placeholders in `command`, `env`, `cwd`, `state_mutations` and `lock_probe`: {config} {state_dir} {trace_file}
{python} {bot_dir} {scenario} {as_port} (the port an `appservice:` bot listens on). The template sees every fact
of the launch (qa.harness.launch). docs/bot-file.md is the reference. Pure apart from reading the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from qa import safe_yaml
from qa.harness.capabilities import Capability
from qa.harness.contract_env import CONTRACT_ENV
from qa.kernel.errors import ConfigError
from qa.patterns import user_pattern
from qa.shared.appservice import AS_PREFIX, prefixes_overlap

PLACEHOLDERS = ("config", "state_dir", "trace_file", "python", "bot_dir", "scenario", "as_port")
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")
DEFAULT_READY_TIMEOUT_S = 20.0
BUILTIN_BOT_FILE = Path(__file__).resolve().parents[1] / "agent" / "bot.yaml"


def _placeholders_known(value: str) -> str:
    unknown = [m for m in _PLACEHOLDER_RE.findall(value) if m not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: "
                         + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + ")")
    return value


Templated = Annotated[str, AfterValidator(_placeholders_known)]


def _regex(value: str | None) -> str | None:
    if value is not None:
        user_pattern(value)  # the one check every user pattern gets (qa.patterns): ValueError with the reason
    return value


def say_template_problem(value: str) -> str | None:
    """Pure: why `value` is no `say` template, or None."""
    if value.count("{text}") != 1:
        return "say needs {text} exactly once: the text the bot is to answer with, e.g. \"!echo {text}\""
    return None


def _say_template(value: str) -> str:
    problem = say_template_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def python_module(argv: list[str]) -> str | None:
    """Pure: MODULE when `argv` is `{python} -m MODULE …` with MODULE written out, else None."""
    if len(argv) >= 3 and argv[:2] == ["{python}", "-m"] and re.fullmatch(_MODULE, argv[2]):
        return argv[2]
    return None


class ReadySpec(BaseModel):
    """Exactly one condition. trace: a `ready` record in the trace; log: a regex over the bot's stdout/stderr;
    joined: the harness sees the bot join every room of the scenario, then a short settle."""

    model_config = ConfigDict(extra="forbid")

    trace: bool = False
    log: Annotated[str | None, AfterValidator(_regex)] = Field(default=None, min_length=1)
    joined: bool = False
    timeout: float = Field(default=DEFAULT_READY_TIMEOUT_S, gt=0, le=600)

    @model_validator(mode="after")
    def _exactly_one(self) -> ReadySpec:
        chosen = [name for name, on in (("trace", self.trace), ("log", self.log is not None),
                                        ("joined", self.joined)) if on]
        if len(chosen) != 1:
            raise ValueError("ready needs exactly one condition: {trace: true}, {log: REGEX} or {joined: true}"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        return self

    @property
    def kind(self) -> Literal["trace", "log", "joined"]:
        return "trace" if self.trace else ("log" if self.log is not None else "joined")

    def describe(self) -> str:
        return {"trace": "a `ready` trace record", "log": f"a log line matching /{self.log}/",
                "joined": "the bot's join in every room"}[self.kind]


_ENTRY_POINT = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
_MODULE = r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*$"


class ForkServerSpec(BaseModel):
    """A Python bot started as `{python} -m MODULE …` may be forked from one process that imported it already:
    `preload` is imported there once, in order (`module:function` also calls the function, to warm a cache)."""

    model_config = ConfigDict(extra="forbid")

    preload: list[Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")]] = Field(default_factory=list)


# --- extra accounts (issue 33) -------------------------------------------------------------------------------
# A bot that is more than one Matrix account names the others; the harness makes each with the scenario's users.
# "bot" is the main account's name in scenarios (`from: bot`), so no extra account may take it.
MAIN_ACCOUNT = "bot"
AccountName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)]


def _accounts_distinct(names: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name == MAIN_ACCOUNT:
            raise ValueError(f"{MAIN_ACCOUNT!r} is the bot's main account; name the others differently")
        if name in seen:
            raise ValueError(f"account {name!r} is named twice")
        seen.add(name)
    return names


def account_clashes(bot: BotFile, actors: list[str]) -> list[str]:
    """Pure: the bot's account names that are also a scenario's test users (each must be one Matrix user)."""
    return [name for name in bot.accounts if name in actors]
# --- end of extra accounts -----------------------------------------------------------------------------------


# --- registration rights (issue 33) --------------------------------------------------------------------------
# The harness's own users are all "mqa-…": a bot's registered accounts must never be mistaken for them.
HARNESS_LOCALPARTS = "mqa-"
# The user's own registration token for the bot, for `registration: token` against a homeserver the run does not
# own (MATRIX_QA_REGISTRATION_TOKEN is the harness's, for its test users; like it, this is withheld from bots).
USER_REGISTRATION_TOKEN = "MATRIX_QA_REGISTRATION_TOKEN_FOR_BOT"


def _registration_consistent(bot: BotFile) -> None:
    if bot.registration is None and bot.registration_prefix is not None:
        raise ValueError("registration_prefix needs registration: token")
    if bot.registration is not None and bot.registration_prefix is None:
        raise ValueError("registration: token needs registration_prefix: the localpart prefix of the accounts "
                         "the bot registers, so the harness knows their messages are the bot's")
    prefix = bot.registration_prefix or ""
    if prefix and prefixes_overlap(prefix, HARNESS_LOCALPARTS):
        raise ValueError(f"registration_prefix {prefix!r} overlaps the harness's own users ({HARNESS_LOCALPARTS}…)")
    if prefix and prefixes_overlap(prefix, AS_PREFIX):
        raise ValueError(f"registration_prefix {prefix!r} overlaps the application-service namespace "
                         f"({AS_PREFIX}…), which only the harness's registration may register in")
# --- end of registration rights ------------------------------------------------------------------------------


# --- application services (issue 33) -------------------------------------------------------------------------
class AppserviceSpec(BaseModel):
    """An application-service bot. The harness owns the namespace (qa.shared.appservice): each scenario's bot gets
    `mqa_as-<8 hex>-` and its main user is that prefix + `localpart`."""

    model_config = ConfigDict(extra="forbid")

    localpart: Annotated[str, Field(pattern=r"^[a-z0-9._=-]+$", max_length=32)] = "bot"


def _appservice_consistent(bot: BotFile) -> None:
    uses_port = any("{as_port}" in v for v in [*bot.command, *bot.env.values()])
    if bot.appservice is not None and not uses_port:
        raise ValueError("appservice needs the {as_port} placeholder in command or env: the port the harness "
                         "forwards the homeserver's transactions to, which the bot must listen on")
    others = [*(a for argv in bot.state_mutations.values() for a in argv), *(bot.lock_probe or []), bot.cwd or ""]
    if bot.appservice is None and (uses_port or any("{as_port}" in v for v in others)):
        raise ValueError("{as_port} is used but there is no appservice: only an application-service bot has one")
    if bot.appservice is not None and bot.registration is not None:
        raise ValueError("appservice and registration: token do not go together: an application service makes "
                         "its users in its own namespace, with its as_token")


def _not_claimed(capabilities: list[str]) -> list[str]:
    if "appservice" in capabilities:
        raise ValueError("appservice is not claimed in capabilities: a bot file with `appservice:` has it")
    return capabilities
# --- end of application services -----------------------------------------------------------------------------


class BotFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
    command: list[Templated] = Field(min_length=1)
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Templated] = Field(default_factory=dict)
    config_template: str | None = Field(default=None, min_length=1)
    config_format: Literal["json", "yaml"] | None = None
    # The bot's working directory (placeholders allowed); default: the bot file's folder.
    cwd: Templated | None = None
    ready: ReadySpec = Field(default_factory=lambda: ReadySpec(joined=True))
    capabilities: Annotated[list[Capability], AfterValidator(_not_claimed)] = Field(default_factory=list)
    # Optional "module:function" taking the --bot-set overrides (dict) and returning a list of problems, so
    # a bad KEY=VALUE is exit 2 before anything starts instead of a bot that dies in every scenario.
    overrides_check: Annotated[str, Field(pattern=_ENTRY_POINT)] | None = None
    # Optional "module:function" taking the environment the bot will inherit (dict) and returning a list of
    # problems: a bad value of the bot's own variables is exit 2 before anything starts.
    env_check: Annotated[str, Field(pattern=_ENTRY_POINT)] | None = None
    # The contention probe's second writer, for a bot with capability `lock` (qa.harness.probe): started once
    # per scenario, it answers each probe request on stdin with one result line on stdout.
    lock_probe: Annotated[list[Templated], Field(min_length=1)] | None = None
    fork_server: ForkServerSpec | None = None
    stop_timeout: float = Field(default=10.0, gt=0, le=120)
    # Named commands (argv, placeholders allowed) that change the bot's saved state between a stop and a start
    # (step `mutate_bot_state`). Only the bot knows its state's layout, so the bot file says how; a scenario
    # naming a mutation the bot file lacks is skipped with the reason.
    state_mutations: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)],
                          Annotated[list[Templated], Field(min_length=1)]] = Field(default_factory=dict)

    # Extra accounts (issue 33): names of the accounts the bot needs beside its main one.
    accounts: Annotated[list[AccountName], AfterValidator(_accounts_distinct)] = Field(default_factory=list)
    # Registration rights (issue 33): a registration token in the bot's environment, for bots that make their
    # accounts themselves; accounts whose localpart starts with registration_prefix are the bot's.
    registration: Literal["token"] | None = None
    registration_prefix: Annotated[str, Field(pattern=r"^[a-z0-9._=-]+$", max_length=32)] | None = None
    # Application service (issue 33): the harness's registration, a namespace and {as_port} for this bot.
    appservice: AppserviceSpec | None = None
    # --- say: a bot without a model (command30) ---
    # The message that makes the bot answer with exactly {text}. A bot file with `say` has no model: a built-in
    # prompt that only asks for a marker (qa.harness.capabilities.say_marker) is sent as this command instead,
    # and a scenario that needs a model (capability `model`) is skipped with the reason.
    say: Annotated[str, AfterValidator(_say_template)] | None = Field(default=None, max_length=500)
    # --- end say ---

    _dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> BotFile:
        taken = sorted(set(self.env) & set(CONTRACT_ENV))
        if taken:
            raise ValueError(f"env: {', '.join(taken)} belong to the launch contract; the harness sets them "
                             "(a bot file must not point the bot somewhere else than the run reports)")
        mutation_args = [a for argv in self.state_mutations.values() for a in argv] + list(self.lock_probe or [])
        if self.config_template is None and any("{config}" in v for v in [*self.command, *self.env.values(),
                                                                          self.cwd or "", *mutation_args]):
            raise ValueError("{config} is used but there is no config_template to render it from")
        if self.config_format is not None and self.config_template is None:
            raise ValueError("config_format needs a config_template")
        _registration_consistent(self)
        _appservice_consistent(self)
        if self.say is not None and "model" in self.capabilities:
            raise ValueError("say is for a bot without a model, and capabilities claims `model`: a bot with a model "
                             "is sent the prompts themselves (drop one of the two)")
        if self.fork_server is not None and python_module(self.command) is None:
            raise ValueError("fork_server needs a command of the form [\"{python}\", \"-m\", MODULE, …]: the fork "
                             "server runs MODULE as `python -m` would")
        return self

    @property
    def directory(self) -> Path:
        """Relative paths in the file (the template) are relative to the bot file's folder."""
        return self._dir

    @property
    def source(self) -> str:
        return str(self._source) if self._source else f"--bot-command ({self.name})"

    def has(self, capability: str) -> bool:
        # Readiness by a `ready` record is not a claim to the rest of the trace: every record is optional.
        # A bot file without `say` is a bot with a model, as every bot file was before `say` existed.
        return capability in self.capabilities or (capability == "model" and self.say is None) \
            or (capability == "appservice" and self.appservice is not None)

    def abilities(self) -> list[str]:
        """What the bot can do, for the skip decision: its claims, plus `model` unless it has a `say` template, and
        `appservice` when it is one."""
        return [*self.capabilities, *(["model"] if self.has("model") and "model" not in self.capabilities else []),
                *(["appservice"] if self.appservice is not None else [])]

    def say_text(self, text: str) -> str:
        """The message that makes this bot (one with a `say` template) answer with exactly `text`."""
        assert self.say is not None, "say_text needs a bot file with `say`"
        return self.say.replace("{text}", text)

    def template_path(self) -> Path | None:
        return (self._dir / self.config_template) if self.config_template else None

    def config_file_name(self) -> str:
        if self.config_template:
            name = Path(self.config_template).name
            return name[:-3] if name.endswith(".j2") else name
        return "bot-config"


def check_overrides(bot: BotFile, overrides: dict[str, Any]) -> None:
    """Run the bot file's overrides_check, if any; ConfigError listing every problem by key."""
    if not overrides:
        return
    if bot.config_format is None:
        raise ConfigError(f"--bot-set needs a bot file whose rendered config it can edit; {bot.source} has no "
                          "config_template with config_format: json|yaml")
    if bot.overrides_check is None:
        return

    problems = _run_check(bot, "overrides_check", overrides, "the --bot-set values")
    if problems:
        # A checker may name the flag itself (the agent's says "--bot-set KEY: …"): say it once, not twice.
        raise ConfigError("; ".join(p if str(p).startswith("--bot-set") else f"--bot-set: {p}" for p in problems))


def check_env(bot: BotFile, env: dict[str, str]) -> None:
    """Run the bot file's env_check, if any, on the environment the bot will inherit; ConfigError with every
    problem, in the checker's own words (they name the variable)."""
    if bot.env_check is None:
        return
    problems = _run_check(bot, "env_check", dict(env), "the environment")
    if problems:
        raise ConfigError("; ".join(problems))


def _run_check(bot: BotFile, field: str, value: dict[str, Any], what: str) -> list[str]:
    check = _checker(bot, field)
    try:
        return [str(p) for p in check(value)]
    except (Exception, SystemExit) as exc:  # someone else's checker (sys.exit too): reported, not raised through
        raise ConfigError(f"{bot.source}: {field} {getattr(bot, field)} failed on {what}: "
                          f"{type(exc).__name__}: {exc}") from None


def _checker(bot: BotFile, field: str) -> Any:
    import importlib
    import inspect

    entry = str(getattr(bot, field))
    module_name, _, function = entry.partition(":")
    try:
        check = getattr(importlib.import_module(module_name), function)
    except (Exception, SystemExit) as exc:  # a module that calls sys.exit() when imported
        raise ConfigError(f"{bot.source}: {field} {entry}: cannot load it: {exc}") from None
    if not callable(check) or inspect.isclass(check):
        raise ConfigError(f"{bot.source}: {field} {entry} is not a function")
    return check


def load_bot_file(path: Path) -> BotFile:
    """Read and check a bot file; every problem is a ConfigError naming file:line and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read bot file: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        root, raw = safe_yaml.compose(text, no_aliases="YAML aliases/anchors are not allowed in a bot file")
    except safe_yaml.YAMLProblem as exc:
        where = f":{exc.line}:{exc.column}" if exc.line else ""
        raise ConfigError(f"{path}{where}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a bot file is a mapping with at least `name` and `command`")
    try:
        bot = BotFile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for problem in safe_yaml.field_errors(exc, root):
            message = "unknown field" if problem.kind == "extra_forbidden" else problem.message
            if problem.kind == "literal_error":
                message += f", got {problem.error['input']!r}"
            field = f"{safe_yaml.field_path(problem.loc)}: " if problem.loc else ""  # a whole-file rule has none
            lines.append(f"{path}{problem.where()}: {field}{message}")
        raise ConfigError("\n".join(lines)) from None
    bot._dir = path.resolve().parent
    bot._source = path
    template = bot.template_path()
    if template is not None:
        _check_template(path, template)
    for field in ("overrides_check", "env_check"):
        if getattr(bot, field) is not None:
            _checker(bot, field)
    return bot


def check_runnable(bot: BotFile, env: dict[str, str]) -> None:
    """Before anything starts: the bot file's env_check accepts `env`, the program exists and the working
    directory does (when neither depends on a scenario's placeholders), so a typo is exit 2 instead of a failure
    in every scenario."""
    import shutil
    import sys

    check_env(bot, env)
    program = bot.command[0].replace("{python}", sys.executable).replace("{bot_dir}", str(bot.directory))
    if "{" not in program:
        found = shutil.which(program, path=env.get("PATH")) if "/" not in program else (
            program if (bot.directory / program).exists() or Path(program).exists() else None)
        if found is None:
            raise ConfigError(f"{bot.source}: command: {program!r} is not an executable on PATH (nor a file)")
    if bot.cwd is not None:
        cwd = bot.cwd.replace("{bot_dir}", str(bot.directory)).replace("{python}", sys.executable)
        if "{" not in cwd and not (bot.directory / cwd).is_dir():
            raise ConfigError(f"{bot.source}: cwd: {cwd} is not a directory")


def _check_template(bot_path: Path, template: Path) -> None:
    """A template that does not parse is a problem of the bot file, found before anything starts."""
    import jinja2

    try:
        jinja2.Environment().parse(template.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{bot_path}: config_template: {template} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{template}: cannot read config template: {exc}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{template}:{exc.lineno}: template syntax error: {exc.message}") from None


def builtin_bot_file() -> BotFile:
    """The embedded agent (qa/agent/bot.yaml), described by a bot file like any other bot."""
    return load_bot_file(BUILTIN_BOT_FILE)


def command_bot_file(command: str) -> BotFile:
    """`--bot-command 'CMD …'`: a bot file with only that command, the launch contract and readiness `joined`."""
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"--bot-command: cannot split {command!r}: {exc}") from None
    if not argv:
        raise ConfigError("--bot-command is empty")
    try:
        return BotFile(name="bot-command", command=argv)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--bot-command: {safe_yaml.field_path(tuple(first['loc']))}: "
                          f"{first['msg'].removeprefix('Value error, ')}") from None
