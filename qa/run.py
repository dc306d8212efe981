"""One run, start to finish: plan → homeserver + provider → scenarios → lock evidence → reports.

Whatever happens (a failed check, a component that won't start, Ctrl-C), the finally-blocks stop every process
this run started and the summary and reports are still written with what was learned.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from qa.clock import mono_ms, utc_now_iso
from qa.errors import ConfigError, InfraError, QAError
from qa.harness.bot_process import kill_all_bots
from qa.harness.output import Output
from qa.harness.plan import CANARY, select
from qa.homeserver.base import Homeserver
from qa.report.lock_evidence import analyze_lock_evidence
from qa.report.summary import (
    Environment,
    HomeserverInfo,
    ProviderInfo,
    RunError,
    ScenarioResult,
    Summary,
    Timings,
    count,
)
from qa.report.writer import write_reports
from qa.scenario.loader import load_scenarios
from qa.scenario.markers import MarkerFactory
from qa.scenario.runner import RunResources, run_scenario


@dataclass
class RunOptions:
    profile: str = "fast"
    scenario_ids: list[str] = field(default_factory=list)
    scenario_paths: list[Path] = field(default_factory=lambda: [Path("scenarios")])
    homeserver: str = "synapse"
    homeserver_port: int | None = None
    provider: str = "mock"
    provider_rules: list[Path] = field(default_factory=list)
    output_dir: Path | None = None
    fail_fast: bool = False
    include_bodies: bool = False
    bot_overrides: dict[str, Any] = field(default_factory=dict)
    bot_env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _version() -> str:
    try:
        return importlib.metadata.version("matrix-qa")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _start_homeserver(options: RunOptions, work: Path, log_dir: Path) -> Homeserver:
    if options.homeserver != "synapse":
        raise ConfigError(f"--homeserver {options.homeserver!r} is not supported yet; use synapse (the default)")
    from qa.homeserver.synapse import SynapseHomeserver

    return SynapseHomeserver(work / "synapse", log_dir, port=options.homeserver_port)


class Run:
    def __init__(self, options: RunOptions, output: Output | None = None) -> None:
        self.options = options
        self.out = output or Output()
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
        self.secrets: list[str] = []
        self.plan: list[Any] = []

    async def execute(self) -> int:
        """Returns the exit code. Raises ConfigError before anything starts when the plan is bad."""
        _check_lock_env({**os.environ, **self.options.bot_env})
        scenarios = load_scenarios(self.options.scenario_paths)
        self.plan = select(scenarios, self.options.profile, self.options.scenario_ids)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out.open_log(self.dir / "matrix-qa-output.log")
        self.out.say(f"matrix-qa run {self.run_id}: {len(self.plan)} scenario(s), profile {self.options.profile}")
        self.out.say(f"artifacts: {self.dir}")
        work = Path(tempfile.mkdtemp(prefix="matrix-qa-"))
        try:
            await self._run_all(work)
        except QAError as exc:
            self.errors.append(RunError(component=_component(exc), message=self.out.redact(str(exc)),
                                        log=_log_of(self.homeserver, exc)))
            self.out.say(f"error: {self.out.redact(str(exc))}")
        finally:
            await self._shutdown()
            shutil.rmtree(work, ignore_errors=True)
            code = self._write()
            self.out.close()
        return code

    async def _run_all(self, work: Path) -> None:
        from qa.provider.mock import MockProvider
        from qa.provider.rules import load_rule_files

        if self.options.provider != "mock":
            raise ConfigError(f"--provider {self.options.provider!r} is not supported yet; use mock (the default)")
        rule_files = list(self.options.provider_rules)
        for scenario in self.plan:
            rule_files += [Path(p) for p in scenario.provider.rules]
        began = mono_ms()
        self.provider = MockProvider(load_rule_files(rule_files) if rule_files else None)
        await self.provider.start()
        self.timings.providerBootMs = round(mono_ms() - began, 1)
        self.out.say(f"mock provider on {self.provider.base_url}")

        self.homeserver = _start_homeserver(self.options, work, self.dir / "homeserver")
        self.out.say("starting synapse …")
        await self.homeserver.start()
        self.timings.homeserverBootMs = round(self.homeserver.boot_ms or 0, 1)
        self.out.say(f"synapse {self.homeserver.version} ready at {self.homeserver.base_url} "
                     f"in {self.homeserver.boot_ms:.0f} ms")

        resources = RunResources(
            homeserver=self.homeserver, provider=self.provider, model_base_url=self.provider.base_url,
            model_name=self.provider.model, run_id=self.run_id, artifact_dir=self.dir, state_dir=work / "state",
            markers=MarkerFactory(self.run_id), bot_env={"OPENAI_API_KEY": "mock-key", **self.options.bot_env},
            bot_overrides=self.options.bot_overrides, secrets=self.secrets, probes=self.probes, observed=self.observed,
        )
        scenarios_began = mono_ms()
        for scenario in self.plan:
            if self._must_skip(scenario):
                continue
            self.out.say(f"▶ {scenario.id}: {scenario.title}")
            self.out.add_secrets(self.secrets)
            self.results.append(await run_scenario(scenario, resources, self.out.say))
        self.timings.scenariosMs = round(mono_ms() - scenarios_began, 1)

    def _must_skip(self, scenario: Any) -> bool:
        reason = None
        canary = next((r for r in self.results if r.id == CANARY), None)
        if canary is not None and canary.status != "pass":
            reason = "skipped: the canary failed, so nothing else can be trusted"
        elif self.options.fail_fast and any(r.status == "fail" for r in self.results):
            reason = "skipped: --fail-fast after an earlier failure"
        if reason:
            self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="skip", details=reason))
            self.out.say(f"  - {scenario.id} {reason}")
        return reason is not None

    async def _shutdown(self) -> None:
        kill_all_bots()
        if self.homeserver is not None:
            with contextlib.suppress(Exception):
                await self.homeserver.stop()
        if self.provider is not None:
            with contextlib.suppress(Exception):
                await self.provider.stop()

    def _lock_section(self) -> dict[str, Any] | None:
        from qa.agent.trace import read_trace

        records: list[dict[str, Any]] = []
        settings: dict[str, Any] | None = None
        for result in self.results:
            trace_path = self.dir / "scenarios" / result.id / "bot-trace.jsonl"
            trace = read_trace(trace_path)
            records.extend(trace)
            start = next((r for r in trace if r.get("type") == "start"), None)
            if start and settings is None:
                settings = start.get("lock")
        if not records:
            return None
        evidence = analyze_lock_evidence(records, self.probes).model_dump(mode="json", by_alias=True)
        settings = settings or {}
        evidence["scope"] = settings.get("scope")
        evidence["settings"] = {k: settings.get(k) for k in ("acquireTimeoutMs", "staleMs", "maxHoldMs")}
        evidence["sources"] = settings.get("sources", {})
        return evidence

    def _write(self) -> int:
        # Unplanned scenarios that never ran (an infra error stopped the run) are reported, not dropped.
        ran = {r.id for r in self.results}
        for scenario in self.plan:
            if scenario.id not in ran:
                self.results.append(ScenarioResult(id=scenario.id, title=scenario.title, status="skip",
                                                   details="not run: the run stopped early"))
        report_began = mono_ms()
        lock = self._lock_section()
        counts = count(self.results)
        if self.errors:
            status, code = "error", 2
        elif counts.failed or (lock and lock.get("verdict") == "fail"):
            status, code = "fail", 1
        else:
            status, code = "pass", 0
        boots = [r.botBootMs for r in self.results if r.botBootMs is not None]
        self.timings.botBootMs = round(statistics.median(boots), 1) if boots else None
        hs = self.homeserver
        summary = Summary(
            runId=self.run_id, status=status, exitCode=code, startedAt=self.started_at, finishedAt=utc_now_iso(),
            command=[self.out.redact(a) for a in self.options.argv],
            environment=Environment(
                homeserver=HomeserverInfo(kind=self.options.homeserver, version=getattr(hs, "version", None),
                                          serverName=getattr(hs, "server_name", None),
                                          baseUrl=_safe_base_url(hs),
                                          log=_rel(self.dir, getattr(hs, "log_path", None))),
                provider=ProviderInfo(mode="mock", model=getattr(self.provider, "model", "mock-model"),
                                      baseUrlHost=urlparse(getattr(self.provider, "base_url", "") or "").netloc
                                      or None),
                profile=self.options.profile, python=platform.python_version(),
                platform=f"{sys.platform}-{platform.machine()}", matrixQaVersion=_version(),
            ),
            counts=counts, timings=self.timings, scenarios=self.results, lock=lock, errors=self.errors,
        )
        self.timings.reportMs = round(mono_ms() - report_began, 1)
        self.timings.totalMs = round(mono_ms() - self.t0, 1)
        self._write_journal()
        files = write_reports(summary, self.dir, observed_events=self.observed,
                              include_bodies=self.options.include_bodies, secrets=self.secrets)
        self._print_table(summary, files)
        return code

    def _write_journal(self) -> None:
        """The provider journal is evidence too (what the model was asked, and when)."""
        if self.provider is not None:
            path = self.dir / "provider-journal.json"
            path.write_text(self.out.redact(json.dumps(self.provider.journal_as_json(), indent=1)), encoding="utf-8")

    def _print_table(self, summary: Summary, files: dict[str, str]) -> None:
        self.out.say("")
        for r in summary.scenarios:
            self.out.say(f"  {r.status.upper():5} {r.id:45} {r.durationMs / 1000:7.2f}s  {r.details[:80]}")
        c = summary.counts
        lock = summary.lock or {}
        self.out.say(f"{summary.status.upper()}: {c.passed} passed, {c.failed} failed, {c.skipped} skipped"
                     + (f"; lock evidence {lock.get('verdict')}" if lock else ""))
        for err in summary.errors:
            self.out.say(f"error ({err.component}): {err.message}")
        self.out.say(f"report: {self.dir / files.get('report', 'matrix-qa-report.md')}")
        self.out.say(f"artifacts: {self.dir}")


def _check_lock_env(env: dict[str, str]) -> None:
    """A bad MATRIX_QA_SESSION_WRITE_LOCK_* value is a usage error: say so before starting anything."""
    from qa.agent.lock_settings import LockConfigError, resolve_lock_settings

    try:
        resolve_lock_settings(None, env)
    except LockConfigError as exc:
        raise ConfigError(str(exc)) from None


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
    if isinstance(exc, InfraError) and hs is not None and hs.log_path and "synapse" in str(exc).lower():
        return str(hs.log_path)
    return None


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


def run_sync(options: RunOptions, output: Output | None = None) -> int:
    run = Run(options, output)
    try:
        return asyncio.run(run.execute())
    except KeyboardInterrupt:
        # asyncio.run cancelled the run; its finally-blocks stopped the processes. Belt and braces:
        kill_all_bots()
        from qa.homeserver.synapse import kill_all_children

        kill_all_children()
        run.out.say("interrupted")
        return 130


