"""The contention probe: a second writer that tries a session's lock while the bot's model call is in flight.

It follows the bot's trace: on every `model.request.start` it asks the bot file's `lock_probe` process to try
that session's lock with a 25 ms timeout, and records how long it took or the lock error. With the narrow lock
that acquire is immediate; with the embedded agent's legacy `attempt` scope it fails with `session file locked
(timeout 25ms)` — the bug, measured.

Only the bot knows where its locks live and how to take one without ever taking it over, so the second writer is
the bot's own program (docs/bot-file.md, `lock_probe`): started once per scenario with the bot's environment and
placeholders (forked from the fork server when the bot file has one), it writes `{"ready": true}`, then reads
one request per line on stdin, `{"session": S, "timeoutMs": 25}`, and answers each with one line on stdout:
`{"session", "t", "acquiredElapsedMs"}`, `{"session", "t", "timeoutElapsedMs", "error"}` (with an optional
`heldSinceT`: when the hold that kept it out was taken), or `{"session", "skipped": why}` when there is nothing
to probe. `t` and the elapsed time are measured inside the probe, on the
shared monotonic clock, so its start-up and the pipe are not in the figure. End of file on stdin ends it.

A bot that claims capability `lock` but names no `lock_probe` gets one probe entry per scenario saying NOT
CHECKED, never a silent pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
from pathlib import Path
from typing import Any, NamedTuple

from qa import processes
from qa.harness.bot_process import BotUnderTest
from qa.harness.fork_server import ForkedProcess, ForkServer
from qa.harness.launch import fill
from qa.kernel.errors import InfraError
from qa.kernel.trace import MODEL_REQUEST_START
from qa.report.lock_evidence import PROBE_NOT_CHECKED
from qa.waiting import WaitTimeout

PROBE_TIMEOUT_MS = 25
READY_TIMEOUT_S = 30.0  # an interpreter's start on a loaded 2-core machine, when it is not forked
ANSWER_TIMEOUT_S = 10.0  # a 25 ms try: anything near this is a probe that hangs
CLOSE_TIMEOUT_S = 1.0
LINE_LIMIT = 1 << 16
NOT_CHECKED = (f"{PROBE_NOT_CHECKED}: the bot file names no lock_probe, so no second writer tried the "
               "session lock during model I/O (docs/bot-file.md)")
_ELAPSED = ("acquiredElapsedMs", "timeoutElapsedMs")


class ProbeFailed(Exception):
    """The probe process could not be started, or did not answer as docs/bot-file.md says."""


def probe_result(answer: Any, session: str) -> dict[str, Any] | None:
    """Pure: the result record of one answer line; None when the probe had nothing to probe. ProbeFailed names
    what is wrong with anything else."""
    if not isinstance(answer, dict):
        raise ProbeFailed(f"answered {_shown(answer)}, not a JSON object")
    if "skipped" in answer:
        return None
    t = answer.get("t")
    given = [key for key in _ELAPSED if key in answer]
    if not _ms(t) or len(given) != 1 or not _ms(answer[given[0]]):
        raise ProbeFailed(f"answered {_shown(answer)}: expected `t` and exactly one of {' or '.join(_ELAPSED)}, "
                          "as numbers of ms")
    result: dict[str, Any] = {"session": session, "t": float(t), given[0]: float(answer[given[0]])}
    if given[0] == "timeoutElapsedMs":
        result["error"] = str(answer.get("error") or "timed out")
        # Optional: when the hold that kept the probe out was taken. Without it the harness cannot tell a hold
        # taken after a model request ended (a reply write) from one held across it, and says so.
        if answer.get("heldSinceT") is not None:  # null: a JSON writer's way of leaving it out
            if not _ms(answer["heldSinceT"]):
                raise ProbeFailed(f"answered {_shown(answer)}: `heldSinceT` must be a number of ms")
            result["heldSinceT"] = float(answer["heldSinceT"])
    return result


def _ms(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "…"


class ProbeProcess:
    """One scenario's lock probe: the bot file's `lock_probe` command, asked one session at a time."""

    def __init__(self, proc: asyncio.subprocess.Process | ForkedProcess, stdin_fd: int, log_path: Path) -> None:
        self.proc = proc
        self._stdin = stdin_fd
        self.log_path = log_path
        self._closed = False

    @classmethod
    async def start(cls, bot: BotUnderTest, fork_server: ForkServer | None) -> ProbeProcess:
        assert bot.bot.lock_probe is not None
        launch = bot.launch
        argv = [fill(arg, launch.values) for arg in bot.bot.lock_probe]
        log_path = bot.log_path.with_name("lock-probe.log")
        read_fd, write_fd = os.pipe()
        try:
            with log_path.open("ab") as log:
                proc = await _start(argv, launch.env, launch.cwd, read_fd, log.fileno(), fork_server)
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        probe = cls(proc, write_fd, log_path)
        try:
            line = await probe._line(READY_TIMEOUT_S, "ready line")
            if line != {"ready": True}:
                raise ProbeFailed(f"wrote {_shown(line)} first, not {{\"ready\": true}}")
        except BaseException:
            await probe.close()
            raise
        return probe

    async def ask(self, session: str) -> dict[str, Any] | None:
        request = json.dumps({"session": session, "timeoutMs": PROBE_TIMEOUT_MS}) + "\n"
        try:
            os.write(self._stdin, request.encode())
        except OSError as exc:
            raise ProbeFailed(f"did not take a request: {exc.strerror or exc}") from None
        return probe_result(await self._line(ANSWER_TIMEOUT_S, "answer"), session)

    async def _line(self, timeout_s: float, what: str) -> Any:
        assert self.proc.stdout is not None
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for returns an answer that comes in the same
        # turn as a cancellation and drops the cancellation, and stop_prober's cancel is then lost (test_lock_probe).
        try:
            async with asyncio.timeout(timeout_s):
                raw = await self.proc.stdout.readline()
        except TimeoutError:
            raise ProbeFailed(f"gave no {what} within {timeout_s:g}s; see {self.log_path}") from None
        except ValueError:  # a line past the reader's limit
            raise ProbeFailed(f"wrote a line of more than {LINE_LIMIT} bytes") from None
        if not raw:
            raise ProbeFailed(f"exited before its {what}; see {self.log_path}")
        try:
            return json.loads(raw)
        except ValueError:
            raise ProbeFailed(f"wrote {_shown(raw.decode(errors='replace').strip())}, not JSON") from None

    async def close(self) -> None:
        """End of file on its stdin ends it; SIGKILL when it does not go in time. Bounded, and once: the prober's
        own end and stop_prober may both ask. The kill happens even when a wait here is cancelled."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self._stdin)
        assert self.proc.stdout is not None
        try:
            with contextlib.suppress(TimeoutError, ValueError):  # it did not go by itself: SIGKILL below
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.proc.stdout.read()
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of it, and anything it started
        if isinstance(self.proc, asyncio.subprocess.Process):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.proc.wait()
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size == 0:
                self.log_path.unlink()


