"""The embedded Synapse, the default backend: a child process on a free loopback port (qa.homeserver.synapse)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from qa.homeserver.registry import Backend, StartRequest, register

if TYPE_CHECKING:
    from qa.homeserver.base import Homeserver


def _create(request: StartRequest) -> Homeserver:
    from qa.homeserver.synapse import SynapseHomeserver

    return SynapseHomeserver(request.work_dir / "synapse", request.log_dir, port=request.port,
                             appservice=request.appservice)


def _last_resort() -> None:
    # Never imports Synapse's module for a run that did not start one: it would have no children to kill.
    module = sys.modules.get("qa.homeserver.synapse")
    if module is not None:
        module.kill_all_children()
    early = sys.modules.get("qa.homeserver.early_synapse")
    if early is not None:
        early.discard()


BACKEND = register(Backend(name="synapse", create=_create, default=True, last_resort=_last_resort,
                           choice="synapse (the default: embedded, a child process)"))
