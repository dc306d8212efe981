"""Which launches the fork server may fork: only the embedded agent, only with the zygote's own interpreter set-up."""

from __future__ import annotations

import sys

from qa.harness.fork_server import same_python, serves, uses_fork_server

AGENT = [sys.executable, "-m", "qa.agent", "--config", "/tmp/c.json"]
OURS = {"PATH": "/bin", "PYTHONPATH": "/src"}


def test_the_embedded_agent_with_our_interpreter_is_served() -> None:
    assert serves(AGENT, {"PATH": "/other", "PYTHONPATH": "/src", "MATRIX_QA_USER_ID": "@b:x"}, OURS)


def test_another_interpreter_program_or_subcommand_is_not() -> None:
    assert not serves(["/usr/bin/python3.12", *AGENT[1:]], OURS, OURS)
    assert not serves([sys.executable, "-m", "mybot", "--config", "c"], OURS, OURS)
    assert not serves([sys.executable, "-m", "qa.agent.zygote", "3"], OURS, OURS)
    assert not serves([sys.executable, "-m", "qa.agent", "doctor", "--state-dir", "d"], OURS, OURS)
    assert not serves([sys.executable, "-m"], OURS, OURS)


def test_python_variables_are_read_at_interpreter_start_so_they_must_match() -> None:
    assert same_python({"PATH": "/x", "PYTHONPATH": "/src"}, OURS)
    assert not same_python({"PYTHONPATH": "/elsewhere"}, OURS)
    assert not same_python({"PYTHONPATH": "/src", "PYTHONHASHSEED": "0"}, OURS)
    assert not same_python({}, OURS), "a launch that drops PYTHONPATH would import other code"
    assert not serves(AGENT, {"PYTHONPATH": "/src", "PYTHONDEVMODE": "1"}, OURS)


def test_only_the_agents_own_command_gets_a_fork_server() -> None:
    assert uses_fork_server(["{python}", "-m", "qa.agent", "--config", "{config}"])
    assert not uses_fork_server(["{python}", "-m", "mybot"])
    assert not uses_fork_server(["python", "-m", "qa.agent"])
    assert not uses_fork_server(["{python}"])
