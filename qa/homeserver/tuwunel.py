"""Tuwunel (the Rust homeserver) in a Docker container: its image, environment and registration.

One container per run, from `ghcr.io/matrix-construct/tuwunel:v1.5.1` unless told otherwise (--tuwunel-image).
It listens on 127.0.0.1 only, allows registration with a fresh random token and does not federate. Its
database lives in the container itself, so a restart keeps the data and removal takes it away. The lifecycle
(pull, start, readiness, restart, watch, log, removal by label) is every image backend's: qa.homeserver.container.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa.homeserver import container
from qa.homeserver.base import UserCredentials
from qa.homeserver.container import (
    DEFAULT_START_TIMEOUT_S,
    LABEL,
    ContainerHomeserver,
    DockerFactory,
    loopback_spec,
    remove_all_containers,
)
from qa.homeserver.registration import register_with_token
from qa.homeserver.tuwunel_image import DEFAULT_IMAGE
from qa.kernel.errors import InfraError

__all__ = ["DEFAULT_IMAGE", "LABEL", "TuwunelHomeserver", "build_container_spec", "connect_docker",
           "remove_all_containers"]

DEFAULT_SERVER_NAME = "localhost"
CONTAINER_PORT = 8008
DATABASE_PATH = "/var/lib/tuwunel"

# The spec's endpoint first; Tuwunel also answers its own, which does not depend on federation being enabled.
_VERSION_PATHS = ("/_matrix/federation/v1/version", "/_tuwunel/server_version")


def connect_docker(env: Mapping[str, str] | None = None, *, timeout: int = 60) -> Any:
    """A docker client whose engine answered; InfraError naming --homeserver tuwunel and the ways on if none did."""
    return container.connect_docker(env, timeout=timeout, needed_by="--homeserver tuwunel")


def build_container_spec(
    *,
    image: str,
    name: str,
    host_port: int,
    registration_token: str,
    instance: str,
    server_name: str = DEFAULT_SERVER_NAME,
) -> dict[str, Any]:
    """Keyword arguments for `client.containers.run`. Pure, so the unit tests can check it without an engine."""
    return loopback_spec(image=image, name=name, host_port=host_port, container_port=CONTAINER_PORT,
                         instance=instance, kind="tuwunel", environment={
                             "TUWUNEL_SERVER_NAME": server_name,
                             "TUWUNEL_DATABASE_PATH": DATABASE_PATH,
                             "TUWUNEL_ADDRESS": "0.0.0.0",
                             "TUWUNEL_PORT": str(CONTAINER_PORT),
                             "TUWUNEL_ALLOW_REGISTRATION": "true",
                             "TUWUNEL_REGISTRATION_TOKEN": registration_token,
                             "TUWUNEL_ALLOW_FEDERATION": "false",
                             "TUWUNEL_ALLOW_ENCRYPTION": "true",
                             "TUWUNEL_TRUSTED_SERVERS": "[]",
                         })


class TuwunelHomeserver(ContainerHomeserver):
    kind = "tuwunel"
    display = "Tuwunel"
    image_flag = "--tuwunel-image"
    version_paths = _VERSION_PATHS

    def __init__(
        self,
        log_dir: Path,
        *,
        image: str = DEFAULT_IMAGE,
        server_name: str = DEFAULT_SERVER_NAME,
        port: int | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        docker_factory: DockerFactory = connect_docker,
    ) -> None:
        super().__init__(log_dir, image=image, port=port, start_timeout_s=start_timeout_s,
                         docker_factory=docker_factory)
        self.server_name = server_name
        # Fresh per instance; only the container's environment and this object ever hold it.
        self.registration_token = secrets.token_urlsafe(24)

    @property
    def secrets(self) -> list[str]:
        return [self.registration_token]

    def container_spec(self, host_port: int) -> dict[str, Any]:
        return build_container_spec(image=self.image, name=self.container_name, host_port=host_port,
                                    registration_token=self.registration_token, instance=self.instance,
                                    server_name=self.server_name)

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        if not self.running:
            raise InfraError(f"cannot register @{localpart}: the Tuwunel homeserver is not running")
        if admin:
            raise InfraError(f"cannot register @{localpart} as an admin: Tuwunel registers through a "
                             "registration token, which cannot grant admin rights")
        return await register_with_token(self.base_url, self.registration_token, localpart, password)
