"""`matrix-qa init` then `matrix-qa run`, as a bot author would, on the independent nio bot: a pass. The first
test does it as a new user on a fresh machine would: the wheel installed with `pip install --user` (no checkout on
the path), from an empty directory holding only the bot's repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, cli

pytestmark = pytest.mark.integration

NIO_BOT = REPO / "tests" / "bots" / "nio_reply_bot.py"


def test_a_wheel_installed_with_pip_user_then_init_then_run_passes_on_an_independent_bot(
        tmp_path: Path, built_wheel: Path) -> None:
    from tests.integration.test_install_anywhere import installed_user

    # This checkout's wheel, built and installed with `pip install --user` once per session for both wheel tests
    # (tests/integration/wheel_cache.py); a HOME of this test's own, as a fresh machine's (no cache in it).
    _, exe, env = installed_user(built_wheel, tmp_path / "home")
    env["TMPDIR"] = str(tmp_path)
    project = tmp_path / "my-bot-repo"
    project.mkdir()
    made = _run_ok([str(exe), "init", "--name", "nio-bot", "--command", f"{{python}} {NIO_BOT}", "--ready-log",
                    "^syncing as @", "--capabilities", "threads,restart"], env, project)
    assert made.stdout.splitlines()[-1] == "next: matrix-qa run"
    _run_ok([str(exe), "run", "--progress", "plain"], env, project)
    summary = json.loads((project / "artifacts" / "matrix-qa" / "matrix-qa-summary.json").read_text())
    assert summary["status"] == "pass"
    assert [(s["id"], s["status"]) for s in summary["scenarios"]] == [("hello", "pass")]
    assert summary["environment"]["bot"]["name"] == "nio-bot"
    assert summary["environment"]["configFile"] == str(project / "matrix-qa.toml")


def _run_ok(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


WRONG = """\
id: wrong-answer
title: expects an answer the bot never gives
steps:
  - send: {as: driver, mention: bot, body: "reply with only this exact marker: {token}", id: ask}

  - expect_reply: {to: ask, body: "not what the model says", timeout: 8s}
"""
# The timeout: a reply with another body is waited on for an edit that would finish it (a streamed draft) for the
# rest of the step's time; the failure and its line are the same after 8 s as after the default 30 s.


def test_a_failed_step_of_a_real_run_is_annotated_on_its_line(
        tmp_path: Path, shared_homeserver_cli: tuple[list[str], dict[str, str]]) -> None:
    # What is checked is the annotation of a failed step: the homeserver is the session's (the test above runs a
    # project on a Synapse of its own).
    flags, env = shared_homeserver_cli
    project = tmp_path / "repo"
    project.mkdir()
    made = cli("init", "--command", f"{{python}} {NIO_BOT}", "--ready-log", "^syncing as @", cwd=project)
    assert made.returncode == 0, made.stderr
    (project / "matrix-qa" / "scenarios" / "wrong.yaml").write_text(WRONG)
    ran = cli("run", "--progress", "plain", "-k", "wrong", *flags, cwd=project, tmpdir=tmp_path, env=env)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    summary = project / "artifacts" / "matrix-qa" / "matrix-qa-summary.json"
    done = subprocess.run([sys.executable, "-m", "qa.report.annotations", str(summary), "--root", str(project)],
                          cwd=project, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("::error file=matrix-qa/scenarios/wrong.yaml,line=6,"
                           "title=matrix-qa%3A wrong-answer failed at step 2 (expect_reply)::"), line
