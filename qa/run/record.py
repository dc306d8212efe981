"""Chapter 5 of a run (qa.run): the record. Whatever happened, the run's summary JSON, its reports, the lock
verdict (decided in qa.report.lock_evidence), the provider journal, the CI job summary and the printed table
are written from what was learned, and a last sweep redacts every file the run left."""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import statistics
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.harness.capabilities import MEANING
from qa.harness.output import Output
from qa.homeserver import registry
from qa.homeserver.base import Homeserver
from qa.kernel.clock import mono_ms, utc_now_iso
from qa.kernel.errors import ConfigError, InfraError, QAError
from qa.kernel.event_loop import running_loop_name
from qa.report.lock_evidence import lock_section, probes_not_checked
from qa.report.lock_picture import write_lock_pictures
from qa.report.lock_timeline import tag_scenarios
from qa.report.repeats import attempt_id, combine_attempts
from qa.report.summary import (
    BotInfo,
    Environment,
    HomeserverInfo,
    HomeserverRun,
    RunError,
    ScenarioResult,
    ShardInfo,
    Summary,
    count,
    latency_stats,
)
from qa.report.verdict import NOTHING_RAN, nothing_ran, run_verdict
from qa.report.writer import write_reports
from qa.run.homeservers import boot_times, failed_boot
from qa.run.provider import journal_intervals, provider_info, write_journal
from qa.shared.redact import redact_data

if TYPE_CHECKING:
    from qa.run import Run


def write_record(run: Run) -> int:
    """Writes everything and returns the run's exit code."""
    scheduler, options = run.scheduler, run.options
    scheduler.settle(run.plan)
    order = {s.id: i for i, s in enumerate(run.plan)}
    report_began = mono_ms()
    lock = _lock(run)
    write_lock_pictures(lock, run.dir, scheduler.results, scheduler.ran_as)  # issue 18: lock-timeline.svg
    for message in dict.fromkeys(scheduler.infra_errors):
        hs = _homeserver(run, scheduler.infra_on.get(message, 0))  # the one that gave it: its log explains it
        run.errors.append(RunError(component="homeserver", message=run.out.redact(message),
                                   log=_rel(run.dir, getattr(hs, "log_path", None))))
    for message in dict.fromkeys(scheduler.config_errors):
        run.errors.append(RunError(component="config", message=run.out.redact(message)))
    records = _records(run)
    deadline = run.lifecycle.deadline
    if deadline is not None and deadline.reached:
        deadline.finished = [r.id for r in records if r.status in ("pass", "fail")]
        deadline.unfinished = [r.id for r in records if r.status not in ("pass", "fail")]
        run.errors.append(RunError(component="deadline", message=(
            f"{run.lifecycle.reason}: every process was stopped; {len(deadline.finished)} scenario(s) "
            f"finished, {len(deadline.unfinished)} did not ({', '.join(deadline.unfinished) or '-'})")))
    if not run.errors and run.lifecycle.code is None and nothing_ran(r.status for r in records):
        run.errors.append(RunError(component="plan", message=f"{NOTHING_RAN} (see each scenario's reason)"))
    status, code = run_verdict([r.status for r in records], errors=bool(run.errors), lock=lock,
                               interrupted_code=run.lifecycle.code)
    boots = [r.botBootMs for r in scheduler.results if r.botBootMs is not None]
    run.timings.botBootMs = round(statistics.median(boots), 1) if boots else None
    summary = Summary(
        runId=run.run_id, status=status, exitCode=code, startedAt=run.started_at, finishedAt=utc_now_iso(),
        command=[run.out.redact(a) for a in options.argv], environment=_environment(run),
        counts=count(records), timings=run.timings, scenarios=records, lock=lock, errors=run.errors,
        latency=latency_stats(ms for r in records for ms in r.replyLatenciesMs), jobs=run.jobs,
        shard=ShardInfo(index=options.shard.index, count=options.shard.count) if options.shard else None,
        repeat=options.repeat if options.repeat > 1 else None,
        minPassRate=options.min_pass_rate if options.repeat > 1 else None, deadline=deadline,
        homeservers=_homeservers(run, scheduler.results),
        homeserversAsked="auto" if options.homeservers is None else options.homeservers,
    )
    run.timings.reportMs = round(mono_ms() - report_began, 1)
    run.timings.totalMs = round(mono_ms() - run.t0, 1)
    write_journal(run.provider, run.dir, run.out)
    files = write_reports(summary, run.dir, observed_events=run.observed.events(order), sanitized=True,
                          secrets=run.secrets)
    _redact_artifacts(run.dir, run.secrets)
    _print_table(run.out, run.dir, summary, files)
    _write_step_summary(run.out, run.dir, files)
    return code


