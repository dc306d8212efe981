"""`matrix-qa run`'s command line: its flags in help groups, the config file's settings under them, and the
RunOptions they make. qa.cli owns the other commands and the dispatch.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import gc
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qa.config_file import ConfigFile, find_config_file, load_config_file
from qa.harness import early_fork_server
from qa.homeserver import early_synapse, registry
from qa.kernel import event_loop
from qa.kernel.errors import ConfigError, QAError
from qa.kernel.terminal import safe_print
from qa.shared.imports import imports_without_gc

EPILOG = """\
examples:
  matrix-qa run                                    the built-in fast profile on the embedded agent
  matrix-qa run --bot bot.yaml --scenarios-dir matrix-qa/scenarios
  matrix-qa run -k 'reply and not slow' --profile all   (repeated -k: any of them picks)
  matrix-qa run --shard 2/4 --output-dir artifacts/shard-2

config file: every flag may be set in [tool.matrix-qa] of pyproject.toml or in matrix-qa.toml (the first found
from the current directory upward; --config FILE names one), keyed by the flag without its dashes:
  bot = "matrix-qa/bot.yaml"
  scenarios-dir = ["matrix-qa/scenarios"]
  jobs = 2
flags beat the file, the file beats the defaults; paths in the file are relative to the file.

exit codes:
  0  every scenario passed
  1  a scenario or check failed
  2  usage, config or infrastructure error (nothing or not everything ran)
  130 / 143 / 129  ended by SIGINT / SIGTERM / SIGHUP (what finished is still reported)
"""

# Flags that are about where settings come from, never settings themselves.
_NOT_IN_FILE = frozenset({"help", "config"})


class _RaisingParser(argparse.ArgumentParser):
    """Reads one config key's value as its flag would be read, raising instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """Every `run` flag, in the help groups a reader looks for."""
    _bot_group(run.add_argument_group("bot under test"))
    registry.add_arguments(run.add_argument_group("homeserver"))  # every backend's own options too
    _provider_group(run.add_argument_group("model provider"))
    _selection_group(run.add_argument_group("selecting scenarios"))
    _output_group(run.add_argument_group("output and config"))
    _speed_group(run.add_argument_group("speed, repeats and deadlines"))


def _bot_group(g: Any) -> None:
    g.add_argument("--bot", type=Path, default=None, metavar="BOT.yaml",
                   help="the bot under test, described by a bot file (default: the embedded agent, "
                   "qa/agent/bot.yaml); see docs/bot-file.md")
    g.add_argument("--bot-command", default=None, metavar="'CMD ...'",
                   help="shortcut for a bot file with only this command: the bot gets the launch contract in "
                   "its environment and is ready once it has joined its rooms")
    g.add_argument("--peer-bot", type=Path, default=None, metavar="PEER.yaml",
                   help="a second bot beside the bot under test, for the scenarios about bots talking to bots "
                   "(`peer_bot:`); a bot file like --bot's. Without it those scenarios are skipped; see "
                   "docs/bot-file.md#a-peer-bot")
    g.add_argument("--bot-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the bot's config for every scenario, e.g. session.writeLock.scope=attempt")
    g.add_argument("--no-fork-server", action="store_true",
                   help="start each embedded-agent bot as a fresh interpreter instead of forking it from one "
                   "pre-imported process (slower; to compare or rule it out)")


