"""qa.waiting.Changes: a waiter re-checks its condition after every change and misses none."""

from __future__ import annotations

import asyncio

import pytest

from qa.waiting import Changes


async def test_a_waiter_ends_when_a_change_makes_its_condition_hold() -> None:
    changes, seen = Changes(), []
    waiter = asyncio.ensure_future(changes.until(lambda: len(seen) >= 2, 5.0))
    for item in (1, 2):
        await asyncio.sleep(0)  # let the waiter check and wait before each change
        assert not waiter.done()
        seen.append(item)
        changes.notify()
    await asyncio.wait_for(waiter, 1.0)


async def test_a_change_between_the_check_and_the_wait_is_not_lost() -> None:
    changes, seen = Changes(), []

    def condition() -> bool:
        if not seen:  # the change lands while the waiter is checking: after it took the event
            seen.append(1)
            changes.notify()
            return False
        return True

    await asyncio.wait_for(changes.until(condition, 5.0), 1.0)


async def test_a_condition_already_true_needs_no_change_and_a_false_one_times_out() -> None:
    changes = Changes()
    await changes.until(lambda: True, 0.0)
    with pytest.raises(TimeoutError):
        await changes.until(lambda: False, 0.05)
