"""Creating users on a homeserver: the admin side without a Matrix client library, open registration with one.

Three ways, as described in design.md ("Homeservers") and docs/homeservers.md:

* Synapse's shared-secret registration (`/_synapse/admin/v1/register`), which Synapse always offers when a
  `registration_shared_secret` is configured, and which can make admins;
* the client-server `m.login.registration_token` user-interactive flow, for servers where we hold a
  registration token instead (Tuwunel, or a homeserver someone else runs);
* open registration with `m.login.dummy` (Complement's image contract), through matrix-nio's own
  `AsyncClient.register`, as any Matrix client registers.

Every failure becomes an InfraError carrying the HTTP status and the server's errcode/error. Passwords,
secrets and tokens are scrubbed from those messages, because they end up in CI logs and reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from qa.homeserver.base import UserCredentials
from qa.kernel.errors import HomeserverError as InfraError  # every failure here is the homeserver's

SHARED_SECRET_PATH = "/_synapse/admin/v1/register"
REGISTER_PATH = "/_matrix/client/v3/register"

TOKEN_STAGE = "m.login.registration_token"
# Synapse before the stable name (MSC3231) and some other servers still advertise this one.
UNSTABLE_TOKEN_STAGE = "org.matrix.msc3231.login.registration_token"
DUMMY_STAGE = "m.login.dummy"
_STAGES_WE_CAN_DO = frozenset({TOKEN_STAGE, UNSTABLE_TOKEN_STAGE, DUMMY_STAGE})

_TIMEOUT = aiohttp.ClientTimeout(total=30)


def shared_secret_mac(secret: str, nonce: str, username: str, password: str, admin: bool) -> str:
    """HMAC-SHA1 that Synapse's shared-secret registration checks, hex encoded."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    fields = [nonce, username, password, "admin" if admin else "notadmin"]
    mac.update(b"\x00".join(field.encode("utf-8") for field in fields))
    return mac.hexdigest()


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def register_with_shared_secret(
    base_url: str,
    shared_secret: str,
    localpart: str,
    password: str,
    *,
    admin: bool = False,
    session: aiohttp.ClientSession | None = None,
    device_name: str | None = None,
) -> UserCredentials:
    """Register through Synapse's admin API (a nonce per registration: GET, then POST).

    With `device_name`, the same request logs the user in on a new device of that name and the credentials
    carry its access token; without, no device or token is made at all (`inhibit_login`), since the user's
    clients log in for themselves.
    """
    secrets = (shared_secret, password)
    async with _session(session) as http:
        url = base_url.rstrip("/") + SHARED_SECRET_PATH
        status, body = await _request(http, "GET", url, None, "fetching a registration nonce", secrets)
        if status != 200 or not isinstance(body.get("nonce"), str):
            raise _failure("fetching a registration nonce", status, body, secrets)
        nonce = body["nonce"]
        payload = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": shared_secret_mac(shared_secret, nonce, localpart, password, admin),
        }
        if device_name is None:
            payload["inhibit_login"] = True
        else:
            payload["initial_device_display_name"] = device_name
        what = f"registering @{localpart} with the shared secret"
        status, body = await _request(http, "POST", url, payload, what, secrets)
        if status != 200 or not isinstance(body.get("user_id"), str):
            raise _failure(what, status, body, secrets)
        token, device_id = body.get("access_token"), body.get("device_id")
        if device_name is not None and not (isinstance(token, str) and isinstance(device_id, str)):
            raise InfraError(f"{what}: the server registered the user but returned no session for it")
        return UserCredentials(user_id=body["user_id"], password=password, localpart=localpart,
                               access_token=token if device_name is not None else None,
                               device_id=device_id if device_name is not None else None)


async def register_with_token(
    base_url: str,
    registration_token: str,
    localpart: str,
    password: str,
    *,
    session: aiohttp.ClientSession | None = None,
) -> UserCredentials:
    """Register through `/_matrix/client/v3/register`, completing whichever token flow the server offers."""
    secrets = (registration_token, password)
    what = f"registering @{localpart} with a registration token"
    url = base_url.rstrip("/") + REGISTER_PATH
    # No access token is wanted here: clients log in for themselves later, with their own devices.
    request: dict[str, Any] = {"username": localpart, "password": password, "inhibit_login": True}
    async with _session(session) as http:
        status, body = await _request(http, "POST", url, request, what, secrets)
        if status == 200:
            return _credentials(body, localpart, password, what, status, secrets)
        if status != 401 or "flows" not in body:
            raise _failure(what, status, body, secrets)

        session_id = body.get("session")
        stages = choose_flow(body.get("flows") or [])
        if stages is None:
            offered = [flow.get("stages") for flow in body.get("flows") or [] if isinstance(flow, dict)]
            raise InfraError(f"{what}: the server offers no flow we can complete (offered: {offered})")

        # Bound the loop by the flow length: a server that keeps answering 401 without progress must not
        # keep us here forever.
        for _ in range(len(stages) + 1):
            completed = set(body.get("completed") or [])
            pending = [stage for stage in stages if stage not in completed]
            if not pending:
                break
            auth: dict[str, Any] = {"type": pending[0], "session": session_id}
            if pending[0] != DUMMY_STAGE:
                auth["token"] = registration_token
            status, body = await _request(http, "POST", url, {**request, "auth": auth}, what, secrets)
            if status == 200:
                return _credentials(body, localpart, password, what, status, secrets)
            # A 401 carrying an errcode means the stage itself was refused (e.g. an invalid token);
            # a bare 401 with flows means "stage accepted, more to do".
            if status != 401 or "errcode" in body:
                raise _failure(what, status, body, secrets)
        raise InfraError(f"{what}: the server did not finish registration after stages {stages}")