async def _start(argv: list[str], env: dict[str, str], cwd: Path, stdin_fd: int, stderr_fd: int,
                 fork_server: ForkServer | None) -> asyncio.subprocess.Process | ForkedProcess:
    if fork_server is not None and fork_server.serves(argv, env):
        with contextlib.suppress(InfraError):  # it still probes, started the ordinary way
            return await fork_server.spawn(argv, env, cwd, stdin_fd=stdin_fd, stderr_fd=stderr_fd)
    try:
        with processes.spawning():
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=stdin_fd, stdout=asyncio.subprocess.PIPE, stderr=stderr_fd, env=env, cwd=cwd,
                start_new_session=True, limit=LINE_LIMIT)
            processes.own(proc.pid)
            return proc
    except OSError as exc:
        raise ProbeFailed(f"could not be started ({argv[0]}): {exc.strerror or exc}") from None


class Prober(NamedTuple):
    """A running prober: the task that follows the trace, and the probe process it asks."""

    task: asyncio.Task[None]
    probe: ProbeProcess


async def start_prober(bot: BotUnderTest, results: list[dict[str, Any]],
                       fork_server: ForkServer | None) -> Prober | None:
    """For a bot that claims `lock`: its probe, started and ready, followed by a task that probes every model
    request until `stop_prober`. None (with a NOT CHECKED entry in `results`) when there is no probe to run."""
    if bot.bot.lock_probe is None:
        results.append({"session": "-", "error": NOT_CHECKED})
        return None
    try:
        probe = await ProbeProcess.start(bot, fork_server)
    except ProbeFailed as exc:
        results.append({"session": "-", "error": f"{PROBE_NOT_CHECKED}: the lock_probe {exc}"})
        return None
    return Prober(asyncio.create_task(follow_and_probe(bot, probe, results), name=f"lock-probe:{bot.name}"), probe)


async def follow_and_probe(bot: BotUnderTest, probe: ProbeProcess, results: list[dict[str, Any]]) -> None:
    """Run until cancelled: one probe per model request the bot starts. The probe process goes with it."""
    try:
        index = 0
        while True:
            try:
                record = await bot.trace.wait_for(
                    lambda r: r.get("type") == MODEL_REQUEST_START, 3600, "model request", start=index, pure=True
                )
            except WaitTimeout:
                # The bot exited (restart steps do that): carry on once the next run of the same bot starts.
                index = len(bot.trace.items)
                await bot.trace.wait_open()  # cancellable: stop_prober ends it when the scenario ends
                continue
            index = bot.trace.items.index(record) + 1
            result = await probe.ask(str(record.get("session")))
            if result is not None:
                results.append(result)
    finally:
        await probe.close()


STOP_TIMEOUT_S = 5.0


async def stop_prober(prober: Prober) -> str | None:
    """Stop the prober; returns what went wrong inside it, if anything (a probe must never fail a teardown,
    nor hang it: the wait for it is bounded). The probe is closed here too: a task cancelled before its first
    step never runs its own `finally`, and a stop that is itself cancelled must not leave the process behind."""
    task = prober.task
    task.cancel()
    try:
        done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    finally:
        await prober.probe.close()
    if not done:
        return f"contention probe did not stop within {STOP_TIMEOUT_S:g}s of being cancelled; left behind"
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is None or isinstance(exc, WaitTimeout):
        return None
    if isinstance(exc, ProbeFailed):
        return f"contention probe failed: the lock_probe {exc}"
    return f"contention probe failed: {type(exc).__name__}: {exc}"
