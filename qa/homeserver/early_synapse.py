"""The embedded Synapse's interpreter started before the run knows its config, so its imports overlap the harness's;
every homeserver of the run is then forked from it (issue 29).

`matrix-qa run` asks for it (`start`) as soon as its flags and config file say the homeserver is the embedded
Synapse, before the harness imports its scenario machinery and checks the plan. The process imports Synapse (most
of its boot) and then waits, holding no port, file or secret, for orders on its stdin (qa.homeserver.seeded_boot,
`AWAIT_FLAG`): it is a zygote (qa.homeserver.synapse_zygote). Each homeserver of the run is handed it
(SynapseHomeserver.adopt_early, one claim each); its start() sends its config as one order (`fork_from`) and gets
back a Synapse forked from the zygote, sharing the import's pages and skipping its CPU, which the kernel has made
the harness's own child (we are a subreaper): from then on it is waited for, killed and reaped like a Synapse the
harness spawned (ForkedSynapse). Once every homeserver has had its first boot (each claim released) the zygote's
stdin is closed and it exits; a restart spawns a fresh Synapse, as does any start the zygote cannot serve.

Whatever ends the run before that (a bad flag or file, a failed check, a signal) stops it (`discard`: from
cmd_run's finally, from the Synapse backend's last resort, from atexit), and it also ends by itself when its
stdin closes or (PR_SET_PDEATHSIG) the harness dies. One per process at most.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa import processes
from qa.homeserver.seeded_boot import AWAIT_FLAG, TEMPLATE_ENV
from qa.processes import pidfds_work

if TYPE_CHECKING:  # asyncio only once a run forks: the early start comes before the harness's own imports
    import asyncio

APP = "synapse.app.homeserver"
REAP_TIMEOUT_S = 5.0
# The longest a start waits for the zygote's answer: a zygote that never answers (stuck in its import, stopped) must
# leave the Synapse spawned in its stead most of the start's budget (fork_budget).
FORK_WAIT_MAX_S = 20.0
# Past that share, the wait goes on in slices of this while the zygote is still burning CPU (its import, slow on a
# loaded machine: killing it then would only make the Synapse spawned instead import all over again), up to the
# start's whole budget; a zygote that is stopped or stuck uses none and is given up on at the share.
FORK_PROGRESS_SLICE_S = 2.0

# Why a homeserver's Synapse was not forked (it is spawned instead, a slower boot): a line in the run's harness.log
# (qa.run.lifecycle.LibraryLogs takes "qa.homeserver"'s records).
log = logging.getLogger(__name__)

_pending: EarlySynapse | None = None
_handed: EarlySynapse | None = None  # taken by the run: still ours to stop at its end
_forked: set[int] = set()  # pids of Synapses forked for us and not yet reaped: the last resort's to kill and reap
_atexit_registered = False


class EarlySynapse:
    """The zygote: Synapse imported, forking one Synapse per order."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._claims = 0
        self._lock: asyncio.Lock | None = None  # one order and its answer at a time
        self._said = b""  # what it answered and nobody has read yet
        self._busy_until = 0.0  # the loop time up to which an answer is still waited for while the zygote works
        self._reaper: asyncio.Task[int] | None = None  # reaps it once it exits after its release
        self._silence = ""  # why _answer had none, for the harness log
        # An order went unanswered: only then can the zygote have forked a child we never learnt of (it answers
        # after its middle process is reaped), so only then does `discard` look for such children.
        self.abandoned = False

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """Its exit code, once it exits; wakes on its pidfd, never polls."""
        return await processes.wait_popen(self._popen)

    def claim(self) -> None:
        """One more homeserver will ask it for its Synapse."""
        self._claims += 1

    def release(self) -> None:
        """A homeserver that had its first boot (or never will): once none is left, the zygote is let go (its stdin
        closed, so it exits), and its pages are the forked Synapses' alone."""
        self._claims = max(0, self._claims - 1)
        if self._claims == 0:
            self._close_stdin()
            self._reap_when_it_exits()

    def _reap_when_it_exits(self) -> None:
        """Its exit (soon: its stdin is closed) reaped then, not left a zombie until `discard` at the run's end."""
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait on: reaped now if it is gone already, else by `discard`
            self._popen.poll()
            return
        if self._reaper is None and self._popen.poll() is None:
            self._reaper = loop.create_task(self._reaped(), name="early-synapse-reap")

    async def _reaped(self) -> int:
        code = await self.wait()
        processes.disown(self.pid)  # reaped: its pid may be another process's now
        return code

    async def fork(self, synapse_argv: list[str], cwd: Path, stdout_path: Path, template: dict[str, str] | None,
                   timeout_s: float, busy_s: float = 0.0) -> ForkedSynapse | None:
        """A Synapse booting with this config, forked from the zygote, its output to `stdout_path`: our child (we
        must be a subreaper for that). None when it cannot be (it died, it refused, it did not answer in time):
        the caller then starts Synapse the ordinary way; why is said in the harness log."""
        if not processes.is_subreaper():
            _not_forked("the harness is not a subreaper (a Synapse forked from the early interpreter is not ours)")
            return None
        import asyncio

        self._lock = self._lock or asyncio.Lock()
        deadline = asyncio.get_running_loop().time() + timeout_s  # waiting for another homeserver's order counts too
        self._busy_until = asyncio.get_running_loop().time() + max(timeout_s, busy_s)
        async with self._lock:
            orders = {"argv": synapse_argv, "cwd": str(cwd), "stdout": str(stdout_path), "template": template,
                      "parent": os.getpid()}
            stdin = self._popen.stdin
            if self.returncode is not None or stdin is None or stdin.closed:
                _not_forked(f"the early Synapse interpreter has exited (code {self.returncode})"
                            if self.returncode is not None else "the early Synapse interpreter was let go already")
                return None
            with processes.spawning():  # from its fork until it is ours, it is a child the sweep does not know
                try:
                    stdin.write(json.dumps(orders).encode() + b"\n")
                    stdin.flush()
                except OSError as exc:
                    _not_forked(f"the early Synapse interpreter took no orders ({exc})")
                    return None
                answer = None
                try:
                    answer = await self._answer(max(0.0, deadline - asyncio.get_running_loop().time()))
                finally:
                    if answer is None:  # no answer (cancelled, too late, its end): it must fork nothing after this
                        self._abandon()
                if answer is None:
                    _not_forked(self._silence)
                    return None
                pid = answer.get("pid")  # or {"error": …}: this order refused, the zygote still serves
                if not isinstance(pid, int):
                    _not_forked(f"the early Synapse interpreter refused to fork Synapse: {answer.get('error', answer)}")
                    return None
                processes.own(pid)
                _forked.add(pid)
        return ForkedSynapse(pid)

    def _abandon(self) -> None:
        """An order whose answer we no longer wait for: the zygote is killed, so it forks nothing more, and a Synapse
        it forked already (its answer is written before the Synapse may run) is killed and reaped too."""
        self.abandoned = True
        self.kill_zygote_only()
        out = self._popen.stdout
        if out is None:
            return
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(out.fileno(), False)
            self._said += os.read(out.fileno(), 4096)
        for line in self._said.splitlines():
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                pid = json.loads(line).get("pid")
                if isinstance(pid, int):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                    processes.reap([pid], REAP_TIMEOUT_S)
        self._said = b""

    async def _answer(self, timeout_s: float) -> dict[str, Any] | None:
        """Its next line on stdout, parsed; None at its end of file, after `timeout_s`, or for junk."""
        out = self._popen.stdout
        if out is None:
            return None
        import asyncio

        fd = out.fileno()
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        end, waited_from, ticks = loop.time() + timeout_s, loop.time(), processes.cpu_ticks(self.pid)
        first_ticks = ticks
        while True:
            try:
                async with asyncio.timeout(max(0.0, end - loop.time())):
                    while b"\n" not in self._said:
                        await processes.readable(fd)
                        try:
                            chunk = os.read(fd, 4096)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            self._silence = "the early Synapse interpreter ended before it answered"
                            return None
                        self._said += chunk
                break
            except TimeoutError:
                now_ticks = processes.cpu_ticks(self.pid)
                if still_working(ticks, now_ticks) and loop.time() < self._busy_until:
                    ticks, end = now_ticks, min(self._busy_until, loop.time() + FORK_PROGRESS_SLICE_S)
                    continue
                waited = timeout_s if ticks == first_ticks else loop.time() - waited_from
                self._silence = f"the early Synapse interpreter did not answer within {waited:.1f}s"
                return None
        line, _, self._said = self._said.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._silence = f"the early Synapse interpreter gave a garbled answer: {line[:200]!r}"
            return None
        return answer

    def _close_stdin(self) -> None:
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError):
                self._popen.stdin.close()

    def kill(self) -> None:
        """SIGKILL its process group and reap it, within a bound. Synchronous and idempotent. The Synapses it forked
        are not in its group: they are the harness's children, stopped as such."""
        self.kill_zygote_only()
        if self._popen.stdout is not None:
            with contextlib.suppress(OSError):
                self._popen.stdout.close()

    def kill_zygote_only(self) -> None:
        """SIGKILL the zygote's process group and reap it, within a bound; what it said stays readable."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(REAP_TIMEOUT_S)
        self._close_stdin()
        processes.disown(self.pid)


def _not_forked(why: str) -> None:
    """Said in the harness log: why this Synapse is spawned (a full import, a slower boot) rather than forked."""
    log.warning("%s; Synapse is started the ordinary way", why)


class ForkedSynapse:
    """A Synapse forked from the zygote, now our child: it stands in for asyncio's Process (pid, returncode, wait)
    in SynapseHomeserver. Its code comes from our own waitpid, as any child's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        """Its exit code once it has exited (reaping it then), else None."""
        if self._code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: as subprocess.Popen says then
                self._code = 0
                processes.disown(self.pid)
                _forked.discard(self.pid)
                return self._code
            if pid:
                self._code = os.waitstatus_to_exitcode(status)
                processes.disown(self.pid)
                _forked.discard(self.pid)
        return self._code

    async def wait(self) -> int:
        """Its exit code, once it exits; wakes on its pidfd, never polls."""
        return await processes.wait_child(self.pid, self.poll)


