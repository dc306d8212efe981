"""A scenario's application-service bot (issue 33): its lease on the homeserver's application-service endpoint
(qa.homeserver.appservice_host), its main user in its own namespace, the registration copy it may read, and the
push fault rules (`target: push`, qa.harness.push_faults) the endpoint applies to what it forwards to the bot."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qa.harness.fault_rules import FaultRule
from qa.harness.push_faults import PushFaults
from qa.homeserver.base import UserCredentials
from qa.kernel.clock import mono_ms
from qa.kernel.errors import ConfigError

REGISTRATION_COPY = "appservice-registration.yaml"


@dataclass
class AppserviceBot:
    host: Any  # AppserviceHost, or a view of one on another event loop (the tests' shared Synapse)
    lease: Any  # qa.homeserver.appservice_host.Lease
    facts: dict[str, str]  # LaunchFacts.appservice
    push_faults: PushFaults = field(default_factory=PushFaults)

    @property
    def hits(self) -> list[dict[str, Any]]:
        """The push faults served so far (the endpoint appends; a copy, so a reader on another loop is safe)."""
        return list(self.lease.hits)

    async def set_faults(self, rules: Sequence[FaultRule]) -> None:
        """A set_faults step: its push rules from here on (its client rules are the fault proxy's)."""
        await self.host.set_push_faults(self.lease.key, [r for r in rules if r.target == "push"])

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Until `condition()` holds, re-checked on every push hit; TimeoutError past timeout_s."""
        await self.host.wait_push_hits(self.lease.key, condition, timeout_s)

    def artifact(self) -> dict[str, Any]:
        """The push side of fault-hits.json."""
        return {"installed": self.push_faults.installed, "hits": self.hits, "problems": self.push_faults.problems}

    def credentials(self) -> UserCredentials:
        """The main user: made by the application service, so it has a session and no password."""
        lease = self.lease
        return UserCredentials(user_id=lease.user_id, password="", localpart=lease.user_id[1:].split(":", 1)[0],
                               access_token=lease.access_token or None, device_id=lease.device_id or None)

    async def release(self) -> None:
        await self.host.release(self.lease.key)


async def lease_appservice(homeserver: Any, bot_file: Any, state_dir: Path, secrets: list[str],
                           faults: Sequence[FaultRule] = ()) -> AppserviceBot | None:
    """For a bot file with `appservice:`: a namespace, a main user, a port, a hs_token of the scenario's own, the
    registration copy in the scenario's private state dir (never in the artifacts), and the scenario's push fault
    rules (of `faults`, those with `target: push`). Every token is a secret."""
    spec = bot_file.appservice
    if spec is None:
        return None
    host = getattr(homeserver, "appservice", None)
    if host is None:  # the run refused this before anything started; a homeserver of another kind still says why
        raise ConfigError(f"{bot_file.source}: appservice: the {homeserver.kind} homeserver backend does not load "
                          "the harness's application-service registration (only --homeserver synapse does)")
    push_faults = PushFaults()
    push_faults.install(faults, "scenario", mono_ms())
    lease = await host.open_lease(homeserver.base_url, spec.localpart, push_faults=push_faults)
    secrets.extend(t for t in (host.as_token, lease.hs_token, lease.access_token) if t)
    copy = state_dir / REGISTRATION_COPY
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(host.bot_registration(lease, spec.localpart), fh, sort_keys=False)
    facts = {"registration": str(copy), "as_token": host.as_token, "hs_token": lease.hs_token,
             "as_port": str(lease.as_port), "prefix": lease.prefix, "user_id": lease.user_id}
    return AppserviceBot(host, lease, facts, push_faults)
