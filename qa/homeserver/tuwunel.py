"""Tuwunel (the Rust homeserver) in a Docker container: the image backend's `tuwunel` preset.

One container per run, from `ghcr.io/matrix-construct/tuwunel:v1.5.1` unless told otherwise (--tuwunel-image),
with the preset's environment (qa.homeserver.image_options.TUWUNEL): it listens on 127.0.0.1 only, allows
registration with a fresh random token and does not federate. Its database lives in the container itself, so a
restart keeps the data and removal takes it away. Everything else is the image backend's (qa.homeserver.image)
and every container backend's (qa.homeserver.container). Never run here against Tuwunel itself: no registry is
reachable to pull its image (docs/homeservers.md).
"""

from __future__ import annotations

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
from qa.homeserver.image import ImageHomeserver
from qa.homeserver.image_options import TOKEN, TUWUNEL, Registration, container_env, fresh_token
from qa.homeserver.registration import register_with_token
from qa.homeserver.tuwunel_image import DEFAULT_IMAGE
from qa.kernel.errors import InfraError

__all__ = ["DEFAULT_IMAGE", "LABEL", "TuwunelHomeserver", "build_container_spec", "connect_docker",
           "remove_all_containers"]

DEFAULT_SERVER_NAME = "localhost"
CONTAINER_PORT = 8008


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
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `client.containers.run`. Pure, so the unit tests can check it without an engine."""
    return loopback_spec(image=image, name=name, host_port=host_port, container_port=CONTAINER_PORT,
                         instance=instance, kind="tuwunel", environment=container_env(
                             server_name=server_name, server_name_env=TUWUNEL.server_name_env,
                             preset_env=TUWUNEL.env, user_env=env or {}, token_env=TUWUNEL.token_env,
                             token=registration_token))


class TuwunelHomeserver(ImageHomeserver):
    kind = "tuwunel"
    image_flag = "--tuwunel-image"
    # The generic readiness message (the image backend's names the contract a chosen image broke).
    _become_ready = ContainerHomeserver._become_ready

    def __init__(
        self,
        log_dir: Path,
        *,
        image: str = DEFAULT_IMAGE,
        server_name: str = DEFAULT_SERVER_NAME,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        docker_factory: DockerFactory = connect_docker,
    ) -> None:
        # Fresh per instance; only the container's environment and this object ever hold it.
        super().__init__(log_dir, image=image, registration=Registration(TOKEN, fresh_token()),
                         env={TUWUNEL.server_name_env: server_name, **(env or {})}, preset=TUWUNEL, port=port,
                         start_timeout_s=start_timeout_s, docker_factory=docker_factory)
        self.display = "Tuwunel"

    @property
    def registration_token(self) -> str:
        assert self.registration.secret is not None
        return self.registration.secret

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        if not self.running:
            raise InfraError(f"cannot register @{localpart}: the Tuwunel homeserver is not running")
        if admin:
            raise InfraError(f"cannot register @{localpart} as an admin: Tuwunel registers through a "
                             "registration token, which cannot grant admin rights")
        return await register_with_token(self.base_url, self.registration_token, localpart, password)

    async def register_session(self, localpart: str, password: str, *, device_name: str) -> UserCredentials:
        return await self.register_user(localpart, password)