def _provider_group(g: Any) -> None:
    g.add_argument("--provider", default="mock", choices=["mock", "live", "replay"],
                   help="model provider: mock (the default; deterministic), live (any OpenAI-compatible "
                   "endpoint; key from env OPENAI_API_KEY or MATRIX_QA_LIVE_OPENAI_KEY) or replay (--cassettes)")
    g.add_argument("--provider-rules", action="append", type=Path, default=[], metavar="FILE",
                   help="extra mock-provider rule file, matched before the built-in rules (repeatable)")
    g.add_argument("--model", default=None, help="model id for --provider live, e.g. gpt-5.4")
    g.add_argument("--base-url", default=None, metavar="URL",
                   help="OpenAI-compatible API root for --provider live (default: https://api.openai.com/v1)")
    g.add_argument("--api", default=None, choices=["chat", "responses", "anthropic"],
                   help="model API of the --provider live endpoint: chat (default; OpenAI Chat Completions, any "
                   "OpenAI-compatible server), responses (OpenAI Responses) or anthropic (Anthropic Messages; key "
                   "from env ANTHROPIC_API_KEY or MATRIX_QA_LIVE_ANTHROPIC_KEY, default https://api.anthropic.com/v1)")
    g.add_argument("--model-timeout", type=float, default=None, metavar="SECONDS",
                   help="request timeout for --provider live (default: 60)")
    g.add_argument("--model-retries", type=int, default=None, metavar="N",
                   help="retries on 408/409/429/5xx and connection errors for --provider live (default: 2)")
    g.add_argument("--record", type=Path, default=None, metavar="DIR",
                   help="with --provider live: write every model exchange to DIR/<scenario>.yaml, for replay")
    g.add_argument("--cassettes", type=Path, default=None, metavar="DIR",
                   help="with --provider replay: the recorded cassettes to answer from (e.g. fixtures/cassettes)")
    g.add_argument("--replay-speed", default=None, metavar="PACE",
                   help="with --provider replay: recorded (the default), fast (no waiting) or a factor (2: twice "
                   "as fast)")


def _selection_group(g: Any) -> None:
    g.add_argument("--profile", default="fast", help="scenario profile (default: fast; 'all' runs everything); "
                   "your own scenarios without profiles: are in every profile")
    g.add_argument("--scenario", action="append", default=[], metavar="ID",
                   help="run only this scenario (repeatable)")
    g.add_argument("-k", "--keyword", dest="keyword", action="append", default=[], metavar="PATTERN",
                   help="run only the scenarios of the profile whose id or title holds PATTERN (a glob when it has "
                   "* ? [); and, or, not and parentheses combine words, as pytest's -k; repeatable: any matches")
    g.add_argument("--scenarios-dir", action="append", type=Path, default=None, metavar="PATH",
                   help="your own scenario files or directories, added to the built-in library (repeatable)")
    g.add_argument("--no-builtin-scenarios", action="store_true",
                   help="run only the scenarios of --scenarios-dir, not the built-in library")
    g.add_argument("--rerun-failed", type=Path, default=None, metavar="SUMMARY.json",
                   help="run only the scenarios that failed, were interrupted or never ran in that earlier run")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="run only slice I of N of the plan (the canary runs in every shard); merge the shards' "
                   "summaries with `matrix-qa report --merge`")
    g.add_argument("--shard-durations", type=Path, default=None, metavar="SUMMARY.json",
                   help="balance --shard by the scenario durations recorded in this earlier summary "
                   "(default: by count)")


def _output_group(g: Any) -> None:
    g.add_argument("--output-dir", type=Path, default=None,
                   help="artifact directory (default: artifacts/qa-e2e/<run-id>)")
    g.add_argument("--include-bodies", action="store_true", help="keep message bodies in the observed-events file")
    g.add_argument("--progress", default="auto", choices=["auto", "live", "plain"],
                   help="auto (default): a live status of running scenarios at a terminal, plain lines under CI "
                   "or when piped; live/plain: always that")
    g.add_argument("--keep-work-dir", action="store_true",
                   help="keep the run's disposable directory (homeserver database and logs, bot state) and print "
                   "where it is, to inspect a failure (default: deleted)")
    g.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="read settings from this matrix-qa.toml or pyproject.toml (default: the first found from "
                   "the current directory upward)")


