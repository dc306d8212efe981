"""The bot under test as a child process: start, wait for ready by evidence, stop, kill, restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from qa.errors import InfraError
from qa.waiting import Stream, WaitTimeout

_LIVE: set[asyncio.subprocess.Process] = set()


def describe_record(record: dict[str, Any]) -> str:
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k not in ("t", "type"))
    return f"{record.get('type')} {fields}"


class BotProcess:
    """One bot process at a time; `trace` accumulates records across restarts (the file does too)."""

    def __init__(self, config_path: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self._env = env or {}
        self.trace: Stream[dict[str, Any]] = Stream(describe_record)
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> int:
        """Start the bot; returns the trace index where this run's records begin."""
        mark = len(self.trace.items)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "qa.agent", "--config", str(self.config_path),
                stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **self._env}, start_new_session=True,
                limit=2**20,
            )
        _LIVE.add(self.proc)
        await self.trace.reopen()
        self._reader = asyncio.create_task(self._read(self.proc), name="bot-trace-reader")
        return mark

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                await self.trace.append(record)
        code = await proc.wait()
        _LIVE.discard(proc)
        await self.trace.close(f"bot process exited with code {code}")

    async def wait_ready(self, timeout_s: float, start: int = 0) -> dict[str, Any]:
        try:
            return await self.trace.wait_for(lambda r: r.get("type") == "ready", timeout_s, "bot ready", start)
        except WaitTimeout as exc:
            raise InfraError(f"bot did not become ready: {exc}; see {self.log_path}") from None

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """Graceful: SIGTERM, then SIGKILL if it does not exit in time. Safe to call when not running."""
        return await self._end(signal.SIGTERM, timeout_s)

    async def kill(self) -> int | None:
        return await self._end(signal.SIGKILL, 10.0)

    async def _end(self, sig: int, timeout_s: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._reader is not None:
            await self._reader
            self._reader = None
        _LIVE.discard(proc)
        return proc.returncode


def kill_all_bots() -> None:
    """Last resort for Ctrl-C and crashes: no bot outlives the harness."""
    for proc in list(_LIVE):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
