"""Entry point of the bot process: `python -m qa.agent --config FILE` (and `python -m qa.agent doctor`,
qa.kernel.doctor).

Trace records go to the trace file (`tracePath`, else $MATRIX_QA_TRACE_FILE), which the harness follows;
human logs go to stderr. SIGTERM and SIGINT stop the bot cleanly and release every session lock it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from qa.agent import event_loop, reload
from qa.agent.approval_flow import ApprovalFlow, ApprovalSettings
from qa.agent.boot import BootMarks
from qa.agent.config import load_agent_config, model_api_key
from qa.agent.crypto_store import HandedSession
from qa.agent.lock import release_all_held
from qa.agent.matrix import MatrixBot
from qa.agent.model import ModelClient
from qa.agent.sender import reply_content
from qa.agent.session import SessionManager
from qa.agent.startup_cleanup import startup_cleanup
from qa.agent.turn_io import TurnIO
from qa.kernel.errors import QAError
from qa.kernel.lock_settings import LockConfigError, resolve_lock_settings
from qa.kernel.trace import Trace

# Imported with the agent, so the fork server's preload has it for every bot (qa.agent.event_loop makes the loop).
with contextlib.suppress(ImportError):
    import uvloop  # noqa: F401


async def _main(config_path: Path) -> int:
    boot = BootMarks()  # what the start costs, phase by phase, up to `ready` (its `boot` field)
    config = load_agent_config(config_path)
    boot.mark("config")
    settings, sources = resolve_lock_settings(config.session.get("writeLock"), os.environ)
    trace_path = config.trace_path or os.environ.get("MATRIX_QA_TRACE_FILE")
    trace = Trace(Path(trace_path) if trace_path else None)
    trace.emit("start", pid=os.getpid(), userId=config.user_id, loop=event_loop.running_loop_name(),
               lock={"scope": settings.scope, "acquireTimeoutMs": settings.acquire_timeout_ms,
                     "staleMs": settings.stale_ms, "maxHoldMs": settings.max_hold_ms, "sources": sources})
    model = ModelClient(config.model, model_api_key(), config.mutations)
    bot = MatrixBot(config, trace, config.password(os.environ), HandedSession.from_env(os.environ))
    bot.boot = boot
    if config.approvals.enabled:
        a, bug = config.approvals, config.mutated
        bot.approvals = ApprovalFlow(bot.sender.post, bot.sender.react, trace, config.user_id, ApprovalSettings(
            timeout_s=a.timeout_s, text_chunk_limit=a.text_chunk_limit, allowed_programs=tuple(a.allowed_programs),
            exec_dir=os.environ.get("MATRIX_QA_EXEC_DIR") or None, run_when_refused=bug("run-denied-exec"),
            top_level_only=bug("approval-top-level"), run_late_approvals=bug("late-approval-runs")))
    state_dir = Path(config.state_dir)
    if config.forget_state_on_start:
        state_dir = state_dir / f"volatile-{os.getpid()}"  # the mutation: this run's transcripts only
    turn_io = TurnIO(config, trace, bot.sender.post_content,
                     lambda root, reply_to: reply_content("", root, reply_to).get("m.relates_to"),
                     lambda: (config.homeserver, bot.client.access_token))
    if "skip-startup-cleanup" not in config.session_life.test_bugs:
        startup_cleanup(state_dir / "sessions", settings, trace)
    bot.sessions = SessionManager(state_dir, settings, trace, model, config.model.system_prompt,
                                  bot.sender.send_reply, approvals=bot.approvals,
                                  # through the bot, so a reloaded config's allowlists decide approvals too
                                  allowed_for=lambda room_id: (None if config.mutated("anyone-approves")
                                                               else bot.config.approvers(room_id)),
                                  cross_room_memory=config.cross_room_memory, turn_io=turn_io,
                                  send_notice=bot.sender.send_notice, life=config.session_life,
                                  bot_user_id=config.user_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reload.install(config_path, bot, trace)
    boot.mark("setup")
    warming: asyncio.Task[None] | None = None
    # Watched from the login on: a homeserver that never answers the login must not make the bot deaf to
    # SIGTERM (it waited out the harness's whole stop bound, then SIGKILL).
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        login = asyncio.create_task(bot.login(), name="login")
        await asyncio.wait({login, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not login.done():
            login.cancel()
            await asyncio.gather(login, return_exceptions=True)
            trace.emit("stop", reason="signal", during="login")
            return 0
        login.result()  # re-raise a failed login
        boot.mark("login")
        runner = asyncio.create_task(bot.run(), name="sync")
        # Warm the model client beside the first sync, not before it: the warm-up (a round trip to the provider
        # and the SDK's lazy loading) and the first sync and joins (round trips to the homeserver) need nothing of
        # each other, and readiness waited for the warm-up (30-90 ms of every boot). Started after the sync task,
        # so the /sync request leaves before the SDK's loading takes the CPU. The first message, which needs the
        # model, comes a round trip after `ready` at the earliest.
        warming = asyncio.create_task(_warm_up(model, trace), name="model-warm-up")
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # re-raise a crash of the sync loop
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        trace.emit("stop", reason="signal")
        return 0
    finally:
        stopper.cancel()
        if warming is not None:
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
        await bot.sessions.close()
        release_all_held()
        await model.close()
        await bot.close()
        trace.close()


async def _warm_up(model: ModelClient, trace: Trace) -> None:
    warm_error = await model.warm_up()
    trace.emit("model.warmup", ok=warm_error is None, **({"error": warm_error} if warm_error else {}))


# Libraries' INFO lines written for every timeline event (nio: "Room … handling event of type …", twice a reply: the
# message and the bot's own answer coming back) and every HTTP request (the SDK's httpx: "HTTP Request: POST …"):
# each is a write to the harness's pipe and a wake-up of its reader, inside a reply's path. Their warnings stay, and
# so do the agent's own INFO lines and nio's rarer ones (rooms joined, E2EE sessions made).
CHATTY_LOGGERS = ("nio.rooms", "httpx", "httpx2")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> int:
    if sys.argv[1:2] == ["doctor"]:
        from qa.kernel.doctor import doctor_main
        return doctor_main(sys.argv[2:], "python -m qa.agent doctor", positional=False)
    parser = argparse.ArgumentParser(prog="python -m qa.agent", description="matrix-qa's embedded agent (bot)")
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args()
    configure_logging()
    try:
        return event_loop.run(_main(args.config))
    except (QAError, LockConfigError) as exc:
        print(f"matrix-qa bot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
