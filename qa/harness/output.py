"""Progress lines for the person at the terminal, mirrored (redacted) into matrix-qa-output.log."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from qa.clock import utc_now_iso
from qa.report.redact import redact


class Output:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._log: TextIO | None = None
        self._pending: list[str] = []
        self._log_broken = False
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

    def say(self, message: str) -> None:
        message = self.redact(message)
        print(message, file=self._stream, flush=True)
        line = f"{utc_now_iso()} {message}\n"
        if self._log is None:
            if not self._log_broken:
                self._pending.append(line)
            return
        try:
            self._log.write(line)
            self._log.flush()
        except OSError as exc:  # e.g. no space left: the terminal still gets every line, the run goes on
            print(f"warning: matrix-qa-output.log is no longer written: {exc.strerror or exc}", file=self._stream)
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
            self._log_broken = True

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