def _speed_group(g: Any) -> None:
    from qa.harness.jobs import JOBS_CAP, default_jobs, usable_cores

    g.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help=f"scenarios side by side on the one homeserver (default: two per core, at most "
                   f"{JOBS_CAP}; here {default_jobs(usable_cores())}); the canary runs first and alone; --jobs 1 "
                   "runs one at a time")
    g.add_argument("--homeservers", type=homeserver_count, default=None, metavar="N|auto",
                   help="spread the job slots over N embedded Synapse homeservers booted side by side, each "
                   "~45-60 MB (default auto: one, but a run of 12 or more scenarios gets one a core, 2 job slots "
                   "and 12 scenarios each at least); a scenario stays on one for its whole life. Only the "
                   "embedded Synapse")
    g.add_argument("--fail-fast", action="store_true",
                   help="start no new scenario after the first failure (running ones finish)")
    g.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="run each scenario N times (fresh users and rooms each time) and report its pass rate; "
                   "flaky scenarios (some but not all attempts passed) are flagged")
    g.add_argument("--min-pass-rate", type=_pass_rate, default=None, metavar="R",
                   help="with --repeat: a scenario passes when at least this share of its attempts did "
                   "(0.8 or 80%%; default 1: every attempt)")
    g.add_argument("--timeout", default=None, metavar="DURATION",
                   help="deadline for the whole run (e.g. 20m, 90s): past it every process is stopped and the "
                   "report says what finished and what did not (exit 2)")
    g.add_argument("--reply-edit-wait", type=edit_wait, default=None, metavar="DURATION",
                   help="how long expect_reply waits for an edit that turns a reply with the wrong text into the "
                   "expected one (a streamed draft); default: the rest of the step's time. 0 for a bot that "
                   "never edits its replies: a wrong answer fails at once (a `streamed: true` step always waits)")
    g.add_argument("--step-timeout-cap", type=step_timeout_cap, default=None, metavar="DURATION",
                   help="the most any step waits for what it looks for: a step's timeout (30s unless it says) "
                   "above this is cut to it, so a bot that never answers fails in DURATION, not 30s, at the same "
                   "step. Windows a passing step waits out (expect_no_reply's watch) are not cut. Default: none")


def step_timeout_cap(text: str) -> float:
    """--step-timeout-cap: a positive duration ("10s", "1500ms")."""
    from qa.scenario.fields import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def edit_wait(text: str) -> float:
    """--reply-edit-wait: 0 (no wait) or a positive duration, read as --step-timeout-cap reads one."""
    return 0.0 if text.strip() in ("0", "0s", "0ms") else step_timeout_cap(text)


def homeserver_count(text: str) -> int | None:
    """--homeservers: auto (None) or N (qa.harness.jobs.parse_homeservers)."""
    from qa.harness.jobs import parse_homeservers

    try:
        return parse_homeservers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _pass_rate(text: str) -> float:
    from qa.report.verdict import parse_pass_rate

    try:
        return parse_pass_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise QAError(f"--bot-set expects KEY=VALUE (e.g. session.writeLock.scope=attempt), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# --- the config file -----------------------------------------------------------------------------------------


def _standalone(defaults: bool = True) -> argparse.ArgumentParser:
    parser = _RaisingParser(prog="matrix-qa run", add_help=False)
    add_run_arguments(parser)
    if not defaults:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
    return parser


def _file_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config key -> its flag: the first long option without its dashes."""
    keys = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in _NOT_IN_FILE:
            keys[longs[0][2:]] = action
    return keys


def given_on_command_line(run_argv: Sequence[str]) -> set[str]:
    """The dests the command line set itself (even to a default's value): those the file must not change."""
    return set(vars(_standalone(defaults=False).parse_known_args(list(run_argv))[0]))


def read_config(args: argparse.Namespace) -> ConfigFile | None:
    """The config file this run uses: --config FILE, else the first found from the current directory upward."""
    path = args.config if args.config is not None else find_config_file()
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    return load_config_file(path)


def apply_config(args: argparse.Namespace, run_argv: Sequence[str], config: ConfigFile) -> dict[str, Any]:
    """Each setting of the file that the command line did not give, put into `args` as its flag would be.
    Returns the settings applied, keyed as in the file. Every bad key is reported, one line each (exit 2)."""
    parser = _standalone()
    keys = _file_keys(parser)
    given = given_on_command_line(run_argv)
    applied: dict[str, Any] = {}
    problems: list[str] = []
    for key, raw in config.values.items():
        action = keys.get(key)
        try:
            if action is None:
                raise ConfigError(_unknown(key, keys))
            value = _read_value(parser, action, key, raw, config.base)
        except ConfigError as exc:
            problems.append(f"{config.where(key)}: {exc}")
            continue
        applied[key] = raw
        if action.dest not in given:
            setattr(args, action.dest, value)
    if problems:
        raise ConfigError("\n".join(problems))
    return applied


def _unknown(key: str, keys: dict[str, argparse.Action]) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), list(keys), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; the keys are run's flags without their dashes"
    return f"unknown key{hint}"


def _read_value(parser: argparse.ArgumentParser, action: argparse.Action, key: str, raw: object, base: Path) -> Any:
    """The value as the flag reads it, so a file value is checked exactly as the flag's would be."""
    flag = f"--{key}"
    if action.nargs == 0:  # store_true
        if not isinstance(raw, bool):
            raise ConfigError(f"expected true or false, got {raw!r}")
        tokens = [flag] if raw else []
    elif isinstance(action, argparse._AppendAction):
        items = raw if isinstance(raw, list) else [raw]
        tokens = [t for item in items for t in (flag, _scalar(item))]
    else:
        tokens = [flag, _scalar(raw)]
    try:
        value = getattr(parser.parse_args(tokens), action.dest)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix(f"argument {'/'.join(action.option_strings)}: ")) from None
    _check_more(action.dest, value)
    return _relative_to(value, base)


