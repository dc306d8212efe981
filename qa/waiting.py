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


class _Watch(Generic[T]):
    """One wait's predicate, offered each new item as it is appended: no wait ever re-scans what it saw."""

    def __init__(self, predicate: Callable[[T], bool]) -> None:
        self.predicate = predicate
        self.found: list[T] = []
        self.error: BaseException | None = None

    def offer(self, items: list[T]) -> None:
        """New items in order, until one matches or the predicate fails (one call per chunk, not per item)."""
        if self.found or self.error is not None:
            return
        predicate = self.predicate
        try:
            for item in items:
                if predicate(item):
                    self.found.append(item)
                    return
        except Exception as exc:  # the waiter's to raise (a user's pattern that timed out), not the appender's
            self.error = exc


class Stream(Generic[T]):
    """`keep`: hold at most about that many items (the oldest go; `count` and the `start` of a wait stay
    absolute). `pure`: every wait's predicate depends on the item alone, so each item is judged once, as it is
    appended (linear, and a wait sees every item however few are kept); needed with `keep`."""

    def __init__(self, describe: Callable[[T], str] = repr, keep: int | None = None, pure: bool = False) -> None:
        self.items: list[T] = []
        self.dropped = 0  # items no longer held, before items[0]
        self._keep = keep
        self._once = pure or keep is not None
        self._describe = describe
        self._changed = asyncio.Condition()
        self._watches: list[_Watch[T]] = []
        self.closed_reason: str | None = None

    @property
    def count(self) -> int:
        """Every item ever appended: the `start` of a wait that begins now."""
        return self.dropped + len(self.items)

    async def append(self, item: T) -> None:
        await self.extend([item])

    async def extend(self, items: list[T]) -> None:
        """Several items at once (a chunk of a bot's output): each offered to every wait, in order, then the
        waiters woken once, not once per item."""
        for watch in self._watches:  # each wait judges on its own, so wait by wait is the same as item by item
            watch.offer(items)
        async with self._changed:
            self.items.extend(items)
            if self._keep is not None and len(self.items) >= 2 * self._keep:  # trimmed in halves: amortised O(1)
                cut = len(self.items) - self._keep
                del self.items[:cut]
                self.dropped += cut
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

    def _held(self, start: int) -> list[T]:
        return self.items[max(start - self.dropped, 0):]

    def find(self, predicate: Callable[[T], bool], start: int = 0) -> T | None:
        for item in self._held(start):
            if predicate(item):
                return item
        return None

    def matching(self, predicate: Callable[[T], bool], start: int = 0) -> list[T]:
        """Every held item from `start` on that the predicate accepts, in order."""
        return [item for item in self._held(start) if predicate(item)]

    async def wait_for(self, predicate: Callable[[T], bool], timeout_s: float, what: str, start: int = 0, *,
                       pure: bool = False) -> T:
        """The first item from `start` on that the predicate accepts. `pure`: this predicate depends on the item
        alone (and on values fixed when the wait began), so each item is judged once, as it comes, rather than
        every held item again at every wake (a bot's trace grows by a record at a time while steps wait on it).
        A predicate that counts, or reads what the scenario learns meanwhile, must not say so."""
        if self._once or pure:
            return await self._wait_offered(predicate, timeout_s, what, start)

        def ready() -> bool:
            return self.find(predicate, start) is not None or self.closed_reason is not None

        # Each wake re-judges every item: a predicate may depend on what the scenario learned since (the id of
        # a message just sent), so an item that did not match before may match now.
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives
        # as the inner wait completes, and a waiter that ignores its cancellation hangs the teardown waiting on it.
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            raise WaitTimeout(what, timeout_s, [self._describe(i) for i in self._held(start)]) from None
        found = self.find(predicate, start)
        if found is None:
            seen = [self._describe(i) for i in self._held(start)]
            raise WaitTimeout(f"{what} (stream ended: {self.closed_reason})", timeout_s, seen)
        return found

    async def _wait_offered(self, predicate: Callable[[T], bool], timeout_s: float, what: str, start: int) -> T:
        """For pure predicates (a pattern on a log line): what is held is scanned once; from then on each new item
        is offered to the predicate as it comes (no await in between, so nothing is missed or seen twice)."""
        found = self.find(predicate, start)
        if found is not None:
            return found
        watch: _Watch[T] = _Watch(predicate)
        self._watches.append(watch)
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(
                    lambda: bool(watch.found) or watch.error is not None or self.closed_reason is not None)
        except TimeoutError:
            raise WaitTimeout(what, timeout_s, [self._describe(i) for i in self._held(start)]) from None
        finally:
            self._watches.remove(watch)
        if watch.error is not None:
            raise watch.error
        if watch.found:
            return watch.found[0]
        seen = [self._describe(i) for i in self._held(start)]
        raise WaitTimeout(f"{what} (stream ended: {self.closed_reason})", timeout_s, seen)


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


class Changes:
    """"Something changed" for waiters that re-check a condition of their own (hits, requests, pushes): `notify`
    wakes every waiter and hands later ones a fresh event; a waiter takes the event before it checks, so a change
    between its check and its wait is never lost."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Until `condition()` holds, re-checked after every change; TimeoutError past timeout_s."""
        async with asyncio.timeout(timeout_s):
            while True:
                event = self._event
                if condition():
                    return
                await event.wait()
