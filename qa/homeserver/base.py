"""The interface every homeserver backend implements (Synapse child process, Tuwunel in Docker, external URL).

The harness only talks to a homeserver through this: start it, learn where it is, make users, stop it.
Everything else (rooms, messages, sync) goes through real Matrix clients, as a bot would see it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class UserCredentials:
    """Who a test user is. access_token/device_id are set only by register_session on a backend that logs the
    new user in as part of registering it; otherwise clients log in themselves."""

    user_id: str
    password: str
    localpart: str
    access_token: str | None = None
    device_id: str | None = None

    def __repr__(self) -> str:
        # Credentials end up in reprs of actors and in tracebacks; the password and token must not.
        token = ", access_token='***'" if self.access_token else ""
        return f"UserCredentials(user_id={self.user_id!r}, localpart={self.localpart!r}, password='***'{token})"


class Homeserver(ABC):
    kind: str
    server_name: str
    # Filled by start(): what actually answered, for the report's environment section.
    version: str | None = None
    log_path: Path | None = None
    # Spawn-to-ready time of the most recent start(), in milliseconds.
    boot_ms: float | None = None
    # Whether registration_token() can mint a token here (a server the run owns and administers).
    mints_registration_tokens: bool = False
    # The application-service endpoint (qa.homeserver.appservice_host.AppserviceHost) of a homeserver that loaded
    # the harness's registration at boot; None where the backend cannot (image, Tuwunel, external).
    appservice: Any = None

    # Why the server died while nobody was stopping it (set by backends that can watch their server).
    death: str | None = None
    _died: asyncio.Event | None = None

    def _died_event(self) -> asyncio.Event:
        if self._died is None:
            self._died = asyncio.Event()
        return self._died

    def mark_died(self, reason: str) -> None:
        self.death = reason
        self._died_event().set()

    async def wait_died(self) -> str:
        """Returns, with the reason, once the server has died on its own; never for a server nobody watches."""
        await self._died_event().wait()
        return self.death or "it stopped"

    @property
    @abstractmethod
    def base_url(self) -> str:
        """Client-server API root, e.g. http://127.0.0.1:8008 (no trailing slash)."""

    @abstractmethod
    async def start(self) -> None:
        """Return once /_matrix/client/versions answers 200; raise InfraError otherwise."""

    @abstractmethod
    async def stop(self) -> None:
        """Idempotent; safe to call whether or not start() ran or succeeded."""

    @abstractmethod
    async def restart(self) -> None:
        """Stop, then start again with the same address and data."""

    @abstractmethod
    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        """Create a user; raise InfraError if the server refuses."""

    async def register_session(self, localpart: str, password: str, *, device_name: str) -> UserCredentials:
        """Create a user and, where the backend does both in one request, a logged-in device named `device_name`
        (the credentials then carry its access token and device id). Elsewhere this is register_user, and the
        caller logs in: a login per user is what registering with a session saves."""
        return await self.register_user(localpart, password)

    async def registration_token(self, uses: int, valid_s: float) -> str:
        """A registration token on this homeserver for `uses` registrations within `valid_s` seconds (a bot file's
        `registration: token`). Only a backend that owns its homeserver can mint one."""
        from qa.kernel.errors import InfraError

        raise InfraError(f"the {self.kind} homeserver backend cannot make registration tokens")

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            # A half-started server (spawned, never ready) must not outlive a failed `async with`.
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
