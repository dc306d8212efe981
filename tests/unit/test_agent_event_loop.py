"""The embedded agent's event loop (qa.agent.event_loop): uvloop when installed, asyncio's own loop as the
fallback (uvloop missing, or MATRIX_QA_AGENT_LOOP=asyncio), the same bot on either."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from qa.agent import event_loop
from qa.kernel.errors import ConfigError

uvloop = pytest.importorskip("uvloop")


def _no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError


def test_uvloop_by_default_when_installed() -> None:
    assert event_loop.loop_factory({}) == ("uvloop", uvloop.new_event_loop)
    assert event_loop.loop_factory({event_loop.ENV: " UVLOOP "}) == ("uvloop", uvloop.new_event_loop)


def test_asyncio_when_asked() -> None:
    assert event_loop.loop_factory({event_loop.ENV: "asyncio"}) == ("asyncio", None)


def test_asyncio_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_uvloop(monkeypatch)
    assert event_loop.loop_factory({}) == ("asyncio", None)


def test_uvloop_asked_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_uvloop(monkeypatch)
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop.loop_factory({event_loop.ENV: "uvloop"})


def test_unknown_loop_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="MATRIX_QA_AGENT_LOOP must be one of uvloop, asyncio, got 'trio'"):
        event_loop.loop_factory({event_loop.ENV: "trio"})


def test_a_refused_choice_closes_the_coroutine() -> None:
    async def main() -> None:
        raise AssertionError("never runs")

    coro = main()
    with pytest.raises(ConfigError):
        event_loop.run(coro, {event_loop.ENV: "trio"})
    assert coro.cr_frame is None  # closed: no "coroutine was never awaited" warning


@pytest.mark.parametrize(("env", "expected"), [({}, "uvloop"), ({event_loop.ENV: "asyncio"}, "asyncio")])
def test_run_runs_on_the_chosen_loop(env: dict[str, str], expected: str) -> None:
    async def main() -> tuple[str, Any]:
        await asyncio.sleep(0)
        return event_loop.running_loop_name(), asyncio.get_running_loop()

    name, loop = event_loop.run(main(), env)
    assert name == expected
    assert loop.is_closed()
    assert isinstance(loop, uvloop.Loop) == (expected == "uvloop")


def test_fallback_without_uvloop_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_uvloop(monkeypatch)

    async def main() -> str:
        return event_loop.running_loop_name()

    assert event_loop.run(main(), {}) == "asyncio"


_SIGNAL_BOT = """
import asyncio, os, signal, sys
from qa.agent import event_loop

async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "print('child')",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    print(event_loop.running_loop_name(), out.decode().strip(), proc.returncode, flush=True)
    try:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(5)
    except TimeoutError:
        print("timeout", flush=True)
    print("ready", flush=True)
    await stop.wait()
    print("stopped cleanly", flush=True)
    return 0

sys.exit(event_loop.run(main()))
"""


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_subprocesses_and_timeouts_alike_on_both_loops(loop: str, sig: signal.Signals) -> None:
    """What the bot relies on of its loop: add_signal_handler for SIGTERM/SIGINT (a clean stop, exit 0),
    create_subprocess_exec (the exec tool), asyncio.timeout. Either loop, the same behaviour."""
    env = {**os.environ, event_loop.ENV: loop}
    proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_BOT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines == [f"{loop} child 0", "timeout", "ready"]
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert rest.strip() == "stopped cleanly"
    assert proc.returncode == 0


def test_env_check_names_a_bad_loop_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.agent.overrides import validate_agent_env

    assert validate_agent_env({}) == []
    assert validate_agent_env({event_loop.ENV: "asyncio"}) == []
    assert validate_agent_env({event_loop.ENV: "uvloop"}) == []
    assert validate_agent_env({event_loop.ENV: "trio"}) == [
        "MATRIX_QA_AGENT_LOOP must be one of uvloop, asyncio, got 'trio'"]
    # with a bad lock setting too, both are named
    both = validate_agent_env({event_loop.ENV: "trio", "MATRIX_QA_SESSION_WRITE_LOCK_STALE_MS": "soon"})
    assert len(both) == 2 and "MATRIX_QA_SESSION_WRITE_LOCK_STALE_MS" in both[0] and event_loop.ENV in both[1]
    _no_uvloop(monkeypatch)
    assert validate_agent_env({event_loop.ENV: "uvloop"}) == [
        "MATRIX_QA_AGENT_LOOP=uvloop, but uvloop is not installed"]
    assert validate_agent_env({}) == []  # the fallback is no problem


def test_the_loop_module_itself_does_not_import_uvloop() -> None:
    """env_check runs in the harness: it must not pay uvloop's import (the agent's __main__ imports it)."""
    code = "import sys, qa.agent.overrides; print('uvloop' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_agent_preload_imports_uvloop_and_makes_no_loop() -> None:
    """The fork server preloads qa.agent.__main__ (bot.yaml): uvloop comes with it, so no forked bot imports it,
    and no event loop exists before the fork."""
    code = ("import asyncio, sys, qa.agent.__main__; print('uvloop' in sys.modules, "
            "asyncio.events._get_running_loop() is None and asyncio.get_event_loop_policy()._local._loop is None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]
