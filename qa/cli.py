"""`matrix-qa`: run | list | validate | report | compare | doctor.

Exit codes: 0 all passed; 1 a scenario or check failed; 2 usage, config or infrastructure error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qa.errors import QAError
from qa.homeserver import registry
from qa.kernel.terminal import safe_print

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its message one line
        self.print_usage(sys.stderr)
        safe_print(f"matrix-qa: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise QAError(f"--bot-set expects KEY=VALUE (e.g. session.writeLock.scope=attempt), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="matrix-qa", description="End-to-end QA for Matrix chat bots.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run scenarios against a disposable homeserver")
    run.add_argument("--profile", default="fast", help="scenario profile (default: fast; 'all' runs everything)")
    run.add_argument("--scenario", action="append", default=[], metavar="ID",
                     help="run only this scenario (repeatable)")
    run.add_argument("--scenarios-dir", action="append", type=Path, default=None, metavar="PATH",
                     help="your own scenario files or directories, added to the built-in library (repeatable)")
    run.add_argument("--no-builtin-scenarios", action="store_true",
                     help="run only the scenarios of --scenarios-dir, not the built-in library")
    run.add_argument("--bot", type=Path, default=None, metavar="BOT.yaml",
                     help="the bot under test, described by a bot file (default: the embedded agent, "
                     "qa/agent/bot.yaml); see README 'Test your own bot'")
    run.add_argument("--bot-command", default=None, metavar="'CMD ...'",
                     help="shortcut for a bot file with only this command: the bot gets the launch contract in "
                     "its environment and is ready once it has joined its rooms")
    registry.add_arguments(run)  # --homeserver, --homeserver-port and every backend's own options
    run.add_argument("--provider", default="mock", choices=["mock", "live", "replay"],
                     help="model provider: mock (the default; deterministic), live (any OpenAI-compatible "
                     "endpoint; key from env OPENAI_API_KEY or MATRIX_QA_LIVE_OPENAI_KEY) or replay (--cassettes)")
    run.add_argument("--model", default=None, help="model id for --provider live, e.g. gpt-5.4")
    run.add_argument("--base-url", default=None, metavar="URL",
                     help="OpenAI-compatible API root for --provider live (default: https://api.openai.com/v1)")
    run.add_argument("--api", default=None, choices=["chat", "responses", "anthropic"],
                     help="model API of the --provider live endpoint: chat (default; OpenAI Chat Completions, any "
                     "OpenAI-compatible server), responses (OpenAI Responses) or anthropic (Anthropic Messages; key "
                     "from env ANTHROPIC_API_KEY or MATRIX_QA_LIVE_ANTHROPIC_KEY, default https://api.anthropic.com/v1)")
    run.add_argument("--model-timeout", type=float, default=None, metavar="SECONDS",
                     help="request timeout for --provider live (default: 60)")
    run.add_argument("--model-retries", type=int, default=None, metavar="N",
                     help="retries on 408/409/429/5xx and connection errors for --provider live (default: 2)")
    run.add_argument("--record", type=Path, default=None, metavar="DIR",
                     help="with --provider live: write every model exchange to DIR/<scenario>.yaml, for replay")
    run.add_argument("--cassettes", type=Path, default=None, metavar="DIR",
                     help="with --provider replay: the recorded cassettes to answer from (e.g. fixtures/cassettes)")
    run.add_argument("--replay-speed", default=None, metavar="PACE",
                     help="with --provider replay: recorded (the default), fast (no waiting) or a factor (2: twice "
                     "as fast)")
    run.add_argument("--provider-rules", action="append", type=Path, default=[], metavar="FILE",
                     help="extra mock-provider rule file, matched before the built-in rules (repeatable)")
    run.add_argument("--output-dir", type=Path, default=None,
                     help="artifact directory (default: artifacts/qa-e2e/<run-id>)")
    run.add_argument("--fail-fast", action="store_true",
                     help="start no new scenario after the first failure (running ones finish)")
    run.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                     help=f"scenarios side by side on the one homeserver (default: the core count, here "
                     f"{os.cpu_count() or 1}); the canary runs first and alone; --jobs 1 runs one at a time")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="run only slice I of N of the plan (the canary runs in every shard); merge the shards' "
                     "summaries with `matrix-qa report --merge`")
    run.add_argument("--shard-durations", type=Path, default=None, metavar="SUMMARY.json",
                     help="balance --shard by the scenario durations recorded in this earlier summary "
                     "(default: by count)")
    run.add_argument("--repeat", type=_positive_int, default=1, metavar="N",
                     help="run each scenario N times (fresh users and rooms each time) and report its pass rate; "
                     "flaky scenarios (some but not all attempts passed) are flagged")
    run.add_argument("--min-pass-rate", type=_pass_rate, default=None, metavar="R",
                     help="with --repeat: a scenario passes when at least this share of its attempts did "
                     "(0.8 or 80%%; default 1: every attempt)")
    run.add_argument("--rerun-failed", type=Path, default=None, metavar="SUMMARY.json",
                     help="run only the scenarios that failed, were interrupted or never ran in that earlier run")
    run.add_argument("--timeout", default=None, metavar="DURATION",
                     help="deadline for the whole run (e.g. 20m, 90s): past it every process is stopped and the "
                     "report says what finished and what did not (exit 2)")
    run.add_argument("--no-fork-server", action="store_true",
                     help="start each embedded-agent bot as a fresh interpreter instead of forking it from one "
                          "pre-imported process (slower; to compare or rule it out)")
    run.add_argument("--include-bodies", action="store_true", help="keep message bodies in the observed-events file")
    run.add_argument("--progress", default="auto", choices=["auto", "live", "plain"],
                     help="auto (default): a live status of running scenarios at a terminal, plain lines under CI "
                          "or when piped; live/plain: always that")
    run.add_argument("--bot-set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key of the bot's config for every scenario, "
                     "e.g. session.writeLock.scope=attempt")

    lst = sub.add_parser("list", help="list scenarios (default: the built-in library)")
    lst.add_argument("paths", nargs="*", type=Path, default=None)

    val = sub.add_parser("validate", help="check scenario files (default: the built-in library); reports every "
                         "error with file:line")
    val.add_argument("paths", nargs="*", type=Path, default=None)
    val.add_argument("--bot", type=Path, default=None, metavar="BOT.yaml", help="check a bot file too")

    sub.add_parser("doctor", help="list every session lock under a run's artifacts or a state dir, judge it "
                   "(owner alive, age, over maxHoldMs); --fix removes dead owners' locks", add_help=False)

    sub.add_parser("compare", help="what changed between two runs (BASE HEAD summaries or run dirs): verdicts, new "
                   "and vanished scenarios, timings beyond noise; exit 1 on a regression", add_help=False)

    rep = sub.add_parser("report", help="render the markdown/JUnit reports again from a summary JSON, or merge "
                         "several (shards) into one")
    rep.add_argument("summary", type=Path, nargs="?", help="a matrix-qa-summary.json to render again")
    rep.add_argument("--merge", nargs="+", type=Path, default=None, metavar="DIR",
                     help="merge these runs (artifact directories or summary files, e.g. every shard of a run) "
                     "into one summary and report; exits with the merged run's exit code")
    rep.add_argument("--output-dir", type=Path, default=None,
                     help="where to write (default: beside SUMMARY; for --merge artifacts/qa-e2e/merged-<id>)")
    return parser


def _positive_int(text: str) -> int:
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


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from qa.harness.plan import parse_shard
    from qa.run import RunOptions, run_sync

    if args.shard_durations is not None and args.shard is None:
        raise QAError("--shard-durations only balances a --shard I/N run")
    from qa.run import default_scenario_paths

    if args.min_pass_rate is not None and args.repeat == 1:
        raise QAError("--min-pass-rate needs --repeat N (N > 1): one attempt passes or fails, it has no rate")
    if args.rerun_failed is not None:
        args.scenario = _rerun_ids(args.rerun_failed, args.scenario)
    own = list(args.scenarios_dir or [])
    if args.no_builtin_scenarios and not own:
        raise QAError("--no-builtin-scenarios needs --scenarios-dir PATH (otherwise there is nothing to run)")
    settings = registry.settings_from(args)  # every backend's own options, by dest
    options = RunOptions(
        profile=args.profile, scenario_ids=args.scenario,
        scenario_paths=own if args.no_builtin_scenarios else [*default_scenario_paths(), *own],
        bot_file=args.bot, bot_command=args.bot_command,
        homeserver=registry.choose(args.homeserver, settings), homeserver_port=args.homeserver_port,
        homeserver_settings=settings, model=args.model, base_url=args.base_url, api=args.api,
        model_timeout_s=args.model_timeout, model_retries=args.model_retries,
        provider=args.provider, provider_rules=args.provider_rules, output_dir=args.output_dir,
        record_dir=args.record, cassettes_dir=args.cassettes, replay_speed=args.replay_speed,
        fail_fast=args.fail_fast, include_bodies=args.include_bodies, jobs=args.jobs,
        fork_server=not args.no_fork_server,
        shard=parse_shard(args.shard) if args.shard is not None else None,
        shard_durations=_shard_durations(args.shard_durations),
        bot_overrides=dict(_parse_override(o) for o in args.bot_set), argv=["matrix-qa", *argv],
        repeat=args.repeat, min_pass_rate=args.min_pass_rate or 1.0, timeout=args.timeout, progress=args.progress,
    )
    return run_sync(options)


def _paths_or_library(paths: list[Path] | None) -> list[Path]:
    from qa.run import default_scenario_paths

    chosen = paths or default_scenario_paths()
    if not chosen:
        raise QAError("no scenario paths given and the built-in library was not found")
    return chosen


def _cmd_list(args: argparse.Namespace) -> int:
    from qa.scenario.loader import load_scenarios

    scenarios = load_scenarios(_paths_or_library(args.paths))
    width = max((len(s.id) for s in scenarios), default=2)
    for s in scenarios:
        safe_print(f"{s.id:{width}}  {','.join(s.profiles):20}  {s.title}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from qa.scenario.loader import validate_paths

    errors: list[object] = list(validate_paths(_paths_or_library(args.paths)))
    if args.bot is not None:
        from qa.harness.botfile import load_bot_file
        from qa.scenario.loader import load_scenarios
        from qa.scenario.template_check import check_bot_template

        try:
            bot = load_bot_file(args.bot)
            # Its template, rendered for each scenario that loads (a broken one is reported above already).
            good = [] if errors else load_scenarios(_paths_or_library(args.paths))
            errors.extend(check_bot_template(bot, good))
        except QAError as exc:
            errors.append(exc)
    for error in errors:
        safe_print(str(error), file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return EXIT_USAGE
    print("ok: scenarios are valid")
    return 0


def _cmd_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from qa.report.writer import load_summary, write_reports

    if args.merge is not None:
        if args.summary is not None:
            raise QAError("give either SUMMARY.json or --merge DIR..., not both")
        return _cmd_merge(args, argv)
    if args.summary is None:
        raise QAError("report needs SUMMARY.json (or --merge DIR...)")
    summary = load_summary(args.summary)
    out = args.output_dir or args.summary.parent
    files = write_reports(summary, out)
    for name, path in files.items():
        safe_print(f"{name}: {out / path}")
    return 0


def _cmd_merge(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from qa.report.merge import MergeInput, artifact_prefix, merge_summaries, merged_run_id
    from qa.report.writer import SUMMARY_FILE, load_summary, write_reports

    run_id = merged_run_id()
    out = args.output_dir or Path("artifacts") / "qa-e2e" / run_id
    parts = []
    for given in args.merge:
        path = given / SUMMARY_FILE if given.is_dir() else given
        parts.append(MergeInput(load_summary(path), source=str(path),
                                artifact_prefix=artifact_prefix(path.parent, out)))
    merged = merge_summaries(parts, run_id=run_id, command=["matrix-qa", *argv])
    files = write_reports(merged, out)
    for name, path in files.items():
        safe_print(f"{name}: {out / path}")
    c = merged.counts
    safe_print(f"{merged.status.upper()}: {c.passed} passed, {c.failed} failed, {c.skipped} skipped "
          f"(merged from {len(parts)})")
    return merged.exitCode


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["doctor"]:
        # The session-lock doctor has its own command line (qa.kernel.doctor), shared with `python -m qa.agent`.
        from qa.kernel.doctor import doctor_main
        return doctor_main(argv[1:], "matrix-qa doctor", positional=True)
    if argv[:1] == ["compare"]:
        from qa.report.compare import main as compare_main
        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args, argv)
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "validate":
            return _cmd_validate(args)
        return _cmd_report(args, argv)
    except QAError as exc:
        # One prefixed line per problem, so each line of the output stands alone in a CI log.
        for line in str(exc).splitlines() or [type(exc).__name__]:
            safe_print(f"matrix-qa: {line}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
