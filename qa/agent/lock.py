"""Session write lock: one exclusive lock file beside each session transcript.

`<transcript>.lock` is created with O_CREAT|O_EXCL, so exactly one creator wins, across threads and processes
(the contention probe, qa.agent.lock_probe, runs in its own process and uses this module too). The file and
its payload `{pid, createdAt, createdMono, attempt, maxHoldMs, token}` follow the kernel's convention
(qa.kernel.lockfile); `token` is a random nonce, and a hold only counts as ours while the file on disk carries
our token. That is the fencing primitive: whoever removes or
replaces the file ends our hold, and `LockHold.still_owned()` (checked before every transcript append) sees it.

A waiter that finds the file may take it away when
  - the owner pid is dead (`owner-dead`),
  - it is older than the maxHoldMs its holder promised and than our own maxHoldMs (`max-hold`: a live but
    runaway holder; honouring the longer of the two respects a holder configured for long holds, and lets a
    pure observer such as the contention probe opt out of takeovers with a huge maxHoldMs and staleMs),
  - it is older than our staleMs (`stale`), or
  - it is unreadable (torn or corrupt payload) and its mtime is older than staleMs (`unreadable`).
Age comes from `createdMono` (CLOCK_MONOTONIC is system-wide on Linux, so it compares across processes) and
falls back to mtime when the payload is unreadable or was written before a reboot. A pid we cannot signal
(PermissionError) counts as alive; a pid that is our own but whose token this process never created is a
previous incarnation of this process (a restarted bot often gets the same pid in a container), so it is dead.

Every removal, by a waiter or by `release()`, goes through the kernel's `remove_if_same` (rename aside, check
it is the file we judged, put a newer one back), so two waiters that judged the same stale file cannot delete
the fresh lock the first of them created.

Every removal by a waiter is appended to `<transcript>.takeovers.jsonl` (one O_APPEND write per entry) and
traced as `lock.takeover`; the transcript's fence reads that log to stop an attempt that lost its hold.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any

from qa.kernel.clock import mono_ms, utc_now_iso
from qa.kernel.lock_settings import LockSettings
from qa.kernel.lockfile import LockFile, lock_path_for, pid_alive, read_lock, remove_if_same
from qa.kernel.trace import Trace

# Backoff between tries: start small so an uncontended-but-just-released lock is picked up at once, cap small
# so a 25 ms probe still gets several tries.
_FIRST_DELAY_MS = 1.0
_MAX_DELAY_MS = 10.0


def takeover_log_path(transcript_path: Path) -> Path:
    return transcript_path.with_name(transcript_path.name + ".takeovers.jsonl")


def read_takeovers(transcript_path: Path) -> list[dict[str, Any]]:
    """Takeover log entries; a torn or corrupt line (writer killed mid-write) is skipped."""
    path = takeover_log_path(transcript_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (disk nearly full, signals); a half-written record is worse."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class SessionLockError(Exception):
    pass


class SessionLockTimeout(SessionLockError):
    def __init__(
        self,
        *,
        timeout_ms: int,
        owner_pid: int | None,
        owner_alive: bool | None,
        age_ms: float,
        lock_path: Path,
        elapsed_ms: float,
        held_since_mono: float | None = None,
    ) -> None:
        self.timeout_ms = timeout_ms
        # The earliest taking of the holds that kept it out, on the shared monotonic clock (None: not known).
        # The contention probe reports it: the harness tells a hold taken after a model request from one across it.
        self.held_since_mono = held_since_mono
        self.owner_pid = owner_pid
        self.owner_alive = owner_alive
        self.age_ms = age_ms
        self.lock_path = lock_path
        self.elapsed_ms = elapsed_ms
        pid = "unknown" if owner_pid is None else str(owner_pid)
        alive = "unknown" if owner_alive is None else str(owner_alive).lower()
        super().__init__(
            f"session file locked (timeout {timeout_ms}ms): pid={pid} alive={alive} ageMs={round(age_ms)} {lock_path}"
        )


# ---------------------------------------------------------------------------------------------------------
# Holds of this process


_registry_lock = threading.Lock()
_held: dict[str, LockHold] = {}
# Which run of a pid wrote a lock: a lock with our pid but another instance is a previous incarnation's.
_INSTANCE = secrets.token_hex(8)


def release_all_held() -> int:
    """Release every hold this process still has (signal handlers, exit). Returns how many were released."""
    with _registry_lock:
        holds = list(_held.values())
    released = 0
    for hold in holds:
        # One unreleasable lock (disk gone) must not keep the others held.
        with contextlib.suppress(OSError):
            hold.release()
            released += 1
    return released


atexit.register(release_all_held)


class LockHold:
    """One successful acquire. Ours while the lock file carries `token`."""

    def __init__(
        self, lock: SessionWriteLock, token: str, attempt: str, purpose: str, acquired_mono: float, wait_ms: float
    ) -> None:
        self._lock = lock
        self.token = token
        self.attempt = attempt
        self.purpose = purpose
        self.acquired_mono = acquired_mono
        self.wait_ms = wait_ms
        self.released = False

    @property
    def lock_path(self) -> Path:
        return self._lock.lock_path

    @property
    def transcript_path(self) -> Path:
        return self._lock.transcript_path

    @property
    def session(self) -> str:
        return self._lock.session

    def still_owned(self) -> bool:
        if self.released:
            return False
        seen = read_lock(self.lock_path)
        return seen is not None and seen.token == self.token

    def release(self) -> bool:
        """Idempotent. Removes the lock file only if it still carries our token; True if it did."""
        if self.released:
            return False
        self.released = True
        with _registry_lock:
            _held.pop(self.token, None)
        removed = False
        try:
            seen = read_lock(self.lock_path)
            if seen is not None and seen.token == self.token:
                removed = remove_if_same(self.lock_path, seen.identity())
        finally:
            # removed=false: the file was no longer ours (taken over), so this release cleaned up nothing.
            self._lock._emit(
                "lock.release",
                attempt=self.attempt,
                purpose=self.purpose,
                heldMs=round(mono_ms() - self.acquired_mono, 3),
                removed=removed,
            )
        return removed

    def __enter__(self) -> LockHold:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> LockHold:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"LockHold({self.lock_path}, attempt={self.attempt!r}, purpose={self.purpose!r})"


# ---------------------------------------------------------------------------------------------------------
# The lock


class SessionWriteLock:
    def __init__(
        self, transcript_path: Path, settings: LockSettings, trace: Trace | None = None, session: str = ""
    ) -> None:
        self.transcript_path = Path(transcript_path)
        self.lock_path = lock_path_for(self.transcript_path)
        self.settings = settings
        self.trace = trace
        self.session = session

    async def acquire(self, attempt: str, purpose: str, timeout_ms: int | None = None) -> LockHold:
        steps = self._acquire_steps(attempt, purpose, timeout_ms)
        try:
            while True:
                await asyncio.sleep(next(steps) / 1000)
        except StopIteration as done:
            return done.value

    def acquire_sync(self, attempt: str, purpose: str, timeout_ms: int | None = None) -> LockHold:
        """Blocking twin of `acquire`, for threads and for other processes (the contention probe)."""
        steps = self._acquire_steps(attempt, purpose, timeout_ms)
        try:
            while True:
                time.sleep(next(steps) / 1000)
        except StopIteration as done:
            return done.value

    def _acquire_steps(self, attempt: str, purpose: str, timeout_ms: int | None) -> Generator[float, None, LockHold]:
        """The acquire loop, minus the waiting: yields how long to wait (ms) and returns the hold.

        Both `acquire` and `acquire_sync` drive this, so they cannot drift apart.
        """
        timeout = self.settings.acquire_timeout_ms if timeout_ms is None else timeout_ms
        if timeout < 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout}")
        started = mono_ms()
        delay = _FIRST_DELAY_MS
        # The earliest taking of any hold that kept us out: a timeout names it (heldSinceT of the contention
        # probe), since the lock may change hands between tries and the first holder is the one that matters.
        held_since: float | None = None
        while True:
            hold, seen = self._try_once(attempt, purpose, started)
            if hold is not None:
                return hold
            created = seen.created_mono() if seen is not None else None
            if created is not None and (held_since is None or created < held_since):
                held_since = created
            elapsed = mono_ms() - started
            if elapsed >= timeout:
                raise self._timeout(attempt, purpose, timeout, seen, elapsed, held_since)
            # Jitter keeps two waiters from retrying in lockstep.
            yield min(delay * random.uniform(0.5, 1.0), timeout - elapsed)
            delay = min(delay * 2, _MAX_DELAY_MS)

    def _try_once(self, attempt: str, purpose: str, started: float) -> tuple[LockHold | None, LockFile | None]:
        """One go at the lock: create it, or judge the existing one and take it away if we may."""
        token = secrets.token_hex(16)
        seen: LockFile | None = None
        # A reclaim is followed by one more create; a file vanishing under us gets one more look.
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                seen = read_lock(self.lock_path)
                if seen is None:
                    continue
                reason = self._reclaim_reason(seen)
                if reason is None or not remove_if_same(self.lock_path, seen.identity()):
                    return None, seen
                # Recorded now, not once we own the lock: if another waiter wins the create, the old
                # holder has still lost its hold and its fence must still learn about it.
                self._record_takeover(attempt, seen, reason)
                continue
            return self._claim(fd, token, attempt, purpose, started), None
        return None, seen

    def _claim(self, fd: int, token: str, attempt: str, purpose: str, started: float) -> LockHold:
        now = mono_ms()
        payload = {
            "pid": os.getpid(),
            "createdAt": utc_now_iso(),
            "createdMono": round(now, 3),
            "attempt": attempt,
            "maxHoldMs": self.settings.max_hold_ms,
            "token": token,
            "instance": _INSTANCE,
        }
        try:
            write_all(fd, json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        except BaseException:
            # A lock file we can't fill would block everyone until staleMs.
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
            raise
        os.close(fd)
        hold = LockHold(self, token, attempt, purpose, acquired_mono=now, wait_ms=round(now - started, 3))
        with _registry_lock:
            _held[token] = hold
        self._emit("lock.acquire", attempt=attempt, purpose=purpose, lockPath=str(self.lock_path), waitMs=hold.wait_ms)
        return hold

    def _reclaim_reason(self, seen: LockFile) -> str | None:
        age = seen.age_ms()
        if seen.payload is None:
            return "unreadable" if age > self.settings.stale_ms else None
        pid = seen.payload["pid"]
        if pid == os.getpid():
            # Our pid, but written by an earlier process that had it (a restarted bot can get the same pid).
            # Judged by the process instance, not by live tokens: a snapshot of a lock that one of our own
            # threads has since released must not look like a dead owner's.
            if seen.payload.get("instance") != _INSTANCE:
                return "owner-dead"
        elif not pid_alive(pid):
            return "owner-dead"
        promised = seen.payload.get("maxHoldMs")
        if not isinstance(promised, int) or isinstance(promised, bool) or promised <= 0:
            promised = self.settings.max_hold_ms
        if age > max(promised, self.settings.max_hold_ms):
            return "max-hold"
        if age > self.settings.stale_ms:
            return "stale"
        return None

    def reclaim_at_startup(self, attempt: str) -> dict[str, Any] | None:
        """Before the first turn: remove this session's lock if a dead process left it. Traced as `lock.reclaim`
        and logged like a takeover (the fence of that attempt, were it somehow alive, must see it)."""
        seen = read_lock(self.lock_path)
        if seen is None or seen.payload is None:
            return None
        pid = seen.payload["pid"]
        # At startup this process holds nothing yet, so a lock carrying our pid is a previous incarnation's.
        dead = seen.payload.get("instance") != _INSTANCE if pid == os.getpid() else not pid_alive(pid)
        if not dead or not remove_if_same(self.lock_path, seen.identity()):
            return None
        self._record_takeover(attempt, seen, "owner-dead", trace_type="lock.reclaim")
        return {"pid": pid, "attempt": seen.attempt, "ageMs": round(seen.age_ms(), 3)}

    def _record_takeover(self, attempt: str, previous: LockFile, reason: str,
                         trace_type: str = "lock.takeover") -> None:
        age = round(previous.age_ms(), 3)
        entry = {
            "t": round(mono_ms(), 3),
            "at": utc_now_iso(),
            "session": self.session,
            "attempt": attempt,
            "pid": os.getpid(),
            "previous": {"pid": previous.pid, "attempt": previous.attempt, "token": previous.token, "ageMs": age},
            "reason": reason,
        }
        # fsync: the fence of a stale attempt depends on this entry surviving a crash of the new owner.
        log = takeover_log_path(self.transcript_path)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            write_all(fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self._emit(
            trace_type,
            attempt=attempt,
            previous={"pid": previous.pid, "attempt": previous.attempt, "ageMs": age},
            reason=reason,
        )

    def _timeout(
        self, attempt: str, purpose: str, timeout: int, seen: LockFile | None, elapsed: float,
        held_since: float | None = None,
    ) -> SessionLockTimeout:
        pid = seen.pid if seen is not None else None
        alive: bool | None = None
        if pid is not None:
            alive = pid_alive(pid)
        error = SessionLockTimeout(
            timeout_ms=timeout,
            owner_pid=pid,
            owner_alive=alive,
            age_ms=seen.age_ms() if seen is not None else 0.0,
            lock_path=self.lock_path,
            elapsed_ms=round(elapsed, 3),
            held_since_mono=held_since,
        )
        self._emit("lock.timeout", attempt=attempt, purpose=purpose, error=str(error))
        return error

    def _emit(self, type_: str, **fields: Any) -> None:
        if self.trace is not None:
            self.trace.emit(type_, session=self.session, **fields)
