"""An existing homeserver by URL, and a live OpenAI-compatible provider, each started separately by the test
the way a user's own would be, and driven through the CLI as a user would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa.homeserver.synapse import SynapseHomeserver
from qa.shared.redact import scan_for_secrets
from tests.integration.conftest import REPO, cli, our_processes
from tests.integration.shared_synapse import SessionSynapse

pytestmark = pytest.mark.integration

RESTART_SCENARIO = """\
id: external-restart
title: A restart step on a server matrix-qa does not control fails with a clear reason
profiles: [restart]
timeout: 60s
steps:
  - send: {as: driver, mention: bot, body: "reply with only this exact marker: {token}", id: ask}
  - expect_reply: {to: ask, body: "{token}", top_level: true}
  - restart_homeserver:
"""


def _summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "matrix-qa-summary.json").read_text()))


class Admin:
    """Just enough client-server and admin API to set up "someone else's" data and check it afterwards."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.http, self.base_url, self.headers = http, base_url, {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self.http.request(method, self.base_url + path, json=body, headers=self.headers) as resp:
            payload = await resp.json()
            assert resp.status == 200, (path, payload)
            return dict(payload)

    @classmethod
    async def login(cls, http: aiohttp.ClientSession, base_url: str, user_id: str, password: str) -> Admin:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password}
        async with http.post(f"{base_url}/_matrix/client/v3/login", json=body) as resp:
            payload = await resp.json()
            assert resp.status == 200, payload
        return cls(http, base_url, payload["access_token"])

    async def user_ids(self) -> set[str]:
        """Every user, page by page: a shared server holds many."""
        found: set[str] = set()
        page = "0"
        while True:
            users = await self.call("GET", f"/_synapse/admin/v2/users?limit=1000&guests=false&from={page}")
            found |= {u["name"] for u in users["users"]}
            if "next_token" not in users:
                return found
            page = str(users["next_token"])


@contextlib.asynccontextmanager
async def _their_server(tmp_path: Path, shared: SessionSynapse) -> AsyncIterator[tuple[SynapseHomeserver, Any]]:
    """(the server, how to run one of its coroutines on the loop that owns it)."""
    if os.environ.get("MATRIX_QA_TESTS_OWN_SYNAPSE") == "1":
        async with SynapseHomeserver(tmp_path / "their-hs", tmp_path / "their-logs") as hs:
            yield hs, _here
        return
    await asyncio.to_thread(shared.ensure_running)
    yield shared.hs, shared.acall


async def _here(coro: Any) -> Any:
    return await coro


