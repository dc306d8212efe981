"""Which event loop the bot runs on: uvloop where it is installed (a dependency of matrix-qa on every platform it
has wheels for), asyncio's own loop otherwise, or when `MATRIX_QA_AGENT_LOOP=asyncio` asks for it.

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
import importlib.util
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from qa.kernel.errors import ConfigError

T = TypeVar("T")

ENV = "MATRIX_QA_AGENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def env_problems(env: Mapping[str, str]) -> list[str]:
    """bot.yaml's env_check part for the loop: what `loop_factory` would refuse, found without importing uvloop."""
    asked = env.get(ENV, "").strip().lower()
    if asked and asked not in CHOICES:
        return [f"{ENV} must be one of {', '.join(CHOICES)}, got {env.get(ENV)!r}"]
    if asked == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return [f"{ENV}=uvloop, but uvloop is not installed"]
    return []


def loop_factory(env: Mapping[str, str] = os.environ) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """(name, factory for asyncio.Runner): uvloop when importable and not turned off, else asyncio's (None)."""
    asked = env.get(ENV, "").strip().lower()
    if asked and asked not in CHOICES:
        raise ConfigError(env_problems(env)[0])
    if asked != "asyncio":
        try:
            import uvloop
        except ImportError:
            if asked == "uvloop":
                raise ConfigError(f"{ENV}=uvloop, but uvloop is not installed") from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def run(main: Coroutine[Any, Any, T], env: Mapping[str, str] = os.environ) -> T:
    """asyncio.run on the chosen loop (asyncio.Runner: the same SIGINT and shutdown handling either way)."""
    try:
        _, factory = loop_factory(env)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """For the trace: the loop this coroutine runs on."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