async def mint_token(base_url: str, admin_token: str, uses: int, valid_s: float,
                     http: aiohttp.ClientSession) -> str:
    """A registration token for `uses` registrations within `valid_s` seconds, by Synapse's admin API (a bot
    file's `registration: token`, issue 33)."""
    url = base_url.rstrip("/") + "/_synapse/admin/v1/registration_tokens/new"
    body = {"uses_allowed": uses, "expiry_time": int((time.time() + valid_s) * 1000)}
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {admin_token}"}) as resp:
        made = await resp.json(content_type=None) if resp.status == 200 else None
        if not isinstance(made, dict) or not isinstance(made.get("token"), str):
            raise InfraError(f"the homeserver refused to make a registration token: HTTP {resp.status}")
    return str(made["token"])


def choose_flow(flows: list[Any]) -> list[str] | None:
    """The shortest advertised flow made only of stages we can complete, or None."""
    usable = [
        list(flow["stages"])
        for flow in flows
        if isinstance(flow, dict)
        and isinstance(flow.get("stages"), list)
        and set(flow["stages"]) <= _STAGES_WE_CAN_DO
    ]
    return min(usable, key=len, default=None)


def _credentials(
    body: dict[str, Any], localpart: str, password: str, what: str, status: int, secrets: Iterable[str]
) -> UserCredentials:
    user_id = body.get("user_id")
    if not isinstance(user_id, str):
        raise _failure(what, status, body, secrets)
    return UserCredentials(user_id=user_id, password=password, localpart=localpart)


@asynccontextmanager
async def _session(session: aiohttp.ClientSession | None) -> AsyncIterator[aiohttp.ClientSession]:
    if session is not None:
        yield session
        return
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as own:
        yield own


async def _request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    payload: dict[str, Any] | None,
    what: str,
    secrets: Iterable[str],
) -> tuple[int, dict[str, Any]]:
    try:
        async with http.request(method, url, json=payload) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = {"error": (await resp.text())[:200]}
            return resp.status, body if isinstance(body, dict) else {"error": repr(body)[:200]}
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", secrets)
        raise InfraError(f"{what}: could not reach {url}: {detail}") from exc


def _failure(what: str, status: int, body: dict[str, Any], secrets: Iterable[str]) -> InfraError:
    errcode = body.get("errcode", "no errcode")
    error = body.get("error", "no error message")
    return InfraError(redact(f"{what} failed: HTTP {status} {errcode}: {error}", secrets))


# matrix-nio retries 429s and timeouts on its own; bounded here, so a server that keeps refusing ends.
_NIO_TIMEOUT_S = 30
_NIO_RETRIES = 3


async def register_open(base_url: str, localpart: str, password: str, *,
                        device_name: str | None = None) -> UserCredentials:
    """Register with `m.login.dummy` (open registration) through matrix-nio.

    Registering always logs the new user in on a device; with `device_name` the credentials carry that
    session, without it the session is logged out again and the user's clients log in for themselves."""
    from nio import AsyncClient, AsyncClientConfig, RegisterResponse

    secrets = (password,)
    what = f"registering @{localpart} by open registration (m.login.dummy)"
    config = AsyncClientConfig(request_timeout=_NIO_TIMEOUT_S, max_timeouts=_NIO_RETRIES,
                               max_limit_exceeded=_NIO_RETRIES, encryption_enabled=False)
    client = AsyncClient(base_url.rstrip("/"), localpart, config=config)
    try:
        try:
            response = await client.register(localpart, password, device_name=device_name or "matrix-qa")
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", secrets)
            raise InfraError(f"{what}: could not reach {base_url}: {detail}") from exc
        if not isinstance(response, RegisterResponse):
            errcode = getattr(response, "status_code", None) or "no errcode"
            raise InfraError(redact(f"{what} failed: {errcode}: {getattr(response, 'message', response)}",
                                    secrets))
        if device_name is None:
            with contextlib.suppress(Exception):
                await client.logout()
            return UserCredentials(user_id=response.user_id, password=password, localpart=localpart)
        return UserCredentials(user_id=response.user_id, password=password, localpart=localpart,
                               access_token=response.access_token, device_id=response.device_id)
    finally:
        await client.close()
