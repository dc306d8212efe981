"""Unreadable directories and files, met as a user who may not read them (issue 28).

Everything here runs as root, which reads anything, so a `chmod 000` proves nothing. Each case runs the CLI in a
child process as root without the capabilities that bypass file permissions (CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH, dropped with `setpriv`), so the permission bits bind it as they bind any other user. Each must
be exit 2 with one line naming the path, never a traceback, and never a silent "nothing here"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nothing_early import NOTHING_EARLY

REPO = Path(__file__).resolve().parents[1]
DROP = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to drop the permission-bypassing capabilities")


@pytest.fixture
def place(tmp_path: Path) -> Path:
    for name in ("scenarios-locked", "cassettes-locked", "locks-locked", "ok"):
        (tmp_path / name).mkdir()
    (tmp_path / "locks-open" / "deep").mkdir(parents=True)
    shutil.copy(REPO / "scenarios" / "canary.yaml", tmp_path / "ok" / "canary.yaml")
    (tmp_path / "ok" / "locked.yaml").write_text((REPO / "scenarios" / "canary.yaml").read_text()
                                                 .replace("id: canary", "id: locked"))
    shutil.copy(REPO / "tests" / "bots" / "nio-reply-bot.yaml", tmp_path / "bot.yaml")
    (tmp_path / "summary.json").write_text("{}")
    for locked in ("scenarios-locked", "cassettes-locked", "locks-locked", "ok/locked.yaml", "bot.yaml",
                   "summary.json", "locks-open/deep"):
        (tmp_path / locked).chmod(0)
    return tmp_path


# The two `run` cases are refused before a homeserver or a bot is needed: NOTHING_EARLY (tests/nothing_early.py).
CASES = [
    (["validate", "scenarios-locked"], "scenarios-locked: cannot read this directory: Permission denied"),
    (["run", "--scenarios-dir", "scenarios-locked", "--output-dir", "out", *NOTHING_EARLY],
     "scenarios-locked: cannot read this directory: Permission denied"),
    (["validate", "ok"], "ok/locked.yaml: cannot read: Permission denied"),
    (["validate", "--bot", "bot.yaml", "ok/canary.yaml"], "bot.yaml: cannot read bot file: Permission denied"),
    (["report", "summary.json"], "summary.json: cannot read run summary: Permission denied"),
    (["run", "--provider", "replay", "--cassettes", "cassettes-locked", "--scenario", "canary", "--output-dir",
      "out", *NOTHING_EARLY], "--cassettes cassettes-locked: cannot read: Permission denied"),
    (["doctor", "locks-locked"], "cannot read locks-locked (permission denied)"),
    (["doctor", "locks-open"], "cannot read locks-open/deep (permission denied)"),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(c[0][:2]) + f" {i}" for i, c in enumerate(CASES)])
def test_an_unreadable_path_is_one_line_and_exit_2(place: Path, argv: list[str], expected: str) -> None:
    proc = subprocess.run([*DROP, sys.executable, "-m", "qa.cli", *argv], cwd=place, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert not (place / "out").exists() or not any((place / "out").rglob("homeserver*")), "nothing was started"
