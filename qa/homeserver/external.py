"""A homeserver someone already runs, reached by URL: the one their bot lives on in production.

matrix-qa does not own this server, so it is careful with it:

* it only ever *adds* things: users and rooms whose names carry the run's unique suffix (the scenario runner
  names them), registered the way the user chose (--registration: open, or the token or shared secret they
  handed us);
* it never deactivates, deletes, joins or changes anything it did not create, and it does not clean up after
  itself either (that would need admin rights over other people's data);
* it cannot restart the server, so the restart_homeserver step fails with a clear error instead.

`server_name` is learned from the first registered user id (the part after the first colon), which is the
server's own answer and needs no extra permissions. The version comes from `/_matrix/federation/v1/version`,
or failing that the Synapse/Tuwunel-specific unauthenticated version endpoints; it stays None if none answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import aiohttp

from qa.homeserver.base import Homeserver, UserCredentials
from qa.homeserver.image_options import (
    ENV_REGISTRATION_SHARED_SECRET,
    ENV_REGISTRATION_TOKEN,
    OPEN,
    SHARED_SECRET,
    Registration,
    resolve_registration,
)
from qa.homeserver.registration import register_open, register_with_shared_secret, register_with_token
from qa.kernel.errors import ConfigError, InfraError
from qa.urls import clean_http_url, shown_url

__all__ = ["ENV_REGISTRATION_SHARED_SECRET", "ENV_REGISTRATION_TOKEN", "ExternalHomeserver", "ExternalSettings"]
VERSIONS_PATH = "/_matrix/client/versions"
POLL_INTERVAL_S = 0.05
# The server is already running; this only rides out a proxy or load balancer that is briefly unhappy.
DEFAULT_REACH_TIMEOUT_S = 15.0

# Tried in order; each answers without authentication. The spec's federation endpoint comes first, but a
# server that does not federate (or only mounts client resources, as our embedded Synapse does) may not serve it.
VERSION_PATHS = ("/_matrix/federation/v1/version", "/_synapse/admin/v1/server_version", "/_tuwunel/server_version")


GoneCheck = Callable[[], Awaitable[str | None]]


class HomeserverRestartUnsupported(InfraError):
    """Raised by restart() on a backend whose process matrix-qa does not control."""


@dataclass(frozen=True)
class ExternalSettings:
    base_url: str
    registration: Registration = field(default_factory=lambda: Registration(OPEN))

    @property
    def secrets(self) -> list[str]:
        return self.registration.secrets

    @property
    def method(self) -> str:
        return self.registration.described


def validate_homeserver_url(url: str) -> str:
    cleaned = clean_http_url(url, "--homeserver-url", "https://matrix.example.org",
                             "use --registration-token or --registration-shared-secret "
                             "(or their environment variables)")
    parsed = urlparse(cleaned)
    if parsed.query or parsed.fragment:
        raise ConfigError("--homeserver-url must be the client-server API root without query or fragment, "
                          f"got {shown_url(url)!r}")
    return cleaned


def resolve_external_settings(
    *,
    url: str,
    registration_token: str | None,
    shared_secret: str | None,
    env: Mapping[str, str],
    registration: str | None = None,
) -> ExternalSettings:
    """Flags win over environment variables; the way users are registered is the one asked for (--registration)
    or the one credential given. Pure: reads only its arguments."""
    base_url = validate_homeserver_url(url)
    chosen = resolve_registration(registration, token=registration_token, shared_secret=shared_secret, env=env,
                                  default=None, needed_by="--homeserver-url")
    return ExternalSettings(base_url=base_url, registration=chosen)


async def wait_until_answering(
    base_url: str, deadline: float, *, check_every: int = 10, gone: GoneCheck | None = None
) -> str | None:
    """Poll `/_matrix/client/versions` every 50 ms until it answers 200 (→ None), the deadline passes or
    `gone()` says the server cannot come up any more (→ what went wrong).

    `gone` is asked every `check_every` polls only: it is usually a call to another service (Docker).
    """
    url = base_url + VERSIONS_PATH
    last = "no answer yet"
    polls = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return None
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}".rstrip(": ")
            polls += 1
            if gone is not None and polls % check_every == 0 and (reason := await gone()) is not None:
                return reason
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return last
            await asyncio.sleep(min(POLL_INTERVAL_S, remaining))


async def fetch_server_info(base_url: str, paths: Sequence[str] = VERSION_PATHS) -> tuple[str, str] | None:
    """(implementation name, version) from the first version endpoint that answers, or None."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for path in paths:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with http.get(base_url + path) as resp:
                    if resp.status != 200:
                        continue
                    body = await resp.json(content_type=None)
                    info = _parse_version(path, body)
                    if info is not None:
                        return info
    return None


