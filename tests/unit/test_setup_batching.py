"""Per-scenario setup: users registered with their sessions in one request, rooms made side by side."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from qa.homeserver.base import Homeserver, UserCredentials
from qa.homeserver.registration import register_with_shared_secret
from qa.kernel.errors import InfraError
from qa.scenario.runner import _create_rooms

SECRET = "the-shared-secret"


def _fake_admin_api(bodies: list[dict[str, Any]], *, session: bool = True) -> web.Application:
    """Synapse's shared-secret registration, checking the MAC like Synapse does."""
    nonces = iter(f"nonce-{i}" for i in range(100))

    async def nonce(_: web.Request) -> web.Response:
        return web.json_response({"nonce": next(nonces)})

    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join(str(body[k]).encode() for k in ("nonce", "username", "password"))
                   + b"\x00" + (b"admin" if body["admin"] else b"notadmin"))
        if mac.hexdigest() != body["mac"]:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "HMAC incorrect"}, status=403)
        reply = {"user_id": f"@{body['username']}:localhost", "home_server": "localhost"}
        if session and not body.get("inhibit_login"):
            reply |= {"access_token": f"syt_{body['username']}", "device_id": f"DEV{body['username'].upper()}"}
        return web.json_response(reply)

    app = web.Application()
    app.router.add_get("/_synapse/admin/v1/register", nonce)
    app.router.add_post("/_synapse/admin/v1/register", register)
    return app


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_registration_with_a_device_name_returns_that_session() -> None:
    bodies: list[dict[str, Any]] = []
    server = await _serve(_fake_admin_api(bodies))
    try:
        url = str(server.make_url("")).rstrip("/")
        creds = await register_with_shared_secret(url, SECRET, "alice", "pw-a", device_name="matrix-qa alice")
    finally:
        await server.close()
    assert (creds.user_id, creds.access_token, creds.device_id) == ("@alice:localhost", "syt_alice", "DEVALICE")
    assert bodies[0]["initial_device_display_name"] == "matrix-qa alice"
    assert "inhibit_login" not in bodies[0]
    assert "syt_alice" not in repr(creds) and "pw-a" not in repr(creds)


async def test_registration_without_a_device_makes_no_session() -> None:
    bodies: list[dict[str, Any]] = []
    server = await _serve(_fake_admin_api(bodies))
    try:
        url = str(server.make_url("")).rstrip("/")
        creds = await register_with_shared_secret(url, SECRET, "bob", "pw-b")
    finally:
        await server.close()
    # Nobody would ever use that device: the server is told not to make it.
    assert bodies[0]["inhibit_login"] is True
    assert creds.access_token is None and creds.device_id is None


async def test_a_server_that_returns_no_session_when_asked_is_named() -> None:
    server = await _serve(_fake_admin_api([], session=False))
    try:
        url = str(server.make_url("")).rstrip("/")
        with pytest.raises(InfraError, match="returned no session"):
            await register_with_shared_secret(url, SECRET, "carol", "pw-c", device_name="matrix-qa carol")
    finally:
        await server.close()


async def test_concurrent_registrations_each_use_their_own_nonce() -> None:
    bodies: list[dict[str, Any]] = []
    server = await _serve(_fake_admin_api(bodies))
    try:
        url = str(server.make_url("")).rstrip("/")
        users = await asyncio.gather(*(register_with_shared_secret(url, SECRET, f"u{i}", f"pw{i}",
                                                                   device_name=f"d{i}") for i in range(6)))
    finally:
        await server.close()
    assert [u.user_id for u in users] == [f"@u{i}:localhost" for i in range(6)]
    assert len({b["nonce"] for b in bodies}) == 6


class _LoginOnly(Homeserver):
    """A backend that cannot log a user in while registering it (Tuwunel, external with a token)."""

    kind = "fake"
    server_name = "localhost"
    base_url = "http://127.0.0.1:1"

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def restart(self) -> None: ...

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        return UserCredentials(user_id=f"@{localpart}:localhost", password=password, localpart=localpart)


