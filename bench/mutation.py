"""Mutation score of one pure module against the unit tests written for it.

    python bench/mutation.py qa/report/lock_evidence.py [--show-survivors] [--tests FILE|DIR ...] [--stall-s S]

Runs mutmut (the dev extra pins it) in a scratch copy of the working tree, so the tree you are editing is
never mutated, not even when the run is interrupted; uncommitted changes are measured too. Prints
killed/total and, with --show-survivors, the diff of every surviving mutant; tests/unit/MUTATION.md lists
the survivors that are equivalent and why. Too slow for .ci/run; cheap enough before a pure module changes.
Exit 0 when the score is measured, 2 on bad input or when mutmut cannot run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Only the test files that exercise a module run against its mutants: the whole suite would be slower and
# would credit a module with kills from tests that only pass through it.
MODULE_TESTS: dict[str, list[str]] = {
    "qa/report/lock_evidence.py": ["tests/unit/test_lock_evidence.py", "tests/unit/test_lock_evidence_foreign.py",
                                   "tests/unit/test_lock_life_evidence.py", "tests/unit/test_lock_section.py",
                                   "tests/unit/test_lock_evidence_edges.py",
                                   "tests/unit/test_lock_evidence_streaming.py"],
    "qa/agent/compaction.py": ["tests/unit/test_compaction.py"],
    "qa/pytest_plugin/failure.py": ["tests/unit/test_pytest_failure.py"],
    "qa/completion.py": ["tests/unit/test_completion.py"],
    "qa/kernel/doctor.py": ["tests/unit/test_doctor.py"],
    "qa/kernel/trace.py": ["tests/unit/test_kernel_trace.py"],
    "qa/agent/event_loop.py": ["tests/unit/test_agent_event_loop.py"],
    "qa/kernel/event_loop.py": ["tests/unit/test_agent_event_loop.py", "tests/unit/test_harness_event_loop.py"],
    "qa/harness/pipe_reader.py": ["tests/unit/test_pipe_reader.py"],
    "qa/agent/boot.py": ["tests/unit/test_agent_boot.py"],
    "qa/shared/imports.py": ["tests/unit/test_imports_without_gc.py"],
    "qa/kernel/lockfile.py": ["tests/unit/test_kernel_lockfile.py", "tests/unit/test_doctor.py"],
    "qa/agent/prompt_gate.py": ["tests/unit/test_startup_cleanup.py"],
    "qa/agent/policy.py": ["tests/unit/test_policy.py", "tests/unit/test_message_semantics.py",
                           "tests/unit/test_send_options.py", "tests/unit/test_reply_delay.py",
                           "tests/unit/test_bot_loop_guard.py"],
    "qa/agent/thread_history.py": ["tests/unit/test_thread_history.py"],
    "qa/agent/membership.py": ["tests/unit/test_membership.py"],
    "qa/agent/formatting.py": ["tests/unit/test_message_semantics.py"],
    "qa/evidence/replies.py": ["tests/unit/test_evidence_replies.py", "tests/unit/test_reply_shape.py",
                               "tests/unit/test_message_semantics.py", "tests/unit/test_reply_delay.py"],
    "qa/evidence/edits.py": ["tests/unit/test_edit_chain.py"],
    "qa/evidence/exchange.py": ["tests/unit/test_exchange.py"],
    "qa/harness/peer.py": ["tests/unit/test_peer_bot.py"],
    "qa/evidence/model_requests.py": ["tests/unit/test_evidence_model_requests.py", "tests/unit/test_reply_shape.py"],
    "qa/evidence/approvals.py": ["tests/unit/test_evidence_approvals.py", "tests/unit/test_exec_effects.py"],
    "qa/evidence/faults.py": ["tests/unit/test_evidence_faults.py"],
    "qa/evidence/events.py": ["tests/unit/test_evidence_turns.py", "tests/unit/test_accounts.py",
                              "tests/unit/test_evidence_strangers.py"],
    "qa/evidence/membership.py": ["tests/unit/test_evidence_turns.py"],
    "qa/evidence/trace.py": ["tests/unit/test_evidence_turns.py", "tests/unit/test_traced_sends.py"],
    "qa/evidence/silence.py": ["tests/unit/test_evidence_turns.py", "tests/unit/test_silence_by_order.py",
                               "tests/unit/test_untraced_silence.py"],
    "qa/evidence/fence.py": ["tests/unit/test_after_exit.py"],
    "qa/scenario/settings.py": ["tests/unit/test_settings.py", "tests/unit/test_bot_block.py",
                                "tests/unit/test_rooms_settings.py"],
    "qa/agent/approvals.py": ["tests/unit/test_approvals.py"],
    "qa/harness/plan.py": ["tests/unit/test_plan.py", "tests/unit/test_start_order.py"],
    "qa/harness/jobs.py": ["tests/unit/test_start_order.py", "tests/unit/test_homeservers.py"],
    "qa/harness/keywords.py": ["tests/unit/test_keywords.py", "tests/unit/test_plan.py"],
    "qa/report/annotations.py": ["tests/unit/test_action.py"],
    "qa/shared/redact.py": ["tests/unit/test_redact.py", "tests/unit/test_secrets_input.py"],
    "qa/scenario/heads.py": ["tests/unit/test_scenario_heads.py"],
    "qa/scenario/foreseen.py": ["tests/unit/test_scenario_foreseen.py"],
    "qa/homeserver/schema_checks.py": ["tests/unit/test_schema_checks.py"],
    "qa/kernel/lock_settings.py": ["tests/unit/test_lock_settings.py"],
    "qa/shared/markers.py": ["tests/unit/test_markers.py"],
    "qa/safe_yaml.py": ["tests/unit/test_safe_yaml.py"],
    "qa/evidence/pairing.py": ["tests/unit/test_pairing.py", "tests/unit/test_accounts.py"],
    "qa/evidence/order.py": ["tests/unit/test_pairing.py"],
    "qa/harness/capabilities.py": ["tests/unit/test_capabilities.py", "tests/unit/test_accounts.py",
                                   "tests/unit/test_say.py"],
    "qa/report/verdict.py": ["tests/unit/test_verdict.py"],
    "qa/report/repeats.py": ["tests/unit/test_pass_rate.py"],
    "qa/kernel/terminal.py": ["tests/unit/test_terminal.py"],
    "qa/patterns.py": ["tests/unit/test_patterns.py"],
    # The zygote's helpers (cpu_ticks, wait_popen, wait_child, readable, the pdeathsig wrapper as its own process)
    # are exercised by the early Synapse's unit tests: stand-in processes, no homeserver (~25 s more per mutant).
    "qa/processes.py": ["tests/unit/test_processes.py", "tests/unit/test_early_synapse.py",
                        "tests/unit/test_synapse_zygote.py"],
    "qa/harness/botfile.py": ["tests/unit/test_botfile.py", "tests/unit/test_accounts.py", "tests/unit/test_say.py"],
    "qa/harness/launch.py": ["tests/unit/test_launch.py"],
    "qa/shared/appservice.py": ["tests/unit/test_appservice.py"],
    "qa/kernel/dotted.py": ["tests/unit/test_launch.py", "tests/unit/test_agent_overrides.py"],
    "qa/harness/fault_rules.py": ["tests/unit/test_fault_rules.py", "tests/unit/test_to_device_hold.py",
                                  "tests/unit/test_push_faults.py"],
    "qa/harness/push_faults.py": ["tests/unit/test_push_faults.py"],
    "qa/harness/to_device_hold.py": ["tests/unit/test_to_device_hold.py"],
    "qa/shared/olm.py": ["tests/unit/test_to_device_hold.py"],
    "qa/provider/placeholders.py": ["tests/unit/test_placeholders.py", "tests/unit/test_placeholders_edges.py"],
    "qa/provider/matching.py": ["tests/unit/test_matching.py"],
    "qa/provider/cassette.py": ["tests/unit/test_cassette.py"],
    # base.py is what the three APIs share: each API's tests exercise it.
    "qa/provider/apis/base.py": ["tests/unit/test_api_chat.py", "tests/unit/test_api_responses.py",
                                 "tests/unit/test_api_anthropic.py", "tests/unit/test_api_streams.py"],
    "qa/provider/apis/chat.py": ["tests/unit/test_api_chat.py"],
    "qa/provider/apis/responses.py": ["tests/unit/test_api_responses.py", "tests/unit/test_api_streams.py"],
    "qa/provider/apis/anthropic.py": ["tests/unit/test_api_anthropic.py", "tests/unit/test_api_streams.py"],
    "qa/provider/journal.py": ["tests/unit/test_journal.py"],
    "qa/report/replay_failure.py": ["tests/unit/test_replay_failure.py"],
    "qa/report/lock_timeline.py": ["tests/unit/test_lock_timeline.py", "tests/unit/test_lock_timeline_edges.py",
                                   "tests/unit/test_lock_waits.py"],
    "qa/report/text.py": ["tests/unit/test_report_text.py"],
    "qa/report/headline.py": ["tests/unit/test_report_headline.py"],
    "qa/report/compare.py": ["tests/unit/test_report_compare.py"],
    "qa/report/lock_view.py": ["tests/unit/test_report_views.py", "tests/unit/test_lock_life_evidence.py"],
    "qa/report/failure_view.py": ["tests/unit/test_report_views.py"],
    "qa/homeserver/image_options.py": ["tests/unit/test_homeserver_image_options.py"],
}

# A single mutant's tests are killed by mutmut after 10x the baseline; no new result for this long is a hang.
# On a quiet machine. The limit grows with the load per core (a run at load 20 on 2 cores is ten times slower,
# and 90 s then ended healthy runs as stalled), and --stall-s sets the base.
STALL_S = 90
POLL_S = 5
RESUMES = 3

# mutmut 2 status names, in the order they are reported. A mutant that times out or makes the tests slow
# was still detected; a skipped one was never run.
DETECTED = ("killed", "timeout", "suspicious")
STATUSES = (*DETECTED, "survived", "skipped")


def run_tests(test_files: list[str]) -> int:
    """The runner mutmut calls for each mutant. mutmut 2 counts only exit code 1 as a kill, so a mutant that
    breaks collection (pytest exit 2) would pass for a survivor: every failure becomes 1 here."""
    import pytest

    # -n 0: one process per mutant (pyproject's addopts spread the suite over xdist workers: here only overhead).
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-n", "0", *test_files])
    return 0 if code == 0 else 1


def _tracked_and_new_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (an unpacked archive): the sources are all there is.
        skip = {".git", "__pycache__", ".venv", "artifacts", ".pytest_cache", ".ruff_cache", ".mutmut-cache"}
        return [p.relative_to(REPO).as_posix() for p in REPO.rglob("*")
                if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)]
    return [p for p in out.split("\0") if p and (REPO / p).is_file()]


def _copy_tree(scratch: Path) -> None:
    for rel in _tracked_and_new_files():
        dest = scratch / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)


def _mutmut(scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=scratch, env=_env(scratch),
                          capture_output=True, text=True, check=False)


def _env(scratch: Path) -> dict[str, str]:
    # The package may be installed in editable mode from another checkout: the copy must win.
    return {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}


def _tested(scratch: Path) -> int:
    """How many mutants have a result so far (0 before mutmut has written its cache)."""
    try:
        with sqlite3.connect(f"file:{scratch / '.mutmut-cache'}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM Mutant WHERE status != 'untested'").fetchone()[0])
    except sqlite3.Error:
        return 0


def stall_limit_s(base_s: float, load: float, cores: int) -> float:
    """How long a run may go without a new result before it counts as stalled: `base_s` on a machine with no
    more runnable work than cores, scaled up by the load per core beyond that."""
    return base_s * max(1.0, load / max(cores, 1))


def _current_stall_limit_s(base_s: float) -> float:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return stall_limit_s(base_s, load, os.cpu_count() or 1)


def _run_watched(scratch: Path, args: list[str], stall_s: float) -> tuple[int | None, str]:
    """mutmut's exit code and output, or (None, output) when it stopped making progress and was ended.

    mutmut 2 waits forever on a queue when its worker process dies (seen on this shared machine), so a run
    whose result count does not move for the stall limit (`stall_s`, scaled by the load, re-read on every
    poll) is ended with its whole process group.
    """
    log = scratch / ".mutmut-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mutmut", *args], cwd=scratch, env=_env(scratch),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        seen, since = -1, time.monotonic()
        code: int | None = None
        try:
            while True:
                try:
                    code = proc.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                tested = _tested(scratch)
                if tested != seen:
                    seen, since = tested, time.monotonic()
                elif time.monotonic() - since > _current_stall_limit_s(stall_s):
                    break
        finally:
            # Its own session, so it is not ended with ours: end it here, stalled or interrupted.
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return code, log.read_text(errors="replace")


def _ids(scratch: Path, status: str) -> list[str]:
    proc = _mutmut(scratch, "result-ids", status)
    return proc.stdout.split() if proc.returncode == 0 else []


def measure(module: str, test_files: list[str], show_survivors: bool, stall_s: float = STALL_S) -> int:
    with tempfile.TemporaryDirectory(prefix="matrix-qa-mutation-") as tmp:
        scratch = Path(tmp)
        _copy_tree(scratch)
        check = subprocess.run([sys.executable, "-c", "import qa; print(qa.__file__)"], cwd=scratch,
                               env=_env(scratch), capture_output=True, text=True, check=False)
        if not check.stdout.strip().startswith(str(scratch)):
            print(f"mutation: the scratch copy's qa package is not the one imported ({check.stdout.strip()})",
                  file=sys.stderr)
            return 2
        runner = shlex.join([sys.executable, str(scratch / "bench" / "mutation.py"), "--run-tests", *test_files])
        args = ["run", "--paths-to-mutate", module, "--tests-dir", "tests/unit", "--runner", runner,
                "--simple-output", "--no-progress"]
        for _ in range(RESUMES + 1):
            code, output = _run_watched(scratch, args, stall_s)
            if code is not None:
                break
            # Stalled: mutmut's worker died without telling its parent. The cache keeps every result so far,
            # and a second `mutmut run` only tests the rest.
            print(f"mutation: mutmut made no progress for {_current_stall_limit_s(stall_s):.0f}s on {module}; "
                  "resuming", file=sys.stderr)
        else:
            print(f"mutation: mutmut kept stalling on {module}", file=sys.stderr)
            return 2
        # mutmut exits with a bit mask of what it found (2 survived, 4 timeout, 8 suspicious); 1 is fatal.
        if code & 1:
            print(f"mutation: mutmut failed for {module}:\n{output[-3000:]}", file=sys.stderr)
            return 2
        counts = {status: _ids(scratch, status) for status in STATUSES}
        detected = sum(len(counts[s]) for s in DETECTED)
        total = detected + len(counts["survived"])
        score = 100.0 * detected / total if total else 100.0
        detail = ", ".join(f"{len(counts[s])} {s}" for s in STATUSES)
        print(f"{module}: {detected}/{total} killed ({score:.1f} %) — {detail}; tests: {' '.join(test_files)}")
        if show_survivors:
            for mutant_id in counts["survived"]:
                print(f"--- survivor {mutant_id}")
                print(_mutmut(scratch, "show", mutant_id).stdout.rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run-tests"]:
        return run_tests(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", nargs="+", help=f"one of: {', '.join(MODULE_TESTS)}")
    parser.add_argument("--tests", nargs="+", metavar="PATH",
                        help="test files or directories to run instead of the module's own")
    parser.add_argument("--show-survivors", action="store_true", help="print the diff of each survivor")
    parser.add_argument("--stall-s", type=_positive_seconds, default=STALL_S, metavar="S",
                        help=f"seconds without a new result before mutmut counts as stalled, on an idle machine; "
                             f"scaled up by the load per core (default {STALL_S})")
    args = parser.parse_args(argv)
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutation: mutmut is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    # An interrupted run must still delete its scratch copy: SIGTERM unwinds like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    status = 0
    for module in args.module:
        module = Path(module).as_posix()
        tests = args.tests or MODULE_TESTS.get(module)
        if not tests:
            print(f"mutation: no unit tests are mapped to {module}; known: {', '.join(MODULE_TESTS)}",
                  file=sys.stderr)
            return 2
        missing = [t for t in [module] if not (REPO / t).is_file()] + [t for t in tests if not (REPO / t).exists()]
        if missing:
            print(f"mutation: no such file or directory: {', '.join(missing)}", file=sys.stderr)
            return 2
        status = max(status, measure(module, tests, args.show_survivors, args.stall_s))
    return status


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
