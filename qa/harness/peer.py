"""The peer bot (`--peer-bot FILE`): a second bot process beside the bot under test, for scenarios about bots
that talk to bots. Pure: which peer bot files a run refuses, and the words a scenario without its peer says.

A peer is described by a bot file like the bot under test's and gets the same launch contract with its own
account, rooms, state and log; it is not the bot under test (its messages are a known bot's, never the bot's).
A peer bot file may use only what the harness gives a peer: no extra accounts, no registration rights, no
state mutations, no lock probe, no `say` (it answers what it is told by its own lights).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FLAG = "--peer-bot"
# What a peer bot file cannot use, and why: the harness provisions none of it for a peer.
NOT_FOR_A_PEER = {
    "accounts": "the harness registers one account for a peer",
    "registration": "a peer gets no registration rights",
    "state_mutations": "no step changes a peer's state",
    "lock_probe": "lock evidence is the bot under test's",
}


def peer_problems(peer: Any, bot_source: Path | None) -> list[str]:
    """What is wrong with `peer` (a loaded BotFile) as the run's peer bot, one line each, naming the flag, the file
    and the field. `bot_source` is the bot under test's file (None: the embedded agent or a bare command)."""
    source = peer.source
    problems = []
    if bot_source is not None and _same(Path(source), bot_source):
        # Its own guard would end an exchange with a copy of itself: a bot under test without one would pass.
        problems.append(f"{FLAG} {source}: is the bot under test's own file (--bot); a peer must be another bot, "
                        "or a copy's loop guard would hide the bot under test's")
    for field, why in NOT_FOR_A_PEER.items():
        if getattr(peer, field):
            problems.append(f"{FLAG} {source}: {field}: not for a peer bot ({why})")
    if peer.say is not None:
        problems.append(f"{FLAG} {source}: say: not for a peer bot (a peer answers by its own lights)")
    return problems


def _same(a: Path, b: Path) -> bool:
    # realpath, not Path.resolve: a symlink loop is a path like any other here, not an exception.
    return os.path.realpath(a) == os.path.realpath(b)


def needs_peer_reason(peer_name: str | None, has_peer: bool) -> str | None:
    """Why a scenario is skipped for want of a peer bot, or None when it runs: never passed without its peer."""
    if peer_name is None or has_peer:
        return None
    return (f"skipped: needs a peer bot as {peer_name!r} (a second bot process; run with {FLAG} FILE, or "
            "peer-bot in the config file)")


def peer_died(name: str, exit_description: str | None, log_path: Path) -> str:
    """The line a failure shows when the peer bot exits while nobody asked it to."""
    return f"peer bot {name}: {exit_description or 'exited'} unexpectedly (log: {log_path})"
