"""A homeserver backend added from outside qa/ carries a real run: `matrix-qa run --homeserver standin` with the
stand-in of tests/standin_backend.py registered by the process that runs the CLI, and no line of qa/ naming it.
The canary's whole boot path goes through it: its option and secret reach it, it builds the homeserver, the
run boots it, the bot answers on it, the record names it and redacts its secret, nothing outlives the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, our_processes

pytestmark = pytest.mark.integration

SECRET = "standin-secret-7f3a9c"


def test_the_canary_runs_on_a_backend_registered_from_a_test_module(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.standin_backend", "run", "--homeserver", "standin", "--scenario", "canary",
         "--standin-motto", "hello", "--standin-secret", SECRET, "--output-dir", str(out), "--progress", "plain"],
        cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stderr
    assert "starting standin homeserver …" in proc.stderr and "\nstandin " in proc.stderr
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    assert summary["environment"]["homeserver"]["kind"] == "standin"
    assert summary["environment"]["homeserver"]["log"] == "homeserver/synapse.log"
    assert [(s["id"], s["status"]) for s in summary["scenarios"]] == [("canary", "pass")]
    settings = json.loads((out / "homeserver" / "standin-settings.json").read_text())
    assert settings["standin_motto"] == "hello" and settings["standin_secret"] == "[REDACTED]"
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"{path} keeps the stand-in's secret"
    assert SECRET not in proc.stderr
    assert our_processes(str(tmp_path)) == []
