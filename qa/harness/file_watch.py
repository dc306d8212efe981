"""Wake when something in a directory is written (Linux inotify, through libc), so a bot's trace is read when the bot
writes it rather than looked at every 5 ms.

Why: each bot's trace follower (qa.harness.bot_process) woke 200 times a second to stat a file that had not changed
almost every time; with four bots at once that was ~40-50 ms of the harness's CPU per second of scenarios (a
measurement of the loop alone, load ~7), for nothing. A watch wakes on the bot's writes; its wait still ends after
a bound (the follower also looks then), so a change inotify cannot report (the directory replaced, a queue
overflow) is seen late, never missed.

The standard library has no inotify: the three libc calls are made with ctypes. Where they are missing (not Linux,
no libc symbol, no watches left) `open_watch` says None and the caller polls as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from pathlib import Path

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
READ_SIZE = 65536  # a few thousand events' worth: drained in as many reads as it takes

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL | None:
    """The process's own libc (the interpreter links it), or None when it has no inotify."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.inotify_init1.argtypes = [ctypes.c_int]
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


class DirWatch:
    """One directory's writes, as an event the running loop sets. Close it when done (its fd and reader)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._loop = loop
        self._changed = asyncio.Event()
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, READ_SIZE):
                pass
        self._changed.set()

    def poke(self) -> None:
        """Wake the waiter now, as a write would (e.g. the process it follows has exited)."""
        self._changed.set()

    async def changed(self, timeout_s: float) -> None:
        """Returns once something was written since the last return, or after `timeout_s`, whichever is first."""
        if not self._changed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait()
        self._changed.clear()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def open_watch(directory: Path) -> DirWatch | None:
    """A watch on `directory` for the running loop, or None when this system cannot give one (the caller polls)."""
    lib = _lib()
    if lib is None:
        return None
    fd = lib.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if lib.inotify_add_watch(fd, os.fsencode(directory), MASK) < 0:
        os.close(fd)
        return None
    try:
        return DirWatch(fd, asyncio.get_running_loop())
    except (OSError, RuntimeError, NotImplementedError):
        os.close(fd)
        return None
