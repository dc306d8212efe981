"""--reply-edit-wait: its values, and that a bad one is exit 2 naming the flag before anything starts."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from qa.cli_run import edit_wait
from qa.run.options import RunOptions
from qa.scenario.steps.replies import edit_wait_s


@pytest.mark.parametrize(("text", "seconds"), [("0", 0.0), ("0s", 0.0), ("0ms", 0.0), ("5s", 5.0), ("1500ms", 1.5),
                                               ("2", 2.0)])
def test_values(text: str, seconds: float) -> None:
    assert edit_wait(text) == seconds


@pytest.mark.parametrize("text", ["-1", "soon", "", "5 parsecs", "nan", "1e400"])
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        edit_wait(text)


def test_default_waits_the_step_out() -> None:
    assert RunOptions(output_dir=None).reply_edit_wait_s is None


def test_a_bad_value_on_the_command_line_is_exit_2_naming_the_flag() -> None:
    done = subprocess.run([sys.executable, "-m", "qa.cli", "run", "--reply-edit-wait", "-3s"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "--reply-edit-wait" in done.stderr and "Traceback" not in done.stderr


def test_the_wait_is_the_rest_of_the_step_unless_capped() -> None:
    assert edit_wait_s(12.5, None, False) == 12.5
    assert edit_wait_s(-3.0, None, False) == 0.05  # the step's time is up: one look, no more
    assert edit_wait_s(12.5, 2.0, False) == 2.0
    assert edit_wait_s(1.0, 2.0, False) == 1.0  # never past the step's time
    assert edit_wait_s(12.5, 0.0, False) == 0.0  # no wait at all


def test_a_streamed_reply_always_gets_the_rest_of_the_step() -> None:
    assert edit_wait_s(12.5, 0.0, True) == 12.5
    assert edit_wait_s(12.5, 2.0, True) == 12.5
