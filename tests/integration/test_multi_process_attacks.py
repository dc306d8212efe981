"""Attacks on runs of more than one process (issue 33's robustness), through the CLI as a user or CI would:
SIGINT mid-run with a peer bot (the session's Synapse, as a user's own server); SIGTERM mid-run under an
application-service bot, and its homeserver SIGKILLed under it (these two need a homeserver the run owns: the
appservice registration is loaded at boot, and one of them kills it). Each: the exit the house rules give
(130/143 for a signal, 2 for a dead homeserver), the summary saying why and naming the component's log, partial
results written, every process stopped (bot, peer, homeserver), and no secret (passwords, access tokens, as_token,
hs_token, the homeserver's shared secret) in any artifact or in the console.

The signal lands while the bot's model request hangs in the mock provider (fixtures/mock-provider/hang.yaml), so
the run is still mid-scenario when it arrives, however loaded the machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qa.shared.redact import scan_for_secrets
from tests.integration.conftest import REPO, our_processes
from tests.integration.proc_watch import Snapshot, bot_processes, environs, still_running

pytestmark = pytest.mark.integration
BOTS = REPO / "tests" / "bots"
HANG = REPO / "fixtures" / "mock-provider" / "hang.yaml"
# What the launch contract hands a bot that no artifact may hold (qa.harness.launch).
SECRET_VARIABLES = (b"MATRIX_QA_PASSWORD=", b"MATRIX_QA_ACCESS_TOKEN=", b"MATRIX_QA_AS_TOKEN=", b"MATRIX_QA_HS_TOKEN=",
                    b"MATRIX_QA_REGISTRATION_TOKEN=", b"MATRIX_QA_REGISTRATION_SHARED_SECRET=")


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, **(env or {}), "TMPDIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "qa.cli", "run", "--provider-rules", str(HANG),
                             "--output-dir", str(tmp_path / "out"), *args], cwd=REPO, env=full,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # ends when the run does, so a run that never prints the marker fails below
        seen.append(line)
        if marker in line:
            return "".join(seen)
    pytest.fail(f"the run ended before printing {marker!r}:\n" + "".join(seen))


def _secrets(snapshot: Snapshot, pids: dict[int, str]) -> set[str]:
    """The secret values in the launch environments of `pids` (the bot's and the peer's own processes)."""
    found = set()
    for pid in pids:
        _cmd, environ = snapshot.get(pid, ("", b""))
        for line in environ.split(b"\0"):
            if line.startswith(SECRET_VARIABLES) and len(value := line.split(b"=", 1)[1]) >= 8:
                found.add(value.decode())
    return found


def _holding(snapshot: Snapshot, tokens: set[str]) -> dict[int, str]:
    """The processes with one of `tokens` in their launch environment (an application-service bot's user is in
    the registration's namespace, not named with the run's suffix)."""
    return {pid: cmd for pid, (cmd, environ) in snapshot.items()
            if any(token.encode() in environ for token in tokens)}


def _ended(proc: subprocess.Popen[str], console: str, code: int, secrets: set[str]) -> str:
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, console + rest
    assert "Traceback" not in console + rest, rest
    assert not [s for s in secrets if s in console + rest], "a secret reached the console"
    return rest


def _leaves_nothing(tmp_path: Path, ran: dict[int, str], secrets: set[str]) -> None:
    assert still_running(ran) == [], "every bot process stopped"
    assert our_processes(str(tmp_path)) == [], "no homeserver or bot left"
    assert sorted(tmp_path.glob("matrix-qa-*")) == [], "the temp dir with the run's secrets is gone"
    assert scan_for_secrets(tmp_path / "out", sorted(secrets)) == []


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "matrix-qa-summary.json").read_text())


def test_sigint_mid_run_with_a_peer_bot(tmp_path: Path, shared_homeserver_cli) -> None:
    flags, env = shared_homeserver_cli
    proc = _start(tmp_path, "--scenario", "matrix-bot-loop-guard-peer", "--peer-bot",
                  str(BOTS / "nio-reply-bot-peer.yaml"), *flags, env=env)
    console = _read_until(proc, "1. send:")  # the peer is ready and both bots' model requests now hang
    snapshot = environs()
    proc.send_signal(signal.SIGINT)
    rest = _ended(proc, console, 130, set())
    summary = _summary(tmp_path)
    ran = bot_processes([snapshot], summary["runId"])
    assert any("nio_reply_bot" in cmd for cmd in ran.values()), ran  # the peer was running when the signal came
    secrets = _secrets(snapshot, ran) | set(env.values())
    assert len(secrets) >= 3, "the peer's password and session, the homeserver's shared secret"
    assert not [s for s in secrets if s in console + rest]
    assert summary["status"] == "interrupted" and summary["exitCode"] == 130, summary
    scenario = summary["scenarios"][0]
    assert scenario["status"] == "interrupted" and "SIGINT received" in scenario["details"], scenario
    assert scenario["steps"][0]["status"] == "pass", "what ran before the signal is kept"
    assert 'type="Interrupted"' in (tmp_path / "out" / "junit.xml").read_text()
    _leaves_nothing(tmp_path, ran, secrets)


def _appservice_run(tmp_path: Path) -> tuple[subprocess.Popen[str], str, Snapshot, set[str]]:
    """A run of the canary under the independent application-service bot, on a homeserver of its own, caught
    mid-turn: (the run, its console so far, its processes, the secrets: the bot's as_token and hs_token, and the
    registration's own hs_token, read from the file the homeserver loads)."""
    proc = _start(tmp_path, "--scenario", "canary", "--bot", str(BOTS / "mautrix-appservice-bot.yaml"))
    console = _read_until(proc, "1. send:")
    snapshot = environs()
    registrations = [yaml.safe_load(p.read_text()) for p in tmp_path.rglob("*.yaml") if "matrix-qa-" in str(p)]
    tokens = {str(r[key]) for r in registrations if isinstance(r, dict) and "hs_token" in r
              for key in ("as_token", "hs_token")}
    assert len(tokens) >= 2, "the registration the homeserver loads was found"
    return proc, console, snapshot, tokens


def test_sigterm_mid_run_under_an_appservice_bot(tmp_path: Path) -> None:
    proc, console, snapshot, tokens = _appservice_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _ended(proc, console, 143, tokens)
    summary = _summary(tmp_path)
    ran = _holding(snapshot, tokens)
    assert any("mautrix_appservice_bot.py" in cmd for cmd in ran.values()), ran
    secrets = _secrets(snapshot, ran) | tokens
    assert len(secrets) >= 4, "the bot's as_token and hs_token, the registration's hs_token (and as_token)"
    assert summary["status"] == "interrupted" and summary["exitCode"] == 143, summary
    canary = summary["scenarios"][0]
    assert canary["status"] == "interrupted" and "SIGTERM received" in canary["details"], canary
    assert canary["steps"][0]["status"] == "pass", "what ran before the signal is kept"
    _leaves_nothing(tmp_path, ran, secrets)


def test_a_homeserver_killed_under_an_appservice_bot(tmp_path: Path) -> None:
    proc, console, snapshot, tokens = _appservice_run(tmp_path)
    synapse = [line for line in our_processes(str(tmp_path)) if "synapse.app.homeserver" in line]
    assert len(synapse) == 1, synapse
    os.kill(int(synapse[0].split()[0]), signal.SIGKILL)
    _ended(proc, console, 2, tokens)
    summary = _summary(tmp_path)
    ran = _holding(snapshot, tokens)
    assert any("mautrix_appservice_bot.py" in cmd for cmd in ran.values()), ran
    assert summary["status"] == "error" and summary["exitCode"] == 2, summary
    error = summary["errors"][0]
    assert error["component"] == "homeserver" and "died mid-run" in error["message"], error
    assert "killed by signal 9" in error["message"] and error["log"], error
    assert summary["scenarios"][0]["status"] == "interrupted", summary["scenarios"][0]
    _leaves_nothing(tmp_path, ran, _secrets(snapshot, ran) | tokens)
