"""Chapter 1 of a run (qa.run): what it was asked to do, and the checks that refuse a bad request, with exit 2,
before anything starts. Secrets the request brings are returned for redaction before the first line is printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.harness.botfile import (
    USER_REGISTRATION_TOKEN,
    BotFile,
    account_clashes,
    builtin_bot_file,
    check_overrides,
    check_runnable,
    command_bot_file,
    load_bot_file,
)
from qa.harness.output import Output
from qa.harness.output_dir import check_output_dir
from qa.harness.plan import Shard, in_profile, select, shard_plan
from qa.harness.preload import check_preload
from qa.homeserver import registry
from qa.kernel.errors import ConfigError
from qa.provider.record_replay import record_replay_misplaced
from qa.report.repeats import attempt_id
from qa.run.homeservers import check_count
from qa.scenario.heads import Head
from qa.scenario.loader import load_chosen, load_scenarios


@dataclass
class RunOptions:
    profile: str = "fast"
    scenario_ids: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)  # -k patterns (qa.harness.keywords): any picks a scenario
    scenario_paths: list[Path] = field(default_factory=lambda: default_scenario_paths())
    # A backend of qa.homeserver.registry (default: the registry's default), and its options' values by dest.
    homeserver: str = field(default_factory=registry.default_name)
    homeserver_port: int | None = None
    homeserver_settings: dict[str, Any] = field(default_factory=dict)
    provider: str = "mock"
    # live provider; the key is never an option: it comes from the environment only (qa.provider.live)
    model: str | None = None
    base_url: str | None = None
    api: str | None = None  # --api: the live endpoint's model API (qa.provider.live.APIS); None = chat
    model_timeout_s: float | None = None
    model_retries: int | None = None
    provider_rules: list[Path] = field(default_factory=list)
    # --record DIR (live only): a cassette per scenario; --provider replay serves them (qa.provider.replay)
    record_dir: Path | None = None
    cassettes_dir: Path | None = None
    replay_speed: str | None = None  # recorded | fast | a factor; None: recorded
    output_dir: Path | None = None
    fail_fast: bool = False
    # How many scenarios run side by side on the one homeserver; None: qa.harness.plan.default_jobs (2 per core).
    jobs: int | None = None
    # How many homeservers share the job slots (qa.run.homeservers); None: `auto` (one, but a plan of
    # qa.harness.jobs.AUTO_MIN_SCENARIOS or more on the embedded Synapse gets one a core).
    homeservers: int | None = None
    # Run only this slice of the plan (qa.harness.plan.shard_plan), balanced by these durations (ms per id).
    shard: Shard | None = None
    shard_durations: dict[str, float] | None = None
    include_bodies: bool = False
    # A bot file with `fork_server:` has its bots forked from one pre-imported process (qa.harness.fork_server);
    # --no-fork-server starts each the ordinary way (to compare, or to rule the fork server out).
    fork_server: bool = True
    bot_overrides: dict[str, Any] = field(default_factory=dict)
    bot_env: dict[str, str] = field(default_factory=dict)
    # The bot under test: a bot file, or a bare command (--bot-command); neither: the embedded agent.
    bot_file: Path | None = None
    bot_command: str | None = None
    # --peer-bot: a second bot beside the bot under test, for the scenarios that name one (`peer_bot:`;
    # qa.harness.peer). None: those scenarios are skipped with the reason.
    peer_bot_file: Path | None = None
    argv: list[str] = field(default_factory=list)
    # --progress (qa.harness.progress.choose_mode); plain unless asked: the live block is for the CLI at a terminal.
    progress: str = "plain"
    # Each scenario runs `repeat` times and passes when its pass rate reaches min_pass_rate (qa.report.repeats);
    # `timeout` is the whole run's deadline, as given ("20m"; qa.scenario.schema.parse_duration).
    repeat: int = 1
    min_pass_rate: float = 1.0
    timeout: str | None = None
    # --reply-edit-wait: how long expect_reply waits for an edit that would finish a reply whose text is wrong
    # (a streamed draft); None: the rest of the step's time; 0: no wait (a bot that never edits its replies).
    reply_edit_wait_s: float | None = None
    # --step-timeout-cap: the most any step waits for what it looks for (its `timeout`, or the 30 s default, cut to
    # this); None: each step's own. Windows a passing step waits out are not cut (StepBase.wait_s).
    step_timeout_cap_s: float | None = None
    # --keep-work-dir: the disposable dir (homeserver database, bot state) stays for a person to inspect.
    keep_work_dir: bool = False
    # The config file the settings came from (qa.config_file) and the settings it gave, as written: the summary
    # records both, so a run can be explained without the author's checkout.
    config_file: Path | None = None
    config_settings: dict[str, Any] = field(default_factory=dict)


def default_scenario_paths() -> list[Path]:
    """The built-in scenario library, wherever this install keeps it (qa.library)."""
    from qa.library import builtin_scenarios_dir

    found = builtin_scenarios_dir()
    return [found] if found is not None else []


# Upper bounds of the flags that size what is built before anything starts (the reason is in each message).
MAX_JOBS = 64
MAX_REPEAT = 1000


def preflight(options: RunOptions, jobs: int, artifact_dir: Path, env: Mapping[str, str]) -> tuple[Any, list[str]]:
    """Usage and environment problems of the chosen backends are exit 2 before anything starts. Returns the
    live provider's settings (None for mock or replay) and the secrets the chosen backends bring."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if jobs > MAX_JOBS:
        raise ConfigError(f"--jobs must be at most {MAX_JOBS}, got {jobs}: each job is a bot process and its test "
                          "users on the one homeserver, and more than that only queues on it")
    check_backend_options(options)
    check_count(options.homeservers, options.homeserver, jobs)
    if options.repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {options.repeat}")
    if options.repeat > MAX_REPEAT:
        raise ConfigError(f"--repeat must be at most {MAX_REPEAT}, got {options.repeat}: every attempt of every "
                          "scenario is planned before the first starts, and a pass rate needs no more")
    if options.repeat > 1 and (options.provider == "replay" or options.record_dir is not None):
        # A replay answers the same every time, and a cassette is one run's answers: N of them is no record.
        raise ConfigError("--repeat measures a live or mocked model's pass rate; it cannot be combined with "
                          "--provider replay or --record")
    if options.timeout is not None:
        parse_timeout(options.timeout)
    _check_rule_files(options.provider_rules)
    check_output_dir(artifact_dir, "--output-dir" if options.output_dir else "the artifact directory")
    live, secrets = None, []
    if options.provider == "live":
        from qa.provider.live import resolve_live_settings

        live = resolve_live_settings(model=options.model, base_url=options.base_url, timeout_s=options.model_timeout_s,
                                     max_retries=options.model_retries, env=env,
                                     api=options.api or "chat")
        secrets += live.secrets
    elif options.provider not in ("mock", "replay"):
        raise ConfigError(f"--provider {options.provider!r} is not supported; use mock (the default), live "
                          "or replay")
    secrets += registry.get(options.homeserver).preflight(options.homeserver_settings, env)
    return live, secrets


