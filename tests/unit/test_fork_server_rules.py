"""Which launches the fork server may fork: only the bot file's own `{python} -m MODULE` commands (the embedded
agent's, here), only with the zygote's own interpreter set-up."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from qa.harness.botfile import BotFile, builtin_bot_file
from qa.harness.fork_server import forkable, same_python, serves, uses_fork_server
from qa.kernel.errors import InfraError

AGENT = [sys.executable, "-m", "qa.agent", "--config", "/tmp/c.json"]
OURS = {"PATH": "/bin", "PYTHONPATH": "/src"}
COMMANDS = forkable(builtin_bot_file())


def test_the_embedded_agent_with_our_interpreter_is_served() -> None:
    assert serves(AGENT, {"PATH": "/other", "PYTHONPATH": "/src", "MATRIX_QA_USER_ID": "@b:x"}, OURS, COMMANDS)


def test_another_interpreter_program_or_subcommand_is_not() -> None:
    assert not serves(["/usr/bin/python3.12", *AGENT[1:]], OURS, OURS, COMMANDS)
    assert not serves([sys.executable, "-m", "mybot", "--config", "c"], OURS, OURS, COMMANDS)
    assert not serves([sys.executable, "-m", "qa.harness.zygote", "3"], OURS, OURS, COMMANDS)
    assert not serves([sys.executable, "-m", "qa.agent", "doctor", "--state-dir", "d"], OURS, OURS, COMMANDS)
    assert not serves([sys.executable, "-m"], OURS, OURS, COMMANDS)
    assert not serves([sys.executable, "-m", "qa.agent", "--config"], OURS, OURS, COMMANDS), "one argument short"
    assert not serves(AGENT, OURS, OURS, []), "a bot file without fork_server has nothing forked"


def test_the_lock_probe_of_the_same_bot_file_is_served_too() -> None:
    probe = [sys.executable, "-m", "qa.agent.lock_probe", "/state/s1/bot"]
    assert serves(probe, OURS, OURS, COMMANDS)
    assert not serves([*probe, "extra"], OURS, OURS, COMMANDS)


def test_placeholders_match_any_value_and_literals_only_themselves() -> None:
    commands = [["{python}", "-m", "mybot", "--config={config}", "x{scenario}y"]]
    assert serves([sys.executable, "-m", "mybot", "--config=/a/b.json", "xcanaryy"], OURS, OURS, commands)
    assert serves([sys.executable, "-m", "mybot", "--config=", "xy"], OURS, OURS, commands)
    assert not serves([sys.executable, "-m", "mybot", "--conf=/a", "xcanaryy"], OURS, OURS, commands)
    assert not serves([sys.executable, "-m", "mybot", "--config=/a", "xcanar"], OURS, OURS, commands)
    assert not serves([sys.executable, "-m", "mybotx", "--config=/a", "xy"], OURS, OURS, commands)
    # Regular-expression characters in a literal are literal.
    dotted = [["{python}", "-m", "my.bot", "a+"]]
    assert serves([sys.executable, "-m", "my.bot", "a+"], OURS, OURS, dotted)
    assert not serves([sys.executable, "-m", "myxbot", "aa"], OURS, OURS, dotted)


def test_python_variables_are_read_at_interpreter_start_so_they_must_match() -> None:
    assert same_python({"PATH": "/x", "PYTHONPATH": "/src"}, OURS)
    assert not same_python({"PYTHONPATH": "/elsewhere"}, OURS)
    assert not same_python({"PYTHONPATH": "/src", "PYTHONHASHSEED": "0"}, OURS)
    assert not same_python({}, OURS), "a launch that drops PYTHONPATH would import other code"
    assert not serves(AGENT, {"PYTHONPATH": "/src", "PYTHONDEVMODE": "1"}, OURS, COMMANDS)


def test_only_a_bot_file_that_asks_for_it_gets_a_fork_server() -> None:
    assert uses_fork_server(builtin_bot_file())
    assert COMMANDS == [["{python}", "-m", "qa.agent", "--config", "{config}"],
                        ["{python}", "-m", "qa.agent.lock_probe", "{state_dir}"]]
    assert not uses_fork_server(BotFile(name="b", command=["{python}", "-m", "mybot"]))
    assert uses_fork_server(BotFile(name="b", command=["{python}", "-m", "mybot"], fork_server={}))
    # A lock probe that is not `{python} -m …` is started the ordinary way.
    bot = BotFile(name="b", command=["{python}", "-m", "mybot"], fork_server={}, lock_probe=["./probe"])
    assert forkable(bot) == [["{python}", "-m", "mybot"]]


@pytest.mark.parametrize("command", [["python", "-m", "qa.agent"], ["{python}"], ["{python}", "-m", "{scenario}"],
                                     ["{python}", "bot.py"], ["{python}", "-m", "my-bot"]])
def test_a_fork_server_needs_a_python_dash_m_command(command: list[str]) -> None:
    with pytest.raises(ValidationError, match="fork_server needs a command of the form"):
        BotFile(name="b", command=command, fork_server={})


def test_a_session_shares_a_fork_server_only_between_like_bot_files_and_environments() -> None:
    """tests/integration/shared_fork_server.py: a server is reused only for the same modules, preloads and the
    environment it was started with (its /proc/<pid>/environ is what a forked bot shows)."""
    from tests.integration.shared_fork_server import server_key

    agent = builtin_bot_file()
    env = {"PATH": "/bin", "PYTHONPATH": "/src"}
    assert server_key(agent, env) == server_key(agent, dict(env))
    assert server_key(agent, env) != server_key(agent, {**env, "LANG": "C"})
    # What a bot may never inherit is never part of the key either (the server never has it).
    assert server_key(agent, env) == server_key(agent, {**env, "MATRIX_QA_LIVE_OPENAI_KEY": "k"})
    # Nor what pytest sets per test: with it, every test started servers of its own and none was shared.
    assert server_key(agent, {**env, "PYTEST_CURRENT_TEST": "tests/a.py::test_a (call)"}) == \
        server_key(agent, {**env, "PYTEST_CURRENT_TEST": "tests/b.py::test_b (call)"}) == server_key(agent, env)
    other = agent.model_copy(update={"fork_server": agent.fork_server.model_copy(update={"preload": ["nio"]})})
    assert server_key(other, env) != server_key(agent, env)
    modules, preload, where, _ = server_key(agent, env)
    assert modules == ("qa.agent", "qa.agent.lock_probe") and "qa.agent.__main__" in preload and where is None
    # The same entries beside two bot files are two bots' modules: the preload imported one folder's.
    here, there = (BotFile(name="b", command=["{python}", "-m", "mybot"], fork_server={"preload": ["mybot"]})
                   for _ in range(2))
    there._dir = Path("/elsewhere")
    assert server_key(here, env) != server_key(there, env)
    assert server_key(here, env) == server_key(here.model_copy(), env)


def test_a_session_fork_server_is_started_with_the_environment_of_its_key(tmp_path: Path) -> None:
    """Its /proc/<pid>/environ (a forked bot's too) has neither the first test's PYTEST_CURRENT_TEST nor what a bot
    may never inherit, and is the environment its key names (so the servers it is shared with were started alike)."""
    from tests.integration.shared_fork_server import server_key, unstarted_server

    agent = builtin_bot_file()
    env = {"PATH": "/bin", "PYTHONPATH": "/src", "PYTEST_CURRENT_TEST": "tests/a.py::test_a (call)",
           "MATRIX_QA_LIVE_OPENAI_KEY": "k", "OPENAI_API_KEY": "sk-x"}
    server = unstarted_server(tmp_path, agent, env)
    assert server._env == {"PATH": "/bin", "PYTHONPATH": "/src"} == dict(server_key(agent, env)[3])
    assert server.pid is None and not (tmp_path / "work").exists()  # not started: no process, no folder


class FailingServer:
    """A shared fork server whose forks fail: it says so (InfraError, as when it did not answer within
    SPAWN_TIMEOUT_S), or never answers at all (the servers' loop stuck)."""

    pid = None
    log_path = Path("/nonexistent/fork-server.log")
    alive = True

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.closed = False

    async def request(self, *_: Any) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        raise InfraError("fork server did not answer within 10s")

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("hang", [False, True])
def test_a_shared_fork_server_a_fork_failed_on_is_closed_and_replaced_at_the_next_borrow(
        hang: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept, a server that hangs but lives made every later launch in the worker wait SPAWN_TIMEOUT_S first. The
    launch itself still starts the ordinary way (InfraError, whatever the failure was)."""
    from tests.integration import shared_fork_server
    from tests.integration.shared_fork_server import BorrowedForkServer, SessionForkServers, server_key

    monkeypatch.setattr(shared_fork_server, "CALL_TIMEOUT_S", 0.2)
    shared = SessionForkServers(tmp_path)
    try:
        agent = builtin_bot_file()
        failing, other = FailingServer(hang), FailingServer(hang)
        key = server_key(agent, os.environ)
        shared._servers.update({key: failing, ("other",): other})  # type: ignore[dict-item]
        borrowed = BorrowedForkServer(shared, failing, agent)  # type: ignore[arg-type]
        with pytest.raises(InfraError, match="did not answer within"):
            asyncio.run(borrowed.spawn(AGENT, {}, tmp_path))
        assert failing.closed and key not in shared._servers  # server_for starts a fresh one for the next run
        assert not other.closed and shared._servers == {("other",): other}
    finally:
        shared.close()
