"""The lock doctor: every session lock under a state dir, who owns it and whether it is stale.

`matrix-qa doctor ARTIFACTS_OR_STATE_DIR` and `python -m qa.agent doctor --state-dir DIR`, both this module's
`doctor_main` (options `--fix`, `--json`, `--stale-ms N`, `--max-hold-ms N`). Exit codes: 0 nothing wrong (after
`--fix`: nothing wrong left), 1 something wrong, 2 bad input.

Each lock file is judged by the kernel's lock-file convention (qa.kernel.lockfile.judge, pure); only a lock
whose owner is provably gone is `--fix`able. Given a run's artifacts directory (its state dir is temporary and
gone), the doctor reads each scenario's bot trace instead (qa.kernel.trace) and reports every hold still open
when the trace ends (`left-held`): the lock file that run left behind. Nothing there can be fixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from qa.kernel.lock_settings import LockConfigError, LockSettings, resolve_lock_settings
from qa.kernel.lockfile import (
    LOCK_SUFFIX,
    Judgement,
    Observation,
    exit_code,
    judge,
    observe,
    pid_alive,
    read_lock,
    remove_if_same,
)
from qa.kernel.terminal import safe_print
from qa.kernel.trace import holds_open_at_end, read_trace


def find_locks(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"*{LOCK_SUFFIX}") if p.is_file())


@dataclass(frozen=True)
class Row:
    observation: Observation
    judgement: Judgement
    fixed: bool


def examine(root: Path, settings: LockSettings, fix: bool, alive: Callable[[int], bool]) -> list[Row]:
    rows: list[Row] = []
    for path in find_locks(root):
        view = read_lock(path)
        if view is None:  # released while we looked
            continue
        obs = observe(path, view, alive)
        verdict = judge(obs, settings)
        fixed = bool(fix and verdict.fixable and remove_if_same(path, view.identity()))
        rows.append(Row(obs, verdict, fixed))
    return rows


def render(rows: Sequence[Row], root: Path) -> list[str]:
    if not rows:
        return [f"no session locks under {root}"]
    lines = []
    for row in rows:
        o, j = row.observation, row.judgement
        alive = "unknown" if o.alive is None else ("alive" if o.alive else "dead")
        lines.append(f"{j.state:<14} pid={o.pid if o.pid is not None else '?'} ({alive}) age={o.age_ms:.0f}ms "
                     f"attempt={o.attempt or '?'} {o.path}: {j.why}{' [removed]' if row.fixed else ''}")
    problems = sum(1 for r in rows if r.judgement.problem and not r.fixed)
    lines.append(f"{len(rows)} lock(s), {sum(r.fixed for r in rows)} removed, {problems} problem(s) left")
    return lines


def from_traces(root: Path) -> list[Row]:
    """For an artifacts directory: the holds each scenario's bot trace leaves open at its end."""
    rows: list[Row] = []
    for trace in sorted(root.glob("scenarios/*/bot-trace.jsonl")):
        records = read_trace(trace)
        start = next((r for r in records if r.get("type") == "start"), {})
        pid = start.get("pid") if isinstance(start.get("pid"), int) else None
        for session, attempt, purpose, held in holds_open_at_end(records):
            obs = Observation(path=f"{trace} session={session}", pid=pid, alive=None, age_ms=held, attempt=attempt,
                              promised_max_hold_ms=None)
            why = f"hold ({purpose}) still open when the trace ends, {held:.0f}ms after it was taken"
            rows.append(Row(obs, Judgement("left-held", problem=True, fixable=False, why=why), fixed=False))
    return rows


def run_doctor(root: Path, settings: LockSettings, fix: bool, as_json: bool, out: Callable[[str], None],
               alive: Callable[[int], bool] = pid_alive) -> int:
    if not root.is_dir():
        out(f"doctor: {root}: not a directory")
        return 2
    rows = examine(root, settings, fix, alive) + from_traces(root)
    if as_json:
        out(json.dumps([{**asdict(r.observation), **asdict(r.judgement), "fixed": r.fixed} for r in rows], indent=2))
    else:
        for line in render(rows, root):
            out(line)
    return exit_code([r.judgement for r in rows], [r.fixed for r in rows])


def doctor_main(argv: Sequence[str], prog: str, positional: bool) -> int:
    """The command line of both entry points; `positional`: the dir is an argument (matrix-qa) or --state-dir."""
    import argparse
    import sys

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            self.exit(2, f"{self.prog}: {message}\n")

    parser = _Parser(prog=prog, description="list every session lock and judge it; --fix removes dead owners'")
    if positional:
        parser.add_argument("root", type=Path, metavar="ARTIFACTS_OR_STATE_DIR")
    else:
        parser.add_argument("--state-dir", dest="root", type=Path, required=True)
    parser.add_argument("--fix", action="store_true", help="remove the locks whose owner process is gone")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of lines")
    parser.add_argument("--stale-ms", help="staleMs to judge unreadable locks by (default: env, else 30000)")
    parser.add_argument("--max-hold-ms", help="maxHoldMs for locks that promise none (default: env, else 5000)")
    args = parser.parse_args(list(argv))
    config = {k: v for k, v in (("staleMs", args.stale_ms), ("maxHoldMs", args.max_hold_ms)) if v is not None}
    try:
        settings, _ = resolve_lock_settings(config, os.environ)
    except LockConfigError as exc:
        message = str(exc).replace("session.writeLock.staleMs", "--stale-ms")
        safe_print(f"{prog}: {message.replace('session.writeLock.maxHoldMs', '--max-hold-ms')}", file=sys.stderr)
        return 2
    if not args.root.is_dir():
        safe_print(f"{prog}: {args.root}: not a directory", file=sys.stderr)
        return 2
    # A directory the search cannot enter would read as "no session locks": say it cannot look instead.
    unreadable = [args.root] if not os.access(args.root, os.R_OK | os.X_OK) else []
    for here, dirs, _ in os.walk(args.root):
        unreadable += [Path(here, d) for d in dirs if not os.access(Path(here, d), os.R_OK | os.X_OK)]
    if unreadable:
        safe_print(f"{prog}: cannot read {', '.join(map(str, unreadable[:5]))} (permission denied): its session "
                   "locks cannot be listed", file=sys.stderr)
        return 2
    return run_doctor(args.root, settings, args.fix, args.json, safe_print)
