"""The run's start (qa.run.Run.start_components): the provider starts beside the homeserver's boot, not before it,
and whichever fails first ends the other and is the error the run reports (its type kept: a ConfigError is still
exit 2). Stand-ins for the provider, the homeserver and its boot: no process is started.

The overlap test fails on the old order (the provider awaited before any homeserver was created): its provider
waits for the homeserver's boot to begin, which then never came (bounded, 5 s)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import qa.run as run_mod
from qa.kernel.errors import ConfigError, InfraError
from qa.report.summary import Timings
from qa.run import Run

BOUND_S = 5.0  # a bound on waits that take milliseconds when the code is right


class FakeHS:
    kind = "standin"
    boot_ms = 12.0


def _run(tmp_path: Path) -> Run:
    run = Run.__new__(Run)
    run.options = SimpleNamespace(homeserver_port=None)  # type: ignore[assignment]
    run.live, run.plan, run.cassettes, run.bot_file, run.fork_server = None, [], {}, None, None
    run.out = SimpleNamespace(say=lambda *_: None, secrets=[])  # type: ignore[assignment]
    run.secrets, run.timings, run.dir = [], Timings(), tmp_path
    run.homeservers, run.homeserver, run.homeserver_boots, run.provider = [], None, [], None
    run.scheduler = SimpleNamespace(provider=None)  # type: ignore[assignment]
    return run


def _stand_ins(monkeypatch: pytest.MonkeyPatch, provider: Any, booting: Any) -> None:
    monkeypatch.setattr(Run, "homeserver_count", lambda self: 1)
    monkeypatch.setattr(run_mod, "start_provider", provider)
    monkeypatch.setattr(run_mod, "create_homeserver", lambda *a, **k: FakeHS())
    monkeypatch.setattr(run_mod.early_synapse, "take", lambda: None)
    monkeypatch.setattr(run_mod.pool, "boot_others", lambda *a: [])
    monkeypatch.setattr(run_mod, "boot", booting)
    monkeypatch.setattr(Run, "_start_fork_server", _no_fork_server)


async def _no_fork_server(self: Run, work: Path) -> None:
    return None


async def test_the_provider_starts_while_the_homeserver_boots(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    boot_began = asyncio.Event()
    order: list[str] = []

    async def provider(*_a: Any, keep: Any) -> None:
        keep("provider")
        await boot_began.wait()  # only a provider started beside the boot sees it begin
        order.append("provider ready")

    async def booting(hs: Any, beside: Any, *_a: Any) -> float:
        boot_began.set()
        await beside  # the fork server's start, as qa.run.backends.boot awaits it
        await asyncio.sleep(0.01)
        order.append("homeserver ready")
        return 0.0

    _stand_ins(monkeypatch, provider, booting)
    run = _run(tmp_path)
    async with asyncio.timeout(BOUND_S):
        await run.start_components(tmp_path / "work")
    assert order == ["provider ready", "homeserver ready"]
    assert run.provider == "provider" and run.timings.providerBootMs is not None
    assert run.timings.homeserverBootMs == 12.0 and run.homeserver is run.homeservers[0]


async def test_a_provider_that_fails_ends_the_boot_and_is_the_error(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    boot_ended: list[str] = []

    async def provider(*_a: Any, keep: Any) -> None:
        await asyncio.sleep(0.01)
        raise ConfigError("--provider-rules x.yaml: line 3: bad rule")

    async def booting(hs: Any, beside: Any, *_a: Any) -> float:
        beside.close()  # the fork server's start, not under test here
        try:
            await asyncio.sleep(60)  # a boot that would take long: the provider's failure must not wait for it
        except asyncio.CancelledError:
            boot_ended.append("cancelled")
            raise
        return 0.0

    _stand_ins(monkeypatch, provider, booting)
    run = _run(tmp_path)
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(ConfigError, match="bad rule"):
            await run.start_components(tmp_path / "work")
    assert boot_ended == ["cancelled"]
    assert run.homeservers and run.homeserver is not None  # listed, so the run's teardown stops it


async def test_a_boot_that_fails_ends_the_provider_start_and_is_the_error(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    provider_ended: list[str] = []

    async def provider(*_a: Any, keep: Any) -> None:
        keep("provider")  # kept before it is ready: the teardown stops it
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            provider_ended.append("cancelled")
            raise

    async def booting(hs: Any, beside: Any, *_a: Any) -> float:
        beside.close()
        await asyncio.sleep(0.01)
        raise InfraError("Synapse failed to start (exited with code 1)")

    _stand_ins(monkeypatch, provider, booting)
    run = _run(tmp_path)
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(InfraError, match="Synapse failed"):
            await run.start_components(tmp_path / "work")
    assert provider_ended == ["cancelled"] and run.provider == "provider"


async def test_a_stopped_run_cancels_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[str] = []

    async def waits(name: str) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            ended.append(name)
            raise

    async def provider(*_a: Any, keep: Any) -> None:
        await waits("provider")

    async def booting(hs: Any, beside: Any, *_a: Any) -> float:
        beside.close()
        await waits("boot")
        return 0.0

    _stand_ins(monkeypatch, provider, booting)
    run = _run(tmp_path)
    task = asyncio.ensure_future(run.start_components(tmp_path / "work"))
    await asyncio.sleep(0.01)
    task.cancel()  # what a signal does to the run's main task
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sorted(ended) == ["boot", "provider"]
