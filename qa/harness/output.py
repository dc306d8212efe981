"""Progress lines for the person at the terminal, mirrored (redacted) into matrix-qa-output.log.

With progress="live" (a person at a terminal, see qa.harness.progress.choose_mode) the same lines are printed
above a live block of running and finished scenarios; the log and every line's text stay the same.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from qa.kernel.clock import utc_now_iso
from qa.kernel.terminal import terminal_safe
from qa.shared.redact import redact

if TYPE_CHECKING:
    from qa.harness.progress import LiveProgress


class Output:
    def __init__(self, stream: TextIO = sys.stderr, progress: Literal["live", "plain"] = "plain") -> None:
        self._stream = stream
        self._progress = progress
        self._live: LiveProgress | None = None
        self._log: TextIO | None = None
        self._pending: list[str] = []
        self._log_broken = False
        self._terminal_gone = False
        # Everything appended here is redacted from the next line on; a run shares this list as its own.
        self.secrets: list[str] = []

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self.secrets.extend(secrets)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def open_log(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log = path.open("a", encoding="utf-8")
        for line in self._pending:
            self._log.write(line)
        self._pending.clear()
        self._log.flush()

    @property
    def progress(self) -> str:
        return self._progress

    # Scenario progress for the live block; without one (plain output) these do nothing.
    def progress_total(self, total: int) -> None:
        if self._progress != "live" or self._live is not None:
            return
        try:
            from qa.harness.progress import LiveProgress

            self._live = LiveProgress(self._stream, self.redact)
            self._live.set_total(total)
        except Exception as exc:  # a terminal rich cannot drive: the plain lines are all anyone needs
            self._live = None
            self._progress = "plain"
            self._to_terminal(f"note: live progress is off ({type(exc).__name__}: {exc})")

    def scenario_started(self, scenario: str) -> None:
        if self._live is not None:
            self._live.started(scenario)

    def scenario_finished(self, scenario: str, status: str, seconds: float) -> None:
        if self._live is not None:
            self._live.done(scenario, status, seconds)

    def stop_progress(self) -> None:
        """Idempotent; the terminal gets its cursor back and the final lines print plain."""
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(Exception):
                live.stop()

    def say(self, message: str) -> None:
        message = terminal_safe(self.redact(message))
        if self._live is not None:
            try:
                self._live.print(message)
            except OSError as exc:
                self._terminal_lost(exc)
        else:
            self._to_terminal(message)
        self._to_log(message)

    def _to_terminal(self, message: str) -> None:
        if self._terminal_gone:
            return
        try:
            print(message, file=self._stream, flush=True)
        except OSError as exc:
            self._terminal_lost(exc)

    def _terminal_lost(self, exc: OSError) -> None:
        """The reader of the progress lines went away (`matrix-qa run | head`, a closed terminal, a dead `tee`):
        the lines are a mirror of matrix-qa-output.log and the reports are the record, so the run goes on to its
        own verdict and exit code instead of dying of a write error half-way (a run once stopped with every
        scenario skipped and exited 1 where its summary said 2)."""
        self._terminal_gone = True
        self._live = None
        # Whatever else writes to this stream later (a final line, the interpreter's flush at exit) must not fail
        # either: nobody reads it any more, so it is pointed at /dev/null.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
            self._stream.flush()
        self._to_log(f"note: the terminal went away ({exc.strerror or type(exc).__name__}): progress goes on in "
                     "this log only; the run keeps its verdict and exit code")

    def _to_log(self, message: str) -> None:
        line = f"{utc_now_iso()} {message}\n"
        if self._log is None:
            if not self._log_broken:
                self._pending.append(line)
            return
        try:
            self._log.write(line)
            self._log.flush()
        except OSError as exc:  # e.g. no space left: the terminal still gets every line, the run goes on
            self._to_terminal(f"warning: matrix-qa-output.log is no longer written: {exc.strerror or exc}")
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
            self._log_broken = True

    def close(self) -> None:
        self.stop_progress()
        if self._log is not None:
            self._log.close()
            self._log = None