async def test_register_session_elsewhere_is_plain_registration() -> None:
    creds = await _LoginOnly().register_session("dave", "pw", device_name="matrix-qa dave")
    assert creds.user_id == "@dave:localhost" and creds.access_token is None  # the caller logs in


class _FakeActor:
    """Records what setup asked of it; create_room waits until every room's creation has begun."""

    def __init__(self, name: str, log: list[str], all_started: asyncio.Event, expected: int,
                 started: list[str]) -> None:
        self.name, self.user_id = name, f"@{name}:localhost"
        self._log, self._all_started, self._expected, self._started = log, all_started, expected, started

    async def create_room(self, name: str, invite: list[str], *, encrypted: bool = False,
                          direct: bool = False) -> str:
        self._started.append(name)
        if len(self._started) == self._expected:
            self._all_started.set()
        # Bounded: rooms made one after another never get here together, and the test fails on the timeout.
        await asyncio.wait_for(self._all_started.wait(), timeout=5)
        self._log.append(f"create {name} invite={invite} encrypted={encrypted} direct={direct}")
        return f"!{name.split()[1]}:localhost"

    async def mark_direct(self, other: str, room_id: str) -> None:
        self._log.append(f"{self.name} m.direct {other} {room_id}")

    async def join(self, room_id: str) -> None:
        self._log.append(f"{self.name} join {room_id}")


def _room(**kwargs: Any) -> Any:
    return SimpleNamespace(**{"members": None, "invite_bot": True, "encrypted": False, "direct": False, **kwargs})


async def test_rooms_are_created_together_with_invites_then_joined(tmp_path: Path) -> None:
    log: list[str] = []
    started: list[str] = []
    rooms = {"main": _room(encrypted=True), "side": _room(invite_bot=False), "dm1": _room(members=["bob"],
             direct=True), "dm2": _room(members=["bob"], direct=True)}
    everyone = asyncio.Event()
    actors = {n: _FakeActor(n, log, everyone, len(rooms), started) for n in ("alice", "bob")}
    scenario = SimpleNamespace(id="sc", actors=["alice", "bob"], rooms=rooms)
    made = await _create_rooms(scenario, "run1", actors, "@bot:localhost")  # type: ignore[arg-type]
    assert made == {"main": "!main:localhost", "side": "!side:localhost", "dm1": "!dm1:localhost",
                    "dm2": "!dm2:localhost"}
    assert "create sc main run1 invite=['@bot:localhost', '@bob:localhost'] encrypted=True direct=False" in log
    assert "create sc side run1 invite=['@bob:localhost'] encrypted=False direct=False" in log
    assert "create sc dm1 run1 invite=['@bot:localhost'] encrypted=False direct=True" in log
    # Each m.direct PUT replaces the last, so they stay in scenario order: the last DM named wins.
    directs = [line for line in log if "m.direct" in line]
    assert directs == ["bob m.direct @bot:localhost !dm1:localhost", "bob m.direct @bot:localhost !dm2:localhost"]
    joins = [line for line in log if " join " in line]
    assert sorted(joins) == ["bob join !main:localhost", "bob join !side:localhost"]  # DMs: the creator is bob
    assert log.index(directs[-1]) < min(log.index(j) for j in joins)


async def test_an_adopted_session_is_what_a_login_leaves(tmp_path: Path) -> None:
    from qa.actors import Actor

    for encryption in (False, True):
        actor = Actor("alice", "http://127.0.0.1:1", "@alice:localhost", "pw", tmp_path / f"store-{encryption}",
                      encryption=encryption)
        try:
            actor.adopt_session("syt_token", "DEVICEA")
            assert actor.client.logged_in
            assert (actor.client.access_token, actor.client.device_id) == ("syt_token", "DEVICEA")
            # An encrypted actor gets its crypto identity for that device, as after a login.
            assert (actor.client.olm is not None) is encryption
        finally:
            await actor.close()
