"""The harness as its run's child subreaper: every orphan of a bot comes back to it, and is found and stopped.

Why: a bot's helper started in a session of its own with a cleared environment escapes both the bot's process-group
kill and the scan for the launch contract's state dir. With PR_SET_CHILD_SUBREAPER set, the kernel re-parents any
orphan below the harness to the harness (not to init), so it shows up as a child of ours that we never started.

What we started ourselves is registered here (`own`/`disown`, around each spawn), so the sweep spares it; a process
we are starting at this very moment is not registered yet, so a sweep then waits for the next chance (`spawning`).

The sweep stops only what descends from a bot of this run, never every orphan: a process the caller of an in-process
run started (a dockerd and its containerd shims) is re-parented to us just the same. An orphan is tied to a bot
(`tie`, keyed by its state dir) by either of two marks: its environment names the bot's state dir
(`MATRIX_QA_STATE_DIR`, which every helper that keeps its environment inherits), or it was seen below the bot while
the bot lived (`record_descendants`, called while the bot runs and again just before it is stopped), which catches a
helper that cleared its environment and left in a session of its own. A process is known by its pid and start
time, so a recycled pid is never mistaken for a recorded one. A bot's stop sweeps only its own orphans (with
`--jobs` > 1 a sibling's helpers are the sibling's); the end of the run sweeps every bot's.
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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the --pdeathsig wrapper imports this module: it stays light (no subprocess, no asyncio)
    import subprocess

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
REAP_TIMEOUT_S = 5.0

# Never in the environment of a process that does not need them: the bot (qa.harness.launch), the homeserver.
WITHHELD_ENV_PREFIXES = ("MATRIX_QA_REGISTRATION_", "MATRIX_QA_LIVE_OPENAI_KEY", "MATRIX_QA_LIVE_ANTHROPIC_KEY")
# The model keys a live or record run reads: a homeserver needs none of them.
MODEL_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")

# The environment variable that marks a bot's descendants: unique per bot of a run (qa.harness.launch).
MARK_ENV = "MATRIX_QA_STATE_DIR"
STARTTIME_FIELD = 19  # starttime is field 22 of /proc/<pid>/stat, the 20th after the command name
UTIME_FIELD, STIME_FIELD = 11, 12  # utime and stime: fields 14 and 15, the 12th and 13th after the command name

Identity = tuple[int, int]  # (pid, start time in clock ticks since boot): a recycled pid is another process

_OURS: set[int] = set()
_spawning = 0
_OWNERS: set[str] = set()  # the bots of this run, by state dir
_TIED: dict[Identity, str] = {}  # a process seen below a bot while the bot lived -> that bot
# record_descendants runs in worker threads (off the harness's loop, qa.harness.bot_process), two bots' at once
# under --jobs > 1: one look at a time, as when they ran on the loop, and none during untie_all.
_TIED_LOCK = threading.Lock()


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


def is_subreaper() -> bool:
    """Whether orphans below us come back to us (become_subreaper was called in this process)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        return int(libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)) == 0 and flag.value != 0
    except (OSError, AttributeError):
        return False


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


def start_time(text: str) -> int:
    """Pure: the start time from /proc/<pid>/stat, 0 when the line is too short to hold one."""
    fields = text.rpartition(") ")[2].split()
    if len(fields) <= STARTTIME_FIELD or not fields[STARTTIME_FIELD].isdigit():
        return 0
    return int(fields[STARTTIME_FIELD])


def descendants(root: int, parents: Mapping[Identity, int]) -> list[Identity]:
    """Pure: every process below `root` in a table of (pid, start) -> ppid, children before grandchildren."""
    children: dict[int, list[Identity]] = {}
    for ident, ppid in parents.items():
        children.setdefault(ppid, []).append(ident)
    found: list[Identity] = []
    todo = [root]
    while todo:
        for ident in sorted(children.get(todo.pop(0), [])):
            if ident not in found and ident[0] != root:
                found.append(ident)
                todo.append(ident[0])
    return found


def marked_by(environ: bytes, owners: set[str]) -> str | None:
    """Pure: the bot whose mark this raw /proc/<pid>/environ carries, None for none of ours."""
    prefix = MARK_ENV.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            value = entry[len(prefix):].decode(errors="replace")
            return value if value in owners else None
    return None


def owner_of(ident: Identity, environ: bytes, owners: set[str], tied: Mapping[Identity, str]) -> str | None:
    """Pure: the bot of this run an orphan descends from, by record first, then by its environment's mark."""
    recorded = tied.get(ident)
    if recorded is not None and recorded in owners:
        return recorded
    return marked_by(environ, owners)


def tie(owner: str) -> None:
    """A bot of this run, known by its state dir: its orphans are the sweep's to stop."""
    if owner:
        _OWNERS.add(owner)


def untie_all() -> None:
    """After the last sweep of a run: no bot of it is left to tie an orphan to."""
    _OWNERS.clear()
    with _TIED_LOCK:
        _TIED.clear()