def still_working(before: int | None, now: int | None) -> bool:
    """Pure: whether a process whose CPU ticks went from `before` to `now` used the CPU meanwhile."""
    return before is not None and now is not None and now > before


def fork_budget(remaining_s: float) -> float:
    """Pure: how long a start with `remaining_s` left waits for the zygote's answer; the rest is the budget of the
    Synapse spawned instead when none comes."""
    return max(0.0, min(remaining_s / 2, FORK_WAIT_MAX_S))


async def fork_from(early: EarlySynapse, argv: list[str], env: Mapping[str, str] | None, cwd: Path,
                    stdout_path: Path, timeout_s: float, busy_s: float = 0.0) -> ForkedSynapse | None:
    """A Synapse forked from `early` that boots as `argv` (SynapseHomeserver's launch command) would have, or None
    when it cannot be (the caller then spawns one)."""
    template = env.get(TEMPLATE_ENV) if env is not None else None
    return await early.fork(argv[argv.index(APP) + 1:], cwd, stdout_path, json.loads(template) if template else None,
                            timeout_s, busy_s)


def command() -> list[str]:
    """Pure but for our pid: how the waiting interpreter is started (behind the PR_SET_PDEATHSIG wrapper)."""
    return processes.with_pdeathsig([sys.executable, "-m", "qa.homeserver.seeded_boot", APP, AWAIT_FLAG])


