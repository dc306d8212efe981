"""The on-disk session lock convention (docs/trace-format.md, "Lock evidence"): the lock file, its payload,
reading it, pid liveness, a safe removal, and the doctor's pure judgement of one lock.

A session's transcript lives at `sessions/<session file>.jsonl` under the bot's state dir; its write lock is
`<transcript>.lock` beside it, created with O_CREAT|O_EXCL so exactly one creator wins, across threads and
processes. The payload identifies the hold: `{pid, createdAt, createdMono, attempt, maxHoldMs, token}`
(`token` a random nonce: a hold counts as its holder's only while the file on disk carries it). Age comes from
`createdMono` (CLOCK_MONOTONIC is system-wide on Linux) and falls back to the file's mtime when the payload is
unreadable or was written before a reboot.

Every removal goes through `remove_if_same`: rename the file to a unique name, then check the renamed file is the
one that was judged. Two removers that judged the same stale file can therefore not delete the fresh lock the
first of them created; the loser puts it back with `os.link`, which fails rather than overwrite if yet another
lock appeared in between (the moved holder is then fenced: the safe direction).

`judge` is pure: an observation (pid, alive, age, promised maxHoldMs) in, a verdict out. Only a lock whose owner
is provably gone is fixable: its payload names a pid and that pid does not exist on this machine. A live owner
over its maxHoldMs is reported (a runaway holder; its waiters take it over) but never removed by an outsider,
who cannot fence it; an unreadable lock proves nothing about its owner, so it is reported only. A pid that
exists but belongs to another process after pid reuse counts as alive: the safe direction.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from qa.kernel.clock import mono_ms

LOCK_SUFFIX = ".jsonl.lock"
State = Literal["held", "over-max-hold", "owner-dead", "unreadable", "left-held"]


def lock_path_for(transcript_path: Path) -> Path:
    return transcript_path.with_name(transcript_path.name + ".lock")


@dataclass(frozen=True)
class LockFile:
    """One observed lock file; `payload` is None when it could not be parsed into a valid lock payload."""

    payload: dict[str, Any] | None
    inode: int
    mtime_ns: int
    size: int

    @property
    def token(self) -> str | None:
        return self.payload["token"] if self.payload else None

    @property
    def pid(self) -> int | None:
        return self.payload["pid"] if self.payload else None

    @property
    def attempt(self) -> str | None:
        return self.payload["attempt"] if self.payload else None

    def identity(self) -> tuple[Any, ...]:
        # Inode numbers are reused at once after unlink (tmpfs, ext4), so the inode alone can't tell a fresh
        # lock from the one we judged; the token can. Without a token, mtime and size are the best we have.
        if self.payload is not None:
            return (self.inode, self.payload["token"])
        return (self.inode, self.mtime_ns, self.size)

    def created_mono(self) -> float | None:
        """When the lock was taken on this boot's monotonic clock; None without a payload or when the stamp is from
        another boot (it lies in the future)."""
        if self.payload is None:
            return None
        created = float(self.payload["createdMono"])
        return created if created <= mono_ms() else None

    def age_ms(self) -> float:
        if self.payload is not None:
            age = mono_ms() - float(self.payload["createdMono"])
            # Negative: the file was stamped by another boot's monotonic clock.
            if age >= 0:
                return age
        return max(0.0, time.time() * 1000 - self.mtime_ns / 1_000_000)


# Linux's PID_MAX_LIMIT: a larger pid is no process (and past what os.kill takes: an OverflowError).
MAX_PID = 1 << 22
# A lock file is a few hundred bytes; anything much larger is not one, and is not read whole.
MAX_LOCK_BYTES = 1 << 16


def _finite_number(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer of hundreds of digits
        return False


def valid_payload(data: Any) -> dict[str, Any] | None:
    """The payload when it has the shape of one (someone else's stale lock may hold anything), else None."""
    if not isinstance(data, dict):
        return None
    pid, mono, token = data.get("pid"), data.get("createdMono"), data.get("token")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= MAX_PID:
        # pid 0 or negative would make os.kill signal a whole process group.
        return None
    if not _finite_number(mono):
        return None
    if not isinstance(token, str) or not token:
        return None
    if not isinstance(data.get("attempt", ""), str):
        return None
    return data


def read_lock(path: Path) -> LockFile | None:
    """The lock file as it is now, or None if there is none. Stat and content come from one open file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO planted there must not block us
    except FileNotFoundError:
        return None
    except OSError:  # unreadable (permissions, a loop): still a lock someone holds, with no payload we can read
        try:
            st = os.stat(path)
        except OSError:
            return None
        return LockFile(payload=None, inode=st.st_ino, mtime_ns=st.st_mtime_ns, size=st.st_size)
    try:
        st = os.fstat(fd)
        try:
            raw = os.read(fd, min(max(st.st_size, 1) + 1, MAX_LOCK_BYTES)) if stat.S_ISREG(st.st_mode) else b""
        except OSError:
            raw = b""
    finally:
        os.close(fd)
    try:
        payload = valid_payload(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError):  # torn, huge integers, nested past the reader
        payload = None
    return LockFile(payload=payload, inode=st.st_ino, mtime_ns=st.st_mtime_ns, size=st.st_size)


def pid_alive(pid: int) -> bool:
    """A pid we cannot signal (PermissionError) counts as alive."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a number no process can have
        return False
    except PermissionError:
        return True
    return True


def remove_if_same(path: Path, identity: tuple[Any, ...]) -> bool:
    """Remove the lock file only if it is still the one we looked at. True if we removed it."""
    aside = path.with_name(f"{path.name}.{secrets.token_hex(8)}.aside")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        moved = read_lock(aside)
        if moved is not None and moved.identity() == identity:
            return True
        # We moved a lock that replaced the one we judged: give it back, but never over a newer one.
        with contextlib.suppress(OSError):
            os.link(aside, path)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)


