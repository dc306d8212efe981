"""Text from files reaches the terminal with its control characters shown, not acted on (qa.kernel.terminal)."""

from __future__ import annotations

import io

import pytest

from qa.harness.output import Output
from qa.kernel.terminal import safe_print, terminal_safe


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain ünïcode 🙂", "plain ünïcode 🙂"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("\x1b[2Jclear", "\\x1b[2Jclear"),
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ("\x00\x08\x0b\x0c\r\x1f\x7f", "\\x00\\x08\\x0b\\x0c\\x0d\\x1f\\x7f"),
    ("\x80\x9b\x9f\xa0", "\\x80\\x9b\\x9f\xa0"),
    ("a\u202eb\u2066c\u2069\u202a", "a\\u202eb\\u2066c\\u2069\\u202a"),
    ("\u2029\u200f", "\u2029\u200f"),
])
def test_every_control_character_is_shown_as_its_escape(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown


def test_safe_print_and_every_progress_line_escape(capsys: pytest.CaptureFixture[str]) -> None:
    safe_print("id \x1b[31mred", flush=True)
    assert capsys.readouterr().out == "id \\x1b[31mred\n"
    stream = io.StringIO()
    Output(stream).say("scenario \x1b[2J done")
    assert stream.getvalue() == "scenario \\x1b[2J done\n"
