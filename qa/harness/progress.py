"""Live progress at a terminal: which scenarios run now, how many finished, how many failed.

The pure parts (ProgressState, render_lines, choose_mode) are unit-tested; LiveProgress draws them with rich at
the bottom of the terminal while Output.say prints the usual lines above it. A live display is only for a person
at a terminal: under CI, piped into a file or a `tee`, or on a dumb terminal the run prints plain lines, exactly
as it always did (tests and scripts parse some of them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TextIO

Mode = Literal["auto", "live", "plain"]
MODES: tuple[Mode, ...] = ("auto", "live", "plain")
SHOWN_RUNNING = 8
SHOWN_FINISHED = 4
STATUS_MARK = {"pass": "✔", "fail": "✘", "skip": "-", "interrupted": "■"}


def choose_mode(requested: Mode, is_tty: bool, env: Mapping[str, str]) -> Literal["live", "plain"]:
    """`auto`: live only for a person at a real terminal. CI (env CI / GITHUB_ACTIONS set, whatever the value:
    some runners give a pseudo-terminal) and TERM=dumb get plain lines. `live`/`plain` are the user's word."""
    if requested != "auto":
        return requested
    if env.get("CI") or env.get("GITHUB_ACTIONS") or env.get("TERM") == "dumb" or not is_tty:
        return "plain"
    return "live"


@dataclass
class ProgressState:
    total: int = 0
    running: dict[str, float] = field(default_factory=dict)  # id -> monotonic start, in start order
    finished: list[tuple[str, str, float]] = field(default_factory=list)  # (id, status, seconds)

    def started(self, scenario: str, now: float) -> None:
        self.running[scenario] = now

    def done(self, scenario: str, status: str, seconds: float) -> None:
        self.running.pop(scenario, None)
        self.finished.append((scenario, status, seconds))


def render_lines(state: ProgressState, now: float, width: int = 100) -> list[str]:
    """The live block: a headline with the counts, the running scenarios (longest-running first is the one to
    watch), the last few finished. Lines never exceed `width`, so the block cannot wrap and smear."""
    counts: dict[str, int] = {}
    for _, status, _ in state.finished:
        counts[status] = counts.get(status, 0) + 1
    parts = [f"{len(state.finished)}/{state.total} finished", f"{len(state.running)} running"]
    parts += [f"{n} {status}" for status, n in sorted(counts.items()) if status != "pass"]
    lines = ["matrix-qa: " + " · ".join(parts)]
    running = sorted(state.running.items(), key=lambda item: item[1])
    for scenario, began in running[:SHOWN_RUNNING]:
        lines.append(f"  ▶ {scenario}  {max(0.0, now - began):.1f}s")
    if len(running) > SHOWN_RUNNING:
        lines.append(f"  … {len(running) - SHOWN_RUNNING} more running")
    for scenario, status, seconds in state.finished[-SHOWN_FINISHED:]:
        lines.append(f"  {STATUS_MARK.get(status, '?')} {status.upper():5} {scenario}  {seconds:.2f}s")
    return [line if len(line) <= width else line[: max(1, width - 1)] + "…" for line in lines]


class LiveProgress:
    """rich's Live region under the printed lines. Every line it shows goes through `redact` first.

    rich refreshes from a thread of its own, so the state is read and changed under a lock. `stop` is idempotent
    and is called from Output.close on every way out of a run (normal end, error, first and second signal)."""

    def __init__(self, stream: TextIO, redact: Callable[[str], str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state = ProgressState()
        self._lock = threading.Lock()
        self._redact = redact
        self.console = Console(file=stream, force_terminal=True, highlight=False, markup=False, emoji=False,
                               soft_wrap=True)
        # transient: the live block disappears when the run ends, so the final lines read as they always did.
        self._live = Live(get_renderable=self._renderable, console=self.console, refresh_per_second=4,
                          transient=True, redirect_stdout=True, redirect_stderr=True)
        self._running = False

    def _renderable(self) -> object:
        from rich.text import Text

        with self._lock:
            lines = render_lines(self.state, time.monotonic(), max(20, self.console.width - 1))
        return Text("\n".join(self._redact(line) for line in lines), no_wrap=True, overflow="ellipsis")

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._live.start()

    def print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def set_total(self, total: int) -> None:
        with self._lock:
            self.state.total = total
        self.start()
        self._refresh()

    def started(self, scenario: str) -> None:
        with self._lock:
            self.state.started(scenario, time.monotonic())
        self._refresh()

    def done(self, scenario: str, status: str, seconds: float) -> None:
        with self._lock:
            self.state.done(scenario, status, seconds)
        self._refresh()

    def _refresh(self) -> None:
        # Lines printed between two timed refreshes redraw the block as last rendered: render the change now.
        if self._running:
            self._live.refresh()

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._live.stop()
