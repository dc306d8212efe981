"""A first SIGINT/SIGTERM while the run's teardown cancels a homeserver still booting (`--homeservers`): the
teardown must go on and stop every homeserver (before, the signal cancelled the teardown itself: no stop ran and a
CancelledError escaped the run, whose exit then disagreed with its record). Found by the review of issue 29's
change; fails on the old `_finish` (first homeserver not stopped, CancelledError)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from qa.run import Run
from qa.run.lifecycle import Lifecycle


class FakeHS:
    def __init__(self) -> None:
        self.stopped = False
        self.secrets: list[str] = []

    async def stop(self) -> None:
        self.stopped = True


async def test_a_signal_while_boots_are_cancelled_still_stops_every_homeserver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run.__new__(Run)
    out = SimpleNamespace(say=lambda *_: None, close=lambda: None, secrets=[])
    run.lifecycle = Lifecycle(out, [], lambda: None)  # type: ignore[arg-type]
    run.lifecycle._main = asyncio.current_task()
    first, second = FakeHS(), FakeHS()
    run.homeservers, run.homeserver, run.provider, run.fork_server = [first, second], first, None, None
    run.secrets, run.options, run.out = [], SimpleNamespace(keep_work_dir=False), out

    async def booting() -> float:  # Synapse.start cancelled: its own stop takes up to STOP_GRACE_S
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise
        return 0.0
    run.homeserver_boots = [asyncio.ensure_future(booting())]
    await asyncio.sleep(0)
    run._write = lambda: 130  # type: ignore[method-assign]
    asyncio.get_running_loop().call_later(0.05, run.lifecycle.on_signal, int(signal.SIGINT))
    logs = SimpleNamespace(close=lambda: None)
    try:
        await run._finish(tmp_path / "work", logs)  # type: ignore[arg-type]
        escaped = None
    except asyncio.CancelledError:
        escaped = "CancelledError"
    assert (first.stopped, escaped) == (True, None)