def check_backend_options(options: RunOptions) -> None:
    """Flags that belong to a backend the run is not using: a usage error, not something to silently ignore
    (a user who passed --model must not believe a mocked run talked to that model)."""
    misplaced = []
    if options.provider != "live":
        misplaced += [flag for flag, value in (("--model", options.model), ("--base-url", options.base_url),
                                               ("--api", options.api), ("--model-timeout", options.model_timeout_s),
                                               ("--model-retries", options.model_retries)) if value is not None]
    if options.provider != "mock" and options.provider_rules:
        misplaced.append("--provider-rules")
    misplaced += record_replay_misplaced(options)
    misplaced += registry.misplaced(options.homeserver, options.homeserver_settings)
    if misplaced:
        raise ConfigError(f"not used by this run (--homeserver {options.homeserver}, --provider {options.provider}): "
                          f"{', '.join(misplaced)}")


def checked_bot_file(options: RunOptions) -> BotFile:
    """The bot under test, its --bot-set overrides accepted and its command runnable here."""
    bot_file = resolve_bot_file(options)
    check_overrides(bot_file, options.bot_overrides)
    check_runnable(bot_file, {**os.environ, **options.bot_env})
    if options.fork_server:
        check_preload(bot_file)
    return bot_file


def checked_peer_file(options: RunOptions) -> BotFile | None:
    """The peer bot (--peer-bot), refused with exit 2 naming the flag, the file and the field when it cannot be
    one (qa.harness.peer), its command runnable here. Its environment is its own: never --bot-env's."""
    from qa.harness.peer import FLAG, peer_problems

    if options.peer_bot_file is None:
        return None
    try:
        peer = load_bot_file(options.peer_bot_file)
        check_runnable(peer, dict(os.environ))
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{FLAG}: {line}" for line in str(exc).splitlines())) from None
    problems = peer_problems(peer, options.bot_file)
    if problems:
        raise ConfigError("\n".join(problems))
    return peer


