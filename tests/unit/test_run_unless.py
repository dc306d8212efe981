"""run_unless: work that a dying process must cut short, with its teardown given a bounded grace."""

from __future__ import annotations

import asyncio

from qa.waiting import run_unless


async def test_work_that_finishes_wins() -> None:
    async def work() -> str:
        return "done"

    stopped, task = await run_unless(work(), asyncio.Event().wait(), grace_s=1)
    assert not stopped and task.result() == "done"


async def test_a_stopper_cancels_the_work_and_lets_its_teardown_run() -> None:
    died = asyncio.Event()
    torn_down = []

    async def work() -> None:
        try:
            died.set()
            await asyncio.Event().wait()
        finally:
            torn_down.append(True)

    stopped, task = await run_unless(work(), died.wait(), grace_s=1)
    assert stopped and task.cancelled() and torn_down == [True]


async def test_cancelling_the_caller_cancels_the_work_too() -> None:
    started = asyncio.Event()
    torn_down = []

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            torn_down.append(True)

    outer = asyncio.create_task(run_unless(work(), asyncio.Event().wait(), grace_s=1))
    await started.wait()
    outer.cancel()
    await asyncio.gather(outer, return_exceptions=True)
    assert torn_down == [True], "no work left running behind the caller's back"


async def test_a_teardown_that_hangs_is_bounded() -> None:
    died = asyncio.Event()

    async def work() -> None:
        try:
            died.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.Event().wait())  # a stuck cleanup: the grace must bound it

    stopped, task = await asyncio.wait_for(run_unless(work(), died.wait(), grace_s=0.1), 5)
    assert stopped and not task.done()
    task.cancel()
