"""The agent's contention probe: `python -m qa.agent.lock_probe STATE_DIR`, named by bot.yaml's `lock_probe`.

A second writer for the harness's contention probe (docs/bot-file.md): for each request line on stdin,
`{"session": S, "timeoutMs": N}`, it tries session S's write lock under STATE_DIR/sessions with that timeout,
using the bot's own lock code, and answers with one line on stdout. It is a pure observer: it never reclaims or
takes over the bot's lock (huge staleMs and maxHoldMs), it only measures how long the lock keeps it out. `t` and
the elapsed time are taken here, on the shared monotonic clock, right around the try.

Answers: `{"session", "t", "acquiredElapsedMs"}`, `{"session", "t", "timeoutElapsedMs", "error", "heldSinceT"}`
(heldSinceT: when the hold it last saw was taken, when the lock file says), or
`{"session", "skipped"}` when there are no transcripts (yet) to probe. End of file on stdin ends it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

from qa.agent.lock import SessionLockTimeout, SessionWriteLock
from qa.agent.transcript import transcript_file_name
from qa.kernel.clock import mono_ms
from qa.kernel.lock_settings import LockSettings

# The probe is a foreign writer: it must never reclaim or take over the bot's lock, only measure it.
_OBSERVER_MS = 10**9


def probe_once(sessions_dir: Path, session: str, timeout_ms: int) -> dict[str, Any]:
    if not sessions_dir.is_dir():
        return {"session": session, "skipped": f"no {sessions_dir}"}
    settings = LockSettings(acquire_timeout_ms=timeout_ms, stale_ms=_OBSERVER_MS, max_hold_ms=_OBSERVER_MS)
    lock = SessionWriteLock(sessions_dir / transcript_file_name(session), settings, None, session=session)
    started = mono_ms()
    try:
        hold = lock.acquire_sync("probe", "probe", timeout_ms=timeout_ms)
    except SessionLockTimeout as exc:
        answer: dict[str, Any] = {"session": session, "t": round(started, 3),
                                  "timeoutElapsedMs": round(mono_ms() - started, 3), "error": str(exc)}
        if exc.held_since_mono is not None:
            answer["heldSinceT"] = round(exc.held_since_mono, 3)
        return answer
    elapsed = mono_ms() - started
    hold.release()
    return {"session": session, "t": round(started, 3), "acquiredElapsedMs": round(elapsed, 3)}


def serve(sessions_dir: Path, requests: IO[bytes], answers: IO[str]) -> int:
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    while line := requests.readline():
        request = json.loads(line)
        timeout = request.get("timeoutMs", 25)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            raise ValueError(f"timeoutMs must be a whole number of ms >= 0, got {timeout!r}")
        answers.write(json.dumps(probe_once(sessions_dir, str(request["session"]), timeout)) + "\n")
        answers.flush()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m qa.agent.lock_probe STATE_DIR (started by the matrix-qa harness)", file=sys.stderr)
        return 2
    return serve(Path(argv[0]) / "sessions", sys.stdin.buffer, sys.stdout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
