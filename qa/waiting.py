"""Waiting on evidence: an append-only stream of observations that callers wait on with a predicate.

This is the only way the harness waits. A wait ends when the predicate holds or the deadline passes; on a
timeout the error carries what *was* seen, so a failure report says more than "timed out".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WaitTimeout(Exception):
    def __init__(self, what: str, timeout_s: float, seen: list[str]) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.seen = seen
        shown = "\n  ".join(seen[-15:]) if seen else "(nothing)"
        super().__init__(f"timed out after {timeout_s:g}s waiting for {what}; seen ({len(seen)}):\n  {shown}")


class Stream(Generic[T]):
    def __init__(self, describe: Callable[[T], str] = repr) -> None:
        self.items: list[T] = []
        self._describe = describe
        self._changed = asyncio.Condition()
        self.closed_reason: str | None = None

    async def append(self, item: T) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def close(self, reason: str) -> None:
        """No more items will come (e.g. the process behind the stream exited): wake waiters to fail fast."""
        async with self._changed:
            self.closed_reason = reason
            self._changed.notify_all()

    async def reopen(self) -> None:
        """The source is back (a restarted process): waits may block again."""
        async with self._changed:
            self.closed_reason = None
            self._changed.notify_all()

    async def wait_open(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.closed_reason is None)

    def find(self, predicate: Callable[[T], bool], start: int = 0) -> T | None:
        for item in self.items[start:]:
            if predicate(item):
                return item
        return None

    async def wait_for(self, predicate: Callable[[T], bool], timeout_s: float, what: str, start: int = 0) -> T:
        def ready() -> bool:
            return self.find(predicate, start) is not None or self.closed_reason is not None

        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives
        # as the inner wait completes, and a waiter that ignores its cancellation hangs the teardown waiting on it.
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            raise WaitTimeout(what, timeout_s, [self._describe(i) for i in self.items[start:]]) from None
        found = self.find(predicate, start)
        if found is None:
            seen = [self._describe(i) for i in self.items[start:]]
            raise WaitTimeout(f"{what} (stream ended: {self.closed_reason})", timeout_s, seen)
        return found


async def run_unless(work: Awaitable[R], stopper: Awaitable[object], grace_s: float) -> tuple[bool, asyncio.Future[R]]:
    """Run `work` until it finishes, or until `stopper` does (a process died): then `work` is cancelled and
    given `grace_s` for its own teardown. Returns (stopped, the work's future). Cancelling the caller cancels
    `work` the same way, teardown grace included, so nothing is left running behind the caller's back."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(stopper)
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=grace_s)
        await asyncio.gather(watch, return_exceptions=True)
    # The work's own outcome wins when both ended together: a finished step is not undone by a later exit.
    return not (task.done() and not task.cancelled()), task