def _scalar(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"expected a string or a number, got {value!r}")
    return str(value)


def _check_more(dest: str, value: Any) -> None:
    """What the run would only refuse later, without naming the file: refused here, with the file's key."""
    from qa.harness.plan import parse_shard
    from qa.scenario.schema import parse_duration

    try:
        if dest == "timeout" and value is not None:
            parse_duration(value)
        elif dest == "shard" and value is not None:
            parse_shard(value)
        elif dest == "bot_set":
            for item in value:
                parse_override(item)
    except (ValueError, QAError) as exc:
        raise ConfigError(str(exc)) from None


def _relative_to(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, list):
        return [_relative_to(v, base) for v in value]
    return value


def from_file(config: ConfigFile, applied: dict[str, Any], run_argv: Sequence[str]) -> dict[str, str]:
    """Flag -> how the file names it (`FILE: [tool.matrix-qa] bot-set`), for each setting the run took from the
    file rather than from the command line."""
    keys = _file_keys(_standalone())
    given = given_on_command_line(run_argv)
    return {f"--{key}": config.where(key) for key in applied if keys[key].dest not in given}


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def blame_file(exc: QAError, blamed: dict[str, str]) -> QAError:
    """The same error, each line that names a flag whose value came from the config file naming the file and the
    key instead (a reader looks for `--bot-set` on a command line that has none). Other lines stay as they are."""
    lines = [_blame_line(line, blamed) for line in str(exc).splitlines()]
    if lines == str(exc).splitlines():
        return exc
    renamed = type(exc)("\n".join(lines))
    renamed.exit_code = exc.exit_code
    return renamed


def _blame_line(line: str, blamed: dict[str, str]) -> str:
    flags = [f for f in _FLAG.findall(line) if f in blamed]
    if not flags:
        return line
    key = flags[0][2:]
    line = _FLAG.sub(lambda m: m.group(0)[2:] if m.group(0) in blamed else m.group(0), line)
    # A check that prefixes its own flag (`--bot-set: --bot-set x: ...`) reads `bot-set x: ...`, once.
    line = re.sub(r"^([a-z][a-z0-9-]*): \1\b", r"\1", line)
    where = blamed[flags[0]]
    if line.startswith(key):  # `bot-set x: unknown key` -> `FILE: [tool.matrix-qa] bot-set x: unknown key`
        return where.removesuffix(key) + line
    return f"{where}: {line}"


def list_settings(args: argparse.Namespace) -> tuple[argparse.Namespace, ConfigFile | None]:
    """`run`'s settings as `list` sees them: the config file's (checked as `run` checks them) over the
    defaults. `list`'s own flags are applied by the caller."""
    run_args = _standalone().parse_args([])
    config = read_config(args)
    if config is not None:
        apply_config(run_args, [], config)
    return run_args, config


