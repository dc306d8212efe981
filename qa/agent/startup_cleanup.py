"""Startup cleanup: before the first turn, reclaim the session locks that dead processes left behind.

Without it a crashed bot's lock is only noticed by the first waiter that happens to need that session (fine
for correctness, since the waiter reclaims a dead owner's lock, but silent until then and invisible to the
doctor). Each reclaim is traced as `lock.reclaim` (session, the dead owner's pid, attempt and age) and the
sweep ends with one `lock.startup` record, written before the bot syncs, so a scenario can check the order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qa.agent.lock import SessionWriteLock
from qa.kernel.lock_settings import LockSettings
from qa.kernel.lockfile import LOCK_SUFFIX
from qa.kernel.trace import Trace


def _session_key(transcript: Path) -> str:
    try:
        return str(json.loads(transcript.with_suffix(".meta.json").read_text())["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return transcript.name


def startup_cleanup(sessions_dir: Path, settings: LockSettings, trace: Trace) -> int:
    """Returns how many locks were reclaimed."""
    locks = sorted(sessions_dir.glob(f"*{LOCK_SUFFIX}")) if sessions_dir.is_dir() else []
    reclaimed = 0
    for index, lock_file in enumerate(locks, start=1):
        transcript = lock_file.with_name(lock_file.name[: -len(".lock")])
        lock = SessionWriteLock(transcript, settings, trace, session=_session_key(transcript))
        if lock.reclaim_at_startup(f"startup-{os.getpid()}-{index}") is not None:
            reclaimed += 1
    trace.emit("lock.startup", locks=len(locks), reclaimed=reclaimed)
    return reclaimed
