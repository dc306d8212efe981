"""The bot's Matrix identity on disk: which device it is and where that device's crypto store lives, and what
it does when either is lost — a store that cannot be opened, a device the server deleted.

The harness hands the bot a ready session (MATRIX_QA_ACCESS_TOKEN, MATRIX_QA_DEVICE_ID): the bot adopts it instead
of logging in with its password (one round trip and a password hash on the server fewer at every boot), as long
as that is the device it is. Once it had to become another device (see below), a restart logs in with the
password as that device again, since the handed token belongs to the lost one.

Both end the same way: the old device's private keys are of no use any more, so the bot logs in as a new
device with an empty store, says so in the trace, and carries on. What was encrypted for the old device stays
undecryptable (fail closed); nothing is decrypted with keys the bot should not have.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import peewee
from nio import AsyncClient, AsyncClientConfig, LoginError

from qa.agent.config import AgentConfig
from qa.agent.store_binding import STORE
from qa.kernel.errors import InfraError
from qa.kernel.trace import Trace

REQUEST_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class HandedSession:
    """A session the harness made for the bot: its access token and the device it belongs to."""

    access_token: str
    device_id: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HandedSession | None:
        token, device = env.get("MATRIX_QA_ACCESS_TOKEN"), env.get("MATRIX_QA_DEVICE_ID")
        return cls(token, device) if token and device else None


class CryptoIdentity:
    def __init__(self, config: AgentConfig, trace: Trace, password: str, session: HandedSession | None = None
                 ) -> None:
        self._config = config
        self._trace = trace
        self._password = password
        self._session = session
        # How the current device's session came about (traced with `ready`): "handed-session" or "password".
        self.login_method = ""
        state = Path(config.state_dir)
        # forgetStateOnStart loses the store like a bot on an ephemeral disk would.
        self.store = state / (f"volatile-{os.getpid()}/nio-store" if config.forget_state_on_start else "nio-store")
        self._device_file = self.store.parent / "device.json"
        if config.mutated("crypto-store-per-process"):
            # The test-only bug: the device is kept, its keys are not (a store on tmpfs, lost with the process).
            self.store = state / f"volatile-{os.getpid()}/nio-store"

    def device_id(self) -> str | None:
        """The device this bot is: the one it last logged in as, else the handed session's, else the configured
        one."""
        try:
            return str(json.loads(self._device_file.read_text())["deviceId"])
        except (OSError, ValueError, KeyError, TypeError):
            return self._session.device_id if self._session else self._config.device_id

    def new_client(self, device_id: str | None) -> AsyncClient:
        self.store.mkdir(parents=True, exist_ok=True)
        return AsyncClient(self._config.homeserver, self._config.user_id, device_id=device_id,
                           store_path=str(self.store),
                           # nio's own retries stay off (429s and timeouts, unbounded and untraced there): the
                           # bot's are bounded and traced (qa.agent.matrix, qa.agent.sender).
                           config=AsyncClientConfig(encryption_enabled=self._config.encryption,
                                                    request_timeout=REQUEST_TIMEOUT_S,
                                                    max_limit_exceeded=0, max_timeouts=0,
                                                    # the same store, its tables bound once (qa.agent.store_binding)
                                                    **({"store": STORE} if STORE is not None else {})))

    async def login(self, client: AsyncClient) -> AsyncClient:
        """Log `client` in; a crypto store that cannot be opened is set aside and a new device logs in."""
        try:
            await self._login(client)
            return client
        except (peewee.PeeweeException, sqlite3.Error) as exc:  # nio opens the store during login
            if not self._config.reset_corrupt_crypto_store or not self._config.encryption:
                raise
            aside = self._set_aside()
            self._trace.emit("e2ee.store.corrupt", deviceId=client.device_id, error=f"{type(exc).__name__}: {exc}",
                             keptAt=aside.name)
            await client.close()
        fresh = await self._logged_in_fresh()
        self._trace.emit("e2ee.store.reset", deviceId=fresh.device_id)
        return fresh

    async def _logged_in_fresh(self) -> AsyncClient:
        """A new client, logged in as a new device; closed again when the login fails or is cancelled (a stop
        during the login: nobody else holds it)."""
        fresh = self.new_client(None)
        try:
            await self._login(fresh)
        except BaseException:
            await fresh.close()
            raise
        return fresh

    async def relogin(self, old: AsyncClient) -> AsyncClient:
        """Our device is gone from the server: a new device, a new store file (nio keys it by device id)."""
        fresh = await self._logged_in_fresh()
        self._trace.emit("device.relogin", oldDeviceId=old.device_id, deviceId=fresh.device_id)
        await old.close()
        return fresh

    async def _login(self, client: AsyncClient) -> None:
        session = self._session
        if session is not None and client.device_id == session.device_id:
            # No request: the token is checked by the first sync, and a rejected one (M_UNKNOWN_TOKEN) takes
            # the deleted-device path (qa.agent.matrix), which logs in with the password as a new device.
            client.restore_login(self._config.user_id, session.device_id, session.access_token)
            self.login_method = "handed-session"
        else:
            resp = await client.login(self._password, device_name="matrix-qa bot")
            if isinstance(resp, LoginError):
                raise InfraError(f"bot login as {self._config.user_id} failed: {resp.message}")
            self.login_method = "password"
        self._remember(client)

    def _remember(self, client: AsyncClient) -> None:
        tmp = self._device_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"deviceId": client.device_id}))
        tmp.replace(self._device_file)

    def _set_aside(self) -> Path:
        # Kept, not deleted: whoever debugs the damage wants to see it.
        n = 1
        while (aside := self.store.with_name(f"{self.store.name}.corrupt-{n}")).exists():
            n += 1
        shutil.move(str(self.store), aside)
        return aside