# --- the run ---------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """`matrix-qa run`: the config file under the flags, the checks across flags, then the run."""
    config = read_config(args)
    applied = apply_config(args, argv[1:], config) if config is not None else {}
    blamed = from_file(config, applied, argv[1:]) if config is not None else {}
    _skip_collection_at_exit()
    try:
        _check_harness_loop(os.environ)
        _check_flags(args)
        if foreseen_refusal(args) is None:
            _start_synapse_early(args)
            _start_fork_server_early(args)
        return _run(args, argv, config, applied)
    except QAError as exc:
        raise blame_file(exc, blamed) from None
    except KeyboardInterrupt:  # Ctrl-C before the run's own handlers (run_sync's own answer, once they are gone)
        safe_print("interrupted", file=sys.stderr)
        return 130
    finally:
        # The run took it, or it never got that far: never left waiting. A second Ctrl-C while it is reaped must
        # not print a traceback: its SIGKILL goes first.
        with contextlib.suppress(KeyboardInterrupt):
            try:
                early_synapse.discard()
            finally:
                early_fork_server.discard()


def _check_harness_loop(env: Mapping[str, str]) -> None:
    """A bad MATRIX_QA_HARNESS_LOOP is exit 2 before the early Synapse or fork server is started for nothing (the
    run's own loop would refuse it only after both, qa.run.run_sync)."""
    problems = event_loop.env_problems(event_loop.HARNESS_ENV, env)
    if problems:
        raise ConfigError(problems[0])


_exit_hook_registered = False


def _skip_collection_at_exit() -> None:
    """At interpreter exit, the run's heap (its imports: nio, pydantic, jinja2; and all the run built) is
    frozen out of the cyclic collector: the collections Python runs while it finalises would walk all of it only to
    free memory the exiting process gives back anyway (~0.15-0.2 s of the run's wall, measured). Registered with
    atexit, so nothing is frozen while the process lives on (a test calling cmd_run in-process)."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(gc.freeze)


def _start_synapse_early(args: argparse.Namespace) -> None:
    """The embedded Synapse imports itself while the run imports and checks its plan (qa.homeserver.early_synapse):
    it holds nothing until the run hands it its config, and is stopped unused if the run never gets there."""
    if registry.choose(args.homeserver, registry.settings_from(args)) == "synapse":
        early_synapse.start(os.environ)


def _start_fork_server_early(args: argparse.Namespace) -> None:
    """The built-in agent's fork server imports the agent while the run imports and checks its plan
    (qa.harness.early_fork_server): only when its bots will be forked from it, and never a user's bot file (its
    preload is the user's code, which must not run for a run its checks refuse)."""
    if args.bot is None and args.bot_command is None and not args.no_fork_server:
        early_fork_server.start(os.environ)


