"""Which event loop a matrix-qa process runs on: uvloop where it is installed (a dependency of matrix-qa on every
platform it has wheels for), asyncio's own loop otherwise, or when an environment variable asks for it. Shared by
the tester (`MATRIX_QA_HARNESS_LOOP`: `matrix-qa run`, the pytest plugin's session, the standalone mock provider)
and the embedded agent (`MATRIX_QA_AGENT_LOOP`, qa.agent.event_loop): one rule, two switches, so either side can
be put back on asyncio's loop alone when a difference between the loops is suspected.

Why uvloop: a process of matrix-qa spends its CPU in loop turns (HTTP exchanges, pipes, timers); uvloop's
transports and callbacks cost less per turn than asyncio's. What runs on it is the same either way: the same
signal handlers, subprocesses, timeouts. The choice is made when the loop is made, never at import (a loop made
before a fork would be shared by every child, and libuv's state does not survive a fork); uvloop is imported only
then, so this module stays light.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from qa.kernel.errors import ConfigError

T = TypeVar("T")

CHOICES = ("uvloop", "asyncio")
HARNESS_ENV = "MATRIX_QA_HARNESS_LOOP"

Factory = Callable[[], asyncio.AbstractEventLoop]


def _asked(var: str, env: Mapping[str, str]) -> str:
    return env.get(var, "").strip().lower()


def env_problems(var: str, env: Mapping[str, str]) -> list[str]:
    """What `loop_factory` would refuse, found without importing uvloop (for a check before anything starts)."""
    asked = _asked(var, env)
    if asked and asked not in CHOICES:
        return [f"{var} must be one of {', '.join(CHOICES)}, got {env.get(var)!r}"]
    if asked == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return [f"{var}=uvloop, but uvloop is not installed"]
    return []


def loop_factory(var: str, env: Mapping[str, str]) -> tuple[str, Factory | None]:
    """(name, factory for asyncio.Runner): uvloop when importable and not turned off, else asyncio's (None)."""
    asked = _asked(var, env)
    if asked and asked not in CHOICES:
        raise ConfigError(env_problems(var, env)[0])
    if asked != "asyncio":
        try:
            import uvloop
        except ImportError:
            if asked == "uvloop":
                raise ConfigError(f"{var}=uvloop, but uvloop is not installed") from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def new_loop(var: str, env: Mapping[str, str]) -> tuple[str, asyncio.AbstractEventLoop]:
    """A loop of the chosen kind, for a caller that runs it itself (a thread's run_forever)."""
    name, factory = loop_factory(var, env)
    return name, (factory or asyncio.new_event_loop)()


def run(main: Coroutine[Any, Any, T], var: str, env: Mapping[str, str]) -> T:
    """asyncio.run on the chosen loop (asyncio.Runner: the same SIGINT and shutdown handling either way). A
    refused choice closes `main` unrun (no "never awaited" warning) and raises ConfigError."""
    try:
        _, factory = loop_factory(var, env)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """The loop this coroutine runs on, for the record: "uvloop" or "asyncio"."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