async def test_existing_homeserver_by_url(tmp_path: Path, session_synapse: SessionSynapse) -> None:
    # The user's own server: registration needs a token (SynapseHomeserver's default), and it already holds
    # someone's account and room. It is the session's shared Synapse, started apart from the runs as a user's own
    # would be: the CLI runs below only know its URL, and nothing here stops or looks at its process. It also holds
    # earlier tests' users and rooms, as a user's server holds others'. With MATRIX_QA_TESTS_OWN_SYNAPSE=1, a server
    # of the test's own, as before the sharing.
    async with (
        _their_server(tmp_path, session_synapse) as (hs, on_its_loop),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        owner = await on_its_loop(hs.register_user(f"owner-{secrets.token_hex(4)}", "owner-pw-123", admin=True))
        admin = await Admin.login(http, hs.base_url, owner.user_id, owner.password)
        room = (await admin.call("POST", "/_matrix/client/v3/createRoom", {"name": "owner's room"}))["room_id"]
        await admin.call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
                         {"msgtype": "m.text", "body": "private"})
        token = (await admin.call("POST", "/_synapse/admin/v1/registration_tokens/new", {}))["token"]
        before = await admin.user_ids()

        # 1. A registration token, from the environment.
        out1 = tmp_path / "run-token"
        proc = await asyncio.to_thread(cli, "run", "--homeserver-url", hs.base_url, "--scenario", "canary",
                                       "--output-dir", str(out1), tmpdir=tmp_path,
                                       env={"MATRIX_QA_REGISTRATION_TOKEN": token})
        assert proc.returncode == 0, proc.stderr
        env = _summary(out1)["environment"]["homeserver"]
        assert env["kind"] == "external" and env["baseUrl"] == hs.base_url
        assert env["serverName"] == "localhost", "learned from the user ids the server handed out"
        assert env["version"] and env["version"].startswith("Synapse 1.")
        assert env["log"] is None
        run1_users = await admin.user_ids() - before

        # A server that refuses registration is an infrastructure error naming it, not a failed scenario.
        out0 = tmp_path / "run-refused"
        refused = await asyncio.to_thread(cli, "run", "--homeserver-url", hs.base_url, "--scenario", "canary",
                                          "--output-dir", str(out0), tmpdir=tmp_path,
                                          env={"MATRIX_QA_REGISTRATION_TOKEN": "wrong-token-" + secrets.token_hex(6)})
        assert refused.returncode == 2, refused.stderr
        refused_summary = _summary(out0)
        assert refused_summary["status"] == "error"
        assert refused_summary["errors"][0]["component"] == "homeserver", refused_summary["errors"]
        assert "regist" in refused_summary["errors"][0]["message"].lower()
        assert "Traceback" not in refused.stderr

        # 2. The shared secret, with a restart step the external backend must refuse.
        scenarios = tmp_path / "scenarios"
        scenarios.mkdir()
        shutil.copy(REPO / "scenarios" / "canary.yaml", scenarios / "canary.yaml")
        (scenarios / "external-restart.yaml").write_text(RESTART_SCENARIO)
        out2 = tmp_path / "run-secret"
        proc2 = await asyncio.to_thread(cli, "run", "--homeserver-url", hs.base_url, "--scenarios-dir", str(scenarios),
                                        "--no-builtin-scenarios",
                                        "--scenario", "canary", "--scenario", "external-restart",
                                        "--output-dir", str(out2), tmpdir=tmp_path,
                                        env={"MATRIX_QA_REGISTRATION_SHARED_SECRET": hs.shared_secret})
        assert proc2.returncode == 1, proc2.stderr
        summary2 = _summary(out2)
        by_id = {s["id"]: s for s in summary2["scenarios"]}
        assert by_id["canary"]["status"] == "pass"
        restart = by_id["external-restart"]
        assert restart["status"] == "fail"
        assert "not supported for external servers" in restart["details"], restart["details"]
        run2_users = await admin.user_ids() - before - run1_users

        # Unique names per run: each run made its own users, all recognisably ours.
        assert len(run1_users) >= 2 and len(run2_users) >= 4
        assert all(u.startswith("@mqa-") for u in run1_users | run2_users)
        assert summary2["runId"][-6:].lower() in next(iter(run2_users))
        # Nothing the runs did not create was touched: the owner's room has the same members and events.
        assert (await admin.call("GET", "/_matrix/client/v3/joined_rooms"))["joined_rooms"] == [room]
        members = await admin.call("GET", f"/_matrix/client/v3/rooms/{room}/joined_members")
        assert set(members["joined"]) == {owner.user_id}
        events = await admin.call("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100")
        assert {e["sender"] for e in events["chunk"]} == {owner.user_id}
        assert await admin.user_ids() >= before

        for out, secret in ((out1, token), (out2, hs.shared_secret)):
            assert scan_for_secrets(out, [secret]) == []
        assert token not in proc.stderr and hs.shared_secret not in proc2.stderr
    assert our_processes(str(tmp_path)) == []


