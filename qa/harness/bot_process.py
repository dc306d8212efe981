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
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from qa.errors import InfraError
from qa.harness.botfile import BotFile
from qa.harness.launch import Launch
from qa.report.redact import redact
from qa.waiting import Stream, WaitTimeout

_LIVE: set[asyncio.subprocess.Process] = set()
# A trace file has no portable change notification in the standard library; reading new bytes this often
# costs a syscall and keeps trace-based waits within a few ms of the bot's write.
TRACE_POLL_S = 0.005
LOG_TAIL_LINES = 15


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


class BotUnderTest:
    """One process at a time; `trace` and `log` accumulate across restarts (their files do too)."""

    def __init__(self, bot: BotFile, launch: Launch, log_path: Path, trace_file: Path, trace_copy: Path,
                 secrets: list[str]) -> None:
        self.bot = bot
        self.launch = launch
        self.log_path = log_path
        self.trace_file = trace_file
        self.trace_copy = trace_copy
        self._secrets = secrets  # the run's live list: anything registered later is redacted too
        self.trace: Stream[dict[str, Any]] = Stream(describe_record)
        self.log: Stream[str] = Stream(str)
        self.proc: asyncio.subprocess.Process | None = None
        self.died = asyncio.Event()
        self.exit_description: str | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._trace_offset = 0
        self._trace_buffer = b""
        self._started_at = 0.0
        self._log_mark = 0
        # Readiness `joined` is seen from outside the bot: the scenario hands in how to wait for it.
        self.joined: Callable[[float], Awaitable[None]] | None = None

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
        self._log_mark = len(self.log.items)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.launch.config_path is not None and self.launch.config_text is not None:
            self.launch.config_path.write_text(self.launch.config_text, encoding="utf-8")
            self.launch.config_path.chmod(0o600)  # it may hold the bot's password or token
        self._stopping = False
        self.died.clear()
        self.exit_description = None
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.launch.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, env=self.launch.env, cwd=self.launch.cwd,
                start_new_session=True, limit=2**20,
            )
        except OSError as exc:
            raise InfraError(f"bot {self.name} could not be started ({self.launch.argv[0]}): "
                             f"{exc.strerror or exc}; see {self.bot.source}") from None
        _LIVE.add(self.proc)
        await self.trace.reopen()
        await self.log.reopen()
        self._tasks = [asyncio.create_task(self._pump_log(self.proc), name=f"bot-log:{self.name}"),
                       asyncio.create_task(self._follow_trace(self.proc), name=f"bot-trace:{self.name}")]
        return mark

    # --- output ------------------------------------------------------------------------------------------

    async def _pump_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with self.log_path.open("a", encoding="utf-8") as out:
            while True:
                try:
                    raw = await proc.stdout.readline()
                except ValueError:  # a line longer than the limit: keep what there is, carry on
                    raw = await proc.stdout.read(2**20)
                if not raw:
                    break
                line = redact(raw.decode("utf-8", errors="replace").rstrip("\n"), self._secrets)
                out.write(line + "\n")
                out.flush()
                await self.log.append(line)
        code = await proc.wait()
        _LIVE.discard(proc)
        self.exit_description = describe_exit(code)
        if not self._stopping:
            self.died.set()
        await self.log.close(f"bot process {self.exit_description}")

    async def _follow_trace(self, proc: asyncio.subprocess.Process) -> None:
        while proc.returncode is None:
            await self._read_trace()
            await asyncio.sleep(TRACE_POLL_S)  # polling a file for new bytes (see TRACE_POLL_S), not a sync point
        await self._read_trace()  # what it wrote just before it exited
        await self.trace.close(f"bot process {describe_exit(proc.returncode)}")

    async def _read_trace(self) -> None:
        try:
            size = self.trace_file.stat().st_size
        except FileNotFoundError:
            return
        if size < self._trace_offset:  # the bot truncated its trace on a restart: read it from the top again
            self._trace_offset, self._trace_buffer = 0, b""
        if size == self._trace_offset:
            return
        with self.trace_file.open("rb") as fh:
            fh.seek(self._trace_offset)
            chunk = fh.read(size - self._trace_offset)
        self._trace_offset += len(chunk)
        *lines, self._trace_buffer = (self._trace_buffer + chunk).split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn or foreign line: the trace is best effort, the artifact keeps only records
            if isinstance(record, dict):
                records.append(record)
        if records:
            self.trace_copy.parent.mkdir(parents=True, exist_ok=True)
            with self.trace_copy.open("a", encoding="utf-8") as out:
                for record in records:
                    out.write(redact(json.dumps(record, ensure_ascii=False, separators=(",", ":")), self._secrets)
                              + "\n")
            for record in records:
                await self.trace.append(record)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        return [f"bot.log: {line}" for line in self.log.items[-lines:]]

    # --- readiness ---------------------------------------------------------------------------------------

    async def wait_ready(self, timeout_s: float, start: int = 0) -> None:
        """Wait for the bot file's ready condition, the bot's exit, or the deadline, whichever comes first."""
        ready = self.bot.ready
        joined = self.joined
        if ready.kind == "trace":
            condition: Awaitable[Any] = self.trace.wait_for(lambda r: r.get("type") == "ready", timeout_s,
                                                             "a `ready` trace record", start)
        elif ready.kind == "log":
            pattern = re.compile(str(ready.log))
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
            cause = f"no {ready.describe()} within {timeout_s:g}s"
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
        self._stopping = True
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10.0)
        # The process group too: a bot that forked helpers must not leave them behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        tasks, self._tasks = self._tasks, []
        if tasks:
            # Bounded: a grandchild holding stdout open must not hang the teardown.
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        _LIVE.discard(proc)
        return proc.returncode


def kill_all_bots() -> None:
    """Last resort for Ctrl-C and crashes: no bot outlives the harness."""
    for proc in list(_LIVE):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
