"""`matrix-qa init` then `matrix-qa run`, as a bot author would, on the independent nio bot: a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, cli

pytestmark = pytest.mark.integration

NIO_BOT = REPO / "tests" / "bots" / "nio_reply_bot.py"


def test_init_then_run_passes_on_an_independent_bot(tmp_path: Path) -> None:
    project = tmp_path / "my-bot-repo"
    project.mkdir()
    made = cli("init", "--name", "nio-bot", "--command", f"{{python}} {NIO_BOT}", "--ready-log", "^syncing as @",
               "--capabilities", "threads,restart", cwd=project)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-1] == "next: matrix-qa run"
    ran = cli("run", "--progress", "plain", cwd=project, tmpdir=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = json.loads((project / "artifacts" / "matrix-qa" / "matrix-qa-summary.json").read_text())
    assert summary["status"] == "pass"
    assert [(s["id"], s["status"]) for s in summary["scenarios"]] == [("hello", "pass")]
    assert summary["environment"]["bot"]["name"] == "nio-bot"
    assert summary["environment"]["configFile"] == str(project / "matrix-qa.toml")
