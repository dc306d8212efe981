"""Any homeserver image that meets Complement's contract, chosen by --homeserver-image (qa.homeserver.image).

Its options: the image, its environment (--homeserver-env KEY=VALUE, repeatable) and how users are registered
(--registration, default open as the contract says; the token and shared secret flags are shared with
--homeserver-url). The `tuwunel` backend (qa/homeserver/backends/tuwunel.py) is a preset of this one.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qa.homeserver.backends.external import OPTIONS as EXTERNAL_OPTIONS
from qa.homeserver.image_options import OPEN, Registration, parse_env, resolve_registration
from qa.homeserver.registry import Backend, Option, Settings, StartRequest, register
from qa.kernel.errors import ConfigError

if TYPE_CHECKING:
    from qa.homeserver.base import Homeserver

IMAGE = Option("--homeserver-image", metavar="IMAGE",
               help="start the homeserver from this image (any image meeting Complement's contract: client API "
               "on 8008, GET /_matrix/client/versions, SERVER_NAME, open registration); needs a Docker engine")
ENV = Option("--homeserver-env", metavar="KEY=VALUE", argparse={"action": "append"},
             help="an environment variable for the homeserver's container (--homeserver-image, --homeserver "
             "tuwunel; repeatable), e.g. SERVER_NAME=hs1")
# --registration, --registration-token and --registration-shared-secret: the same options as --homeserver-url's.
OPTIONS = (IMAGE, ENV, *EXTERNAL_OPTIONS[1:])


def image_name(settings: Settings) -> str:
    image = (settings.get("homeserver_image") or "").strip()
    if not image:
        raise ConfigError("--homeserver-image needs an image name, e.g. matrix-qa/complement-synapse:<tag>")
    if image.startswith("-") or any(c.isspace() or not c.isprintable() for c in image):
        raise ConfigError(f"--homeserver-image {image!r} is not an image reference (no spaces, control "
                          "characters or leading '-')")
    return image


def registration(settings: Settings, env: Mapping[str, str]) -> Registration:
    return resolve_registration(settings.get("registration"), token=settings.get("registration_token"),
                                shared_secret=settings.get("registration_shared_secret"), env=env, default=OPEN,
                                needed_by="--homeserver-image")


def _create(request: StartRequest) -> Homeserver:
    from qa.homeserver.image import ImageHomeserver

    settings = request.settings
    return ImageHomeserver(request.log_dir, image=image_name(settings),
                           registration=registration(settings, request.env),
                           env=parse_env(settings.get("homeserver_env")), port=request.port)


def _preflight(settings: Settings, env: Mapping[str, str]) -> list[str]:
    from qa.homeserver.image import connect_docker, env_secrets

    image_name(settings)
    user_env = parse_env(settings.get("homeserver_env"))
    chosen = registration(settings, env)
    # Only a check that an engine answers; the backend opens its own client when it starts.
    connect_docker(env, timeout=10).close()
    return [*chosen.secrets, *env_secrets(user_env)]


def _misplaced(settings: Settings, in_use: str) -> list[str]:
    if settings.get("homeserver_image") is not None:
        image_name(settings)  # `--homeserver-image ""` chose no backend, but must not be ignored either
        other = "--homeserver-url" if in_use == "external" else f"--homeserver {in_use}"
        hint = " (--tuwunel-image chooses the preset's image)" if in_use == "tuwunel" else ""
        raise ConfigError(f"--homeserver-image starts a homeserver from an image; it cannot be combined with "
                          f"{other}{hint}")
    return [o.flag for o in OPTIONS if settings.get(o.dest)]


def _last_resort() -> None:
    # Never imports docker for a run that did not use it.
    module = sys.modules.get("qa.homeserver.container")
    if module is not None:
        module.remove_all_containers()


BACKEND = register(Backend(name="image", create=_create, options=OPTIONS, chosen_by="homeserver_image",
                           misplaced=_misplaced, preflight=_preflight, last_resort=_last_resort))
