"""A real Synapse child process: boot, users, restart, shutdown and the ways it can fail to start."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa.homeserver.registration import register_with_token
from qa.homeserver.synapse import STOP_GRACE_S, SynapseHomeserver, kill_all_children
from qa.kernel.errors import InfraError

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _synapse_processes_for(config_path: Path) -> list[int]:
    """Pids whose command line names this config: also catches a child we lost track of."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"synapse.app.homeserver" in cmdline and str(config_path).encode() in cmdline:
            found.append(int(entry.name))
    return found


async def _login(http: aiohttp.ClientSession, base_url: str, user_id: str, password: str) -> str:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    async with http.post(f"{base_url}/_matrix/client/v3/login", json=body) as resp:
        payload = await resp.json()
        assert resp.status == 200, payload
        return str(payload["access_token"])


async def _post(http: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        payload = await resp.json()
        assert resp.status == 200, payload
        return dict(payload)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_boot_users_rooms_restart_and_stop(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    hs = SynapseHomeserver(tmp_path / "hs", tmp_path / "logs")
    try:
        await hs.start()
        assert hs.boot_ms is not None
        print(f"\nSynapse {hs.version}: first boot {hs.boot_ms:.0f} ms")
        assert hs.version and hs.version.split(".")[0] == "1"
        assert hs.base_url.startswith("http://127.0.0.1:")
        async with http.get(f"{hs.base_url}/_matrix/client/versions") as resp:
            assert resp.status == 200
            assert "versions" in await resp.json()

        alice = await hs.register_user("alice", "alice-pw-1", admin=True)
        bob = await hs.register_user("bob", "bob-pw-2")
        assert alice.user_id == "@alice:localhost"
        assert bob.user_id == "@bob:localhost"

        token = await _login(http, hs.base_url, bob.user_id, bob.password)
        room = await _post(
            http, f"{hs.base_url}/_matrix/client/v3/createRoom", token, {"invite": [alice.user_id]}
        )
        assert room["room_id"].startswith("!")

        pid_before = hs.pid
        port_before = hs.port
        await hs.restart()
        print(f"Synapse restart boot {hs.boot_ms:.0f} ms")
        assert pid_before is not None and not _alive(pid_before)
        assert hs.port == port_before
        # Same database: the user and the room survived the restart.
        token = await _login(http, hs.base_url, bob.user_id, bob.password)
        async with http.get(
            f"{hs.base_url}/_matrix/client/v3/joined_rooms", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert room["room_id"] in (await resp.json())["joined_rooms"]

        pid = hs.pid
        assert pid is not None
        started = time.monotonic()
        await hs.stop()
        # SIGKILL comes only after STOP_GRACE_S: anything shorter was SIGTERM's doing (a fixed 5 s was a wall-time
        # bound a loaded machine could break with SIGTERM enough).
        assert time.monotonic() - started < STOP_GRACE_S, "SIGTERM should be enough; it should not wait for SIGKILL"
        assert not _alive(pid)
        assert hs.pid is None
        await hs.stop()  # idempotent
    finally:
        await hs.stop()
    assert _synapse_processes_for(hs.config_path) == []


async def test_pristine_template_is_built_once_reused_fresh_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    # The logs cannot tell a cold boot from a template one (seeded_boot creates the schema before Synapse's
    # logging starts), so template_note says which one happened.
    async def boot(name: str) -> tuple[SynapseHomeserver, str]:
        hs = SynapseHomeserver(tmp_path / name, tmp_path / f"{name}-logs", template_dir=cache)
        await hs.start()
        return hs, hs.log_path.read_text()

    first, log = await boot("first")
    try:
        assert first.template_note == "no template yet"  # cold: seeded_boot created the schema, and kept it
        await first.register_user("left-over", "pw-left-over")
    finally:
        await first.stop()
    (template,) = [p for p in cache.iterdir() if not p.name.startswith(".")]

    second, log = await boot("second")
    try:
        assert second.template_note is None  # its database is a copy of the template
        assert "Existing schema is" in log and not re.search(r"Applying schema \d+/", log)
        # Fresh all the same: the first server's user is not here, so its name can be registered again.
        assert (await second.register_user("left-over", "pw")).user_id == "@left-over:localhost"
    finally:
        await second.stop()

    (template / "homeserver.db").write_bytes(b"damaged")
    third, log = await boot("third")
    try:
        assert third.template_note is not None and "discarded" in third.template_note
        await third.register_user("carol", "pw-carol")
    finally:
        await third.stop()
    assert (template / "homeserver.db").read_bytes()[:16] == b"SQLite format 3\x00"  # rebuilt, sound again
    for hs in (first, second, third):
        assert _synapse_processes_for(hs.config_path) == []


async def test_invalid_config_names_the_log_and_leaves_no_process(tmp_path: Path) -> None:
    hs = SynapseHomeserver(
        tmp_path / "hs", tmp_path / "logs", extra_config={"database": {"name": "nosuchdb"}}
    )
    with pytest.raises(InfraError) as caught:
        await hs.start()
    message = str(caught.value)
    assert "Synapse failed to start (exit code 1)" in message
    assert str(hs.stdout_path) in message
    assert "Unsupported database type 'nosuchdb'" in message
    assert hs.pid is None
    assert _synapse_processes_for(hs.config_path) == []
    config_text = hs.config_path.read_text()
    secret = hs.shared_secret
    assert secret in config_text and secret not in message


async def test_start_deadline_kills_a_server_that_is_not_ready_in_time(tmp_path: Path) -> None:
    # Nothing boots Synapse in 0.2 s (its imports alone take longer), so this takes the deadline path.
    hs = SynapseHomeserver(tmp_path / "hs", tmp_path / "logs", start_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"did not answer /_matrix/client/versions within 0\.2s"):
        await hs.start()
    # Stopped at the deadline by SIGTERM, not left to SIGKILL after STOP_GRACE_S (a fixed 5 s was a wall-clock bound
    # a loaded machine could break with the kill done right).
    assert time.monotonic() - started < STOP_GRACE_S
    assert hs.pid is None
    assert _synapse_processes_for(hs.config_path) == []


async def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        hs = SynapseHomeserver(tmp_path / "hs", tmp_path / "logs", port=port)
        started = time.monotonic()
        with pytest.raises(InfraError, match=rf"port {port} .*already in use") as refused:
            await hs.start()
        # Fast because nothing was launched: the check before the spawn refused. A Synapse that booted and then
        # failed to bind also ends with "; port N ... already in use", seconds later and with output in its log:
        # that is the evidence; the wall-clock bound is a loose one (a fixed 5 s could break under load).
        assert "Synapse was not launched" in str(refused.value), refused.value
        assert not hs.stdout_path.exists() or hs.stdout_path.stat().st_size == 0
        assert time.monotonic() - started < STOP_GRACE_S
        await hs.stop()
    assert _synapse_processes_for(hs.config_path) == []


async def test_context_manager_stops_on_error_and_kill_all_children(tmp_path: Path) -> None:
    hs = SynapseHomeserver(tmp_path / "a", tmp_path / "logs-a")
    pid = None
    with pytest.raises(RuntimeError, match="scenario blew up"):
        async with hs:
            pid = hs.pid
            raise RuntimeError("scenario blew up")
    assert pid is not None and not _alive(pid)

    # The last-resort path a signal handler uses: synchronous SIGKILL of every live child.
    other = SynapseHomeserver(tmp_path / "b", tmp_path / "logs-b")
    try:
        await other.start()
        assert other.pid is not None
        kill_all_children()
        # SIGKILL lands asynchronously; poll for the process to vanish rather than assume it already has.
        deadline = time.monotonic() + 5
        while _synapse_processes_for(other.config_path) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _synapse_processes_for(other.config_path) == []
    finally:
        await other.stop()
    assert _synapse_processes_for(other.config_path) == []


async def test_registration_token_flow(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    extra = {"enable_registration": True, "registration_requires_token": True}
    async with SynapseHomeserver(tmp_path / "hs", tmp_path / "logs", extra_config=extra) as hs:
        admin = await hs.register_user("admin", "admin-pw-1", admin=True)
        admin_token = await _login(http, hs.base_url, admin.user_id, admin.password)
        created = await _post(
            http, f"{hs.base_url}/_synapse/admin/v1/registration_tokens/new", admin_token, {"uses_allowed": 1}
        )
        registration_token = created["token"]

        carol = await register_with_token(hs.base_url, registration_token, "carol", "carol-pw-3")
        assert carol.user_id == "@carol:localhost"
        await _login(http, hs.base_url, carol.user_id, carol.password)

        # The token allowed one use; a second registration must be refused, and say why without secrets.
        with pytest.raises(InfraError) as caught:
            await register_with_token(hs.base_url, registration_token, "dave", "dave-pw-4")
        message = str(caught.value)
        assert "401" in message and "M_UNAUTHORIZED" in message
        assert registration_token not in message and "dave-pw-4" not in message
    assert _synapse_processes_for(hs.config_path) == []