@pytest.fixture(scope="module")
def live_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """Our mock provider started on its own, as any OpenAI-compatible server would be: (base URL, key, journal).
    One for the module's three tests, as a user's endpoint serves every run: none stops or looks at it, and each
    run's markers are its own (a process of its own per test was an interpreter and the mock's imports again)."""
    key = "sk-mqa-live-" + secrets.token_hex(16)
    journal = tmp_path_factory.mktemp("live-endpoint") / "endpoint-journal.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.provider.mock", "--port", "0", "--api-key", key, "--journal", str(journal)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), base_url
        yield base_url, key, journal
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_live_provider_over_real_http(tmp_path: Path, live_endpoint: tuple[str, str, Path],
                                      shared_homeserver_cli: tuple[list[str], dict[str, str]]) -> None:
    # The provider is what is tested: the homeserver is the session's, by URL (it never sees the key).
    flags, hs_env = shared_homeserver_cli
    base_url, key, _ = live_endpoint
    port = base_url.split(":")[2].split("/")[0]
    out = tmp_path / "run-live"
    step_summary = tmp_path / "step-summary.md"
    github = {"GITHUB_STEP_SUMMARY": str(step_summary), "GITHUB_SERVER_URL": "https://github.com",
              "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "7", "MATRIX_QA_ARTIFACT_NAME": "matrix-qa-artifacts"}
    proc = cli("run", "--provider", "live", "--model", "mock-model", "--base-url", base_url, "--model-timeout", "30",
               "--scenario", "canary", "--scenario", "matrix-thread-follow-up",
               "--scenario", "matrix-session-lock-contention", "--output-dir", str(out), *flags, tmpdir=tmp_path,
               env={"OPENAI_API_KEY": key, **github, **hs_env})
    assert proc.returncode == 0, proc.stderr
    summary = _summary(out)
    assert summary["environment"]["provider"] == {"mode": "live", "model": "mock-model",
                                                  "baseUrlHost": f"127.0.0.1:{port}"}
    assert summary["counts"]["passed"] == 3
    # A live endpoint keeps no journal for us: checks that need one say so instead of passing silently.
    assert not (out / "provider-journal.json").exists()
    follow_up = next(s for s in summary["scenarios"] if s["id"] == "matrix-thread-follow-up")
    assert any(step["detail"].startswith("NOT CHECKED") for step in follow_up["steps"])
    assert summary["lock"]["verdict"] == "pass"

    # The job summary was written for CI, with the pointer to the artifacts.
    text = step_summary.read_text()
    assert "matrix-qa: pass" in text and "https://github.com/o/r/actions/runs/7" in text

    # The key: every file of the artifact directory (bot logs and traces included), the job summary, and
    # everything printed. It did reach the bot, or the endpoint (which checks it) would not have answered.
    assert (out / "scenarios" / "canary" / "bot.log").exists()
    assert scan_for_secrets(out, [key]) == []
    assert key not in text and key not in proc.stderr and key not in proc.stdout
    assert our_processes(str(tmp_path)) == []


def test_live_provider_wrong_key_is_exit_2_without_the_key(
    tmp_path: Path, live_endpoint: tuple[str, str, Path], shared_homeserver_cli: tuple[list[str], dict[str, str]]
) -> None:
    # The provider is what is tested, as in the two tests above: the homeserver is the session's, by URL.
    flags, hs_env = shared_homeserver_cli
    base_url, _, _ = live_endpoint
    wrong = "sk-wrong-" + secrets.token_hex(12)
    out = tmp_path / "run-wrong-key"
    proc = cli("run", "--provider", "live", "--model", "mock-model", "--base-url", base_url, "--scenario", "canary",
               *flags, "--output-dir", str(out), tmpdir=tmp_path, env={**hs_env, "OPENAI_API_KEY": wrong})
    assert proc.returncode == 2, proc.stderr
    assert "401" in proc.stderr and "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    summary = _summary(out)
    assert summary["status"] == "error" and summary["errors"][0]["component"] == "provider"
    assert summary["environment"]["provider"]["mode"] == "live"
    assert scan_for_secrets(out, [wrong]) == [] and wrong not in proc.stderr
    assert our_processes(str(tmp_path)) == []


def test_nothing_withheld_in_proc_environ_of_the_fork_server_or_a_forked_bot_during_a_live_run(
    tmp_path: Path, live_endpoint: tuple[str, str, Path], shared_homeserver_cli: tuple[list[str], dict[str, str]]
) -> None:
    """As an attacker beside the bot would look: /proc/<pid>/environ of every bot-side process of a live run
    (the fork server, and the bots forked from it), read while they run. The homeserver is the session's, by URL:
    its registration shared secret is then one the harness really uses (from its environment), not only planted."""
    import time

    base_url, key, _ = live_endpoint
    flags, hs_env = shared_homeserver_cli
    registration = hs_env.get("MATRIX_QA_REGISTRATION_SHARED_SECRET") or "reg-planted-" + secrets.token_hex(8)
    env = {**os.environ, "TMPDIR": str(tmp_path), "MATRIX_QA_LIVE_OPENAI_KEY": key,
           "MATRIX_QA_REGISTRATION_SHARED_SECRET": registration}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "qa.cli", "run", "--provider", "live", "--model", "mock-model",
                             "--base-url", base_url, "--scenario", "canary", "--scenario", "matrix-thread-follow-up",
                             "--output-dir", str(tmp_path / "out"), *flags], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, bytes] = {}
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        for line in our_processes(str(tmp_path)):
            if "qa.harness.zygote" in line:
                pid = int(line.split()[0])
                try:
                    seen[pid] = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
        time.sleep(0.05)  # sampling the processes of a run we do not control
    if proc.poll() is None:
        proc.kill()
    assert proc.wait(timeout=60) == 0
    assert len(seen) >= 2, "the fork server and at least one bot forked from it were read"
    for pid, environ in seen.items():
        assert key.encode() not in environ and registration.encode() not in environ, pid
        assert b"MATRIX_QA_LIVE_" not in environ and b"MATRIX_QA_REGISTRATION_" not in environ, pid
    assert our_processes(str(tmp_path)) == []
