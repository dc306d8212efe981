"""The contention probe: a second writer that tries a session's lock while the bot's model call is in flight.

It follows the bot's trace: on every `model.request.start` it tries that session's lock file with a 25 ms
timeout and records how long it took or the lock error. With the narrow lock that acquire is immediate; with
the legacy `attempt` scope it fails with `session file locked (timeout 25ms)` — the bug, measured.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from qa.agent.lock import SessionLockTimeout, SessionWriteLock
from qa.agent.lock_settings import LockSettings
from qa.agent.transcript import transcript_file_name
from qa.clock import mono_ms
from qa.harness.bot_process import BotUnderTest
from qa.waiting import WaitTimeout

PROBE_TIMEOUT_MS = 25
# The probe is a foreign writer: it must never reclaim or take over the bot's lock, only measure it.
_PROBE_SETTINGS = LockSettings(acquire_timeout_ms=PROBE_TIMEOUT_MS, stale_ms=10**9, max_hold_ms=10**9)


async def probe_once(sessions_dir: Path, session: str) -> dict[str, Any] | None:
    """None when there is nothing to probe (the bot keeps its transcripts somewhere else)."""
    if not sessions_dir.is_dir():
        return None
    lock = SessionWriteLock(sessions_dir / transcript_file_name(session), _PROBE_SETTINGS, None, session=session)
    started = mono_ms()
    try:
        hold = await lock.acquire("probe", "probe", timeout_ms=PROBE_TIMEOUT_MS)
    except SessionLockTimeout as exc:
        return {"session": session, "t": round(started, 3),
                "timeoutElapsedMs": round(mono_ms() - started, 3), "error": str(exc)}
    elapsed = mono_ms() - started
    hold.release()
    return {"session": session, "t": round(started, 3), "acquiredElapsedMs": round(elapsed, 3)}


async def follow_and_probe(bot: BotUnderTest, sessions_dir: Path, results: list[dict[str, Any]]) -> None:
    """Run until cancelled: one probe per model request the bot starts."""
    index = 0
    while True:
        try:
            record = await bot.trace.wait_for(
                lambda r: r.get("type") == "model.request.start", 3600, "model request", start=index
            )
        except WaitTimeout:
            # The bot exited (restart steps do that): carry on once the next run of the same bot starts.
            index = len(bot.trace.items)
            await bot.trace.wait_open()  # cancellable: stop_prober ends it when the scenario ends
            continue
        index = bot.trace.items.index(record) + 1
        probe = await probe_once(sessions_dir, str(record.get("session")))
        if probe is not None:
            results.append(probe)


STOP_TIMEOUT_S = 5.0


async def stop_prober(task: asyncio.Task[None]) -> str | None:
    """Stop the prober; returns what went wrong inside it, if anything (a probe must never fail a teardown,
    nor hang it: the wait for it is bounded)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    if not done:
        return f"contention probe did not stop within {STOP_TIMEOUT_S:g}s of being cancelled; left behind"
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is None or isinstance(exc, WaitTimeout):
        return None
    return f"contention probe failed: {type(exc).__name__}: {exc}"
