"""The harness's end of a Python bot's fork server (qa.harness.zygote): start it once per run, ask it for bots,
hear their exits.

Why: a Python bot process can spend a CPU-second importing its SDKs before it says a word, and a run starts one
per scenario and more for restarts. The zygote imports once (the bot file's `fork_server.preload`); each bot is
forked from it. What a bot is to the harness does not change: its own pid and process group (the harness kills
it with killpg, SIGKILL included), its stdout+stderr on a pipe the harness reads, its exit code (from the
zygote, which is its parent and reaps it). A restart forks again: a new process, nothing kept.

Only a bot file with a `fork_server` entry is served, and only the launches of its own `{python} -m MODULE`
commands (its `command`, and its `lock_probe` when that has the same form), and only when the launch would run
exactly the interpreter and Python environment the zygote runs (same executable, same PYTHON* variables); any
other launch, or any launch when the zygote is not there or could not start, starts the ordinary way; but a
`preload` entry that fails in the zygote (its import or its function raised) is the bot file's error, exit 2
(ConfigError naming the file and the entry), not a slow run. If the zygote dies mid-run, the bots it forked are
killed (their exits could no longer be known) and say why; later bots start the ordinary way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa import processes
from qa.harness.botfile import BotFile, python_module
from qa.harness.contract_env import inherited_env
from qa.harness.early_fork_server import EarlyForkServer, zygote_args
from qa.harness.pipe_reader import PipeReader
from qa.harness.preload import preload_dir
from qa.kernel.errors import ConfigError, InfraError

MAX_MESSAGE = 1 << 16
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
# Pids of fork servers that run, for the last-resort cleanup (signal-handler safe: a set and os.kill).
_LIVE_SERVERS: set[int] = set()
START_TIMEOUT_S = 60.0  # the imports, on a loaded 2-core machine
SPAWN_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class ForkedProcess:
    """The part of asyncio.subprocess.Process a BotUnderTest uses: pid, returncode, stdout."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = stdout
        # Set when the exit was not the bot's own doing (its fork server died): shown instead of a bare signal.
        self.exit_note: str | None = None


def same_python(env: Mapping[str, str], ours: Mapping[str, str]) -> bool:
    """Pure: would a fresh `python` with `env` set itself up as the zygote did? PYTHON* variables (path, hash
    seed, flags) are read once at interpreter start, so a bot that asks for others must get a fresh one."""
    def python_vars(e: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in e.items() if k.startswith("PYTHON")}
    return python_vars(env) == python_vars(ours)


def serves(argv: list[str], env: Mapping[str, str], ours: Mapping[str, str], commands: list[list[str]]) -> bool:
    """Pure: is this launch one the zygote can fork? One of the bot file's forkable `commands` (placeholders
    filled in any way), run by the zygote's own interpreter with its Python environment."""
    return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" \
        and any(_fills(command, argv) for command in commands) and same_python(env, ours)


def _fills(command: list[str], argv: list[str]) -> bool:
    """Pure: could `argv` be `command` with its placeholders filled? `{python}` is this interpreter."""
    if len(command) != len(argv):
        return False
    return all(re.fullmatch(".*".join(map(re.escape, _PLACEHOLDER.split(part))), value, re.DOTALL) is not None
               for part, value in zip(command[1:], argv[1:], strict=True))


def forkable(bot: BotFile) -> list[list[str]]:
    """Pure: the bot file's commands its fork server forks: `command`, and `lock_probe` when it is also
    `{python} -m MODULE …`. None without a `fork_server` entry."""
    if bot.fork_server is None:
        return []
    return [argv for argv in (bot.command, bot.lock_probe) if argv is not None and python_module(argv) is not None]


