"""`matrix-qa`: run | list | validate | schema | init | report | compare | doctor | completion.

Exit codes: 0 all passed; 1 a scenario or check failed; 2 usage, config or infrastructure error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from qa.cli_run import EPILOG, add_run_arguments, cmd_run
from qa.kernel.errors import QAError
from qa.kernel.terminal import safe_print

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its message one line
        self.print_usage(sys.stderr)
        safe_print(f"matrix-qa: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class _Version(argparse.Action):
    """--version, looked up only when asked: the package metadata costs every command ~20 ms otherwise."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="matrix-qa", description="End-to-end QA for Matrix chat bots.")
    parser.add_argument("--version", action=_Version, help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run scenarios against a disposable homeserver", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Run scenarios against a disposable homeserver and the bot under test.")
    add_run_arguments(run)

    lst = sub.add_parser("list", help="list scenarios (default: the built-in library) and which the profile runs")
    lst.add_argument("paths", nargs="*", type=Path, default=None)
    lst.add_argument("--profile", default=None,
                     help="mark the scenarios this profile leaves out (default: the config file's, else fast)")
    lst.add_argument("-k", "--keyword", dest="keyword", action="append", default=[], metavar="PATTERN",
                     help="as run -k: only the scenarios whose id or title matches count as run")
    lst.add_argument("--json", action="store_true", help="print the list as JSON")
    lst.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="as run --config: the file whose scenarios-dir, profile, keyword and scenario settings "
                     "apply (default: the first found from the current directory upward)")

    sch = sub.add_parser("schema", help="print the JSON Schema of a scenario, bot, rules or cassette file (for "
                         "editors: `# yaml-language-server: $schema=...`; also in docs/schema/)")
    sch.add_argument("kind", choices=["scenario", "bot", "rules", "cassette"])

    ini = sub.add_parser("init", help="write a bot file, a scenario, the config file and a GitHub workflow into "
                         "DIR (default: here), asking at a terminal what the flags leave open; overwrites nothing")
    ini.add_argument("dir", nargs="?", type=Path, default=Path("."), metavar="DIR")
    ini.add_argument("--name", default="my-bot", help="the bot's name in reports (default: my-bot)")
    ini.add_argument("--command", dest="bot_command", default=None, metavar="'CMD ...'",
                     help="the command that starts the bot")
    ini.add_argument("--ready-log", default=None, metavar="REGEX",
                     help="a regex the bot's output matches once it syncs (default: ready once it joined its rooms)")
    ini.add_argument("--capabilities", default="", metavar="A,B",
                     help="what the bot can do besides answering: threads, restart, trace, ... (docs/bot-file.md)")
    ini.add_argument("--say", default=None, metavar="'!echo {text}'",
                     help="a bot without a model: the message that makes it answer with exactly {text}")

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
                     help="merge these runs (artifact directories or summary files, e.g. every shard of a run; a "
                     "directory of run directories, such as the pytest plugin's per-xdist-worker DIR/gw*, merges "
                     "each) into one summary and report; exits with the merged run's exit code")
    rep.add_argument("--output-dir", type=Path, default=None,
                     help="where to write (default: beside SUMMARY; for --merge artifacts/qa-e2e/merged-<id>)")
    com = sub.add_parser("completion", help="print a shell completion script: eval \"$(matrix-qa completion bash)\" "
                         "(docs/cli.md)")
    com.add_argument("shell", choices=["bash", "zsh"])
    return parser


def _paths_or_library(paths: list[Path] | None) -> list[Path]:
    from qa.run import default_scenario_paths

    chosen = paths or default_scenario_paths()
    if not chosen:
        raise QAError("no scenario paths given and the built-in library was not found")
    return chosen


def _cmd_list(args: argparse.Namespace) -> int:
    """What `run` would run with the same config file: its scenario dirs, profile, -k and scenario ids, under
    list's own flags (PATH... replaces the library and the file's dirs)."""
    from qa.cli_run import list_settings
    from qa.harness.plan import picked
    from qa.scenario.loader import load_scenarios

    run_args, _config = list_settings(args)
    args.profile = args.profile or run_args.profile
    args.keyword = args.keyword or run_args.keyword
    paths = args.paths
    if not paths and run_args.scenarios_dir:
        own = list(run_args.scenarios_dir)
        paths = own if run_args.no_builtin_scenarios else [*_paths_or_library(None), *own]
    scenarios = load_scenarios(_paths_or_library(paths))
    runs = {s.id for s in picked(scenarios, args.profile, [] if args.paths else run_args.scenario, args.keyword)}
    if args.json:
        print(json.dumps({"profile": args.profile, "keywords": args.keyword, "scenarios": [
            {"id": s.id, "title": s.title, "profiles": list(s.profiles), "runs": s.id in runs,
             "file": str(s.source_path) if s.source_path else None} for s in scenarios]}, indent=2))
        return 0
    width = max((len(s.id) for s in scenarios), default=2)
    for s in scenarios:
        mark = " " if s.id in runs else "-"
        safe_print(f"{mark} {s.id:{width}}  {','.join(s.profiles) or '(every)':20}  {s.title}")
    left_out = len(scenarios) - len(runs)
    keys = "".join(f" -k {k!r}" for k in args.keyword)
    print(f"{len(scenarios)} scenario(s); --profile {args.profile}{keys} runs {len(runs)}, leaves out {left_out}"
          f"{' (marked -)' if left_out else ''}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("matrix-qa")
    except PackageNotFoundError:  # a checkout run without installing
        return "unknown (not installed)"


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


def _cmd_init(args: argparse.Namespace) -> int:
    import shlex

    from qa.init_project import Answers, init

    answers = Answers(name=args.name, command=shlex.split(args.bot_command) if args.bot_command else None,
                      ready_log=args.ready_log,
                      capabilities=[c for c in args.capabilities.replace(",", " ").split() if c], say=args.say)
    prompt = input if sys.stdin.isatty() and sys.stdout.isatty() else None
    return init(args.dir, answers, prompt, print)


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
    for path in _summaries(args.merge, SUMMARY_FILE):
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


def _summaries(given: list[Path], name: str) -> list[Path]:
    """The summary files to merge: a file as given, a run's directory's summary, or, for a directory without one
    whose subdirectories have one (the pytest plugin's DIR/gw0, DIR/gw1, ... under xdist), each of theirs."""
    found = []
    for path in given:
        if path.is_dir() and not (path / name).exists():
            found.extend(sorted(path.glob(f"*/{name}")) or [path / name])  # none: load_summary names it
        else:
            found.append(path / name if path.is_dir() else path)
    return found


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
            return cmd_run(args, argv)
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "init":
            return _cmd_init(args)
        if args.command == "completion":
            from qa.completion import script

            sys.stdout.write(script(args.shell, build_parser()))
            return 0
        if args.command == "schema":
            from qa.scenario.json_schema import schema_text

            sys.stdout.write(schema_text(args.kind))
            return 0
        return _cmd_report(args, argv)
    except QAError as exc:
        # One prefixed line per problem, so each line of the output stands alone in a CI log.
        for line in str(exc).splitlines() or [type(exc).__name__]:
            safe_print(f"matrix-qa: {line}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
