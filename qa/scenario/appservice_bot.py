"""A scenario's application-service bot (issue 33): its lease on the homeserver's application-service endpoint
(qa.homeserver.appservice_host), its main user in its own namespace, and the registration copy it may read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qa.homeserver.base import UserCredentials
from qa.kernel.errors import ConfigError

REGISTRATION_COPY = "appservice-registration.yaml"


@dataclass
class AppserviceBot:
    host: Any  # AppserviceHost, or a view of one on another event loop (the tests' shared Synapse)
    lease: Any  # qa.homeserver.appservice_host.Lease
    facts: dict[str, str]  # LaunchFacts.appservice

    def credentials(self) -> UserCredentials:
        """The main user: made by the application service, so it has a session and no password."""
        lease = self.lease
        return UserCredentials(user_id=lease.user_id, password="", localpart=lease.user_id[1:].split(":", 1)[0],
                               access_token=lease.access_token or None, device_id=lease.device_id or None)

    async def release(self) -> None:
        await self.host.release(self.lease.key)


async def lease_appservice(homeserver: Any, bot_file: Any, state_dir: Path, secrets: list[str]
                           ) -> AppserviceBot | None:
    """For a bot file with `appservice:`: a namespace, a main user, a port, a hs_token of the scenario's own, and
    the registration copy in the scenario's private state dir (never in the artifacts). Every token is a secret."""
    spec = bot_file.appservice
    if spec is None:
        return None
    host = getattr(homeserver, "appservice", None)
    if host is None:  # the run refused this before anything started; a homeserver of another kind still says why
        raise ConfigError(f"{bot_file.source}: appservice: the {homeserver.kind} homeserver backend does not load "
                          "the harness's application-service registration (only --homeserver synapse does)")
    lease = await host.open_lease(homeserver.base_url, spec.localpart)
    secrets.extend(t for t in (host.as_token, lease.hs_token, lease.access_token) if t)
    copy = state_dir / REGISTRATION_COPY
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(host.bot_registration(lease, spec.localpart), fh, sort_keys=False)
    facts = {"registration": str(copy), "as_token": host.as_token, "hs_token": lease.hs_token,
             "as_port": str(lease.as_port), "prefix": lease.prefix, "user_id": lease.user_id}
    return AppserviceBot(host, lease, facts)