def _run(args: argparse.Namespace, argv: Sequence[str], config: ConfigFile | None, applied: dict[str, Any]) -> int:
    with imports_without_gc():  # the run's heaviest import, beside the early Synapse's boot (qa.shared.imports)
        from qa.run import RunOptions, run_sync

    _check_combinations(args)
    own = list(args.scenarios_dir or [])
    settings = registry.settings_from(args)  # every backend's own options, by dest
    options = RunOptions(
        profile=args.profile, scenario_ids=args.scenario, keywords=list(args.keyword),
        scenario_paths=own if args.no_builtin_scenarios else [*_library(), *own],
        bot_file=args.bot, bot_command=args.bot_command, peer_bot_file=args.peer_bot,
        homeserver=registry.choose(args.homeserver, settings), homeserver_port=args.homeserver_port,
        homeserver_settings=settings, model=args.model, base_url=args.base_url, api=args.api,
        model_timeout_s=args.model_timeout, model_retries=args.model_retries,
        provider=args.provider, provider_rules=args.provider_rules, output_dir=args.output_dir,
        record_dir=args.record, cassettes_dir=args.cassettes, replay_speed=args.replay_speed,
        fail_fast=args.fail_fast, include_bodies=args.include_bodies, jobs=args.jobs, homeservers=args.homeservers,
        fork_server=not args.no_fork_server, shard=_shard(args.shard),
        shard_durations=_shard_durations(args.shard_durations),
        bot_overrides=dict(parse_override(o) for o in args.bot_set), argv=["matrix-qa", *argv],
        repeat=args.repeat, min_pass_rate=args.min_pass_rate or 1.0, timeout=args.timeout, progress=args.progress,
        keep_work_dir=args.keep_work_dir, reply_edit_wait_s=args.reply_edit_wait,
        step_timeout_cap_s=args.step_timeout_cap,
        config_file=config.path if config is not None else None, config_settings=applied,
    )
    return run_sync(options)


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that cannot go together: refused before the early Synapse or fork server is started for nothing."""
    if args.shard_durations is not None and args.shard is None:
        raise QAError("--shard-durations only balances a --shard I/N run")
    if args.min_pass_rate is not None and args.repeat == 1:
        raise QAError("--min-pass-rate needs --repeat N (N > 1): one attempt passes or fails, it has no rate")
    if args.no_builtin_scenarios and not args.scenarios_dir:
        raise QAError("--no-builtin-scenarios needs --scenarios-dir PATH (otherwise there is nothing to run)")
    if args.shard is not None:  # pure, and qa.harness.plan is light: a bad I/N starts nothing early
        _shard(args.shard)


# Profiles the built-in library always has scenarios in (tests/unit/test_scenario_foreseen.py checks it), so the
# default run (no --scenario) is foreseen to go ahead without reading a head.
_LIBRARY_PROFILES = ("fast", "all")


def foreseen_refusal(args: argparse.Namespace) -> str | None:
    """Why the run's checks will refuse it, when that is sure from cheap looks (a --bot file that is not there, the
    scenario files' heads: qa.scenario.foreseen); then nothing is started early, and the checks refuse it as always.
    None when the run may go ahead (or it is not sure: an earlier summary's ids, --rerun-failed, come later)."""
    try:  # exists() raises on a name too long or a directory not searchable: not sure, so the run's checks speak
        if args.bot is not None and not args.bot.exists():
            return f"--bot {args.bot}: no such file"
    except OSError:
        return None
    if args.rerun_failed is not None:
        return None
    # Here, not at module level: its heads import yaml, which `matrix-qa --version` and the rest need not load.
    from qa.library import builtin_scenarios_dir
    from qa.scenario import foreseen

    own = list(args.scenarios_dir or [])
    if args.no_builtin_scenarios:
        return foreseen.refusal(own, args.scenario, args.profile)
    library = builtin_scenarios_dir()
    if library is None:
        return foreseen.refusal(own, args.scenario, args.profile)
    if not args.scenario and args.profile in _LIBRARY_PROFILES:  # the default choice: no head need be read
        try:
            return foreseen.missing(own)
        except OSError:
            return None
    # The user's own files first: their ids are found there before the built-in library's heads are read.
    return foreseen.refusal([*own, library], args.scenario, args.profile)


def _check_combinations(args: argparse.Namespace) -> None:
    _check_flags(args)
    if args.rerun_failed is not None:
        args.scenario = _rerun_ids(args.rerun_failed, args.scenario)


def _library() -> list[Path]:
    from qa.run import default_scenario_paths

    return default_scenario_paths()


def _shard(text: str | None) -> Any:
    from qa.harness.plan import parse_shard

    return parse_shard(text) if text is not None else None


def _rerun_ids(path: Path, chosen: list[str]) -> list[str]:
    """The scenario ids --rerun-failed takes from an earlier run's summary."""
    from qa.report.repeats import rerun_ids
    from qa.report.writer import load_summary

    if chosen:
        raise QAError("give either --rerun-failed SUMMARY.json or --scenario ID, not both")
    summary = load_summary(path)
    ids = rerun_ids(summary)
    if not ids:
        raise QAError(f"{path}: nothing to rerun: no scenario of run {summary.runId} failed, was interrupted or "
                      f"was left unrun (its status: {summary.status})")
    return ids


def _shard_durations(path: Path | None) -> dict[str, float] | None:
    """Scenario durations from an earlier summary; skipped scenarios tell nothing about how long one takes."""
    if path is None:
        return None
    from qa.report.writer import load_summary

    summary = load_summary(path)
    return {r.id: r.durationMs for r in summary.scenarios if r.status != "skip"}