def pids(proc: Path = Path("/proc")) -> list[str]:
    """The numeric entries of /proc (os.listdir: a pathlib glob costs ~4x the syscalls' own time in Python)."""
    try:
        return [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []


def _read(path: str, limit: int = 4096) -> bytes:
    """One small /proc file in one read, without a Python file object (raises OSError as open() would)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_whole(path: str) -> bytes:
    """A /proc file of any length (an environment can be long), read to its end without a Python file object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def cpu_ticks(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The CPU time (user + system, in clock ticks) `pid` has used; None when its stat cannot be read."""
    text = _stat(proc, str(pid))
    fields = text.rpartition(") ")[2].split() if text else []
    if len(fields) <= STIME_FIELD or not (fields[UTIME_FIELD].isdigit() and fields[STIME_FIELD].isdigit()):
        return None
    return int(fields[UTIME_FIELD]) + int(fields[STIME_FIELD])


def _stat(proc: Path, pid: str) -> str | None:
    """/proc/<pid>/stat as text, None for a process gone meanwhile (a stat line is far below one read)."""
    try:
        return _read(f"{proc}/{pid}/stat").decode(errors="replace")
    except OSError:
        return None


def process_table(proc: Path = Path("/proc")) -> dict[Identity, int]:
    """(pid, start) -> ppid of every process we can read."""
    table: dict[Identity, int] = {}
    for pid in pids(proc):
        text = _stat(proc, pid)
        parsed = stat_fields(text) if text is not None else None
        if text is not None and parsed is not None:
            table[(int(pid), start_time(text))] = parsed[0]
    return table


def record_descendants(root: int, owner: str, proc: Path = Path("/proc")) -> list[Identity]:
    """Tie everything below a live bot to it, so a helper that leaves its session and environment is still known
    as the bot's once orphaned; ties of processes that have ended are dropped, so the record stays small."""
    if not owner:
        return []
    with _TIED_LOCK:  # the whole look, scan included: one taken earlier must not prune what a later one tied
        table = process_table(proc)
        found = descendants(root, table)
        for ident in [i for i in _TIED if i not in table]:
            del _TIED[ident]
        for ident in found:
            _TIED[ident] = owner
    return found


def adopted(proc: Path = Path("/proc")) -> list[int]:
    """Children of ours that we did not start: not registered, in a session other than ours (a child the caller
    of an in-process run started, in our session, is the caller's)."""
    me, my_session = os.getpid(), os.getsid(0)
    found = []
    for name in pids(proc):
        text = _stat(proc, name)
        parsed = stat_fields(text) if text is not None else None
        if parsed is None:
            continue
        ppid, session, _ = parsed
        pid = int(name)
        if ppid == me and session != my_session and pid not in _OURS:
            found.append(pid)
    return sorted(found)


def tied_orphans(owner: str | None, proc: Path = Path("/proc")) -> list[int]:
    """Adopted orphans that descend from `owner` (from any bot of this run when None); the rest are not ours."""
    found = []
    for pid in adopted(proc):
        text = _stat(proc, str(pid))
        if text is None:
            continue  # gone meanwhile
        ident = (pid, start_time(text))
        try:
            environ = read_whole(f"{proc}/{pid}/environ")
        except OSError:
            environ = b""  # not readable (not ours, or a zombie's): the record alone can tie it
        bot = owner_of(ident, environ, _OWNERS, _TIED)
        if bot is not None and owner in (None, bot):
            found.append(pid)
    return found


def stop_adopted(owner: str | None = None, force: bool = False) -> list[int]:
    """SIGKILL every adopted orphan of `owner`'s (of every bot of this run when None; its process group too, when
    it leads one) and reap it, within a bound. An orphan no bot of this run left is not ours to stop.
    Skipped while a spawn of ours is in flight unless `force` (the end of the run, when nothing spawns)."""
    if _spawning and not force:
        return []
    orphans = tied_orphans(owner)
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
    reap(orphans, REAP_TIMEOUT_S)
    return orphans


def reap(pids: list[int], timeout_s: float) -> None:
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


def pidfds_work() -> bool:
    """Whether this kernel (and its seccomp filter) gives pidfds, which `wait_popen` sleeps on."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


async def wait_popen(popen: subprocess.Popen[bytes]) -> int:
    """A subprocess.Popen child's exit code, awaited on the running loop: wakes on its pidfd, never polls (a child
    started before the loop existed, so asyncio's child watcher does not know it)."""
    while popen.poll() is None:
        try:
            fd = os.pidfd_open(popen.pid)
        except ProcessLookupError:  # gone meanwhile: wait() has its code (0 if someone else reaped it)
            break
        try:
            await _readable(fd, lambda: popen.poll() is not None)
        finally:
            os.close(fd)
    return popen.wait()


async def wait_child(pid: int, poll: Callable[[], int | None]) -> int:
    """The exit code of a child of ours that asyncio did not start (a Synapse forked by the early interpreter and
    re-parented to us, qa.homeserver.early_synapse): wakes on its pidfd, never polls. `poll` reaps it once it has
    exited (waitpid WNOHANG) and returns its code, and keeps returning it."""
    while (code := poll()) is None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # reaped meanwhile by `poll` in another waiter: its code is kept there
            continue
        try:
            await _readable(fd, lambda: poll() is not None)
        finally:
            os.close(fd)
    return code


async def readable(fd: int) -> None:
    """Until `fd` is readable, on the running loop."""
    await _readable(fd, lambda: False)


async def _readable(fd: int, already: Callable[[], bool]) -> None:
    """Until `fd` is readable (a pidfd: its process exited), unless `already` says there is nothing to wait for."""
    import asyncio  # here, not atop: see TYPE_CHECKING above

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        if not already():
            await done
    finally:
        loop.remove_reader(fd)


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
