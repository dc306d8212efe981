"""Live progress at a terminal: when it is on, what it shows, and that it always lets go of the terminal."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qa.harness.output import Output
from qa.harness.progress import ProgressState, choose_mode, render_lines

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("requested", "tty", "env", "mode"),
    [
        ("auto", True, {}, "live"),
        ("auto", False, {}, "plain"),  # piped, tee'd, redirected to a file
        ("auto", True, {"CI": "true"}, "plain"),
        ("auto", True, {"GITHUB_ACTIONS": "true"}, "plain"),  # some runners give a pseudo-terminal
        ("auto", True, {"TERM": "dumb"}, "plain"),
        ("live", False, {"CI": "1"}, "live"),  # the user's word wins
        ("plain", True, {}, "plain"),
    ],
)
def test_live_only_for_a_person_at_a_terminal(requested: str, tty: bool, env: dict[str, str], mode: str) -> None:
    assert choose_mode(requested, tty, env) == mode  # type: ignore[arg-type]


def test_lines_show_counts_running_longest_first_and_the_last_finished() -> None:
    state = ProgressState(total=5)
    state.started("canary", 0.0)
    state.done("canary", "pass", 1.234)
    state.started("slow", 10.0)
    state.started("quick", 12.0)
    state.started("broken", 11.0)
    state.done("broken", "fail", 0.5)
    assert render_lines(state, now=14.0) == [
        "matrix-qa: 2/5 finished · 2 running · 1 fail",
        "  ▶ slow  4.0s",
        "  ▶ quick  2.0s",
        "  ✔ PASS  canary  1.23s",
        "  ✘ FAIL  broken  0.50s",
    ]


def test_lines_are_bounded_in_number_and_width() -> None:
    state = ProgressState(total=70)
    for i in range(20):
        state.started(f"scenario-{i:02d}-" + "x" * 200, float(i))
    for i in range(10):
        state.done(f"done-{i}", "pass", 1.0)
    lines = render_lines(state, now=30.0, width=60)
    assert len(lines) == 1 + 8 + 1 + 4
    assert lines[9] == "  … 12 more running"
    assert all(len(line) <= 60 for line in lines)
    assert lines[-1] == "  ✔ PASS  done-9  1.00s"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_output_prints_every_line_redacted_and_the_block_never_shows_a_secret() -> None:
    terminal = _Terminal()
    out = Output(terminal, progress="live")
    out.add_secrets(["hunter2-very-secret"])
    out.progress_total(2)
    out.scenario_started("scenario-hunter2-very-secret")
    out.say("▶ first line with hunter2-very-secret")
    assert out._live is not None
    block = str(out._live._renderable())
    assert "hunter2-very-secret" not in block and "scenario-" in block
    out.scenario_finished("scenario-hunter2-very-secret", "pass", 1.0)
    out.close()
    out.say("after close")
    text = terminal.getvalue()
    assert "▶ first line with" in text and "hunter2-very-secret" not in text
    assert text.endswith("after close\n")  # once stopped, plain again


def test_plain_output_is_exactly_the_lines() -> None:
    terminal = _Terminal()
    out = Output(terminal)  # the default: tests and the in-process runner parse these lines
    out.progress_total(3)
    out.scenario_started("a")
    out.say("  PASS  a")
    out.scenario_finished("a", "pass", 1.0)
    out.close()
    assert terminal.getvalue() == "  PASS  a\n"


_CHILD = """
import sys, time
from qa.harness.output import Output
out = Output(sys.stderr, progress="live")
out.progress_total(2)
out.scenario_started("alpha")
out.say("line one")
time.sleep(0.6)  # at least one refresh of the live block
try:
    raise RuntimeError("boom")
finally:
    out.close()
    out.say("final line")
"""


def test_a_pseudo_terminal_gets_its_cursor_back_and_the_final_lines_after_an_error() -> None:
    leader, follower = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", "COLUMNS": "80"}
    env.pop("CI", None)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=follower, stdout=follower, stderr=follower,
                            env=env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    proc.wait(timeout=10)
    text = b"".join(chunks).decode(errors="replace")
    assert "line one" in text and "matrix-qa: 0/2 finished" in text  # the live block was drawn
    assert "\x1b[?25l" in text  # rich hid the cursor while live …
    tail = text[text.rindex("\x1b[?25l"):]
    assert "\x1b[?25h" in tail  # … and showed it again before exiting
    assert "final line" in tail and "RuntimeError: boom" in tail


def test_the_cli_passes_progress_to_the_run_and_refuses_other_values(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import qa.run as run_module
    from qa.cli import main

    seen: list[str] = []
    monkeypatch.setattr(run_module, "run_sync", lambda options: seen.append(options.progress) or 0)
    assert main(["run", "--scenario", "canary"]) == 0
    assert main(["run", "--scenario", "canary", "--progress", "plain"]) == 0
    assert seen == ["auto", "plain"]
    with pytest.raises(SystemExit) as exc:
        main(["run", "--progress", "fancy"])
    assert exc.value.code == 2 and "--progress" in capsys.readouterr().err


def test_a_run_built_without_an_output_is_plain_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.run import Run, RunOptions

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Run(RunOptions()).out.progress == "plain"
    assert Run(RunOptions(progress="auto")).out.progress == "live"
