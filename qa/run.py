"""One run, start to finish: plan → homeserver + provider → scenarios → lock evidence → reports.

Whatever happens (a failed check, a component that won't start, Ctrl-C), the finally-blocks stop every process
this run started and the summary and reports are still written with what was learned.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from qa.clock import mono_ms, utc_now_iso
from qa.errors import ConfigError, InfraError, QAError
from qa.harness.bot_process import kill_all_bots
from qa.harness.botfile import (
    BotFile,
    builtin_bot_file,
    check_overrides,
    check_runnable,
    command_bot_file,
    load_bot_file,
)
from qa.harness.fork_server import ForkServer, kill_all_fork_servers, uses_fork_server
from qa.harness.output import Output
from qa.harness.output_dir import check_output_dir, prepare_output_dir
from qa.harness.plan import CANARY, Shard, runs_alone, select, shard_plan
from qa.harness.work_dir import work_root
from qa.homeserver.base import Homeserver
from qa.provider.record_replay import (
    after_scenario,
    bind_scope,
    bot_key,
    load_for_replay,
    record_replay_misplaced,
    start_recording,
    start_replay,
)
from qa.report.lock_evidence import analyze_lock_evidence
from qa.report.lock_picture import write_lock_pictures
from qa.report.lock_timeline import tag_scenarios
from qa.report.repeats import ATTEMPT_SEPARATOR, attempt_id, combine_attempts
from qa.report.summary import (
    BotInfo,
    Deadline,
    Environment,
    Failure,
    HomeserverInfo,
    InfraRetry,
    ProviderInfo,
    RunError,
    ScenarioResult,
    ShardInfo,
    Summary,
    Timings,
    count,
    latency_stats,
)
from qa.report.verdict import NOTHING_RAN, nothing_ran, run_verdict, signal_exit_code
from qa.report.writer import write_reports
from qa.scenario.loader import load_scenarios
from qa.scenario.markers import MarkerFactory
from qa.waiting import run_unless

if TYPE_CHECKING:
    from qa.scenario.runner import RunResources


@dataclass
class RunOptions:
    profile: str = "fast"
    scenario_ids: list[str] = field(default_factory=list)
    scenario_paths: list[Path] = field(default_factory=lambda: default_scenario_paths())
    homeserver: str = "synapse"  # synapse | tuwunel | external
    homeserver_port: int | None = None
    # external: the server's URL, and a registration token or shared secret (env vars fill in what is None)
    homeserver_url: str | None = None
    registration_token: str | None = None
    registration_shared_secret: str | None = None
    tuwunel_image: str | None = None
    provider: str = "mock"
    # live provider; the key is never an option: it comes from the environment only (qa.provider.live)
    model: str | None = None
    base_url: str | None = None
    model_timeout_s: float | None = None
    model_retries: int | None = None
    provider_rules: list[Path] = field(default_factory=list)
    # --record DIR (live only): a cassette per scenario; --provider replay serves them (qa.provider.replay)
    record_dir: Path | None = None
    cassettes_dir: Path | None = None
    replay_speed: str | None = None  # recorded | fast | a factor; None: recorded
    output_dir: Path | None = None
    fail_fast: bool = False
    # How many scenarios run side by side on the one homeserver; None: the machine's core count.
    jobs: int | None = None
    # Run only this slice of the plan (qa.harness.plan.shard_plan), balanced by these durations (ms per id).
    shard: Shard | None = None
    shard_durations: dict[str, float] | None = None
    include_bodies: bool = False
    # The embedded agent's bots are forked from one pre-imported process (qa.harness.fork_server);
    # --no-fork-server starts each the ordinary way (to compare, or to rule the fork server out).
    fork_server: bool = True
    bot_overrides: dict[str, Any] = field(default_factory=dict)
    bot_env: dict[str, str] = field(default_factory=dict)
    # The bot under test: a bot file, or a bare command (--bot-command); neither: the embedded agent.
    bot_file: Path | None = None
    bot_command: str | None = None
    argv: list[str] = field(default_factory=list)
    # --progress (qa.harness.progress.choose_mode); plain unless asked: the live block is for the CLI at a terminal.
    progress: str = "plain"
    # Each scenario runs `repeat` times and passes when its pass rate reaches min_pass_rate (qa.report.repeats);
    # `timeout` is the whole run's deadline, as given ("20m"; qa.scenario.schema.parse_duration).
    repeat: int = 1
    min_pass_rate: float = 1.0
    timeout: str | None = None


def default_scenario_paths() -> list[Path]:
    """The built-in scenario library, wherever this install keeps it (qa.library)."""
    from qa.library import builtin_scenarios_dir

    found = builtin_scenarios_dir()
    return [found] if found is not None else []


def resolve_bot_file(options: RunOptions) -> BotFile:
    if options.bot_file is not None and options.bot_command is not None:
        raise ConfigError("give either --bot FILE or --bot-command CMD, not both")
    if options.bot_file is not None:
        return load_bot_file(options.bot_file)
    if options.bot_command is not None:
        return command_bot_file(options.bot_command)
    return builtin_bot_file()


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _version() -> str:
    try:
        return importlib.metadata.version("matrix-qa")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _start_homeserver(options: RunOptions, work: Path, log_dir: Path) -> Homeserver:
    if options.homeserver == "tuwunel":
        from qa.homeserver.tuwunel import DEFAULT_IMAGE, TuwunelHomeserver

        return TuwunelHomeserver(log_dir, image=options.tuwunel_image or DEFAULT_IMAGE, port=options.homeserver_port)
    if options.homeserver == "external":
        from qa.homeserver.external import ExternalHomeserver

        return ExternalHomeserver(_external_settings(options))
    if options.homeserver != "synapse":
        raise ConfigError(f"--homeserver {options.homeserver!r} is not supported; use synapse (the default), "
                          "tuwunel, or --homeserver-url URL")
    from qa.homeserver.synapse import SynapseHomeserver

    return SynapseHomeserver(work / "synapse", log_dir, port=options.homeserver_port)


def _external_settings(options: RunOptions) -> Any:
    from qa.homeserver.external import resolve_external_settings

    if not options.homeserver_url:
        raise ConfigError("an external homeserver needs --homeserver-url URL")
    return resolve_external_settings(url=options.homeserver_url, registration_token=options.registration_token,
                                     shared_secret=options.registration_shared_secret, env=os.environ)


def _check_backend_options(options: RunOptions) -> None:
    """Flags that belong to a backend the run is not using: a usage error, not something to silently ignore
    (a user who passed --model must not believe a mocked run talked to that model)."""
    misplaced = []
    if options.provider != "live":
        misplaced += [flag for flag, value in (("--model", options.model), ("--base-url", options.base_url),
                                               ("--model-timeout", options.model_timeout_s),
                                               ("--model-retries", options.model_retries)) if value is not None]
    if options.provider != "mock" and options.provider_rules:
        misplaced.append("--provider-rules")
    misplaced += record_replay_misplaced(options)
    if options.homeserver != "external":
        if options.homeserver_url:
            raise ConfigError(f"--homeserver-url points at an existing server; it cannot be combined with "
                              f"--homeserver {options.homeserver}")
        misplaced += [flag for flag, value in (("--registration-token", options.registration_token),
                                               ("--registration-shared-secret", options.registration_shared_secret))
                      if value]
    if options.homeserver != "tuwunel" and options.tuwunel_image:
        misplaced.append("--tuwunel-image")
    if misplaced:
        raise ConfigError(f"not used by this run (--homeserver {options.homeserver}, --provider {options.provider}): "
                          f"{', '.join(misplaced)}")


class Run:
    def __init__(self, options: RunOptions, output: Output | None = None) -> None:
        self.options = options
        self.out = output or _output_for(options.progress)
        self.run_id = new_run_id()
        self.dir = (options.output_dir or Path("artifacts") / "qa-e2e" / self.run_id).resolve()
        self.started_at = utc_now_iso()
        self.t0 = mono_ms()
        self.timings = Timings()
        self.results: list[ScenarioResult] = []
        self.errors: list[RunError] = []
        self.probes: list[dict[str, Any]] = []
        self.observed: list[dict[str, Any]] = []
        self.homeserver: Homeserver | None = None
        self.provider: Any = None
        self.fork_server: ForkServer | None = None
        self.live: Any = None  # LiveSettings when --provider live
        self.cassettes: dict[str, Any] = {}  # --provider replay: scenario id -> its cassette
        # One list: scenarios append their users' passwords as they provision, and the output redacts them.
        self.secrets = self.out.secrets
        self.plan: list[Any] = []
        self.jobs = options.jobs if options.jobs is not None else (os.cpu_count() or 1)
        self.bot_file: BotFile | None = None
        # Set when a signal or a dying homeserver ends the run early: why, and (signals) the exit code.
        self.stop_reason: str | None = None
        self.interrupted_code: int | None = None
        self.interrupted: list[ScenarioResult] = []
        self.running: set[str] = set()  # scenarios that started (their results may never come back)
        self.infra_errors: list[str] = []  # homeserver failures inside scenarios (qa.errors.HomeserverError)
        self._main: asyncio.Task[Any] | None = None
        self._work: Path | None = None
        self._tearing_down = False
        # --repeat: the plan before its scenarios became attempts; an infra retry: id planned → id it last ran as.
        self.base_plan: list[Any] = []
        self._ran_as: dict[str, str] = {}
        self.deadline: Deadline | None = None

    async def execute(self) -> int:
        """Returns the exit code. Raises ConfigError before anything starts when the plan is bad."""
        _check_lock_env({**os.environ, **self.options.bot_env})
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {self.jobs}")
        self._preflight()
        self.bot_file = resolve_bot_file(self.options)
        check_overrides(self.bot_file, self.options.bot_overrides)
        check_runnable(self.bot_file, {**os.environ, **self.options.bot_env})
        if not self.options.scenario_paths:
            raise ConfigError("no scenarios to run: the built-in library was not found and no --scenarios-dir given")
        scenarios = load_scenarios(self.options.scenario_paths)
        self.plan = select(scenarios, self.options.profile, self.options.scenario_ids)
        if self.options.shard is not None:
            self.plan = shard_plan(self.plan, self.options.shard, self.options.shard_durations)
        self.base_plan, self.plan = self.plan, self._attempts(self.plan)
        self.cassettes = load_for_replay(self.options, self.plan)
        removed = prepare_output_dir(self.dir, "--output-dir" if self.options.output_dir else "the artifact directory")
        self.out.open_log(self.dir / "matrix-qa-output.log")
        library_logs = _LibraryLogs(self.dir / "harness.log")
        shard = f", shard {self.options.shard}" if self.options.shard else ""
        self.out.say(f"matrix-qa run {self.run_id}: {len(self.plan)} scenario(s), profile {self.options.profile}"
                     f"{shard}, {self.jobs} at a time")
        self.out.progress_total(len(self.plan))  # issue 18: the live block, at a terminal only
        self.out.say(f"bot under test: {self.bot_file.name} ({self.bot_file.source})")
        self.out.say(f"artifacts: {self.dir}")
        if removed:
            self.out.say(f"note: removed the earlier run's {', '.join(removed)} from {self.dir}")
        work = Path(tempfile.mkdtemp(prefix="matrix-qa-", dir=work_root(os.environ)))
        self._work = work
        self._main = asyncio.current_task()
        signals = _SignalHandlers(self._on_signal)
        deadline = self._arm_deadline()
        try:
            await self._run_all(work)
        except asyncio.CancelledError:
            if self.stop_reason is None:
                raise  # not ours to turn into a verdict
            self.out.say(f"interrupted: {self.stop_reason}")
        except QAError as exc:
            self.errors.append(RunError(component=_component(exc), message=self.out.redact(str(exc)),
                                        log=_log_of(self.homeserver, exc)))
            self.out.say(f"error: {self.out.redact(str(exc))}")
        except Exception as exc:  # a bug of ours or a library's: the run must still end with an honest record
            logging.getLogger("matrix_qa").error("unexpected error", exc_info=exc)
            message = f"unexpected {type(exc).__name__}: {exc} (traceback in harness.log)"
            self.errors.append(RunError(component="harness", message=self.out.redact(message),
                                        log=str(self.dir / "harness.log")))
            self.out.say(f"error: {self.out.redact(message)}")
        finally:
            self._tearing_down = True
            try:
                await self._shutdown()
            finally:
                shutil.rmtree(work, ignore_errors=True)
                try:
                    code = self._write()
                except OSError as exc:  # a full disk, a directory removed under us: say so, in one line
                    self.out.say(f"error: could not write the run's record to {self.dir}: {exc.strerror or exc}")
                    code = 2 if self.interrupted_code is None else self.interrupted_code
                self.out.close()
                library_logs.close()
                signals.remove()
                if deadline is not None:
                    deadline.cancel()
        return code

    def _on_signal(self, signum: int) -> None:
        """First SIGINT/SIGTERM/SIGHUP: stop the run (every process stopped, partial results written, exit
        128 + signal). A second one: stop now, without the record."""
        name = signal.Signals(signum).name
        if self.interrupted_code is not None:
            # Second signal (CI sends SIGINT, then SIGTERM a few seconds later): no more waiting on anyone.
            # Kill everything, remove the secrets-holding temp dir, write what is known, and go.
            _kill_everything()
            if self._work is not None:
                shutil.rmtree(self._work, ignore_errors=True)
            with contextlib.suppress(Exception):
                self.stop_reason = f"{self.stop_reason}, then {name}: stopped at once"
                for result in self.interrupted:  # cut short a second time: their teardown never finished
                    result.details += f"; then {name}: stopped at once"
                self._write()
                self.out.close()
            os._exit(self.interrupted_code)
        self.interrupted_code = signal_exit_code(signum)
        self.stop_reason = f"{name} received"
        if not self._tearing_down and self._main is not None:
            self._main.cancel()

    def _attempts(self, plan: list[Any]) -> list[Any]:
        """--repeat N: each scenario N times in a row, each attempt a scenario of its own (`<id>~<k>`), so it
        gets fresh users, rooms, bot, markers, artifacts and view of the provider journal."""
        if self.options.repeat == 1:
            return plan
        return [scenario.model_copy(update={"id": attempt_id(scenario.id, k)})
                for scenario in plan for k in range(1, self.options.repeat + 1)]

    def _arm_deadline(self) -> asyncio.TimerHandle | None:
        if self.options.timeout is None:
            return None
        seconds = _parse_timeout(self.options.timeout)
        self.deadline = Deadline(timeout=self.options.timeout, timeoutMs=seconds * 1000)
        return asyncio.get_running_loop().call_later(seconds, self._on_deadline)

    def _on_deadline(self) -> None:
        """--timeout passed: the run stops the way a signal stops it (every process stopped, the record written
        with what finished), but its verdict is an error (exit 2), with the deadline named."""
        if self._tearing_down or self.stop_reason is not None or self._main is None or self.deadline is None:
            return
        self.deadline.reached = True
        self.stop_reason = f"the run's --timeout of {self.deadline.timeout} passed"
        self.out.say(f"deadline: {self.stop_reason}; stopping every process")
        self._main.cancel()

    def _preflight(self) -> None:
        """Usage and environment problems of the chosen backends are exit 2 before anything starts; secrets
        they bring are registered for redaction before the first line is printed."""
        options = self.options
        _check_backend_options(options)
        if options.repeat < 1:
            raise ConfigError(f"--repeat must be at least 1, got {options.repeat}")
        if options.repeat > 1 and (options.provider == "replay" or options.record_dir is not None):
            # A replay answers the same every time, and a cassette is one run's answers: N of them is no record.
            raise ConfigError("--repeat measures a live or mocked model's pass rate; it cannot be combined with "
                              "--provider replay or --record")
        if options.timeout is not None:
            _parse_timeout(options.timeout)
        _check_rule_files(options.provider_rules)
        check_output_dir(self.dir, "--output-dir" if options.output_dir else "the artifact directory")
        if options.provider == "live":
            from qa.provider.live import resolve_live_settings

            self.live = resolve_live_settings(model=options.model, base_url=options.base_url,
                                              timeout_s=options.model_timeout_s, max_retries=options.model_retries,
                                              env=os.environ)
            self._add_secrets(self.live.secrets)
        elif options.provider not in ("mock", "replay"):
            raise ConfigError(f"--provider {options.provider!r} is not supported; use mock (the default), live "
                              "or replay")
        if options.homeserver == "external":
            self._add_secrets(_external_settings(options).secrets)
        elif options.homeserver == "tuwunel":
            from qa.homeserver.tuwunel import connect_docker

            # Only a check that an engine answers; the backend opens its own client when it starts.
            connect_docker(timeout=10).close()

    def _add_secrets(self, values: list[str]) -> None:
        self.secrets.extend(v for v in values if v and v not in self.secrets)

    async def _start_provider(self) -> None:
        began = mono_ms()
        if self.options.provider == "replay":
            self.provider = await start_replay(self.options, self.cassettes, self.out.say)
        elif self.live is not None:
            from qa.provider.live import LiveProvider

            self.provider = LiveProvider(self.live)
            await self.provider.start()
            self.out.say(f"live provider at {self.live.base_url_host}, model {self.live.model}: "
                         f"{self.provider.checked}")
            if self.options.record_dir is not None:
                self.provider = await start_recording(self.live, self.options.record_dir, self.secrets, self.out.say)
            mock_only = [s.id for s in self.plan if s.provider.rules]
            if mock_only:
                self.out.say(f"note: the mock-provider rules of {', '.join(mock_only)} do not apply to a live model")
        else:
            from qa.library import rules_root_for
            from qa.provider.mock import MockProvider
            from qa.provider.rules import load_rule_files

            rule_files = list(self.options.provider_rules)
            for scenario in self.plan:
                rule_files += [rules_root_for(scenario.source_path) / p for p in scenario.provider.rules]
            self.provider = MockProvider(load_rule_files(rule_files) if rule_files else None)
            await self.provider.start()
            self.out.say(f"mock provider on {self.provider.base_url}")
        self.timings.providerBootMs = round(mono_ms() - began, 1)

    async def _run_all(self, work: Path) -> None:
        await self._start_provider()

        self.homeserver = _start_homeserver(self.options, work, self.dir / "homeserver")
        hs = self.homeserver
        self._add_secrets(getattr(hs, "secrets", []))
        image = getattr(hs, "image", None)
        self.out.say(f"starting {hs.kind} homeserver{f' from {image} (pulled if absent)' if image else ''} …")
        # The fork server imports the agent on the other core while the homeserver boots.
        forks = asyncio.ensure_future(self._start_fork_server(work))
        # The scenario runner's imports (nio, aiohttp: ~0.4 s) happen meanwhile too, not before the boot.
        runner = asyncio.ensure_future(asyncio.to_thread(importlib.import_module, "qa.scenario.runner"))
        try:
            await hs.start()
        finally:
            await forks
            await runner
        from qa.scenario.runner import RunResources
        self._add_secrets(getattr(hs, "secrets", []))  # some are only generated by start()
        self.timings.homeserverBootMs = round(hs.boot_ms or 0, 1)
        self.out.say(f"{hs.kind} {hs.version} ready at {hs.base_url} in {hs.boot_ms:.0f} ms")

        # The bot reaches the model through the launch contract (OPENAI_BASE_URL / OPENAI_API_KEY); a live key
        # goes there and nowhere else, and the bot's client gets the same timeout and retry bound as the preflight.
        live = self.live
        assert self.bot_file is not None
        resources = RunResources(
            homeserver=self.homeserver, provider=None if live is not None else self.provider,
            model_base_url=self.provider.base_url, model_name=self.provider.model, run_id=self.run_id,
            artifact_dir=self.dir, state_dir=work / "state", markers=MarkerFactory(self.run_id),
            bot_env=dict(self.options.bot_env), bot_overrides=dict(self.options.bot_overrides),
            secrets=self.secrets, probes=self.probes, observed=self.observed, bot_file=self.bot_file,
            provider_api_key=bot_key(live, self.options),
            provider_timeout_s=live.timeout_s if live is not None else None,
            provider_max_retries=live.max_retries if live is not None else None,
            interrupted=self.interrupted, stop_reason=lambda: self.stop_reason, infra_errors=self.infra_errors,
            include_bodies=self.options.include_bodies, fork_server=self.fork_server,
        )
        scenarios_began = mono_ms()
        try:
            await self._while_homeserver_lives(self._run_scenarios(resources))
        finally:
            self.timings.scenariosMs = round(mono_ms() - scenarios_began, 1)

    async def _start_fork_server(self, work: Path) -> None:
        """Only for the embedded agent's own command; a failure costs speed, never the run: its bots then start
        the ordinary way, and the run says so."""
        assert self.bot_file is not None
        if not self.options.fork_server or not uses_fork_server(self.bot_file):
            return
        server = ForkServer(self.dir / "fork-server.log", work / "fork-server", self.bot_file)
        try:
            await server.start()
        except InfraError as exc:
            self.out.say(f"note: {exc}; bots start the ordinary way")
            return
        self.fork_server = server
        self.out.say(f"fork server ready (pid {server.pid}): the agent's bots are forked from it")

    async def _while_homeserver_lives(self, work: Any) -> None:
        """Run `work`, but a homeserver that dies under it ends the run at once as an infrastructure error
        naming it and its log, instead of every step timing out without a word about why."""
        hs = self.homeserver
        assert hs is not None
        # A signal cancels us here; run_unless then cancels the scenarios and lets their own (bounded)
        # teardowns finish before the run writes its record.
        async def death() -> None:
            # Said before the scenarios are cancelled, so each one records why it was cut short.
            self.stop_reason = f"the homeserver died: {await hs.wait_died()}"

        stopped, task = await run_unless(work, death(), grace_s=SHUTDOWN_TIMEOUT_S)
        if not stopped:
            task.result()
            return
        self.out.say(f"error: {self.stop_reason}")
        raise InfraError(f"{hs.kind} homeserver died mid-run: {hs.death}; see {hs.log_path}")

    async def _run_scenarios(self, resources: RunResources) -> None:
        """Up to `jobs` scenarios at a time, started in plan order.

        Side by side is safe because each scenario has its own users, rooms, bot process, state dir, markers and
        view of the mock provider's journal. Three exceptions keep the old guarantees:
        - the canary runs first and alone: it is the gate, and nothing else starts until it has passed;
        - a scenario that touches shared state (a homeserver restart: `runs_alone`) runs after the others, alone;
        - skips (canary failed, --fail-fast) are decided when a scenario would start, so after a failure no new
          scenario starts while those already running finish.
        Results are put back in plan order by `_write`, whatever order they finish in. On Ctrl-C the cancellation
        reaches every running scenario through the task group, and each one's finally-blocks stop its bot.
        """
        plan = list(self.plan)
        if self.jobs > 1 and plan and plan[0].id == self._gate:
            await self._run_one(plan.pop(0), resources)
        together = [s for s in plan if self.jobs == 1 or not runs_alone(s)]
        alone = [s for s in plan if self.jobs > 1 and runs_alone(s)]
        pending = iter(together)  # shared by the workers: each takes the next scenario in plan order

        async def worker() -> None:
            for scenario in pending:
                await self._run_one(scenario, resources)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.jobs, len(together))):
                group.create_task(worker())
        for scenario in alone:
            await self._run_one(scenario, resources)

    async def _run_one(self, scenario: Any, resources: RunResources) -> None:
        if self._must_skip(scenario):
            return
        self.running.add(scenario.id)
        say = self._say_for(scenario)
        say(f"▶ {scenario.title}" if self.jobs > 1 else f"▶ {scenario.id}: {scenario.title}")
        self.out.scenario_started(scenario.id)
        infra: list[str] = []
        result = await self._run_guarded(scenario, resources, infra, say)
        if infra and self.stop_reason is None:
            # Infrastructure (the homeserver refused what any scenario needs) is never the scenario's failure:
            # one more try, as a scenario of its own (fresh users, rooms, markers); the record keeps both.
            say(f"  ↻ {scenario.id}: infrastructure error, retrying once: {infra[0].splitlines()[0]}")
            retry = scenario.model_copy(update={"id": f"{scenario.id}{ATTEMPT_SEPARATOR}retry"})
            self._ran_as[scenario.id] = retry.id
            first, infra = result, []
            result = await self._run_guarded(retry, resources, infra, say)
            result.id = scenario.id
            result.retries.append(InfraRetry(ranAs=scenario.id, error=self.out.redact(first.details),
                                             durationMs=first.durationMs))
        self.infra_errors.extend(infra)  # only a retry that failed the same way makes it the run's error
        after_scenario(self.provider, self._ran_as.get(scenario.id, scenario.id), result, say)
        result.latency = latency_stats(result.replyLatenciesMs)
        self.results.append(result)
        self.out.scenario_finished(scenario.id, result.status, result.durationMs / 1000)

    async def _run_guarded(self, scenario: Any, resources: RunResources, infra: list[str], say: Any) -> ScenarioResult:
        try:
            return await run_scenario(scenario, self._resources_for(scenario, resources, infra), say)
        except Exception as exc:  # a harness bug in one scenario must not lose the others or the report
            say(f"  ✘ {scenario.id}: harness error: {type(exc).__name__}: {exc}")
            return ScenarioResult(
                id=scenario.id, title=scenario.title, status="fail",
                details=f"harness error: {type(exc).__name__}: {exc}",
                failure=Failure(expected="the harness runs the scenario",
                                seen=traceback.format_exception(exc)[-6:]))

    @property
    def _gate(self) -> str:
        """The canary's first attempt gates the run; its further attempts are measured like any other."""
        return attempt_id(CANARY, 1) if self.options.repeat > 1 else CANARY

    def _say_for(self, scenario: Any) -> Any:
        """Progress lines of one scenario. Side by side, lines of different scenarios interleave, so each
        carries its scenario's id; one at a time they read as they always did."""
        prefix = f"[{scenario.id}] " if self.jobs > 1 else ""

        def say(message: str) -> None:
            self.out.say(prefix + message.strip() if prefix else message)

        return say

    def _resources_for(self, scenario: Any, resources: RunResources, infra: list[str]) -> RunResources:
        """The run's resources as one scenario sees them: its own markers, and with the mock provider its own
        base URL and journal, so a journal check or a latency figure never counts another scenario's request.
        An attempt or a retry also gets its own user names: the runner cuts long ids short, but not run ids."""
        run_id = resources.run_id
        if ATTEMPT_SEPARATOR in scenario.id:
            run_id = run_id[:-6] + hashlib.sha256(f"{run_id}/{scenario.id}".encode()).hexdigest()[:6]
        own = replace(resources, markers=resources.markers.child(scenario.id), infra_errors=infra, run_id=run_id)
        if own.provider is not None and hasattr(own.provider, "scoped"):
            view = own.provider.scoped(scenario.id)
            own = replace(own, provider=view, model_base_url=view.base_url)
        return bind_scope(self.provider, scenario.id, own, self.run_id)

    def _must_skip(self, scenario: Any) -> bool:
        reason = None
        canary = next((r for r in self.results if r.id == self._gate), None)
        if canary is not None and canary.status != "pass":
            reason = "skipped: the canary failed, so nothing else can be trusted"
        elif self.options.fail_fast and any(r.status == "fail" for r in self.results):
            reason = "skipped: --fail-fast after an earlier failure"
        elif hasattr(self.provider, "skip_reason"):
            reason = self.provider.skip_reason(scenario.id)  # replay: the scenario has no cassette
        if reason:
            self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="skip", details=reason))
            self.out.say(f"  - {scenario.id} {reason}")
            self.out.scenario_finished(scenario.id, "skip", 0.0)
        return reason is not None

    async def _shutdown(self) -> None:
        """Every process this run started is stopped, within a deadline, whatever state the run is in."""
        kill_all_bots()
        for component in (self.homeserver, self.provider, self.fork_server):
            if component is None:
                continue
            try:
                async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                    await component.stop()
            except (Exception, asyncio.CancelledError) as exc:
                self.out.say(f"warning: stopping {type(component).__name__} failed: {type(exc).__name__} {exc}")
        _kill_everything()

    def _lock_section(self) -> dict[str, Any] | None:
        from qa.kernel.trace import read_trace
        from qa.report.lock_evidence import (
            has_lock_records,
            has_model_records,
            journal_overlap_reasons,
            not_applicable,
        )

        traces = {r.id: read_trace(self.dir / "scenarios" / self._ran_as.get(r.id, r.id) / "bot-trace.jsonl")
                  for r in self.results if r.status != "skip"}
        if not traces:
            return None
        records = [record for trace in traces.values() for record in trace]
        journals = {sid: self._journal_intervals(self._ran_as.get(sid, sid)) for sid in traces}
        if not has_lock_records(records):
            model_requests = sum(1 for r in records if r.get("type") == "model.request.start") \
                or sum(len(v) for v in journals.values())
            return not_applicable(model_requests)
        evidence = analyze_lock_evidence(records, self.probes).model_dump(mode="json", by_alias=True)
        tag_scenarios(evidence, traces)  # issue 18: the picture is drawn per scenario
        # A bot that traces its holds but not its model requests: the journal gives the model I/O, per scenario
        # (scenarios run side by side, so one's requests say nothing about another's holds).
        from_journal = 0
        for sid, trace in traces.items():
            if has_lock_records(trace) and not has_model_records(trace) and journals[sid]:
                from_journal += len(journals[sid])
                evidence["reasons"].extend(journal_overlap_reasons(trace, journals[sid]))
        if from_journal:
            evidence["modelRequests"] += from_journal
            evidence["reasons"] = [r for r in evidence["reasons"] if not r.startswith("no model request")]
            fails = evidence["verdict"] == "fail" or any("provider journal" in r for r in evidence["reasons"])
            evidence["verdict"] = "fail" if fails else "pass"
            evidence["reasons"].append(f"model I/O of {from_journal} request(s) taken from the provider journal "
                                       "(the bot traces no model requests)")
        start = next((r for r in records if r.get("type") == "start" and isinstance(r.get("lock"), dict)), None)
        settings = start["lock"] if start else {}
        evidence["scope"] = settings.get("scope")
        evidence["settings"] = {k: settings.get(k) for k in ("acquireTimeoutMs", "staleMs", "maxHoldMs")}
        evidence["sources"] = settings.get("sources", {})
        return evidence

    def _journal_intervals(self, scenario_id: str) -> list[tuple[float, float]]:
        """The scenario's model requests as the mock saw them (start, end) on the shared monotonic clock."""
        provider = self.provider
        if provider is None or self.live is not None or not hasattr(provider, "scoped"):
            return []
        return [(float(e.started_at), float(e.finished_at)) for e in provider.scoped(scenario_id).journal
                if e.is_chat and e.finished_at is not None]

    def _write(self) -> int:
        planned_as = {ran: planned for planned, ran in self._ran_as.items()}
        for result in self.interrupted:  # a retry cut short files itself under the id it ran as
            result.id = planned_as.get(result.id, result.id)
        # Unplanned scenarios that never ran (an infra error stopped the run) are reported, not dropped.
        self.results.extend(r for r in self.interrupted if r.id not in {x.id for x in self.results})
        ran = {r.id for r in self.results}
        why = f"not run: the run was stopped early ({self.stop_reason})" if self.stop_reason \
            else "not run: the run stopped early"
        for scenario in self.plan:
            if scenario.id in ran:
                continue
            if scenario.id in self.running:  # started, and cut short before it could say so itself
                self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="interrupted",
                                                   details=f"interrupted: {self.stop_reason or 'the run stopped'}"))
            else:
                self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="skip",
                                                   details=why))
        # Side by side, scenarios finish in any order; the record keeps the plan's.
        order = {s.id: i for i, s in enumerate(self.plan)}
        self.results.sort(key=lambda r: order.get(r.id, len(order)))
        self.observed.sort(key=lambda e: order.get(str(e.get("scenario")), len(order)))
        report_began = mono_ms()
        lock = self._lock_section()
        write_lock_pictures(lock, self.dir, self.results, self._ran_as)  # issue 18: lock-timeline.svg per scenario
        for message in dict.fromkeys(self.infra_errors):
            self.errors.append(RunError(component="homeserver", message=self.out.redact(message),
                                        log=_rel(self.dir, getattr(self.homeserver, "log_path", None))))
        records = self._records()
        if self.deadline is not None and self.deadline.reached:
            self.deadline.finished = [r.id for r in records if r.status in ("pass", "fail")]
            self.deadline.unfinished = [r.id for r in records if r.status not in ("pass", "fail")]
            self.errors.append(RunError(component="deadline", message=(
                f"{self.stop_reason}: every process was stopped; {len(self.deadline.finished)} scenario(s) "
                f"finished, {len(self.deadline.unfinished)} did not ({', '.join(self.deadline.unfinished) or '-'})")))
        counts = count(records)
        if not self.errors and self.interrupted_code is None and nothing_ran(r.status for r in records):
            self.errors.append(RunError(component="plan", message=f"{NOTHING_RAN} (see each scenario's reason)"))
        status, code = run_verdict([r.status for r in records], errors=bool(self.errors), lock=lock,
                                   interrupted_code=self.interrupted_code)
        boots = [r.botBootMs for r in self.results if r.botBootMs is not None]
        self.timings.botBootMs = round(statistics.median(boots), 1) if boots else None
        hs = self.homeserver
        summary = Summary(
            runId=self.run_id, status=status, exitCode=code, startedAt=self.started_at, finishedAt=utc_now_iso(),
            command=[self.out.redact(a) for a in self.options.argv],
            environment=Environment(
                homeserver=HomeserverInfo(kind=getattr(hs, "kind", None) or self.options.homeserver,
                                          version=getattr(hs, "version", None),
                                          serverName=getattr(hs, "server_name", None) or None,
                                          baseUrl=_safe_base_url(hs),
                                          log=_rel(self.dir, getattr(hs, "log_path", None)),
                                          image=getattr(hs, "image", None)),
                provider=self._provider_info(),
                bot=BotInfo(name=self.bot_file.name, source=self.bot_file.source,
                            ready=self.bot_file.ready.describe(), capabilities=list(self.bot_file.capabilities),
                            started="fork-server" if self.fork_server is not None else "exec")
                if self.bot_file else None,
                profile=self.options.profile, python=platform.python_version(),
                platform=f"{sys.platform}-{platform.machine()}", matrixQaVersion=_version(),
            ),
            counts=counts, timings=self.timings, scenarios=records, lock=lock, errors=self.errors,
            latency=latency_stats(ms for r in records for ms in r.replyLatenciesMs), jobs=self.jobs,
            shard=ShardInfo(index=self.options.shard.index, count=self.options.shard.count)
            if self.options.shard else None,
            repeat=self.options.repeat if self.options.repeat > 1 else None,
            minPassRate=self.options.min_pass_rate if self.options.repeat > 1 else None, deadline=self.deadline,
        )
        self.timings.reportMs = round(mono_ms() - report_began, 1)
        self.timings.totalMs = round(mono_ms() - self.t0, 1)
        self._write_journal()
        files = write_reports(summary, self.dir, observed_events=self.observed,
                              include_bodies=self.options.include_bodies, secrets=self.secrets)
        self._redact_artifacts()
        self._print_table(summary, files)
        self._write_step_summary(files)
        return code

    def _records(self) -> list[ScenarioResult]:
        """One record per planned scenario: with --repeat, its attempts combined into a pass rate."""
        if self.options.repeat == 1:
            return self.results
        by_id = {r.id: r for r in self.results}
        return [combine_attempts(
            s.id, s.title, [by_id[a] for a in ids], [self._ran_as.get(a, a) for a in ids], self.options.min_pass_rate)
            for s in self.base_plan if (ids := [attempt_id(s.id, k) for k in range(1, self.options.repeat + 1)])]

    def _redact_artifacts(self) -> None:
        """A last sweep over every file the run left (homeserver logs, anything copied): what was written
        without going through redaction on its way is redacted here."""
        from qa.report.redact import redact_file

        for path in sorted(self.dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    redact_file(path, self.secrets)

    def _provider_info(self) -> ProviderInfo:
        if self.live is not None:
            # Host only: a base URL's path or query can carry deployment names or tokens.
            return ProviderInfo(mode="live", model=self.live.model, baseUrlHost=self.live.base_url_host or None)
        try:  # a provider interrupted while starting has no address yet; the record is still written
            base_url = getattr(self.provider, "base_url", "") or ""
        except Exception:
            base_url = ""
        return ProviderInfo(mode=getattr(self.provider, "mode", "mock"),
                            model=getattr(self.provider, "model", "mock-model"),
                            baseUrlHost=urlparse(base_url).netloc or None)

    def _write_step_summary(self, files: dict[str, str]) -> None:
        """Under GitHub Actions ($GITHUB_STEP_SUMMARY set) the report also becomes the job summary, trimmed to
        GitHub's size limit, with a pointer to the full artifacts."""
        if not os.environ.get("GITHUB_STEP_SUMMARY"):
            return
        from qa.report.ci_summary import write_github_step_summary

        hint = _artifact_hint(os.environ)
        try:
            markdown = (self.dir / files.get("report", "matrix-qa-report.md")).read_text(encoding="utf-8")
            # The footer is the last section, so a trimmed summary loses it; the trimming note carries the hint.
            markdown = markdown.rstrip("\n") + f"\n\n---\n\nFull report, logs and traces: {hint}.\n"
            if write_github_step_summary(markdown, artifact_hint=hint) is not None:
                self.out.say("job summary: written to $GITHUB_STEP_SUMMARY")
        except OSError as exc:
            self.out.say(f"warning: could not write the GitHub job summary: {exc}")

    def _write_journal(self) -> None:
        """The provider journal is evidence too (what the model was asked, and when). Only the mock keeps one."""
        if self.provider is not None and hasattr(self.provider, "journal_as_json"):
            path = self.dir / "provider-journal.json"
            path.write_text(self.out.redact(json.dumps(self.provider.journal_as_json(), indent=1)), encoding="utf-8")

    def _print_table(self, summary: Summary, files: dict[str, str]) -> None:
        self.out.say("")
        for r in summary.scenarios:
            self.out.say(f"  {r.status.upper():5} {r.id:45} {r.durationMs / 1000:7.2f}s  {r.details[:80]}")
        c = summary.counts
        lock = summary.lock or {}
        interrupted = f", {c.interrupted} interrupted" if c.interrupted else ""
        interrupted += f", {c.flaky} flaky" if c.flaky else ""
        self.out.say(f"{summary.status.upper()}: {c.passed} passed, {c.failed} failed, {c.skipped} skipped{interrupted}"
                     + (f"; lock evidence {lock.get('verdict')}" if lock else ""))
        if summary.latency is not None:
            self.out.say(f"reply latency over {summary.latency.count} replies: p50 {summary.latency.p50Ms:.0f} ms, "
                         f"p95 {summary.latency.p95Ms:.0f} ms")
        for err in summary.errors:
            self.out.say(f"error ({err.component}): {err.message}")
        self.out.say(f"report: {self.dir / files.get('report', 'matrix-qa-report.md')}")
        self.out.say(f"artifacts: {self.dir}")


class _LibraryLogs:
    """The test users' matrix-nio clients log retries and timeouts; that belongs in a file, not the terminal."""

    NAMES = ("nio", "aiohttp", "asyncio")

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in self.NAMES:
            logger = logging.getLogger(name)
            logger.addHandler(self.handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False

    def close(self) -> None:
        for name in self.NAMES:
            logging.getLogger(name).removeHandler(self.handler)
        self.handler.close()


def _parse_timeout(text: str) -> float:
    from qa.scenario.schema import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--timeout: {exc}") from None


def _output_for(progress: str) -> Output:
    """Plain lines, or a live block over them at a person's terminal (--progress, issue 18)."""
    from qa.harness.progress import choose_mode

    requested = "live" if progress == "live" else "auto" if progress == "auto" else "plain"
    return Output(sys.stderr, progress=choose_mode(requested, sys.stderr.isatty(), os.environ))


def _check_rule_files(paths: list[Path]) -> None:
    """A missing or broken --provider-rules file is exit 2 naming it, before anything starts."""
    from qa.provider.rules import load_rule_files

    load_rule_files(paths)


def _check_lock_env(env: dict[str, str]) -> None:
    """Nothing left to do here: the bot's own settings in the environment (the embedded agent's
    MATRIX_QA_SESSION_WRITE_LOCK_*) are the bot file's `env_check`, which `check_runnable` runs before anything
    starts (qa.harness.botfile). Kept for its call site until the run's preflight is rewritten (issue 24)."""
    del env


def _component(exc: QAError) -> str:
    text = str(exc).lower()
    if "synapse" in text or "homeserver" in text:
        return "homeserver"
    if "provider" in text or "model" in text:
        return "provider"
    if "bot" in text:
        return "bot"
    return "config" if isinstance(exc, ConfigError) else "infrastructure"


def _log_of(hs: Homeserver | None, exc: QAError) -> str | None:
    if isinstance(exc, InfraError) and hs is not None and hs.log_path and hs.kind in str(exc).lower():
        return str(hs.log_path)
    return None


def _artifact_hint(env: Mapping[str, str]) -> str:
    """Where the full report is, for the job summary: the workflow run's artifacts when Actions says which."""
    name = env.get("MATRIX_QA_ARTIFACT_NAME")
    where = f"the `{name}` artifact" if name else "the run's artifacts"
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        url = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return f"`matrix-qa-report.md` in {where} of [this workflow run]({url}#artifacts)"
    return f"`matrix-qa-report.md` in {where}"


def _safe_base_url(hs: Homeserver | None) -> str | None:
    try:
        return hs.base_url if hs is not None else None
    except QAError:
        return None


def _rel(root: Path, path: Path | None) -> str | None:
    if path is None:
        return None
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(root))
    return str(path)


SHUTDOWN_TIMEOUT_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _SignalHandlers:
    """SIGINT, SIGTERM (what CI sends on cancel) and SIGHUP all end a run the same way (Run._on_signal)."""

    def __init__(self, handler: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []
        for sig in STOP_SIGNALS:
            try:
                self._loop.add_signal_handler(sig, handler, int(sig))
                self._installed.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests): nothing to do
                pass

    def remove(self) -> None:
        for sig in self._installed:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(sig)


def _kill_everything() -> None:
    """Last resort: no bot, fork server, Synapse or container of this run outlives it."""
    kill_all_bots()
    kill_all_fork_servers()
    from qa.homeserver.synapse import kill_all_children

    kill_all_children()
    if "qa.homeserver.tuwunel" in sys.modules:  # never imports docker for a run that did not use it
        from qa.homeserver.tuwunel import remove_all_containers

        remove_all_containers()


async def run_scenario(scenario: Any, resources: RunResources, say: Any) -> ScenarioResult:
    """qa.scenario.runner.run_scenario, imported when first needed (its imports overlap the homeserver's boot,
    see Run._run_all); a name of this module, so a test can stand in for the whole scenario runner."""
    from qa.scenario.runner import run_scenario as run

    return await run(scenario, resources, say)


def run_sync(options: RunOptions, output: Output | None = None) -> int:
    run = Run(options, output)
    try:
        return asyncio.run(run.execute())
    except KeyboardInterrupt:
        # Ctrl-C before the run's own handlers were installed (or after they were removed).
        _kill_everything()
        run.out.say("interrupted")
        return 130


