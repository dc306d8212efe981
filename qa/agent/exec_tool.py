"""The `exec` tool: run an approved command without a shell, with a timeout and a program allowlist.

Commands run in $MATRIX_QA_EXEC_DIR when the harness gives one (the launch contract): what a command makes there
(`touch NAME`) is evidence the harness sees without the bot's word for it."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from dataclasses import dataclass

DEFAULT_ALLOWED_PROGRAMS = ("printf", "echo", "true", "date", "touch")
MAX_OUTPUT = 4000

EXEC_TOOL = {
    "type": "function",
    "function": {
        "name": "exec",
        "description": "Run a command on the host after a person in the room approves it.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "the command line to run"}},
            "required": ["command"],
        },
    },
}


@dataclass(frozen=True)
class ExecResult:
    ran: bool
    output: str
    exit_code: int | None = None


def parse_command(command: str, allowed: tuple[str, ...]) -> list[str] | str:
    """The argv to run, or why it may not run. Pure."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return f"cannot parse command: {exc}"
    if not argv:
        return "empty command"
    if argv[0] not in allowed:
        return f"program {argv[0]!r} is not on the allowlist ({', '.join(allowed)})"
    return argv


async def run_command(command: str, allowed: tuple[str, ...], timeout_s: float = 10.0, cwd: str | None = None
                      ) -> ExecResult:
    argv = parse_command(command, allowed)
    if isinstance(argv, str):
        return ExecResult(False, f"not run: {argv}")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
        cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return ExecResult(True, f"timed out after {timeout_s:g}s", None)
    except asyncio.CancelledError:  # the turn was cancelled (a stop mid-approval): the command must not outlive it
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return ExecResult(True, out.decode("utf-8", "replace")[:MAX_OUTPUT], proc.returncode)