def kill_all_fork_servers() -> None:
    """SIGKILL every fork server still running; its bots are the bot registry's to kill. Idempotent."""
    for pid in list(_LIVE_SERVERS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _LIVE_SERVERS.discard(pid)


def uses_fork_server(bot: BotFile) -> bool:
    """Pure: does this bot file ask for a fork server?"""
    return bool(forkable(bot))


class ForkServer:
    def __init__(self, log_path: Path, cwd: Path, bot: BotFile) -> None:
        self.log_path = log_path
        self.cwd = cwd
        self.commands = forkable(bot)
        self.preload = list(bot.fork_server.preload) if bot.fork_server is not None else []
        self.preload_dir = preload_dir(bot.cwd, bot.directory)
        self.source = bot.source
        self.pid: int | None = None
        self.failure: str | None = None  # why it is not serving (never started, died): for the run's notes
        # Exactly what a bot may inherit: a forked bot's /proc/<pid>/environ is the one we start the zygote with,
        # whatever its Python view is changed to after the fork.
        self._env = inherited_env(os.environ)
        self._proc: asyncio.subprocess.Process | EarlyForkServer | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._next_id = 0

    @property
    def alive(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def serves(self, argv: list[str], env: Mapping[str, str]) -> bool:
        return self.alive and serves(argv, env, self._env, self.commands)

    async def start(self, timeout_s: float = START_TIMEOUT_S, early: EarlyForkServer | None = None) -> None:
        """Start the zygote and wait until its imports are done; `early`, one `matrix-qa run` started before it
        checked its plan (qa.harness.early_fork_server), is adopted instead when it is the very zygote this one
        would start, else stopped."""
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        ours = self._adopt(early) if early is not None else None
        if ours is None:
            ours = await self._spawn()
        assert self._proc is not None
        _LIVE_SERVERS.add(self._proc.pid)
        ours.setblocking(False)
        self._sock = ours
        loop = asyncio.get_running_loop()
        try:
            first = await asyncio.wait_for(loop.sock_recv(ours, MAX_MESSAGE), timeout_s)
        except (TimeoutError, OSError) as exc:
            await self.close()
            raise InfraError(f"fork server did not become ready ({type(exc).__name__}); see {self.log_path}") \
                from None
        answer = _decode(first) if first else {}
        if "failed" in answer:  # the bot file's entry, not the machine: exit 2, as any bad field of the file
            await self.close()
            raise ConfigError(f"{self.source}: fork_server.preload: {answer['failed']!r} failed in the fork server: "
                              f"{answer.get('error')} (traceback in {self.log_path}; --no-fork-server runs without it)")
        if "ready" not in answer:
            await self.close()
            raise InfraError(f"fork server exited before it was ready; see {self.log_path}")
        self.pid = self._proc.pid
        self._reader = asyncio.create_task(self._read(), name="fork-server")

    def _adopt(self, early: EarlyForkServer) -> socket.socket | None:
        """`early`'s socket once it has its orders (it is then our process), or None (it is stopped then)."""
        if early.fits(self._args(), self._env) and early.go(self.cwd, self.log_path):
            self._proc = early
            return early.sock
        early.kill()
        return None

    async def _spawn(self) -> socket.socket:
        """The zygote started the ordinary way: our end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self.log_path.open("ab") as log, processes.spawning():
                self._proc = await asyncio.create_subprocess_exec(
                    *self._zygote_argv(theirs.fileno()), pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.cwd, env=self._env,
                    start_new_session=True)
                processes.own(self._proc.pid)
        except OSError as exc:
            ours.close()
            raise InfraError(f"fork server could not be started: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        return ours

    def _zygote_argv(self, fd: int) -> list[str]:
        return [sys.executable, "-m", "qa.harness.zygote", str(fd), *self._args()]

    def _args(self) -> list[str]:
        return zygote_args(self.commands, self.preload, self.preload_dir)

    async def spawn(self, argv: list[str], env: Mapping[str, str], cwd: Path, timeout_s: float = SPAWN_TIMEOUT_S,
                    stdin_fd: int | None = None, stderr_fd: int | None = None) -> ForkedProcess:
        """A forked process; its stdout is a pipe to us. `stdin_fd` and `stderr_fd` (given together): its own
        stdin and stderr instead of /dev/null and the stdout pipe."""
        proc, read_fd = await self.request(argv, env, cwd, timeout_s, stdin_fd, stderr_fd)
        return await attach_stdout(proc, read_fd)

    async def request(self, argv: list[str], env: Mapping[str, str], cwd: Path, timeout_s: float = SPAWN_TIMEOUT_S,
                      stdin_fd: int | None = None, stderr_fd: int | None = None) -> tuple[ForkedProcess, int]:
        """The fork itself: the process and the read end of its stdout pipe, not yet read by any event loop (so a
        server that lives on one loop can fork for a run on another: attach_stdout there)."""
        if not self.alive or self._sock is None:
            raise InfraError(f"fork server is not running ({self.failure or 'not started'})")
        self._next_id += 1
        request_id = self._next_id
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = answer
        read_fd, write_fd = os.pipe()
        try:
            message = json.dumps({"id": request_id, "argv": argv, "env": dict(env), "cwd": str(cwd)}).encode()
            extra = [stdin_fd, stderr_fd] if stdin_fd is not None and stderr_fd is not None else []
            socket.send_fds(self._sock, [message], [write_fd, *extra])
        except OSError as exc:
            os.close(read_fd)
            raise InfraError(f"fork server did not take the request: {exc}") from None
        finally:
            os.close(write_fd)  # in flight, the message holds its own reference
        try:
            reply = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            os.close(read_fd)
            raise InfraError(f"fork server did not answer within {timeout_s:g}s; see {self.log_path}") from None
        except InfraError:
            os.close(read_fd)
            raise
        finally:
            self._pending.pop(request_id, None)
        if "pid" not in reply:
            os.close(read_fd)
            raise InfraError(f"fork server refused: {reply.get('error')}")
        return reply["proc"], read_fd

    async def _read(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        try:
            while message := await loop.sock_recv(self._sock, MAX_MESSAGE):
                self._dispatch(_decode(message))
            self.failure = "it exited"
        except OSError as exc:
            self.failure = f"its socket failed: {exc}"
        finally:
            self._orphaned()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            # The same object the spawn returned: its answer came first on the socket, and created it.
            if (proc := self._children.pop(message["exit"], None)) is not None:
                proc.returncode = int(message["code"])
            return
        answer = self._pending.get(message.get("id", -1))
        if "pid" in message:
            self._children[message["pid"]] = message["proc"] = ForkedProcess(message["pid"], asyncio.StreamReader())
        if answer is not None and not answer.done():
            answer.set_result(message)
        elif "pid" in message:  # a spawn that gave up waiting: the bot is nobody's, so it goes
            with contextlib.suppress(OSError):
                os.killpg(message["pid"], signal.SIGKILL)

    def _orphaned(self) -> None:
        """The zygote is gone: nobody can tell us how its bots end, so they end now, saying why."""
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(InfraError(f"fork server stopped ({self.failure}); see {self.log_path}"))
        for proc in self._children.values():
            if proc.returncode is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.exit_note = f"killed: the fork server it was forked from stopped ({self.failure})"
                proc.returncode = -signal.SIGKILL
        self._children.clear()

    async def stop(self) -> None:
        await self.close()

    async def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End of file on its socket stops it (and any bot it still has); SIGKILL if it does not go in time."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout_s)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), timeout_s)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if proc is not None and proc.returncode is not None:
            _LIVE_SERVERS.discard(proc.pid)


async def attach_stdout(proc: ForkedProcess, read_fd: int) -> ForkedProcess:
    """The forked process's stdout, read on the running loop; `read_fd` is closed at its end of file (PipeReader,
    not connect_read_pipe: on uvloop that would hold the pipe open until the run ends, then close it twice)."""
    proc.stdout = asyncio.StreamReader(limit=2**20)
    PipeReader(read_fd, proc.stdout)
    return proc


def _decode(message: bytes) -> dict[str, Any]:
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
