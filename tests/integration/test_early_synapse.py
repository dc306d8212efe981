"""The embedded Synapse and the built-in agent's fork server started early (qa.homeserver.early_synapse,
qa.harness.early_fork_server), with the real Synapse interpreter and the agent's real imports: a run that ends before
handing them their orders leaves no process and says what it said before; a Ctrl-C or SIGTERM while the plan is
being checked too; and the server that boots is that very process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qa import cli
from qa.harness import early_fork_server
from qa.homeserver import early_synapse
from qa.homeserver.synapse import SynapseHomeserver

REPO = Path(__file__).resolve().parents[2]
MARK = "MATRIX_QA_TEST_EARLY_MARK"


def _marked(mark: str) -> list[int]:
    """Processes (zombies have no environment to read) whose environment carries MARK=mark."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _waiting_interpreters(mark: str, flag: str = early_synapse.AWAIT_FLAG) -> list[int]:
    found = []
    for pid in _marked(mark):
        try:
            if flag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.parametrize(("flags", "message", "forked"), [
    (["--scenario", "no-such-scenario"], "matrix-qa: unknown scenario id(s): no-such-scenario; known ids: canary",
     True),
    (["--bot", "bad.yaml"],
     "matrix-qa: bad.yaml:3:1: YAML syntax error: expected the node content, but found '<stream end>'\n", False),
    (["--bot-set", "noSuchKey=1"], "matrix-qa: --bot-set noSuchKey: unknown key (known: ", True),
])
def test_a_run_refused_by_its_checks_stops_what_it_started_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        flags: list[str], message: str, forked: bool) -> None:
    (tmp_path / "bad.yaml").write_text("name: x\ncommand: [\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(MARK, str(tmp_path))
    started: list[early_synapse.EarlySynapse | None] = []
    real_start = early_synapse.start
    monkeypatch.setattr(early_synapse, "start", lambda env: started.append(real_start(env)) or started[-1])
    zygotes: list[early_fork_server.EarlyForkServer | None] = []
    real_zygote = early_fork_server.start
    monkeypatch.setattr(early_fork_server, "start", lambda env: zygotes.append(real_zygote(env)) or zygotes[-1])

    code = cli.main(["run", *flags, "--output-dir", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message), err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert len(started) == 1 and started[0] is not None, "no Synapse was started early: the test proves nothing"
    assert started[0].returncode == -signal.SIGKILL  # stopped, and reaped (else returncode would be None)
    # The fork server only for the built-in agent (a user's bot file's preload is their code: never before the checks).
    assert len(zygotes) == forked and all(z is not None and z.returncode == -signal.SIGKILL for z in zygotes)
    assert _marked(str(tmp_path)) == []
    assert not (tmp_path / "out").exists()  # nothing written before the checks, as before


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_a_signal_while_the_plan_is_checked_leaves_no_synapse(tmp_path: Path, signum: int, code: int) -> None:
    # --rerun-failed reads a FIFO nobody writes: the run waits there, after the early start, until the signal.
    fifo = tmp_path / "summary.json"
    os.mkfifo(fifo)
    env = {**os.environ, MARK: str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "qa.cli", "run", "--rerun-failed", str(fifo), "--output-dir",
                             str(tmp_path / "out")], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: bool(_waiting_interpreters(str(tmp_path))), 120, "the run never started Synapse early")
        _until(lambda: bool(_waiting_interpreters(str(tmp_path), early_fork_server.AWAIT_FLAG)), 120,
               "the run never started the fork server early")
        proc.send_signal(signum)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    # SIGTERM ends the harness at once: PR_SET_PDEATHSIG (and its stdin or socket closing) take what was waiting.
    _until(lambda: _marked(str(tmp_path)) == [], 30, "a Synapse or fork server outlived the run")


@pytest.mark.own_homeserver
def test_the_server_that_boots_is_the_interpreter_started_early(tmp_path: Path) -> None:
    os.environ[MARK] = str(tmp_path)
    try:
        early = early_synapse.start(os.environ)
    finally:
        del os.environ[MARK]
    assert early is not None and early_synapse.take() is early
    hs = SynapseHomeserver(tmp_path / "work", tmp_path / "logs", template_dir=None)
    hs.adopt_early(early)

    async def boot_and_stop() -> tuple[int | None, str]:
        await hs.start()
        try:
            return hs.pid, os.readlink(f"/proc/{hs.pid}/cwd")
        finally:
            await hs.stop()

    pid, cwd = asyncio.run(boot_and_stop())
    assert pid == early.pid and cwd == str(tmp_path / "work")
    assert "STARTING SERVER" in (tmp_path / "logs" / "synapse.stdout.log").read_text()
    assert early.returncode is not None and _marked(str(tmp_path)) == []
