"""The image backend without an engine: open registration through matrix-nio against a stand-in /register,
the container's spec, the secrets kept out of the artifacts, and registration by the mode chosen."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from qa.homeserver import image as image_module
from qa.homeserver.base import UserCredentials
from qa.homeserver.container import LABEL
from qa.homeserver.image import ImageHomeserver
from qa.homeserver.image_options import OPEN, SHARED_SECRET, TOKEN, Registration
from qa.homeserver.registration import register_open
from qa.kernel.errors import InfraError

PASSWORD = "a-password-0123"


@pytest.fixture
async def register_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A stand-in /register: `state["refuse"]` answers 403 M_FORBIDDEN; every request is recorded."""
    state: dict[str, Any] = {"refuse": False, "requests": [], "logouts": 0}

    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        state["requests"].append(body)
        if state["refuse"]:
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "Registration has been disabled"},
                                     status=403)
        return web.json_response({"user_id": f"@{body['username']}:hs.test", "access_token": "syt_tok",
                                  "device_id": "DEV1"})

    async def logout(request: web.Request) -> web.Response:
        state["logouts"] += 1
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/_matrix/client/v3/register", register)
    app.router.add_post("/_matrix/client/v3/logout", logout)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


async def test_open_registration_is_m_login_dummy_through_nio_and_keeps_the_session(
        register_server: tuple[str, dict[str, Any]]) -> None:
    url, state = register_server
    creds = await register_open(url, "alice", PASSWORD, device_name="alice's phone")
    assert (creds.user_id, creds.access_token, creds.device_id) == ("@alice:hs.test", "syt_tok", "DEV1")
    [sent] = state["requests"]
    assert sent["auth"] == {"type": "m.login.dummy"}
    assert (sent["username"], sent["password"], sent["initial_device_display_name"]) == (
        "alice", PASSWORD, "alice's phone")
    assert state["logouts"] == 0


async def test_without_a_device_name_the_session_is_logged_out_again(
        register_server: tuple[str, dict[str, Any]]) -> None:
    url, state = register_server
    creds = await register_open(url + "/", "bob", PASSWORD)
    assert (creds.user_id, creds.access_token, creds.device_id) == ("@bob:hs.test", None, None)
    assert state["logouts"] == 1


async def test_a_refusal_names_the_user_the_way_and_the_servers_answer_but_not_the_password(
        register_server: tuple[str, dict[str, Any]]) -> None:
    url, state = register_server
    state["refuse"] = True
    with pytest.raises(InfraError) as caught:
        await register_open(url, "carol", PASSWORD)
    assert str(caught.value) == ("registering @carol by open registration (m.login.dummy) failed: M_FORBIDDEN: "
                                 "Registration has been disabled")
    assert caught.value.exit_code == 2


async def test_an_unreachable_server_is_an_infra_error(unused_tcp_port: int) -> None:
    with pytest.raises(InfraError, match=r"^registering @dave by open registration \(m\.login\.dummy\): could "
                                         rf"not reach http://127\.0\.0\.1:{unused_tcp_port}: "):
        await register_open(f"http://127.0.0.1:{unused_tcp_port}", "dave", PASSWORD)


# --- the homeserver object ------------------------------------------------------------------------------------


def hs(tmp_path: Path, registration: Registration, env: dict[str, str] | None = None) -> ImageHomeserver:
    return ImageHomeserver(tmp_path, image="example.org/hs:1", registration=registration, env=env,
                           docker_factory=lambda: None)


def test_the_spec_is_complements_contract_on_loopback(tmp_path: Path) -> None:
    server = hs(tmp_path, Registration(OPEN), {"SERVER_NAME": "hs1.test", "OTHER": "x"})
    spec = server.container_spec(40123)
    assert spec["image"] == "example.org/hs:1" and spec["ports"] == {"8008/tcp": ("127.0.0.1", 40123)}
    assert spec["environment"] == {"SERVER_NAME": "hs1.test", "OTHER": "x"}
    assert spec["labels"] == {LABEL: server.instance, "matrix-qa": "image"}
    assert server.server_name == "hs1.test" and server.kind == "image"
    assert hs(tmp_path, Registration(OPEN)).container_spec(1)["environment"] == {"SERVER_NAME": "localhost"}
    assert server.log_path == tmp_path.resolve() / "image.log"


def test_the_registration_secret_and_secret_looking_env_values_are_redacted(tmp_path: Path) -> None:
    server = hs(tmp_path, Registration(TOKEN, "token-0123456789"), {"MY_API_KEY": "key-0123456789", "A": "b" * 20})
    assert server.secrets == ["token-0123456789", "key-0123456789"]
    assert server.registered_by == "a registration token (m.login.registration_token)"
    assert "token-0123456789" not in json.dumps(repr(server.registration))


@pytest.mark.parametrize(("mode", "secret", "called"), [
    (OPEN, None, "open"), (SHARED_SECRET, "secret-0123456789", "shared"), (TOKEN, "token-0123456789", "token")])
async def test_users_are_registered_the_way_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                                   secret: str | None, called: str) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake(name: str) -> Any:
        async def register(*args: Any, **kwargs: Any) -> UserCredentials:
            calls.append((name, args, kwargs))
            return UserCredentials(user_id="@u:hs", password=PASSWORD, localpart="u")
        return register

    monkeypatch.setattr(image_module, "register_open", fake("open"))
    monkeypatch.setattr(image_module, "register_with_shared_secret", fake("shared"))
    monkeypatch.setattr(image_module, "register_with_token", fake("token"))
    server = hs(tmp_path, Registration(mode, secret))
    with pytest.raises(InfraError, match="not running"):
        await server.register_user("u", PASSWORD)
    server._container = object()  # as if started
    server.port = 4000
    await server.register_session("u", PASSWORD, device_name="dev")
    [(name, args, kwargs)] = calls
    assert name == called and args[0] == "http://127.0.0.1:4000"
    if secret:
        assert args[1] == secret
    if mode != TOKEN:
        assert kwargs["device_name"] == "dev"
    if mode == SHARED_SECRET:
        await server.register_user("admin", PASSWORD, admin=True)
        assert calls[-1][2] == {"admin": True, "device_name": None}
    else:
        with pytest.raises(InfraError, match="only --registration shared-secret can make admins"):
            await server.register_user("admin", PASSWORD, admin=True)
