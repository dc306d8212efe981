"""Chapter of a run (qa.run) that runs beside all the others: how it ends early and how it cleans up.

A first SIGINT/SIGTERM/SIGHUP, the run's --timeout passing or the homeserver dying stop the run the same way:
the scenarios are cancelled, their own bounded teardowns finish, every process is stopped and the record is
written with what finished. A second signal stops at once. `kill_everything` is the last resort: no bot, fork
server, homeserver or container of this run outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from qa import processes
from qa.harness.bot_process import kill_all_bots
from qa.harness.fork_server import kill_all_fork_servers
from qa.harness.output import Output
from qa.homeserver import registry
from qa.homeserver.base import Homeserver
from qa.kernel.errors import InfraError
from qa.report.summary import Deadline, ScenarioResult
from qa.report.verdict import signal_exit_code
from qa.run.homeservers import death_message, failed_boot, first_trouble, label
from qa.run.options import parse_timeout
from qa.waiting import run_unless

SHUTDOWN_TIMEOUT_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Lifecycle:
    def __init__(self, out: Output, interrupted: list[ScenarioResult], write_record: Callable[[], object]) -> None:
        self.out = out
        self._interrupted = interrupted  # scenarios cut short: a second signal says so in their details
        self._write_record = write_record
        # Set when a signal, the deadline or a dying homeserver ends the run early: why, and (signals) the exit code.
        self.reason: str | None = None
        self.code: int | None = None
        self.deadline: Deadline | None = None
        self.tearing_down = False
        self._main: asyncio.Task[Any] | None = None
        self._work: Path | None = None
        self._signals: _SignalHandlers | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.dead: Homeserver | None = None  # the homeserver whose death ended the run
        self._trouble: BaseException | None = None

    def begin(self, work: Path, timeout: str | None) -> None:
        """From here on the current task is the run: signals and the deadline cancel it."""
        self._work = work
        self._main = asyncio.current_task()
        self._signals = _SignalHandlers(self.on_signal)
        if timeout is not None:
            seconds = parse_timeout(timeout)
            self.deadline = Deadline(timeout=timeout, timeoutMs=seconds * 1000)
            self._timer = asyncio.get_running_loop().call_later(seconds, self.on_deadline)

    def end(self) -> None:
        if self._signals is not None:
            self._signals.remove()
        if self._timer is not None:
            self._timer.cancel()

    def on_signal(self, signum: int) -> None:
        """First SIGINT/SIGTERM/SIGHUP: stop the run (every process stopped, partial results written, exit
        128 + signal). A second one: stop now, without the record."""
        name = signal.Signals(signum).name
        if self.code is not None:
            # Second signal (CI sends SIGINT, then SIGTERM a few seconds later): no more waiting on anyone.
            # Kill everything, remove the secrets-holding temp dir, write what is known, and go.
            kill_everything()
            if self._work is not None:
                shutil.rmtree(self._work, ignore_errors=True)
            with contextlib.suppress(Exception):
                self.reason = f"{self.reason}, then {name}: stopped at once"
                for result in self._interrupted:  # cut short a second time: their teardown never finished
                    result.details += f"; then {name}: stopped at once"
                self._write_record()
                self.out.close()
            os._exit(self.code)
        self.code = signal_exit_code(signum)
        self.reason = f"{name} received"
        if not self.tearing_down and self._main is not None:
            self._main.cancel()

    def on_deadline(self) -> None:
        """--timeout passed: the run stops the way a signal stops it (every process stopped, the record written
        with what finished), but its verdict is an error (exit 2), with the deadline named."""
        if self.tearing_down or self.reason is not None or self._main is None or self.deadline is None:
            return
        self.deadline.reached = True
        self.reason = f"the run's --timeout of {self.deadline.timeout} passed"
        self.out.say(f"deadline: {self.reason}; stopping every process")
        self._main.cancel()

    async def while_homeservers_live(self, homeservers: Sequence[Homeserver], work: Awaitable[None],
                                     boots: Sequence[asyncio.Task[float]] = (), *, spare: bool = False) -> None:
        """Run `work`, but a homeserver that dies under it (any of the run's, qa.run.homeservers), or one that
        fails to boot (`boots`: those booting beside the scenarios), ends the run at once as an infrastructure
        error naming it and its log, instead of every step timing out without a word about why. The scenarios of
        the other homeservers are stopped too: the run's verdict is an error now. `spare` (`--homeservers auto`):
        a failed boot is no trouble (qa.run.homeservers.boot_others said so; nothing ran there), a death still is."""
        count = len(homeservers)
        if spare:
            boots = ()
        # A signal cancels us here; run_unless then cancels the scenarios and lets their own (bounded)
        # teardowns finish before the run writes its record.
        async def trouble() -> None:
            index, why = await first_trouble(homeservers, boots)
            self.dead = homeservers[index]
            # Said before the scenarios are cancelled, so each one records why it was cut short.
            name = "the homeserver" if count == 1 else f"the {label(index, count)}"
            if isinstance(why, BaseException):
                self.reason = f"{name} failed to boot"
                self._trouble = why
            else:
                self.reason = f"{name} died: {why}"
                self._trouble = InfraError(death_message(homeservers[index], index, count))

        stopped, task = await run_unless(work, trouble(), grace_s=SHUTDOWN_TIMEOUT_S)
        if not stopped:
            task.result()
            if (failed := failed_boot(boots)) is not None:  # failed as the last scenario ended: still the verdict
                raise failed
            return
        self.out.say(f"error: {self.reason}")
        assert self._trouble is not None
        raise self._trouble

    async def shutdown(self, *components: Any) -> None:
        """Every process this run started is stopped, within a deadline, whatever state the run is in. The
        components stop side by side: none waits on another (the homeserver's exit, the fork server's), so the
        run's end is the slowest stop, not their sum."""
        self.tearing_down = True
        kill_all_bots()
        stops = [asyncio.ensure_future(self._stop(c)) for c in components if c is not None]
        try:
            if stops:
                await asyncio.wait(stops)  # each bounded by its own deadline; never cancels a stop half-way
        finally:
            kill_everything()

    async def _stop(self, component: Any) -> None:
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await component.stop()
        except (Exception, asyncio.CancelledError) as exc:
            self.out.say(f"warning: stopping {type(component).__name__} failed: {type(exc).__name__} {exc}")


def kill_everything() -> None:
    """Last resort: no bot, fork server, homeserver or container of this run outlives it."""
    kill_all_bots()
    kill_all_fork_servers()
    registry.last_resort()
    processes.stop_adopted(force=True)  # what escaped them all came back to us (qa.processes)
    processes.untie_all()


class LibraryLogs:
    """The test users' matrix-nio clients log retries and timeouts; that belongs in a file, not the terminal. So does
    why a homeserver's Synapse was spawned rather than forked from the early interpreter (a slower boot)."""

    NAMES = ("nio", "aiohttp", "asyncio", "qa.homeserver")

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # Each logger's level and propagation as the run found them, given back by close(): a process that runs
        # again (a pytest session, an in-process caller) must not keep these loggers cut off from its own handlers.
        self._before: dict[str, tuple[int, bool]] = {}
        for name in self.NAMES:
            logger = logging.getLogger(name)
            self._before[name] = (logger.level, logger.propagate)
            logger.addHandler(self.handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False

    def close(self) -> None:
        for name in self.NAMES:
            logger = logging.getLogger(name)
            logger.removeHandler(self.handler)
            level, logger.propagate = self._before[name]
            logger.setLevel(level)  # through setLevel: it clears logging's cached isEnabledFor answers
        self.handler.close()


class _SignalHandlers:
    """SIGINT, SIGTERM (what CI sends on cancel) and SIGHUP all end a run the same way (Lifecycle.on_signal)."""

    def __init__(self, handler: Callable[[int], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []
        for sig in STOP_SIGNALS:
            try:
                self._loop.add_signal_handler(sig, handler, int(sig))
                self._installed.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests): nothing to do
                pass

    def remove(self) -> None:
        for sig in self._installed:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(sig)
