"""Text from files (a summary's scenario ids, a lock's host, a log line) made safe for a terminal.

Why: a file read back can carry escape sequences; printed raw, they move the cursor, clear the screen, retitle the
window or hide the lines above them from the person reading. Each control character is shown as its escape
(`\\x1b`) instead: visible, never acted on, and not dropped (the reader sees the file held something odd).
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, the C1 controls (CSI, OSC among them), and the bidirectional overrides and
# isolates that reorder what a line shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """Pure: `text` with every control character written as its escape; tab and newline kept."""
    return _CONTROL.sub(_escaped, text)


def safe_print(text: str, file: object = None, flush: bool = False) -> None:
    """print() of terminal_safe(text)."""
    print(terminal_safe(text), file=file, flush=flush)  # type: ignore[call-overload]
