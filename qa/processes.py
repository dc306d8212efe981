"""The harness as its run's child subreaper: every orphan of a bot comes back to it, and is found and stopped.

Why: a bot's helper started in a session of its own with a cleared environment escapes both the bot's process-group
kill and the scan for the launch contract's state dir. With PR_SET_CHILD_SUBREAPER set, the kernel re-parents any
orphan below the harness to the harness (not to init), so it shows up as a child of ours that we never started.

What we started ourselves is registered here (`own`/`disown`, around each spawn), so the sweep spares it; a process
we are starting at this very moment is not registered yet, so a sweep then waits for the next chance (`spawning`).
A process that must not outlive the harness even when the harness is SIGKILLed (Synapse) is started through
`python -m qa.processes --pdeathsig PARENT -- ARGV…` (`with_pdeathsig`): it sets PR_SET_PDEATHSIG in the child
and then execs, which is safe there, unlike a pre-exec hook in our threaded harness.

Linux only; elsewhere everything here does nothing (and the wrapper just execs).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
REAP_TIMEOUT_S = 5.0

# Never in the environment of a process that does not need them: the bot (qa.harness.launch), the homeserver.
WITHHELD_ENV_PREFIXES = ("MATRIX_QA_REGISTRATION_", "MATRIX_QA_LIVE_OPENAI_KEY", "MATRIX_QA_LIVE_ANTHROPIC_KEY")
# The model keys a live or record run reads: a homeserver needs none of them.
MODEL_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")

_OURS: set[int] = set()
_spawning = 0


def prctl(option: int, value: int) -> bool:
    """prctl(2) through libc; False where there is none (not Linux) or it refuses."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphans of every process below us are re-parented to us from now on."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def own(pid: int) -> None:
    _OURS.add(pid)


def disown(pid: int) -> None:
    _OURS.discard(pid)


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Around a spawn: until its pid is `own`ed, a child of ours in a session of its own could be it."""
    global _spawning
    _spawning += 1
    try:
        yield
    finally:
        _spawning -= 1


def stat_fields(text: str) -> tuple[int, int, str] | None:
    """Pure: (ppid, session, state) from /proc/<pid>/stat; the command name may hold spaces and parentheses."""
    _, _, rest = text.rpartition(") ")
    fields = rest.split()
    if len(fields) < 4 or not fields[1].isdigit() or not fields[3].isdigit():
        return None
    return int(fields[1]), int(fields[3]), fields[0]


def adopted(proc: Path = Path("/proc")) -> list[int]:
    """Children of ours that we did not start: not registered, in a session other than ours (a child the caller
    of an in-process run started, in our session, is the caller's)."""
    me, my_session = os.getpid(), os.getsid(0)
    found = []
    for entry in proc.glob("[0-9]*"):
        try:
            parsed = stat_fields((entry / "stat").read_text(errors="replace"))
        except OSError:
            continue
        if parsed is None:
            continue
        ppid, session, _ = parsed
        pid = int(entry.name)
        if ppid == me and session != my_session and pid not in _OURS:
            found.append(pid)
    return sorted(found)


def stop_adopted(force: bool = False) -> list[int]:
    """SIGKILL every adopted orphan (its process group too, when it leads one) and reap it, within a bound.
    Skipped while a spawn of ours is in flight unless `force` (the end of the run, when nothing spawns)."""
    if _spawning and not force:
        return []
    orphans = adopted()
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
    _reap(orphans, REAP_TIMEOUT_S)
    return orphans


def _reap(pids: list[int], timeout_s: float) -> None:
    """waitpid on exactly these pids (never -1: asyncio waits for its own children by pid)."""
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.remove(pid)
        if left:
            time.sleep(0.01)  # SIGKILL lands within a scheduler tick; bounded by the deadline above


def homeserver_env(base: Mapping[str, str]) -> dict[str, str]:
    """Pure: the harness's environment without its secrets, for a homeserver it starts."""
    return {k: v for k, v in base.items() if not k.startswith(WITHHELD_ENV_PREFIXES) and k not in MODEL_KEYS}


def with_pdeathsig(argv: list[str]) -> list[str]:
    """Pure but for our pid: `argv` run through the wrapper, SIGKILLed when this process dies, however it dies."""
    return [sys.executable, "-m", "qa.processes", "--pdeathsig", str(os.getpid()), "--", *argv]


def _exec_with_pdeathsig(args: list[str]) -> int:
    """The wrapper: PR_SET_PDEATHSIG, then exec. If the parent died before the setting took, go at once."""
    if len(args) < 4 or args[0] != "--pdeathsig" or not args[1].isdigit() or args[2] != "--":
        print("usage: python -m qa.processes --pdeathsig PARENT_PID -- ARGV...", file=sys.stderr)
        return 2
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(args[1]):
        return 1
    os.execvp(args[3], args[3:])
    return 1  # unreachable: execvp raises or never returns


if __name__ == "__main__":
    sys.exit(_exec_with_pdeathsig(sys.argv[1:]))
