"""Fork servers for a whole pytest session (per xdist worker), lent to every in-process run beside the shared
Synapse: a fork server imports its bot's SDKs once (about 1.7 CPU-seconds for the embedded agent, 10-18 s of wall
time on a loaded 2-core machine), which every run paid again before its first bot could start.

Why sharing is sound: a fork server keeps nothing of a bot it forked. Each bot is a fresh fork of the same
preloaded process, gets its argv, environment and working directory from its launch (exactly as from a per-run
server), and is killed by the run that started it. A server is shared only between runs whose bot files ask it for
the same modules and preloads and whose environment it was started with (its /proc/<pid>/environ, which a forked
bot shows, is then the one a per-run server would have had); anything else gets a server of its own.

How: the servers live on their own event loop in a thread (their process watcher and socket reader belong to that
loop), and each run gets a `BorrowedForkServer`: a fork is asked for on the servers' loop, and the bot's stdout is
read on the run's. The run's own fork-server checks (serves: which launches) use the run's bot file. A server that
died, or that a fork failed on (SessionForkServers.drop), is replaced at the next borrow. Tests that stop or kill a
fork server, or start one of another kind (tests/integration/test_fork_server.py), start their own (that file's
others, which look only at the bots forked from it, borrow the session's); runs through the CLI always do.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import qa.run
from qa.harness import fork_server as fork_module
from qa.harness.botfile import BotFile
from qa.harness.fork_server import ForkedProcess, ForkServer, attach_stdout, forkable, serves, uses_fork_server
from qa.harness.launch import inherited_env
from qa.harness.output import Output
from qa.harness.preload import preload_dir
from qa.kernel import event_loop
from qa.kernel.errors import InfraError

T = TypeVar("T")
CALL_TIMEOUT_S = 120.0
Key = tuple[tuple[str, ...], tuple[str, ...], str | None, frozenset[tuple[str, str]]]


# Set by pytest itself to the running test's id and phase, so it differs between every two tests: in the key it made
# every test start fork servers of its own (each test's first run paid the agent's imports again, ~1.7 CPU-seconds,
# more for a bot with a warm-up). The server is not started with it (server_env), so its /proc/<pid>/environ, which a
# forked bot shows too, has none; a forked bot's os.environ is its launch's, which has the running test's.
PER_TEST_ENV = frozenset({"PYTEST_CURRENT_TEST"})


def server_env(env: Mapping[str, str]) -> dict[str, str]:
    """Pure: what a session's fork server is started with, and is keyed by: what a bot may inherit, less what
    pytest sets per test."""
    return {k: v for k, v in inherited_env(env).items() if k not in PER_TEST_ENV}


def server_key(bot: BotFile, env: Mapping[str, str]) -> Key:
    """Pure: what a fork server is to its bots: the modules it serves, what it preloaded and from which folder
    (the same entry beside two bot files is two modules), the environment (less pytest's per-test variables)."""
    modules = tuple(sorted({argv[2] for argv in forkable(bot)}))
    preload = tuple(bot.fork_server.preload) if bot.fork_server is not None else ()
    where = preload_dir(bot.cwd, bot.directory)
    return modules, preload, str(where) if where is not None else None, frozenset(server_env(env).items())


def unstarted_server(where: Path, bot: BotFile, env: Mapping[str, str]) -> ForkServer:
    """A session's fork server for this bot file, not yet started, with the environment of its key (server_env)."""
    server = ForkServer(where / "fork-server.log", where / "work", bot)
    # Its environment (what its /proc/<pid>/environ and its bots' show) is then the same for every test that shares
    # it, not the first one's PYTEST_CURRENT_TEST; a bot's own os.environ is its launch's. ForkServer takes no
    # environment of its own (it starts with inherited_env(os.environ)), so it is set here, before start().
    server._env = server_env(env)
    return server


class SessionForkServers:
    """The shared fork servers and the event loop (in a daemon thread) that owns them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The harness's own loop (uvloop unless MATRIX_QA_HARNESS_LOOP=asyncio), as in the runs it serves.
        _, self._loop = event_loop.new_loop(event_loop.HARNESS_ENV, os.environ)
        self._thread = threading.Thread(target=self._loop.run_forever, name="session-fork-servers", daemon=True)
        self._thread.start()
        self._servers: dict[Key, ForkServer] = {}
        self._lock = threading.Lock()
        self.starts = 0
        atexit.register(self._kill)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT_S)

    def server_for(self, bot: BotFile) -> ForkServer:
        """The running server for this bot file and environment, started (or replaced, when dead) here."""
        key = server_key(bot, os.environ)
        with self._lock:
            server = self._servers.get(key)
            if server is not None and server.alive:
                return server
            if server is not None:
                self.call(server.close())
            self.starts += 1
            where = self.root / f"fork-server-{self.starts}"
            server = unstarted_server(where, bot, os.environ)
            self.call(server.start())
            # Each run's teardown SIGKILLs every fork server it knows of (kill_all_fork_servers, its last resort):
            # this one is the session's, stopped by close() and atexit instead.
            if server.pid is not None:
                fork_module._LIVE_SERVERS.discard(server.pid)
            self._servers[key] = server
            return server

    def drop(self, server: ForkServer) -> None:
        """A server a fork failed on (no answer in time, its socket broke, it refused) is closed and forgotten, so
        the next borrow starts a fresh one: a server that hangs but lives would make every later launch of the
        worker wait SPAWN_TIMEOUT_S before starting the ordinary way. Its bots go with it, as with a per-run server
        that dies (each is told why); they are the failing run's, or another's whose exits it could not tell."""
        with self._lock:
            keys = [key for key, ours in self._servers.items() if ours is server]
            for key in keys:
                del self._servers[key]
            if not keys:  # another run's failed fork dropped it already
                return
            try:
                self.call(server.close())
            except Exception:  # the servers' loop did not get to it: the process goes anyway
                if server.pid is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(server.pid, signal.SIGKILL)

    def _kill(self) -> None:
        for server in list(self._servers.values()):
            if server.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(server.pid, signal.SIGKILL)

    def close(self) -> None:
        for server in list(self._servers.values()):
            with contextlib.suppress(Exception):
                self.call(server.close())
        self._servers.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class BorrowedForkServer:
    """A run's view of a shared fork server: what a ForkServer shows a run, minus owning the process."""

    def __init__(self, shared: SessionForkServers, server: ForkServer, bot: BotFile) -> None:
        self.shared = shared
        self.server = server
        self.commands = forkable(bot)  # this run's bot file decides which of its launches are forked
        self.pid = server.pid
        self.log_path = server.log_path

    @property
    def alive(self) -> bool:
        return self.server.alive

    @property
    def failure(self) -> str | None:
        return self.server.failure

    def serves(self, argv: list[str], env: Mapping[str, str]) -> bool:
        return self.alive and serves(argv, env, self.server._env, self.commands)

    async def spawn(self, argv: list[str], env: Mapping[str, str], cwd: Path,
                    timeout_s: float = fork_module.SPAWN_TIMEOUT_S, stdin_fd: int | None = None,
                    stderr_fd: int | None = None) -> ForkedProcess:
        try:
            proc, read_fd = await self.shared.acall(self.server.request(argv, env, cwd, timeout_s, stdin_fd,
                                                                        stderr_fd))
        except InfraError:
            await asyncio.to_thread(self.shared.drop, self.server)
            raise  # as from a per-run server: the launch starts the ordinary way
        except TimeoutError:  # the servers' loop itself did not answer
            await asyncio.to_thread(self.shared.drop, self.server)
            raise InfraError(f"shared fork server did not answer within {CALL_TIMEOUT_S:g}s") from None
        return await attach_stdout(proc, read_fd)

    async def stop(self) -> None:
        """The server stays for the next run; this run's bots were stopped by the run itself."""

    async def close(self) -> None:
        """As stop(): the session closes the server."""


@contextlib.contextmanager
def lend_to_runs(shared: SessionForkServers) -> Iterator[None]:
    """While inside, a run whose bot file asks for a fork server borrows the session's instead of starting one."""
    original = qa.run.start_fork_server

    async def borrow(options: Any, bot_file: BotFile, run_dir: Path, work: Path, out: Output) -> Any:
        if not options.fork_server or not uses_fork_server(bot_file):
            return None
        try:
            server = await asyncio.to_thread(shared.server_for, bot_file)
        except InfraError as exc:
            out.say(f"note: {exc}; bots start the ordinary way")
            return None
        out.say(f"fork server ready (pid {server.pid}, shared by this test session): the bot's processes are "
                "forked from it")
        return BorrowedForkServer(shared, server, bot_file)

    qa.run.start_fork_server = borrow  # type: ignore[assignment]
    try:
        yield
    finally:
        qa.run.start_fork_server = original  # type: ignore[assignment]
