"""Progress output survives a log file that can no longer be written (a full disk)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from qa.harness.output import Output


class _FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_a_log_that_fails_is_dropped_with_one_warning_and_the_terminal_keeps_every_line(tmp_path: Path) -> None:
    terminal = io.StringIO()
    out = Output(terminal)
    out.open_log(tmp_path / "log")
    out._log = _FullDisk()  # the file system fills up mid-run
    out.say("first")
    out.say("second")
    lines = terminal.getvalue().splitlines()
    assert lines == ["first", "warning: matrix-qa-output.log is no longer written: No space left on device",
                     "second"]
    assert out._pending == [], "nothing piles up waiting for a log that will never come back"
    out.close()


def test_lines_before_the_log_opens_are_written_to_it(tmp_path: Path) -> None:
    out = Output(io.StringIO())
    out.say("early")
    out.open_log(tmp_path / "log")
    out.say("late")
    out.close()
    text = (tmp_path / "log").read_text()
    assert text.index("early") < text.index("late")


def test_a_run_whose_record_cannot_be_written_says_so_in_one_line(tmp_path: Path, monkeypatch) -> None:
    import asyncio

    from qa.run import Run, RunOptions, record

    async def no_run(self: Run, work: Path) -> None:
        return None

    def full_disk(*args: object, **kwargs: object) -> dict[str, str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Run, "_run_all", no_run)
    monkeypatch.setattr(record, "write_reports", full_disk)
    terminal = io.StringIO()
    run = Run(RunOptions(scenario_ids=["canary"], output_dir=tmp_path / "out"), Output(terminal))
    code = asyncio.run(run.execute())
    assert code == 2
    assert "error: could not write the run's record to" in terminal.getvalue()
    assert "No space left on device" in terminal.getvalue()


def test_a_terminal_that_goes_away_ends_nothing_and_the_log_keeps_every_line(tmp_path: Path) -> None:
    # A real pipe whose reader has gone (`matrix-qa run | head -3`): writes fail with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    terminal = os.fdopen(write_end, "w")
    out = Output(terminal)
    out.open_log(tmp_path / "log")
    out.say("first")
    out.say("second")
    print("a later line from anywhere", file=terminal, flush=True)  # no BrokenPipeError: the fd is /dev/null now
    out.close()
    terminal.close()
    lines = [line.split(" ", 1)[1] for line in (tmp_path / "log").read_text().splitlines()]
    assert len(lines) == 3 and lines[0].startswith("note: the terminal went away (Broken pipe)"), lines
    assert lines[1:] == ["first", "second"]