def _parse_version(path: str, body: object) -> tuple[str, str] | None:
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("server"), dict):  # the spec's federation answer
        server = body["server"]
        if isinstance(server.get("version"), str):
            return str(server.get("name") or "unknown"), server["version"]
    if isinstance(body.get("server_version"), str):  # Synapse's admin endpoint
        return "Synapse", body["server_version"]
    if isinstance(body.get("version"), str):  # Tuwunel's (and conduwuit's) own endpoint
        return str(body.get("name") or "unknown"), body["version"]
    return None


class ExternalHomeserver(Homeserver):
    kind = "external"

    def __init__(self, settings: ExternalSettings, *, reach_timeout_s: float = DEFAULT_REACH_TIMEOUT_S) -> None:
        self.settings = settings
        self.reach_timeout_s = reach_timeout_s
        # Unknown until the server names a user it registered for us; the report then records that answer.
        self.server_name = ""
        self.version = None
        self.boot_ms = None
        self.log_path = None  # not ours: its log is wherever its operator keeps it

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def secrets(self) -> list[str]:
        return self.settings.secrets

    async def start(self) -> None:
        """Check the server answers; "boot" time is how long that took (nothing is booted)."""
        t0 = time.monotonic()
        problem = await wait_until_answering(self.base_url, t0 + self.reach_timeout_s)
        if problem is not None:
            raise InfraError(f"homeserver at {self.base_url} did not answer {VERSIONS_PATH} within "
                             f"{self.reach_timeout_s:g}s ({problem})")
        self.boot_ms = (time.monotonic() - t0) * 1000
        info = await fetch_server_info(self.base_url)
        self.version = f"{info[0]} {info[1]}" if info else None

    async def stop(self) -> None:
        """Nothing to stop: the server is not ours, and what the run created stays (see the module notes)."""

    async def restart(self) -> None:
        raise HomeserverRestartUnsupported(
            "restarting the homeserver is not supported for external servers (--homeserver-url): matrix-qa does "
            "not control that server's process. Run restart scenarios with --homeserver synapse, --homeserver-image "
            "IMAGE or --homeserver tuwunel."
        )

    @property
    def registered_by(self) -> str:
        return self.settings.registration.described

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        mode, secret = self.settings.registration.mode, self.settings.registration.secret
        if admin and mode != SHARED_SECRET:
            raise InfraError(f"cannot register @{localpart} as an admin on {self.base_url} by "
                             f"{self.registered_by}; an admin user needs --registration-shared-secret")
        if mode == OPEN:
            creds = await register_open(self.base_url, localpart, password)
        elif mode == SHARED_SECRET:
            assert secret is not None
            creds = await register_with_shared_secret(self.base_url, secret, localpart, password, admin=admin)
        else:
            assert secret is not None
            creds = await register_with_token(self.base_url, secret, localpart, password)
        if not self.server_name:
            self.server_name = server_name_of(creds.user_id)
        return creds


def server_name_of(user_id: str) -> str:
    """`@alice:example.org:8448` → `example.org:8448` (server names may carry a port, so split once)."""
    _, sep, server = user_id.partition(":")
    return server if sep else ""
