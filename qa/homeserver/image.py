"""A homeserver from any image that meets Complement's contract (`--homeserver-image`), or from a preset's image.

The contract (https://github.com/matrix-org/complement#image-requirements, docs/homeservers.md): the client API
on 8008, `GET /_matrix/client/versions` answering 200 once ready, the server name from `SERVER_NAME`, storage
inside the container, open registration with `m.login.dummy`. The lifecycle (start on a free loopback port,
readiness, restart of the same container with its data, the watch, the redacted log, removal by label) is
qa.homeserver.container's; this module adds the image's environment, the registration the user chose, the
image's id for the report and, for open registration, a probe at start: an image that refuses it fails there
(exit 2, naming the image and quoting its log) rather than in every scenario.
"""

from __future__ import annotations

import asyncio
import re
import secrets as secrets_module
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from qa.homeserver import container
from qa.homeserver.base import UserCredentials
from qa.homeserver.container import DEFAULT_START_TIMEOUT_S, ContainerHomeserver, DockerFactory, loopback_spec
from qa.homeserver.external import POLL_INTERVAL_S, VERSION_PATHS, VERSIONS_PATH, fetch_server_info
from qa.homeserver.image_options import (
    CONTRACT_PORT,
    OPEN,
    SERVER_NAME_ENV,
    SHARED_SECRET,
    Preset,
    Registration,
    container_env,
    judge_start,
    server_name_in,
)
from qa.homeserver.registration import register_open, register_with_shared_secret, register_with_token
from qa.kernel.errors import InfraError
from qa.shared.redact import MIN_SECRET_LENGTH

# --homeserver-env values under names like these are kept out of the artifacts like the registration secret.
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|KEY", re.IGNORECASE)


def connect_docker(env: Mapping[str, str] | None = None, *, timeout: int = 60) -> Any:
    return container.connect_docker(env, timeout=timeout, needed_by="--homeserver-image")


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The values of --homeserver-env entries whose names say they are secret (long enough to redact)."""
    return [v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH]


class ImageHomeserver(ContainerHomeserver):
    kind = "image"
    image_flag = "--homeserver-image"

    def __init__(self, log_dir: Path, *, image: str, registration: Registration, env: Mapping[str, str] | None = None,
                 preset: Preset | None = None, port: int | None = None,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
                 docker_factory: DockerFactory = connect_docker) -> None:
        super().__init__(log_dir, image=image, port=port, start_timeout_s=start_timeout_s,
                         docker_factory=docker_factory)
        self.display = "Docker"  # in the shared messages: "the Docker container ... exited"
        self.registration = registration
        self.preset = preset
        self.user_env = dict(env or {})
        self.server_name_env = preset.server_name_env if preset else SERVER_NAME_ENV
        self.server_name = server_name_in(self.user_env, self.server_name_env)
        self.version_paths = preset.version_paths if preset and preset.version_paths else VERSION_PATHS
        self.image_id: str | None = None  # the engine's id of the image that ran (sha256:...), set by start()

    @property
    def secrets(self) -> list[str]:
        return [*self.registration.secrets, *env_secrets(self.user_env)]

    @property
    def registered_by(self) -> str:
        return self.registration.described

    def environment(self) -> dict[str, str]:
        preset = self.preset
        token_env = preset.token_env if preset else None
        return container_env(server_name=self.server_name, server_name_env=self.server_name_env,
                             preset_env=preset.env if preset else {}, user_env=self.user_env,
                             token_env=token_env, token=self.registration.secret if token_env else None)

    def container_spec(self, host_port: int) -> dict[str, Any]:
        return loopback_spec(image=self.image, name=self.container_name, host_port=host_port,
                             container_port=CONTRACT_PORT, instance=self.instance, kind=self.kind,
                             environment=self.environment())

    async def start(self) -> None:
        if self.running:
            return
        await super().start()
        self.image_id = await asyncio.to_thread(self._image_id)
        if self.preset is None and (info := await fetch_server_info(self.base_url, self.version_paths)):
            self.version = f"{info[0]} {info[1]}"  # any image: which server it is matters as much as its version
        if self.registration.mode == OPEN:
            await self._probe_open_registration()

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        return await self._register(localpart, password, admin=admin, device_name=None)

    async def register_session(self, localpart: str, password: str, *, device_name: str) -> UserCredentials:
        return await self._register(localpart, password, admin=False, device_name=device_name)

    async def _register(self, localpart: str, password: str, *, admin: bool,
                        device_name: str | None) -> UserCredentials:
        if not self.running:
            raise InfraError(f"cannot register @{localpart}: the homeserver from {self.image} is not running")
        mode, secret = self.registration.mode, self.registration.secret
        if admin and mode != SHARED_SECRET:
            raise InfraError(f"cannot register @{localpart} as an admin by {self.registration.described}: only "
                             "--registration shared-secret can make admins")
        if mode == OPEN:
            return await register_open(self.base_url, localpart, password, device_name=device_name)
        assert secret is not None
        if mode == SHARED_SECRET:
            return await register_with_shared_secret(self.base_url, secret, localpart, password, admin=admin,
                                                     device_name=device_name)
        return await register_with_token(self.base_url, secret, localpart, password)

    # --- the contract, checked at start --------------------------------------------------------------------

    async def _become_ready(self, t0: float) -> None:
        """Poll /versions until 200; judge_start says when to give up (exit, 404 for long, the deadline)."""
        url, last, not_found_since, polls = self.base_url + VERSIONS_PATH, "no answer yet", None, 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            self.boot_ms = (time.monotonic() - t0) * 1000
                            return
                        last = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = f"{type(exc).__name__}: {exc}".rstrip(": ")
                now = time.monotonic()
                not_found_since = (not_found_since or now) if last == "HTTP 404" else None
                polls += 1
                # Docker is asked every few polls only: it is a call to another service.
                status, code = await asyncio.to_thread(self._status) if polls % 4 == 0 else ("running", None)
                problem = judge_start(status=status, exit_code=code, last_answer=last, waited_s=now - t0,
                                      timeout_s=self.start_timeout_s,
                                      not_found_for_s=now - not_found_since if not_found_since else 0.0)
                if problem is not None:
                    await self._give_up(self._breach(problem))
                    return
                await asyncio.sleep(POLL_INTERVAL_S)

    async def _probe_open_registration(self) -> None:
        """One throwaway user, so an image that refuses m.login.dummy fails at start, not in every scenario."""
        localpart = f"mqa-probe-{self.instance}"
        try:
            await register_open(self.base_url, localpart, secrets_module.token_urlsafe(16))
        except InfraError as exc:
            await self._give_up(self._breach(f"it refuses open registration ({exc}); choose another way with "
                                             "--registration shared-secret or token"))

    def _breach(self, problem: str) -> str:
        return f"the homeserver image {self.image} does not meet Complement's image contract: {problem}"

    def _image_id(self) -> str | None:
        try:
            return str(self._client.images.get(self.image).id)
        except Exception:
            return None
