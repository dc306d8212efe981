"""The harness's event loop (qa.kernel.event_loop, MATRIX_QA_HARNESS_LOOP): `matrix-qa run`, the pytest plugin's
session and the standalone mock provider run on uvloop where it is installed, on asyncio's loop when asked, and
a value naming neither is one line and exit 2 before anything starts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

import qa.run as run_module
from qa.kernel import event_loop
from qa.kernel.errors import ConfigError
from qa.run import RunOptions, run_sync

uvloop = pytest.importorskip("uvloop")

ENV = event_loop.HARNESS_ENV


def _no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError


def test_the_harness_has_a_switch_of_its_own() -> None:
    from qa.agent import event_loop as agent_loop

    assert ENV == "MATRIX_QA_HARNESS_LOOP" != agent_loop.ENV
    # one switch does not move the other's process
    assert event_loop.loop_factory(ENV, {agent_loop.ENV: "asyncio"})[0] == "uvloop"
    assert agent_loop.loop_factory({ENV: "asyncio"})[0] == "uvloop"


def test_new_loop_is_uvloop_unless_asked_otherwise() -> None:
    for env, expected in (({}, True), ({ENV: "uvloop"}, True), ({ENV: " Asyncio "}, False)):
        name, loop = event_loop.new_loop(ENV, env)
        try:
            assert isinstance(loop, uvloop.Loop) is expected
            assert name == ("uvloop" if expected else "asyncio")
        finally:
            loop.close()


def test_without_uvloop_the_harness_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_uvloop(monkeypatch)
    assert event_loop.loop_factory(ENV, {}) == ("asyncio", None)
    assert event_loop.env_problems(ENV, {}) == []
    assert event_loop.env_problems(ENV, {ENV: "uvloop"}) == [
        "MATRIX_QA_HARNESS_LOOP=uvloop, but uvloop is not installed"]


def _record_loop(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run.execute replaced by one that notes the loop it runs on (and the name the record would give)."""
    seen: list[Any] = []

    async def execute(self: Any) -> int:
        seen.append((type(asyncio.get_running_loop()), event_loop.running_loop_name()))
        return 0

    monkeypatch.setattr(run_module.Run, "execute", execute)
    return seen


def test_run_sync_runs_the_run_on_uvloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fast profile's harness CPU (its scheduler, nio clients, mock provider) is measured on uvloop: a change
    # that put the run back on asyncio's loop without a word fails here.
    monkeypatch.delenv(ENV, raising=False)
    seen = _record_loop(monkeypatch)
    assert run_sync(RunOptions(output_dir=tmp_path)) == 0
    assert seen == [(uvloop.Loop, "uvloop")]


def test_run_sync_on_asyncio_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "asyncio")
    seen = _record_loop(monkeypatch)
    assert run_sync(RunOptions(output_dir=tmp_path)) == 0
    ((loop_type, name),) = seen
    assert not issubclass(loop_type, uvloop.Loop) and name == "asyncio"


def test_run_sync_refuses_a_bad_value_before_the_run_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "trio")
    seen = _record_loop(monkeypatch)
    with pytest.raises(ConfigError, match=r"^MATRIX_QA_HARNESS_LOOP must be one of uvloop, asyncio, got 'trio'$"):
        run_sync(RunOptions(output_dir=tmp_path))
    assert seen == []


def test_matrix_qa_run_with_a_bad_value_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import qa.cli_run as cli_run
    from qa.cli import main

    started: list[str] = []
    monkeypatch.setattr(cli_run, "_start_synapse_early", lambda args: started.append("synapse"))
    monkeypatch.setattr(cli_run, "_start_fork_server_early", lambda args: started.append("fork server"))
    monkeypatch.setattr(run_module, "run_sync", lambda options: started.append("run") or 0)
    monkeypatch.setenv(ENV, "trio")
    assert main(["run"]) == 2
    assert capsys.readouterr().err == "matrix-qa: MATRIX_QA_HARNESS_LOOP must be one of uvloop, asyncio, got 'trio'\n"
    assert started == []  # refused before the early Synapse and fork server, not after


def test_the_pytest_plugins_session_loop_is_the_harness_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.pytest_plugin.session import QASession

    monkeypatch.delenv(ENV, raising=False)
    session = QASession(RunOptions(output_dir=tmp_path))
    try:
        assert isinstance(session.loop, uvloop.Loop)
    finally:
        session.loop.close()
    monkeypatch.setenv(ENV, "asyncio")
    session = QASession(RunOptions(output_dir=tmp_path))
    try:
        assert not isinstance(session.loop, uvloop.Loop)
    finally:
        session.loop.close()
    monkeypatch.setenv(ENV, "trio")
    with pytest.raises(ConfigError, match="MATRIX_QA_HARNESS_LOOP"):
        QASession(RunOptions(output_dir=tmp_path))


def test_the_standalone_mock_provider_runs_on_the_harness_loop(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from qa.provider import mock

    async def serve(args: Any) -> int:
        return 10 if event_loop.running_loop_name() == "uvloop" else 11

    monkeypatch.setattr(mock, "_serve", serve)
    monkeypatch.delenv(ENV, raising=False)
    assert mock.main([]) == 10
    monkeypatch.setenv(ENV, "asyncio")
    assert mock.main([]) == 11
    monkeypatch.setenv(ENV, "trio")
    assert mock.main([]) == 2
    assert capsys.readouterr().err == "MATRIX_QA_HARNESS_LOOP must be one of uvloop, asyncio, got 'trio'\n"


def test_the_record_names_the_loop_it_is_written_on() -> None:
    from qa.run.record import _loop_name

    assert _loop_name() is None  # off any loop

    async def name() -> str | None:
        return _loop_name()

    assert event_loop.run(name(), ENV, {}) == "uvloop"
    assert event_loop.run(name(), ENV, {ENV: "asyncio"}) == "asyncio"
