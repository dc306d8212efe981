"""Tuwunel in a Docker container (qa.homeserver.tuwunel): its image option and the engine check before start."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qa.homeserver.registry import Backend, Option, Settings, StartRequest, register
from qa.homeserver.tuwunel_image import DEFAULT_IMAGE

if TYPE_CHECKING:
    from qa.homeserver.base import Homeserver

def _create(request: StartRequest) -> Homeserver:
    from qa.homeserver.tuwunel import TuwunelHomeserver

    return TuwunelHomeserver(request.log_dir, image=request.settings.get("tuwunel_image") or DEFAULT_IMAGE,
                             port=request.port)


def _preflight(settings: Settings, env: Mapping[str, str]) -> list[str]:
    from qa.homeserver.tuwunel import connect_docker

    # Only a check that an engine answers; the backend opens its own client when it starts.
    connect_docker(env, timeout=10).close()
    return []


def _last_resort() -> None:
    # Never imports docker for a run that did not use it.
    module = sys.modules.get("qa.homeserver.container")
    if module is not None:
        module.remove_all_containers()


BACKEND = register(Backend(
    name="tuwunel", create=_create, preflight=_preflight, last_resort=_last_resort,
    choice="tuwunel (a Docker container; needs a Docker engine)",
    options=(Option("--tuwunel-image", metavar="IMAGE",
                    help=f"image for --homeserver tuwunel, pulled if absent (default: {DEFAULT_IMAGE})"),),
))