def start(env: Mapping[str, str]) -> EarlySynapse | None:
    """Start the waiting interpreter unless one is pending or Synapse is not installed (the run's own start then
    says so). Never fails the run: on any OSError there is simply none."""
    global _pending, _atexit_registered
    if _pending is not None:
        return _pending
    # find_spec, as qa.homeserver.synapse.synapse_installed: importing that module (aiohttp) here would delay the start.
    if importlib.util.find_spec("synapse") is None or not pidfds_work():
        return None
    try:
        # cwd "/": `python -m` puts its working directory first on the import path, and the user's (a bot's repo
        # with its own yaml.py or http.py) must not shadow Synapse's imports; the orders move it to the work dir.
        with processes.spawning():
            popen = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=processes.homeserver_env(env),
                                     start_new_session=True, cwd="/")
            processes.own(popen.pid)
    except OSError:
        return None
    if not _atexit_registered:
        atexit.register(discard)
        _atexit_registered = True
    _pending = EarlySynapse(popen)
    return _pending


def take() -> EarlySynapse | None:
    """The pending interpreter, now the caller's to hand its homeservers' orders to; None when there is none. Still
    stopped by `discard` at the run's end, if it has not exited by then."""
    global _pending, _handed
    early, _pending = _pending, None
    if early is not None:
        _handed = early
    return early


def discard() -> None:
    """Stop the interpreter, pending or handed to the run, and any Synapse forked from it that was not reaped (the
    run is over: its homeservers were stopped, or are now). Synchronous, idempotent, safe at exit."""
    global _pending, _handed
    pending, handed = _pending, _handed
    _pending = _handed = None
    for early in (pending, handed):
        if early is not None:
            early.kill()
    left = sorted(_forked)
    _forked.clear()
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        processes.disown(pid)
    # Only after an unanswered order: a scan at every discard could take a zombie of the caller's for the zygote's
    # (an in-process run's caller may have a python child leading its own session, exited and not yet waited for).
    zygotes = {early.pid for early in (pending, handed) if early is not None and early.abandoned}
    if zygotes:
        left += unannounced_zombies(zygotes)
    processes.reap(left, REAP_TIMEOUT_S)


def unannounced_zombies(zygotes: set[int], proc: Path = Path("/proc")) -> list[int]:
    """Children the zygote forked for us but never announced (it died mid-order): the Synapse, and the middle process
    when the zygote died before it, come to us (we are a subreaper) and end at once (no `go`), their pids unknown
    to us. Dead already, they are only to be reaped: found as zombies adopted by us (not started by us, in another
    session) with the interpreter's command name (a zombie has no cmdline left), the zygote's and theirs, in the
    zygote's session (the middle) or leading their own (the Synapse's setsid, its first act)."""
    comm = Path(sys.executable).name[:15]  # what the kernel names a process exec'd from sys.executable
    found = []
    for pid in processes.adopted(proc):
        try:
            text = (proc / str(pid) / "stat").read_text(errors="replace")
        except OSError:
            continue
        fields = processes.stat_fields(text)
        if fields is not None and fields[2] == "Z" and fields[1] in zygotes | {pid} \
                and text.partition(" (")[2].rpartition(") ")[0] == comm:
            found.append(pid)
    return found
