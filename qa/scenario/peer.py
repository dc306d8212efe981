"""The peer bot of a scenario (`peer_bot:`, the run's --peer-bot; qa.harness.peer): its launch beside the bot under
test, its readiness, its death as a failure that names it, and its stop, each bounded.

The peer has its own account (registered with the test users, with its own session), is invited wherever the bot
is, and gets the launch contract in its own environment only: never the bot's --bot-env, --bot-set or fault
proxy. Its log is the scenario's `peer-bot.log`; its messages are a known bot's, never the bot's.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from qa.harness.bot_process import BotUnderTest
from qa.harness.launch import LaunchFacts, build_launch
from qa.harness.peer import peer_died
from qa.kernel.errors import InfraError
from qa.scenario.context import StepFailed

# Its registration role, and so its localpart (mqa-peer.bot-<scenario>-<run>): no actor name has a dot, and the
# bot's own accounts are "bot.NAME", so it can be no test user's nor the bot's (an actor may be called "peer").
ROLE = "peer.bot"
LOG_NAME = "peer-bot.log"
PEER_STOP_S = 10.0  # at most, however long its bot file allows: the scenario's teardown stays bounded


def peer_roles(scenario: Any, res: Any) -> list[str]:
    """The registration role of the scenario's peer, when it has one and the run brought one."""
    return [ROLE] if scenario.peer_bot and res.peer_bot is not None else []


def peer_launch(res: Any, scenario: Any, cred: Any, password: str, session: tuple[str, str], rooms: dict[str, str],
                actor_ids: dict[str, str], state_dir: Path, scenario_dir: Path) -> BotUnderTest:
    """The peer's process (not yet started): the launch contract with its own account, the bot's rooms, its own
    state dir, trace file and log. The homeserver as it really is, never the bot's fault proxy."""
    peer_state = state_dir / "peer"
    peer_state.mkdir(parents=True, exist_ok=True)
    password_file = state_dir / "peer-password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    token, device_id = session
    facts = LaunchFacts(
        homeserver_url=res.homeserver.base_url, server_name=res.homeserver.server_name, user_id=cred.user_id,
        password=password, password_file=password_file, access_token=token, device_id=device_id, rooms=rooms,
        actors=actor_ids, provider_base_url=res.model_base_url, provider_api_key=res.provider_api_key,
        model=res.model_name, scenario_id=scenario.id, scenario_title=scenario.title,
        # The scenario's `bot:` settings are the bot under test's; a peer's template sees none.
        bot={}, encryption=False, state_dir=peer_state, trace_file=state_dir / "peer-trace.jsonl",
        exec_dir=state_dir / "peer-exec", provider_timeout_s=res.provider_timeout_s,
        provider_max_retries=res.provider_max_retries,
    )
    launch = build_launch(res.peer_bot, facts, {}, dict(os.environ))
    return BotUnderTest(res.peer_bot, launch, scenario_dir / LOG_NAME, facts.trace_file,
                        scenario_dir / "peer-bot-trace.jsonl", res.secrets, fork_server=res.fork_server)


async def peer_ready(peer: BotUnderTest, start: int, scenario_timeout_s: float) -> None:
    """Its bot file's ready condition, bounded as the bot's is; a peer that never gets there says it is the peer."""
    try:
        await peer.wait_ready(min(peer.bot.ready.timeout, scenario_timeout_s / 2), start)
    except InfraError as exc:
        raise InfraError(f"peer {exc}") from None


async def until_either_dies(bot: BotUnderTest, peer: BotUnderTest | None) -> None:
    """Returns when the bot or the peer exits while nobody asked it to."""
    waits = [asyncio.ensure_future(bot.died.wait())]
    if peer is not None:
        waits.append(asyncio.ensure_future(peer.died.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def raise_if_peer_died(peer: BotUnderTest | None, where: str) -> None:
    """A step cut short by the peer's exit fails naming the peer and its log, not the bot."""
    if peer is not None and peer.died.is_set():
        raise StepFailed(f"the peer bot to keep running through {where}",
                         [peer_died(peer.name, peer.exit_description, peer.log_path), *peer.log_tail()])


async def stop_peer(peer: BotUnderTest | None, stopping: bool) -> str | None:
    """Stop the peer (bounded; shorter when the run is being stopped). Returns the failure line when it had died
    by itself meanwhile, so a scenario cannot pass over its peer's crash."""
    if peer is None:
        return None
    died = peer.died.is_set()
    await peer.stop(timeout_s=2.0 if stopping else min(peer.bot.stop_timeout, PEER_STOP_S))
    return peer_died(peer.name, peer.exit_description, peer.log_path) if died else None
