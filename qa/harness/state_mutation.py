"""Running one of a bot file's `state_mutations` (step `mutate_bot_state`) against a stopped bot's state.

The command is the bot author's: it gets the bot's own launch environment and placeholders (so it knows the
state dir, the rooms, the user), runs with a deadline, and its output goes, redacted, to a log beside bot.log.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from qa import processes
from qa.harness.bot_process import BotUnderTest, describe_exit
from qa.harness.launch import fill
from qa.shared.redact import redact

TAIL_LINES = 8


@dataclass(frozen=True)
class MutationResult:
    argv: list[str]
    code: int | None  # None: killed at the deadline
    tail: list[str]

    @property
    def ok(self) -> bool:
        return self.code == 0


def mutation_argv(bot: BotUnderTest, name: str, args: list[str]) -> list[str]:
    return [fill(a, bot.launch.values) for a in bot.bot.state_mutations[name]] + list(args)


async def run_state_mutation(bot: BotUnderTest, name: str, args: list[str], timeout_s: float, log_path: Path,
                             secrets: list[str]) -> MutationResult:
    argv = mutation_argv(bot, name, args)
    try:
        with processes.spawning():
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, env=bot.launch.env, cwd=bot.launch.cwd, start_new_session=True)
            processes.own(proc.pid)
    except OSError as exc:
        return MutationResult(argv, -1, [f"cannot start {argv[0]}: {exc.strerror or exc}"])
    code: int | None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        code = proc.returncode
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        # communicate() was cancelled; the pipes close with the killed process, so this wait is short.
        out = b""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
        code = None
    text = redact(out.decode("utf-8", "replace"), secrets)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ mutate_bot_state {name}: {redact(' '.join(argv), secrets)}\n{text}")
        log.write(f"[{describe_exit(code) if code is not None else f'killed after {timeout_s:g}s'}]\n")
    return MutationResult(argv, code, text.splitlines()[-TAIL_LINES:])
