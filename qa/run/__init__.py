"""One run, told start to finish: preflight → provider → homeserver → scenarios → record.

Each chapter is a module of its own: qa.run.options (what was asked, and the checks that refuse a bad request
before anything starts), qa.run.provider (the model provider), qa.run.backends (the homeserver, from its
backend in qa.homeserver.registry), qa.run.scheduler (which scenario runs when), qa.run.lifecycle (signals,
the deadline, teardown) and qa.run.record (the summary and reports). Whatever happens (a failed check, a
component that won't start, Ctrl-C), the finally-blocks stop every process this run started and the record is
still written with what was learned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa import processes
from qa.harness.botfile import BotFile
from qa.harness.fork_server import ForkServer
from qa.harness.jobs import AUTO_RULE, default_jobs, homeserver_count, usable_cores
from qa.harness.output import Output
from qa.harness.output_dir import prepare_output_dir
from qa.harness.work_dir import work_root
from qa.homeserver import early_synapse
from qa.homeserver.base import Homeserver
from qa.kernel import event_loop
from qa.kernel.clock import mono_ms, utc_now_iso
from qa.library import builtin_estimates
from qa.provider.record_replay import bot_key, load_for_replay
from qa.report.observed_events import ObservedEvents
from qa.report.summary import RunError, ScenarioResult, Timings
from qa.run import homeservers as pool
from qa.run.backends import add_secrets, boot, create_homeserver, start_fork_server
from qa.run.lifecycle import SHUTDOWN_TIMEOUT_S, LibraryLogs, Lifecycle, kill_everything
from qa.run.options import (
    RunOptions,
    check_appservice,
    check_bot_accounts,
    check_registration,
    checked_bot_file,
    checked_peer_file,
    default_scenario_paths,
    output_for,
    plan_scenarios,
    preflight,
)
from qa.run.provider import start_provider
from qa.run.record import run_error, write_record
from qa.run.scheduler import Scheduler
from qa.shared.markers import MarkerFactory

if TYPE_CHECKING:
    from qa.scenario.runner import RunResources

__all__ = ["Run", "RunOptions", "default_scenario_paths", "run_scenario", "run_sync"]


class Run:
    def __init__(self, options: RunOptions, output: Output | None = None) -> None:
        self.options = options
        self.out = output or output_for(options.progress)
        self.run_id = new_run_id()
        self.dir = (options.output_dir or Path("artifacts") / "qa-e2e" / self.run_id).resolve()
        self.started_at = utc_now_iso()
        self.t0 = mono_ms()
        self.timings = Timings()
        self.errors: list[RunError] = []
        # One list: scenarios append their users' passwords as they provision, and the output redacts them.
        self.secrets = self.out.secrets
        self.probes: list[dict[str, Any]] = []
        self.observed = ObservedEvents(options.include_bodies)  # matrix-qa-observed-events.json's, sanitized
        self.jobs = options.jobs if options.jobs is not None else default_jobs(usable_cores())
        self.bot_file: BotFile | None = None
        self.peer_bot: BotFile | None = None  # --peer-bot (qa.harness.peer)
        # --repeat: the plan before its scenarios became attempts (base_plan), and the attempts (plan).
        self.base_plan: list[Any] = []
        self.plan: list[Any] = []
        self.cassettes: dict[str, Any] = {}  # --provider replay: scenario id -> its cassette
        self.live: Any = None  # LiveSettings when --provider live
        self.provider: Any = None
        self.homeserver: Homeserver | None = None  # the first of `homeservers`: the canary's
        self.homeservers: list[Homeserver] = []  # --homeservers (qa.run.homeservers)
        self.homeserver_boots: list[asyncio.Task[float]] = []  # every homeserver's but the first: booting beside
        self.fork_server: ForkServer | None = None
        self.scheduler = Scheduler(jobs=self.jobs, repeat=options.repeat, fail_fast=options.fail_fast,
                                   run_id=self.run_id, out=self.out, run_scenario=_run_scenario,
                                   stop_reason=lambda: self.lifecycle.reason,
                                   estimates=options.shard_durations or builtin_estimates())
        self.lifecycle = Lifecycle(self.out, self.scheduler.interrupted, self._write)

    async def execute(self) -> int:
        """Returns the exit code. Raises ConfigError before anything starts when the plan is bad."""
        # Preflight: a usage or environment problem is exit 2 here, before anything starts or is written.
        self.live, brought = preflight(self.options, self.jobs, self.dir, os.environ)
        add_secrets(self.secrets, brought)
        self.bot_file = checked_bot_file(self.options)
        self.peer_bot = checked_peer_file(self.options)
        self.base_plan, self.plan = plan_scenarios(self.options)
        check_bot_accounts(self.bot_file, self.base_plan)
        check_registration(self.bot_file, self.options.homeserver, os.environ)
        check_appservice(self.bot_file, self.options.homeserver)
        self.cassettes = load_for_replay(self.options, self.plan)
        # From here on, whatever happens, every process started is stopped and the record is written.
        library_logs = self.open_record()
        # Every orphan below us comes back to us, so teardown finds what escaped a bot's group and environment.
        processes.become_subreaper()
        work = Path(tempfile.mkdtemp(prefix="matrix-qa-", dir=work_root(os.environ)))
        self.lifecycle.begin(work, self.options.timeout)
        try:
            await self._run_all(work)
        except asyncio.CancelledError:
            if self.lifecycle.reason is None:
                raise  # not ours to turn into a verdict
            self.out.say(f"interrupted: {self.lifecycle.reason}")
        except Exception as exc:
            self.errors.append(run_error(exc, self.lifecycle.dead or self.homeserver, self.out, self.dir))
        finally:
            code = await self._finish(work, library_logs)
        return code

    def open_record(self) -> LibraryLogs:
        """The artifact directory, the output log beside the terminal, and the plan said in a few lines."""
        removed = prepare_output_dir(self.dir, "--output-dir" if self.options.output_dir else "the artifact directory")
        self.out.open_log(self.dir / "matrix-qa-output.log")
        library_logs = LibraryLogs(self.dir / "harness.log")
        shard = f", shard {self.options.shard}" if self.options.shard else ""
        count = self.homeserver_count()
        why = AUTO_RULE if self.options.homeservers is None else "--homeservers"
        spread = f" on {count} homeservers ({why})" if count > 1 else ""
        self.out.say(f"matrix-qa run {self.run_id}: {len(self.plan)} scenario(s), profile {self.options.profile}"
                     f"{shard}, {self.jobs} at a time{spread}, on {event_loop.running_loop_name()}")
        self.out.progress_total(len(self.plan))  # issue 18: the live block, at a terminal only
        assert self.bot_file is not None
        self.out.say(f"bot under test: {self.bot_file.name} ({self.bot_file.source})")
        if self.peer_bot is not None:
            self.out.say(f"peer bot: {self.peer_bot.name} ({self.peer_bot.source})")
        self.out.say(f"artifacts: {self.dir}")
        if removed:
            self.out.say(f"note: removed the earlier run's {', '.join(removed)} from {self.dir}")
        return library_logs

    def homeserver_count(self) -> int:
        """--homeservers, or what `auto` makes of this plan (qa.harness.jobs.homeserver_count)."""
        return homeserver_count(self.options.homeservers, backend=self.options.homeserver, jobs=self.jobs,
                                 scenarios=len(self.plan), cores=usable_cores())

    async def _run_all(self, work: Path) -> None:
        """The provider, then the homeservers (the fork server boots beside them), then the scenarios."""
        await self.start_components(work)
        assert self.homeservers
        scenarios_began = mono_ms()
        try:
            pools = [self.resources(work, hs) for hs in self.homeservers]
            ready = [None, *self.homeserver_boots]  # each homeserver's slots start once it is ready
            # `auto` (the user asked for no count): a further homeserver that fails to boot, or is still booting
            # once the plan is taken, is done without (qa.run.homeservers.boot_others); an explicit N is kept.
            spare = self.options.homeservers is None
            await self.lifecycle.while_homeservers_live(
                self.homeservers, self.scheduler.run(self.plan, pools, ready, needed_only=spare),
                self.homeserver_boots, spare=spare)
        finally:
            self.timings.scenariosMs = round(mono_ms() - scenarios_began, 1)

    async def start_components(self, work: Path) -> None:
        """What every scenario shares, started: the provider, then the homeservers with the fork server beside
        them. Public for a session that feeds its scenarios one at a time (qa.pytest_plugin)."""
        began = mono_ms()
        await start_provider(self.options, self.live, self.plan, self.cassettes, self.out, keep=self._keep_provider)
        self.timings.providerBootMs = round(mono_ms() - began, 1)

        hosts = self.bot_file is not None and self.bot_file.appservice is not None
        count = self.homeserver_count()
        for index in range(count):  # every one is listed before any boots: a stop finds each, started or not
            where, logs = pool.places(index, work, self.dir)
            self.homeservers.append(create_homeserver(self.options, where, logs, appservice=hosts,
                                                      port=self.options.homeserver_port if index == 0 else None))
        hs = self.homeserver = self.homeservers[0]
        # `matrix-qa run` started its Synapse early: every homeserver's is forked from it (qa.homeserver.early_synapse).
        early = early_synapse.take()
        for each in self.homeservers:
            if (adopt := getattr(each, "adopt_early", None)) is not None:
                adopt(early)
        # The others boot beside the first and, once it is ready, beside the first scenarios (qa.run.homeservers).
        self.homeserver_boots = pool.boot_others(self.homeservers, self.out, self.secrets,
                                                 spare=self.options.homeservers is None)
        waited = await boot(hs, self._start_fork_server(work), self.out, self.secrets)
        self.timings.homeserverBootMs = round(hs.boot_ms or 0, 1)
        self.timings.forkServerWaitMs = waited if self.fork_server is not None else None

    def _keep_provider(self, provider: Any) -> None:
        self.provider = self.scheduler.provider = provider

    async def _start_fork_server(self, work: Path) -> None:
        assert self.bot_file is not None
        self.fork_server = await start_fork_server(self.options, self.bot_file, self.dir, work, self.out)

    def resources(self, work: Path, homeserver: Homeserver | None = None) -> RunResources:
        """What every scenario shares. The bot reaches the model through the launch contract (OPENAI_BASE_URL /
        OPENAI_API_KEY); a live key goes there and nowhere else, and the bot's client gets the same timeout and
        retry bound as the preflight. On `homeserver` (default: the first)."""
        from qa.scenario.runner import RunResources

        live, scheduler = self.live, self.scheduler
        assert self.homeserver is not None and self.bot_file is not None
        return RunResources(
            homeserver=homeserver or self.homeserver, provider=None if live is not None else self.provider,
            model_base_url=self.provider.base_url, model_name=self.provider.model, run_id=self.run_id,
            artifact_dir=self.dir, state_dir=work / "state", markers=MarkerFactory(self.run_id),
            bot_env=dict(self.options.bot_env), bot_overrides=dict(self.options.bot_overrides),
            secrets=self.secrets, probes=self.probes, observed=self.observed, bot_file=self.bot_file,
            provider_api_key=bot_key(live, self.options),
            provider_timeout_s=live.timeout_s if live is not None else None,
            provider_max_retries=live.max_retries if live is not None else None,
            interrupted=scheduler.interrupted, stop_reason=lambda: self.lifecycle.reason,
            infra_errors=scheduler.infra_errors, config_errors=scheduler.config_errors,
            include_bodies=self.options.include_bodies, reply_edit_wait_s=self.options.reply_edit_wait_s,
            step_timeout_cap_s=self.options.step_timeout_cap_s,
            fork_server=self.fork_server, peer_bot=self.peer_bot,
        )

    async def _finish(self, work: Path, library_logs: LibraryLogs) -> int:
        """Every process stopped, the scratch directory (secrets) gone, the record written: whatever happened."""
        try:
            # Tearing down from here: a signal during the boots' cancellation must not cancel this coroutine (the
            # stops below would never run); the cancellation is bounded like every stop.
            self.lifecycle.tearing_down = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                    await pool.cancel_boots(self.homeserver_boots)  # none may start its server after the stops
            await self.lifecycle.shutdown(*(self.homeservers or [self.homeserver]), self.provider, self.fork_server)
        finally:
            for hs in self.homeservers:  # a homeserver stopped mid-boot never said its secrets: they go now
                add_secrets(self.secrets, getattr(hs, "secrets", []))
            self._dispose(work)
            try:
                code = self._write()
            except OSError as exc:  # a full disk, a directory removed under us: say so, in one line
                self.out.say(f"error: could not write the run's record to {self.dir}: {exc.strerror or exc}")
                code = 2 if self.lifecycle.code is None else self.lifecycle.code
            self.out.close()
            library_logs.close()
            self.lifecycle.end()
        return code

    def _write(self) -> int:
        return write_record(self)

    def _dispose(self, work: Path) -> None:
        """The scratch directory holds users' passwords and the bots' state: gone, unless asked to keep it."""
        if self.options.keep_work_dir:
            self.out.say(f"kept the work dir (homeserver database and logs, bot state; it holds test users' "
                         f"passwords): {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


async def _run_scenario(scenario: Any, resources: RunResources, say: Any) -> ScenarioResult:
    # Looked up when called, so a test that replaces run_scenario below replaces it for the scheduler too.
    return await run_scenario(scenario, resources, say)


async def run_scenario(scenario: Any, resources: RunResources, say: Any) -> ScenarioResult:
    """qa.scenario.runner.run_scenario, imported when first needed (its imports overlap the homeserver's boot,
    see qa.run.backends.boot); a name of this module, so a test can stand in for the whole scenario runner."""
    from qa.scenario.runner import run_scenario as run

    return await run(scenario, resources, say)


def run_sync(options: RunOptions, output: Output | None = None) -> int:
    """The run on its own loop: uvloop unless MATRIX_QA_HARNESS_LOOP=asyncio (qa.kernel.event_loop); a bad value
    of it is a ConfigError (exit 2) before anything starts."""
    run = Run(options, output)
    try:
        return event_loop.run(run.execute(), event_loop.HARNESS_ENV, os.environ)
    except KeyboardInterrupt:
        # Ctrl-C before the run's own handlers were installed (or after they were removed).
        kill_everything()
        run.out.say("interrupted")
        return 130