# --- the doctor's judgement ----------------------------------------------------------------------------------


class Limits(Protocol):
    """What the judgement needs of the lock settings (qa.kernel.lock_settings.LockSettings has it)."""

    @property
    def stale_ms(self) -> int: ...

    @property
    def max_hold_ms(self) -> int: ...


@dataclass(frozen=True)
class Observation:
    path: str
    pid: int | None  # None: the payload could not be read
    alive: bool | None
    age_ms: float
    attempt: str | None
    promised_max_hold_ms: int | None


@dataclass(frozen=True)
class Judgement:
    state: State
    problem: bool  # something is wrong
    fixable: bool  # provably stale: --fix may remove it
    why: str


def judge(obs: Observation, settings: Limits) -> Judgement:
    if obs.pid is None:
        old = obs.age_ms > settings.stale_ms
        why = f"unreadable payload, {'older' if old else 'younger'} than staleMs {settings.stale_ms}"
        return Judgement("unreadable", problem=old, fixable=False, why=why)
    if obs.alive is False:
        return Judgement("owner-dead", problem=True, fixable=True, why=f"owner pid {obs.pid} is not running")
    promised = obs.promised_max_hold_ms if obs.promised_max_hold_ms and obs.promised_max_hold_ms > 0 \
        else settings.max_hold_ms
    limit = max(promised, settings.max_hold_ms)
    if obs.age_ms > limit:
        return Judgement("over-max-hold", problem=True, fixable=False,
                         why=f"live owner pid {obs.pid} has held it {obs.age_ms:.0f}ms, over maxHoldMs {limit}")
    return Judgement("held", problem=False, fixable=False, why=f"held by live pid {obs.pid}")


def exit_code(judgements: Iterable[Judgement], fixed: Iterable[bool]) -> int:
    """1 if any problem is left (a fixed one is not), else 0."""
    return 1 if any(j.problem and not f for j, f in zip(judgements, fixed, strict=True)) else 0


def observe(path: Path, view: LockFile, alive: Callable[[int], bool]) -> Observation:
    pid = view.pid
    promised = view.payload.get("maxHoldMs") if view.payload else None
    if not isinstance(promised, int) or isinstance(promised, bool):
        promised = None
    return Observation(path=str(path), pid=pid, alive=None if pid is None else alive(pid), age_ms=view.age_ms(),
                       attempt=view.attempt, promised_max_hold_ms=promised)