def run_error(exc: Exception, hs: Homeserver | None, out: Output, run_dir: Path) -> RunError:
    """What stopped the run, said in one line and kept for the record."""
    if isinstance(exc, QAError):
        error = RunError(component=_component(exc), message=out.redact(str(exc)), log=_log_of(hs, exc))
    else:  # a bug of ours or a library's: the run must still end with an honest record
        logging.getLogger("matrix_qa").error("unexpected error", exc_info=exc)
        message = f"unexpected {type(exc).__name__}: {exc} (traceback in harness.log)"
        error = RunError(component="harness", message=out.redact(message), log=str(run_dir / "harness.log"))
    out.say(f"error: {error.message}")
    return error


def _lock(run: Run) -> dict[str, Any] | None:
    """The inputs of the lock verdict, by scenario: the bot's trace and the provider journal's requests."""
    from qa.kernel.trace import read_trace

    ran_as = run.scheduler.ran_as
    ran = [r.id for r in run.scheduler.results if r.status != "skip"]
    traces = {sid: read_trace(run.dir / "scenarios" / ran_as.get(sid, sid) / "bot-trace.jsonl") for sid in ran}
    journals = {sid: journal_intervals(run.provider, run.live, ran_as.get(sid, sid)) for sid in traces}
    section = lock_section(traces, journals, run.probes)
    if section is not None:
        tag_scenarios(section, traces)  # issue 18: the picture is drawn per scenario
    return section


def _records(run: Run) -> list[ScenarioResult]:
    """One record per planned scenario: with --repeat, its attempts combined into a pass rate."""
    options, results, ran_as = run.options, run.scheduler.results, run.scheduler.ran_as
    if options.repeat == 1:
        return results
    by_id = {r.id: r for r in results}
    return [combine_attempts(s.id, s.title, [by_id[a] for a in ids], [ran_as.get(a, a) for a in ids],
                             options.min_pass_rate)
            for s in run.base_plan if (ids := [attempt_id(s.id, k) for k in range(1, options.repeat + 1)])]


def _homeserver(run: Run, index: int) -> Homeserver | None:
    homeservers = getattr(run, "homeservers", None) or [run.homeserver]
    return homeservers[index] if index < len(homeservers) else run.homeserver


def _homeservers(run: Run, records: list[ScenarioResult]) -> list[HomeserverRun] | None:
    """Every homeserver the run made (qa.run.homeservers), booted or not, and how many scenario runs (attempts,
    under --repeat) each served."""
    homeservers: list[Homeserver] = getattr(run, "homeservers", None) or []
    if not homeservers:
        return None
    served = Counter(r.homeserver for r in records if r.homeserver is not None)
    boots = boot_times(run.timings.homeserverBootMs, getattr(run, "homeserver_boots", []))
    failed = [None, *(failed_boot([t]) for t in getattr(run, "homeserver_boots", []))]
    return [HomeserverRun(index=i + 1, baseUrl=_safe_base_url(hs), log=_rel(run.dir, hs.log_path),
                          bootMs=round(boots[i], 1) if i < len(boots) and boots[i] is not None else None,
                          scenarios=served[i + 1],
                          notBooted=run.out.redact(str(failed[i])) if i < len(failed) and failed[i] else None)
            for i, hs in enumerate(homeservers)]


def _environment(run: Run) -> Environment:
    hs, bot = run.homeserver, run.bot_file
    return Environment(
        homeserver=HomeserverInfo(kind=getattr(hs, "kind", None) or run.options.homeserver,
                                  version=getattr(hs, "version", None),
                                  serverName=getattr(hs, "server_name", None) or None, baseUrl=_safe_base_url(hs),
                                  log=_rel(run.dir, getattr(hs, "log_path", None)), image=getattr(hs, "image", None),
                                  imageId=getattr(hs, "image_id", None),
                                  registration=getattr(hs, "registered_by", None)),
        provider=provider_info(run.provider, run.live),
        bot=BotInfo(name=bot.name, source=bot.source, ready=bot.ready.describe(), capabilities=list(bot.capabilities),
                    capabilityMeanings=dict(MEANING),
                    started="fork-server" if run.fork_server is not None else "exec") if bot else None,
        peerBot=BotInfo(name=peer.name, source=peer.source, ready=peer.ready.describe(),
                        capabilities=list(peer.capabilities)) if (peer := getattr(run, "peer_bot", None)) else None,
        profile=run.options.profile, python=platform.python_version(),
        platform=f"{sys.platform}-{platform.machine()}", matrixQaVersion=_version(), eventLoop=_loop_name(),
        configFile=str(run.options.config_file) if run.options.config_file else None,
        configSettings=redact_data(run.options.config_settings, run.secrets),
    )


