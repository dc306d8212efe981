"""A homeserver someone already runs, chosen by --homeserver-url (qa.homeserver.external); its registration options
are shared with --homeserver-image (qa/homeserver/backends/image.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qa.homeserver.registry import Backend, Option, Settings, StartRequest, register
from qa.kernel.errors import ConfigError

if TYPE_CHECKING:
    from qa.homeserver.base import Homeserver

# Shared with --homeserver-image (qa/homeserver/backends/image.py): an option of both backends.
REGISTRATION = Option("--registration", metavar="MODE", argparse={"choices": ["open", "shared-secret", "token"]},
                      help="how test users are registered: open (m.login.dummy; the default for "
                      "--homeserver-image), shared-secret or token (with the flags or environment variables "
                      "below); for --homeserver-url and --homeserver-image. Never guessed: without it, the one "
                      "credential given decides")
OPTIONS = (
    Option("--homeserver-url", metavar="URL",
           help="use a homeserver you already run instead of starting one; users and rooms get unique names per "
           "run and nothing else is touched"),
    REGISTRATION,
    Option("--registration-token", metavar="TOKEN",
           help="registration token for --homeserver-url or --homeserver-image (better: env "
           "MATRIX_QA_REGISTRATION_TOKEN, which keeps it out of the process list)"),
    Option("--registration-shared-secret", metavar="SECRET",
           help="Synapse registration_shared_secret for --homeserver-url or --homeserver-image "
           "(better: env MATRIX_QA_REGISTRATION_SHARED_SECRET)"),
)


def _settings(settings: Settings, env: Mapping[str, str]) -> Any:
    from qa.homeserver.external import resolve_external_settings

    if not settings.get("homeserver_url"):
        raise ConfigError("an external homeserver needs --homeserver-url URL")
    return resolve_external_settings(url=settings["homeserver_url"],
                                     registration_token=settings.get("registration_token"),
                                     shared_secret=settings.get("registration_shared_secret"), env=env,
                                     registration=settings.get("registration"))


def _create(request: StartRequest) -> Homeserver:
    from qa.homeserver.external import ExternalHomeserver

    return ExternalHomeserver(_settings(request.settings, request.env))


def _preflight(settings: Settings, env: Mapping[str, str]) -> list[str]:
    return list(_settings(settings, env).secrets)


def _misplaced(settings: Settings, in_use: str) -> list[str]:
    if settings.get("homeserver_url"):
        raise ConfigError(f"--homeserver-url points at an existing server; it cannot be combined with "
                          f"--homeserver {in_use}")
    return [o.flag for o in OPTIONS[1:] if settings.get(o.dest)]


BACKEND = register(Backend(name="external", create=_create, options=OPTIONS, chosen_by="homeserver_url",
                           misplaced=_misplaced, preflight=_preflight))
