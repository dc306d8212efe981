"""Which event loop the bot runs on: uvloop where it is installed (a dependency of matrix-qa on every platform it
has wheels for), asyncio's own loop otherwise, or when `MATRIX_QA_AGENT_LOOP=asyncio` asks for it. The rule is
the kernel's (qa.kernel.event_loop), shared with the harness, which has its own switch (MATRIX_QA_HARNESS_LOOP):
the bot's loop and the harness's are chosen apart, so either can be put back on asyncio alone.

Why uvloop: a reply is a handful of loop turns across three HTTP exchanges (the /sync that brings the message, the
model request, the send); uvloop's transports and callbacks cost less CPU per turn than asyncio's. What the bot
does is the same on either loop: the same signal handlers (SIGTERM, SIGINT, SIGHUP), the same subprocess calls,
the same timeouts, the same trace. The `start` record names the loop, so a run's evidence says which one it was.

The loop is made in `run`, never at import: the fork server imports the agent and forks bots from it, and a
loop made before a fork would be shared by every bot (uvloop's libuv state does not survive a fork). uvloop itself
is imported by qa.agent.__main__ (so the fork server's preload has it); this module stays light, for env_check.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from qa.kernel import event_loop as kernel
from qa.kernel.event_loop import CHOICES, running_loop_name

T = TypeVar("T")

ENV = "MATRIX_QA_AGENT_LOOP"

__all__ = ["CHOICES", "ENV", "env_problems", "loop_factory", "run", "running_loop_name"]


def env_problems(env: Mapping[str, str]) -> list[str]:
    """bot.yaml's env_check part for the loop: what `loop_factory` would refuse, found without importing uvloop."""
    return kernel.env_problems(ENV, env)


def loop_factory(env: Mapping[str, str] = os.environ) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """(name, factory for asyncio.Runner): uvloop when importable and not turned off, else asyncio's (None)."""
    return kernel.loop_factory(ENV, env)


def run(main: Coroutine[Any, Any, T], env: Mapping[str, str] = os.environ) -> T:
    """asyncio.run on the chosen loop (asyncio.Runner: the same SIGINT and shutdown handling either way)."""
    return kernel.run(main, ENV, env)