def check_bot_accounts(bot_file: BotFile, plan: list[Any]) -> None:
    """The bot's extra accounts (`accounts`) and each planned scenario's test users are different people: a name
    that is both is exit 2 before anything starts."""
    for scenario in plan:
        clash = account_clashes(bot_file, list(scenario.actors))
        if clash:
            raise ConfigError(f"{bot_file.source}: accounts: {clash[0]!r} is also a test user of scenario "
                              f"{scenario.id}; name the bot's account differently")


def check_registration(bot_file: BotFile, homeserver: str, env: Mapping[str, str]) -> None:
    """`registration: token` mints a token on the run's own Synapse only; anywhere else the user must give one
    (never the shared secret, never a token made on someone's server behind their back)."""
    if bot_file.registration is None or homeserver == "synapse" or env.get(USER_REGISTRATION_TOKEN):
        return
    raise ConfigError(f"{bot_file.source}: registration: token needs the run's own homeserver (--homeserver "
                      f"synapse); for --homeserver {homeserver} set {USER_REGISTRATION_TOKEN} to a token you made "
                      "for this purpose")


def check_appservice(bot_file: BotFile, homeserver: str) -> None:
    """`appservice:` needs a homeserver that loads the harness's registration when it boots: the run's own Synapse.
    An image, Tuwunel or someone else's server cannot be told to, so the bot is refused before anything starts."""
    if bot_file.appservice is None or homeserver == "synapse":
        return
    raise ConfigError(f"{bot_file.source}: appservice: an application-service bot needs the run's own homeserver "
                      f"(--homeserver synapse), which loads the harness's registration at boot; --homeserver "
                      f"{homeserver} cannot be given one")


def resolve_bot_file(options: RunOptions) -> BotFile:
    if options.bot_file is not None and options.bot_command is not None:
        raise ConfigError("give either --bot FILE or --bot-command CMD, not both")
    if options.bot_file is not None:
        return load_bot_file(options.bot_file)
    if options.bot_command is not None:
        return command_bot_file(options.bot_command)
    return builtin_bot_file()


def plan_scenarios(options: RunOptions) -> tuple[list[Any], list[Any]]:
    """(the plan, the plan as it runs): the chosen scenarios, this shard's slice of them, then with --repeat
    each one's attempts."""
    if not options.scenario_paths:
        raise ConfigError("no scenarios to run: the built-in library was not found and no --scenarios-dir given")
    plan = select(_chosen_scenarios(options), options.profile, options.scenario_ids, options.keywords)
    if options.shard is not None:
        plan = shard_plan(plan, options.shard, options.shard_durations)
    return plan, attempts(plan, options.repeat)


def _chosen_scenarios(options: RunOptions) -> list[Any]:
    """What `select` needs: of the built-in library only the files the run chooses by their heads (the fast
    profile parses 16 of its 104), every file the user named. Only where `select` cannot refuse the choice, so its
    messages, which name every known id or profile, come from every file; `-k` reads titles, which heads lack."""
    if not options.keywords:
        ids = set(options.scenario_ids)
        library = set(default_scenario_paths())

        def chosen(found: Head) -> bool:
            return found.id in ids if ids else in_profile(found, options.profile)

        scenarios = load_chosen(options.scenario_paths, chosen, lambda path: path.parent in library)
        if scenarios is not None and (ids <= {s.id for s in scenarios} if ids else
                                      any(in_profile(s, options.profile) for s in scenarios)):
            return scenarios
    return load_scenarios(options.scenario_paths)


def attempts(plan: list[Any], repeat: int) -> list[Any]:
    """--repeat N: each scenario N times in a row, each attempt a scenario of its own (`<id>~<k>`), so it
    gets fresh users, rooms, bot, markers, artifacts and view of the provider journal."""
    if repeat == 1:
        return plan
    return [scenario.model_copy(update={"id": attempt_id(scenario.id, k)})
            for scenario in plan for k in range(1, repeat + 1)]


def parse_timeout(text: str) -> float:
    from qa.scenario.schema import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--timeout: {exc}") from None


def output_for(progress: str) -> Output:
    """Plain lines, or a live block over them at a person's terminal (--progress, issue 18)."""
    from qa.harness.progress import choose_mode

    requested = "live" if progress == "live" else "auto" if progress == "auto" else "plain"
    return Output(sys.stderr, progress=choose_mode(requested, sys.stderr.isatty(), os.environ))


def _check_rule_files(paths: list[Path]) -> None:
    """A missing or broken --provider-rules file is exit 2 naming it, before anything starts."""
    from qa.provider.rules import load_rule_files

    load_rule_files(paths)
