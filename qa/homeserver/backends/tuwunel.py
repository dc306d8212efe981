"""Tuwunel in a Docker container (qa.homeserver.tuwunel): a preset of the image backend (its image, environment
and a fresh registration token), with its image option, --homeserver-env and the engine check before start."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qa.homeserver.backends.image import ENV
from qa.homeserver.image_options import parse_env
from qa.homeserver.registry import Backend, Option, Settings, StartRequest, register
from qa.homeserver.tuwunel_image import DEFAULT_IMAGE

if TYPE_CHECKING:
    from qa.homeserver.base import Homeserver

def _create(request: StartRequest) -> Homeserver:
    from qa.homeserver.tuwunel import TuwunelHomeserver

    return TuwunelHomeserver(request.log_dir, image=request.settings.get("tuwunel_image") or DEFAULT_IMAGE,
                             env=parse_env(request.settings.get("homeserver_env")), port=request.port)


def _preflight(settings: Settings, env: Mapping[str, str]) -> list[str]:
    from qa.homeserver.image import env_secrets
    from qa.homeserver.tuwunel import connect_docker

    user_env = parse_env(settings.get("homeserver_env"))
    # Only a check that an engine answers; the backend opens its own client when it starts.
    connect_docker(env, timeout=10).close()
    return env_secrets(user_env)


def _last_resort() -> None:
    # Never imports docker for a run that did not use it.
    module = sys.modules.get("qa.homeserver.container")
    if module is not None:
        module.remove_all_containers()


BACKEND = register(Backend(
    name="tuwunel", create=_create, preflight=_preflight, last_resort=_last_resort,
    choice="tuwunel (a Docker container; needs a Docker engine)",
    options=(Option("--tuwunel-image", metavar="IMAGE",
                    help=f"image for --homeserver tuwunel, pulled if absent (default: {DEFAULT_IMAGE})"), ENV),
))
