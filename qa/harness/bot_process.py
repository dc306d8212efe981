"""The bot under test as a child process: start, wait until ready by evidence, stop, kill, restart.

One seam for every bot: what to run comes from its bot file (qa.harness.botfile → qa.harness.launch). The
harness knows a bot only through what it can see:
- its output: stdout and stderr both go, redacted, to `bot.log`, and feed the `log` stream (readiness by regex);
- its trace, if it writes one, to $MATRIX_QA_TRACE_FILE: followed as the bot appends, fed to the `trace` stream
  and copied, redacted, into the artifacts;
- its exit: a bot that exits when nobody asked it to sets `died`, so a scenario fails at once with the exit
  code and the tail of its log instead of waiting out a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from qa import processes
from qa.harness import file_watch
from qa.harness.botfile import BotFile
from qa.harness.fork_server import ForkedProcess, ForkServer
from qa.harness.launch import Launch
from qa.kernel.clock import mono_ms
from qa.kernel.errors import InfraError
from qa.patterns import user_pattern
from qa.shared.redact import redact_lines
from qa.waiting import Stream, WaitTimeout

Proc = asyncio.subprocess.Process | ForkedProcess
_LIVE: set[Proc] = set()
# A trace file has no portable change notification in the standard library; reading new bytes this often
# costs a syscall and keeps trace-based waits within a few ms of the bot's write. Where inotify is there
# (qa.harness.file_watch) the follower wakes on the bot's writes instead, and looks anyway after TRACE_WATCH_S.
TRACE_POLL_S = 0.005
TRACE_WATCH_S = 0.1
TRACE_HEAD = 256
EXIT_POLL_S = 0.02
RECORD_EVERY_S = 0.5  # how often a live bot's descendants are recorded (a /proc scan, in a thread: ~1 ms)
LOG_TAIL_LINES = 15
LOG_CHUNK = 65536
TRACE_READ_CHUNK = 1 << 20  # read the trace's new part this much at a time
TRACE_LINE_MAX = 1 << 20  # a record longer than this is dropped, not held
_SKIPPING = b"\0skipping an overlong trace line\0"  # a JSON line never holds a raw NUL
_COPY_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps's, made once, not per record
LOG_LINES_KEPT = 20000
LOG_LINE_KEPT = 2000


def describe_record(record: dict[str, Any]) -> str:
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k not in ("t", "type"))
    return f"{record.get('type')} {fields}"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with code {code}"


def decoded_lines(raws: list[bytes]) -> list[str]:
    """Pure: `[raw.decode("utf-8", errors="replace") for raw in raws]` (lines without their newline), decoded as one
    text: a newline byte is never inside a UTF-8 sequence, so an invalid sequence ends at it either way."""
    return b"\n".join(raws).decode("utf-8", errors="replace").split("\n") if raws else []


class TraceFollower:
    """A bot's trace file, read as it grows: each new record is redacted into the scenario's copy and appended to
    `stream`. A trace the bot truncates or rewrites when it restarts is read again from the top."""

    def __init__(self, path: Path, copy: Path, secrets: list[str], stream: Stream[dict[str, Any]]) -> None:
        self.path = path
        self.copy = copy
        self.stream = stream
        self._secrets = secrets  # the run's live list, as the bot's
        self._offset = 0
        self._buffer = b""
        self._head = b""
        self._seen: tuple[int, int] = (-1, -1)
        self.ready_read_at: float | None = None  # when the last `ready` record was read (mono ms): boot timing
        self._watch: file_watch.DirWatch | None = None  # while `follow` runs (qa.harness.file_watch)

    async def follow(self, proc: Proc) -> None:
        """Read while the process runs: on each of its writes where inotify is there (and at least every
        TRACE_WATCH_S), else every TRACE_POLL_S."""
        # Opened before the first read: a write after any read is an event the next wait sees.
        watch = self._watch = file_watch.open_watch(self.path.parent)
        try:
            while proc.returncode is None:
                await self.read()
                if watch is not None:
                    await watch.changed(TRACE_WATCH_S)  # the bot's next write, or a bounded look anyway
                else:
                    await asyncio.sleep(TRACE_POLL_S)  # polling a file for new bytes (TRACE_POLL_S), not a sync point
        finally:
            self._watch = None
            if watch is not None:
                watch.close()

    def poke(self) -> None:
        """The followed process has exited: `follow` ends now, not at its next look."""
        if self._watch is not None:
            self._watch.poke()

    async def read(self) -> None:
        """Whatever the bot appended since the last read (nothing, most of the time)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        if (stat.st_size, stat.st_mtime_ns) == self._seen:
            return  # nothing new: the common case, every few milliseconds
        self._seen = (stat.st_size, stat.st_mtime_ns)
        size = stat.st_size
        if size < self._offset or (size and not self._same_start()):
            # The bot truncated (or rewrote) its trace on a restart: read it from the top again.
            self._offset, self._buffer, self._head = 0, b"", b""
        if size == self._offset:
            return
        # The new part in bounded chunks, however much the bot wrote since the last look.
        while self._offset < size:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read(min(size - self._offset, TRACE_READ_CHUNK))
            if not chunk:
                return
            if self._offset == 0:
                self._head = chunk[:TRACE_HEAD]
            self._offset += len(chunk)
            lines, self._buffer = trace_lines(self._buffer, chunk)
            await self._records(lines)

    async def _records(self, lines: list[bytes]) -> None:
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn or foreign line: the trace is best effort, the artifact keeps only records
            if isinstance(record, dict):
                records.append(record)
                if record.get("type") == "ready":
                    self.ready_read_at = mono_ms()
        if records:
            self.copy.parent.mkdir(parents=True, exist_ok=True)
            # One JSON line per record (a dump holds no raw newline), redacted as one text: one search per secret.
            lines = redact_lines([_COPY_JSON.encode(record) for record in records], self._secrets)
            with self.copy.open("a", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
            await self.stream.extend(records)

    def _same_start(self) -> bool:
        """Whether the file still begins as it did when we read its start (a rewrite of the same length
        would otherwise go unseen). Only checked once something was read."""
        if not self._head:
            return True
        with contextlib.suppress(OSError), self.path.open("rb") as fh:
            return fh.read(len(self._head)) == self._head
        return True


def trace_lines(buffer: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """Pure: the complete lines of `buffer + chunk` and what is left of a line still being written. A partial
    line past TRACE_LINE_MAX is no record anyone can use: dropped, up to its end (memory stays bounded)."""
    lines = (buffer + chunk).split(b"\n")
    rest = lines.pop()
    if buffer.startswith(_SKIPPING):
        if lines:  # the overlong line ended here: drop it
            lines.pop(0)
        else:
            return [], _SKIPPING
    if len(rest) > TRACE_LINE_MAX:
        rest = _SKIPPING
    return lines, rest


class BotUnderTest:
    """One process at a time; `trace` and `log` accumulate across restarts (their files do too)."""

    def __init__(self, bot: BotFile, launch: Launch, log_path: Path, trace_file: Path, trace_copy: Path,
                 secrets: list[str], fork_server: ForkServer | None = None) -> None:
        self.bot = bot
        self.launch = launch
        self.log_path = log_path
        self.trace_file = trace_file
        self.trace_copy = trace_copy
        self._secrets = secrets  # the run's live list: anything registered later is redacted too
        self.trace: Stream[dict[str, Any]] = Stream(describe_record)
        self.log: Stream[str] = Stream(str, keep=LOG_LINES_KEPT, pure=True)
        self.proc: Proc | None = None
        self.fork_server = fork_server
        self.forked = False  # this process came from the fork server (shown in the scenario's record)
        self.died = asyncio.Event()
        self.exit_description: str | None = None
        self._stopping = False
        self._ended: Proc | None = None  # the process whose stop ran to its end (its sweep included)
        self._tasks: list[asyncio.Task[None]] = []
        self.trace_reader = TraceFollower(trace_file, trace_copy, secrets, self.trace)
        self._started_at = 0.0
        self.spawned_at = 0.0
        self._log_mark = 0
        # Readiness `joined` is seen from outside the bot: the scenario hands in how to wait for it.
        self.joined: Callable[[float], Awaitable[None]] | None = None
        self.waiting_on: str | None = None  # what readiness `joined` is still waiting for

    @property
    def secrets(self) -> list[str]:
        """The run's live list of secrets, for anything written on the bot's behalf."""
        return self._secrets

    @property
    def name(self) -> str:
        return self.bot.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def has_trace(self) -> bool:
        return self.bot.has("trace")

    async def start(self) -> int:
        """Start the bot; returns the trace index where this run's records begin."""
        mark = len(self.trace.items)
        self._log_mark = self.log.count
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.launch.config_path is not None and self.launch.config_text is not None:
            self.launch.config_path.write_text(self.launch.config_text, encoding="utf-8")
            self.launch.config_path.chmod(0o600)  # it may hold the bot's password or token
        self._stopping = False
        self.died.clear()
        self.exit_description = None
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        self.proc = await self._forked() or await self._spawned()
        self.spawned_at = mono_ms()  # the harness has the pid: where a boot's time goes (the scenario's record)
        processes.tie(self._owner)
        _LIVE.add(self.proc)
        await self.trace.reopen()
        await self.log.reopen()
        self._tasks = [asyncio.create_task(self._pump_log(self.proc), name=f"bot-log:{self.name}"),
                       asyncio.create_task(self._follow_trace(self.proc), name=f"bot-trace:{self.name}")]
        self._tasks.append(asyncio.create_task(self._watch_exit(self.proc), name=f"bot-exit:{self.name}"))
        return mark

    async def _forked(self) -> ForkedProcess | None:
        """From the fork server when it serves this launch; None means start it the ordinary way."""
        server = self.fork_server
        self.forked = False
        if server is None or not server.serves(self.launch.argv, self.launch.env):
            return None
        try:
            proc = await server.spawn(self.launch.argv, self.launch.env, self.launch.cwd)
        except InfraError as exc:
            # The bot is still tested, only slower: the next lines of its log say how it was started.
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(f"matrix-qa: {exc}; starting the bot the ordinary way\n")
            return None
        self.forked = True
        return proc

    async def _spawned(self) -> asyncio.subprocess.Process:
        try:
            with processes.spawning():
                proc = await asyncio.create_subprocess_exec(
                    *self.launch.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL, env=self.launch.env, cwd=self.launch.cwd,
                    start_new_session=True, limit=2**20,
                )
                processes.own(proc.pid)
                return proc
        except OSError as exc:
            raise InfraError(f"bot {self.name} could not be started ({self.launch.argv[0]}): "
                             f"{exc.strerror or exc}; see {self.bot.source}") from None

    # --- output ------------------------------------------------------------------------------------------

    async def _pump_log(self, proc: Proc) -> None:
        """stdout+stderr to bot.log, whole (lines of any length), and to the `log` stream (kept short)."""
        assert proc.stdout is not None
        pending = b""
        with self.log_path.open("a", encoding="utf-8") as out:
            while chunk := await proc.stdout.read(LOG_CHUNK):
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > LOG_CHUNK:  # a line with no end in sight: write it out in pieces
                    lines.append(pending)
                    pending = b""
                await self._log_lines(out, lines)
            if pending:
                await self._log_lines(out, [pending])

    async def _log_lines(self, out: Any, raws: list[bytes]) -> None:
        """One chunk's lines: redacted and written (one write, one flush: a bot printing millions of short lines
        costs no syscall each), then offered to the waits (readiness among them) in order; the in-memory copy,
        for failure reports, keeps only the latest lines, whatever the bot prints."""
        lines = redact_lines(decoded_lines(raws), self._secrets)
        out.write("\n".join([*lines, ""]))  # each line and its newline; nothing for no lines
        out.flush()
        await self.log.extend([line[:LOG_LINE_KEPT] for line in lines])

    async def _watch_exit(self, proc: Proc) -> None:
        """The exit is the process's, not its stdout's: a helper it forked may hold stdout open long after.
        On Python 3.11 Process.wait() also waits for every pipe to close, so the exit code is polled: asyncio
        sets it as soon as the child is reaped."""
        loop = asyncio.get_running_loop()
        recorded_at = loop.time()
        while proc.returncode is None:
            await asyncio.sleep(EXIT_POLL_S)  # polling the reaped status, not a synchronization point
            if loop.time() - recorded_at >= RECORD_EVERY_S:
                # What runs below the bot now is its own, should it outlive the bot (qa.processes). A scan of all
                # /proc, so in a thread: on the loop it held up the other job's boot and messages under load.
                await asyncio.to_thread(processes.record_descendants, proc.pid, self._owner)
                recorded_at = loop.time()
        code = proc.returncode
        self.trace_reader.poke()  # the follower ends now, not at its next look
        _LIVE.discard(proc)
        self.exit_description = getattr(proc, "exit_note", None) or describe_exit(code)
        # What it traced just before it exited is evidence the running step may be waiting for: read it before
        # anyone hears of the exit, so the step sees the record rather than losing a race with the exit.
        await self.trace_reader.read()
        if not self._stopping:
            self.died.set()
        # Whatever it left behind in its process group goes with it, so the log reaches its end.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        pump = self._tasks[0] if self._tasks else None
        if pump is not None:
            await asyncio.wait({pump}, timeout=2.0)
        await self.log.close(f"bot process {self.exit_description}")

    async def _follow_trace(self, proc: Proc) -> None:
        await self.trace_reader.follow(proc)
        await self.trace_reader.read()  # what it wrote just before it exited
        await self.trace.close(f"bot process {describe_exit(proc.returncode)}")

    @property
    def _owner(self) -> str:
        """This bot among the run's, for the orphan sweep: its state dir, unique per bot and scenario."""
        return self.launch.env.get(processes.MARK_ENV, "")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        return [f"{self.log_path.name}: {line[:300]}" for line in self.log.items[-lines:]]

    # --- readiness ---------------------------------------------------------------------------------------

    async def wait_ready(self, timeout_s: float, start: int = 0) -> None:
        """Wait for the bot file's ready condition, the bot's exit, or the deadline, whichever comes first."""
        ready = self.bot.ready
        joined = self.joined
        if ready.kind == "trace":
            condition: Awaitable[Any] = self.trace.wait_for(lambda r: r.get("type") == "ready", timeout_s,
                                                             "a `ready` trace record", start, pure=True)
        elif ready.kind == "log":
            pattern = user_pattern(str(ready.log))  # bounded in time: a bot file's pattern is anyone's
            condition = self.log.wait_for(lambda line: pattern.search(line) is not None, timeout_s,
                                          f"a log line matching /{ready.log}/", self._log_mark)
        else:
            if joined is None:
                raise InfraError(f"bot {self.name}: readiness `joined` needs the scenario's rooms")
            condition = joined(timeout_s)
        waiter = asyncio.ensure_future(condition)
        exited = asyncio.ensure_future(self.died.wait())
        try:
            done, _ = await asyncio.wait({waiter, exited}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, exited):
                task.cancel()
            await asyncio.gather(waiter, exited, return_exceptions=True)
        failure = waiter.exception() if waiter in done else None
        if waiter in done and failure is None:
            return
        if failure is not None and not self.died.is_set():
            # A stream closes as its process exits, a moment before the exit is recorded: let that land.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.died.wait(), 2.0)
        elapsed = asyncio.get_running_loop().time() - self._started_at
        if self.died.is_set():
            cause = f"the bot {self.exit_description} after {elapsed:.1f}s, before {ready.describe()}"
        elif failure is not None and not isinstance(failure, WaitTimeout):
            raise failure
        else:
            cause = f"{ready.describe()} did not come within {timeout_s:g}s"
            if self.waiting_on:
                cause += f" (still waiting for {self.waiting_on})"
        tail = self.log_tail()
        raise InfraError(f"bot {self.name} did not become ready: {cause}; see {self.log_path}"
                         + ("\n  " + "\n  ".join(tail) if tail else " (it printed nothing)"))

    # --- stopping ----------------------------------------------------------------------------------------

    async def stop(self, timeout_s: float | None = None) -> int | None:
        """Graceful: SIGTERM, then SIGKILL if it does not exit in time. Safe to call when not running."""
        return await self._end(signal.SIGTERM, timeout_s if timeout_s is not None else self.bot.stop_timeout)

    async def kill(self) -> int | None:
        return await self._end(signal.SIGKILL, 10.0)

    async def _end(self, sig: int, timeout_s: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if self._ended is proc:  # stopped and swept already (the runner stops it before the look after its exit)
            return proc.returncode
        self._stopping = True
        if proc.returncode is None:
            await _last_look_then_signal(proc.pid, self._owner, sig)
            if not await _exited(proc, timeout_s):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await _exited(proc, 10.0)
        await _sweep(proc.pid, self._owner)
        tasks, self._tasks = self._tasks, []
        if tasks:
            # Bounded: a grandchild holding stdout open must not hang the teardown.
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        _LIVE.discard(proc)
        self._ended = proc
        return proc.returncode


async def _last_look_then_signal(pid: int, owner: str, sig: int) -> None:
    """Record the group's processes while they are still its own, then signal it. Frozen first (SIGSTOP), so
    nothing in it can fork, setsid and clear its environment between the look and the signal (it would be neither
    recorded nor in the group, and outlive the bot); continued after, so the signal is taken."""
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGSTOP)
        await asyncio.to_thread(processes.record_descendants, pid, owner)  # in a thread, as in _watch_exit
    finally:  # cancelled meanwhile or not, the signal goes, then the group runs on to take it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)


async def _sweep(pid: int, owner: str) -> None:
    """After a bot's end, what it left: its process group (a bot that forked helpers must not leave them
    behind); whatever escaped the group (a daemon that called setsid) but still carries the launch contract's
    state dir, `owner`; and whatever left both (its own session, a cleared environment) and came back to us, the
    subreaper: only this bot's orphans, not a sibling bot's nor anything else's (qa.processes). Both scan all of
    /proc (10-30 ms each on a loaded machine), so in a thread, off the loop the other jobs run on. A spawn that
    starts meanwhile is safe from the sweep: it is neither tied to this bot nor marked with its state dir."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    # One thread call for both: a thread runs to its end even when the awaiting task is cancelled, so a stop
    # cancelled between two calls can no longer skip the adoption sweep.
    await asyncio.to_thread(_sweep_sync, owner)


def _sweep_sync(owner: str) -> None:
    kill_stragglers(owner)
    processes.stop_adopted(owner)


async def _exited(proc: Proc, timeout_s: float) -> bool:
    """Whether the process exited within the time (see _watch_exit for why this polls)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while proc.returncode is None and loop.time() < deadline:
        await asyncio.sleep(EXIT_POLL_S)
    return proc.returncode is not None


def kill_stragglers(state_dir: str) -> list[int]:
    """SIGKILL every process whose environment names this bot's state dir (unique per scenario): the bot's
    descendants, however they detached. Linux /proc only; elsewhere nothing is found."""
    if not state_dir:
        return []
    needle = f"MATRIX_QA_STATE_DIR={state_dir}".encode() + b"\0"
    killed = []
    me = os.getpid()
    for name in processes.pids():
        pid = int(name)
        if pid == me:
            continue
        try:
            environ = processes.read_whole(f"/proc/{name}/environ") + b"\0"
        except OSError:
            continue
        if needle in environ:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def kill_all_bots() -> None:
    """Last resort for Ctrl-C and crashes: no bot outlives the harness."""
    for proc in list(_LIVE):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
