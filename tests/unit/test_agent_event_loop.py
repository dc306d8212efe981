"""The embedded agent's event loop (qa.agent.event_loop): uvloop when installed, asyncio's own loop as the
fallback (uvloop missing, or MATRIX_QA_AGENT_LOOP=asyncio), the same bot on either."""

from __future__ import annotations

import asyncio
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
    with pytest.raises(ConfigError, match=r"^MATRIX_QA_AGENT_LOOP=uvloop, but uvloop is not installed$"):
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