def _loop_name() -> str | None:
    """The loop the record is written on: the run's own (None only for a record written off any loop)."""
    try:
        return running_loop_name()
    except RuntimeError:
        return None


def _redact_artifacts(run_dir: Path, secrets: list[str]) -> None:
    """A last sweep over every file the run left (homeserver logs, anything copied): what was written
    without going through redaction on its way is redacted here."""
    from qa.shared.redact import redact_file

    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                redact_file(path, secrets)


def _not_checked(lock: Mapping[str, Any]) -> str:
    count = probes_not_checked(lock.get("probes") or [])
    return f" ({count} contention probe{'s' if count != 1 else ''} NOT CHECKED)" if count else ""


def _print_table(out: Output, run_dir: Path, summary: Summary, files: dict[str, str]) -> None:
    out.say("")
    for r in summary.scenarios:
        out.say(f"  {r.status.upper():5} {r.id:45} {r.durationMs / 1000:7.2f}s  {r.details[:80]}")
    c = summary.counts
    lock = summary.lock or {}
    interrupted = f", {c.interrupted} interrupted" if c.interrupted else ""
    interrupted += f", {c.flaky} flaky" if c.flaky else ""
    out.say(f"{summary.status.upper()}: {c.passed} passed, {c.failed} failed, {c.skipped} skipped{interrupted}"
            + (f"; lock evidence {lock.get('verdict')}{_not_checked(lock)}" if lock else ""))
    if summary.latency is not None:
        out.say(f"reply latency over {summary.latency.count} replies: p50 {summary.latency.p50Ms:.0f} ms, "
                f"p95 {summary.latency.p95Ms:.0f} ms")
    for err in summary.errors:
        out.say(f"error ({err.component}): {err.message}")
    out.say(f"report: {run_dir / files.get('report', 'matrix-qa-report.md')}")
    if "html" in files:
        out.say(f"html report: {run_dir / files['html']}")
    out.say(f"artifacts: {run_dir}")


def _write_step_summary(out: Output, run_dir: Path, files: dict[str, str]) -> None:
    """Under GitHub Actions ($GITHUB_STEP_SUMMARY set) the report also becomes the job summary, trimmed to
    GitHub's size limit, with a pointer to the full artifacts."""
    if not os.environ.get("GITHUB_STEP_SUMMARY"):
        return
    from qa.report.ci_summary import write_github_step_summary

    hint = artifact_hint(os.environ)
    try:
        markdown = (run_dir / files.get("report", "matrix-qa-report.md")).read_text(encoding="utf-8")
        # The footer is the last section, so a trimmed summary loses it; the trimming note carries the hint.
        markdown = markdown.rstrip("\n") + f"\n\n---\n\nFull report, logs and traces: {hint}.\n"
        if write_github_step_summary(markdown, artifact_hint=hint) is not None:
            out.say("job summary: written to $GITHUB_STEP_SUMMARY")
    except OSError as exc:
        out.say(f"warning: could not write the GitHub job summary: {exc}")


def artifact_hint(env: Mapping[str, str]) -> str:
    """Where the full report is, for the job summary: the workflow run's artifacts when Actions says which."""
    name = env.get("MATRIX_QA_ARTIFACT_NAME")
    where = f"the `{name}` artifact" if name else "the run's artifacts"
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        url = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return f"`matrix-qa-report.md` in {where} of [this workflow run]({url}#artifacts)"
    return f"`matrix-qa-report.md` in {where}"


def _component(exc: QAError) -> str:
    text = str(exc).lower()
    if "homeserver" in text or registry.names_in(text):
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


def _version() -> str:
    try:
        return importlib.metadata.version("matrix-qa")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
