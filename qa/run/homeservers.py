"""Chapter 3 of a run (qa.run), when a run has more than one homeserver: how many, which job slots each serves,
and booting and watching them all (issue 29).

Synapse does its work on one thread: a big run at the default --jobs spends most of its wall waiting on that one
core while the other idles (bench/second_homeserver.py). With `--homeservers N` (default `auto`), the embedded
Synapse backend boots N of them side by side and each serves its own share of the job slots: slot i is homeserver
i mod N's, and a scenario taken by a slot runs on that slot's homeserver for its whole life (users, rooms, bot,
steps). The early Synapse (qa.homeserver.early_synapse) is always the first; the others boot beside it.

Each homeserver is numbered from 1, as shards are; the first keeps the single homeserver's places (work dir
`synapse/`, logs in `<artifacts>/homeserver/`), homeserver k > 1 gets `homeserver-k/` for both, its own free
port and its own secrets, so a failure message names the log that explains it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from qa.harness.jobs import MULTI_BACKENDS
from qa.harness.output import Output
from qa.homeserver.base import Homeserver
from qa.kernel.errors import ConfigError, InfraError


def check_count(requested: int | None, backend: str, jobs: int) -> None:
    """An explicit N > 1 the run cannot honour is a usage error (exit 2), before anything starts."""
    if requested is None or requested == 1:
        return
    if backend not in MULTI_BACKENDS:
        raise ConfigError(f"--homeservers {requested} needs the embedded Synapse (--homeserver synapse); "
                          f"--homeserver {backend} is one server")
    if requested > jobs:
        raise ConfigError(f"--homeservers {requested} is more than --jobs {jobs}: each homeserver serves at least "
                          "one job slot")


def label(index: int, count: int) -> str:
    """How messages name homeserver `index` (0-based): `homeserver 2 of 3`; nothing more when there is one."""
    return "homeserver" if count == 1 else f"homeserver {index + 1} of {count}"


def places(index: int, work: Path, run_dir: Path) -> tuple[Path, Path]:
    """(work dir, log dir) of homeserver `index` (0-based): the first keeps the single homeserver's."""
    if index == 0:
        return work, run_dir / "homeserver"
    name = f"homeserver-{index + 1}"
    return work / name, run_dir / name


def boot_others(homeservers: Sequence[Homeserver], out: Output, secrets: list[str], *, spare: bool = False
                ) -> list[asyncio.Task[float]]:
    """Every homeserver but the first starts booting, each in a task of its own, beside the first's boot (which
    the early Synapse has a head start on) and beside the first scenarios: the canary and the first homeserver's
    slots do not wait for them, each homeserver's slots wait for their own (Scheduler.run's `ready`). A task's
    result is its boot time (ms); a failed boot ends the run (qa.run.lifecycle.Lifecycle.while_homeservers_live),
    unless they are `spare` (`--homeservers auto`: the user asked for no count): then it is a `note:` on the
    console and in harness.log, its slots end and the others take the plan (nothing had run on it).
    `cancel_boots` ends those still booting, before the homeservers are stopped."""
    return [asyncio.ensure_future(_boot_other(hs, i + 1, len(homeservers), out, secrets, spare))
            for i, hs in enumerate(homeservers[1:])]


async def cancel_boots(boots: Sequence[asyncio.Task[float]]) -> None:
    """Cancel the boots still running and wait for them to end, so no start() spawns a server after its stop."""
    for task in boots:
        task.cancel()
    await asyncio.gather(*boots, return_exceptions=True)


def failed_boot(boots: Sequence[asyncio.Task[float]]) -> BaseException | None:
    """The error of the first boot that failed (not one that was cancelled), or None."""
    for task in boots:
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task.exception()
    return None


def boot_times(first_ms: float | None, boots: Sequence[asyncio.Task[float]]) -> list[float | None]:
    """Each homeserver's first boot in ms (None: it never got ready), in order."""
    return [first_ms, *(t.result() if t.done() and not t.cancelled() and t.exception() is None else None
                        for t in boots)]


async def _boot_other(hs: Homeserver, index: int, count: int, out: Output, secrets: list[str],
                      spare: bool = False) -> float:
    name = label(index, count)
    out.say(f"starting {name} ({hs.kind}) …")
    try:
        await hs.start()
    except InfraError as exc:  # the first line names the homeserver; the error's own text names its log
        if spare:
            where = "" if str(hs.log_path) in str(exc) else f"; see {hs.log_path}"
            note = (f"note: {name} failed to boot, so the run goes on without it (--homeservers auto: its job "
                    f"slots end, the others take the plan): {exc}{where}")
            out.say(note)
            logging.getLogger("qa.homeserver.spare").warning(note)  # harness.log (qa.run.lifecycle.LibraryLogs)
        raise InfraError(f"{name}: {exc}") from None
    from qa.run.backends import add_secrets  # here: backends imports options, which imports this module

    add_secrets(secrets, getattr(hs, "secrets", []))
    out.say(f"{name} ({hs.kind} {hs.version}) ready at {hs.base_url} in {hs.boot_ms:.0f} ms; log {hs.log_path}")
    return round(hs.boot_ms or 0.0, 1)


def death_message(hs: Homeserver, index: int, count: int) -> str:
    """The infrastructure error of a homeserver that died mid-run: which one, why, and its log."""
    which = f"{hs.kind} homeserver" if count == 1 else f"{hs.kind} {label(index, count)}"
    return f"{which} died mid-run: {hs.death}; see {hs.log_path}"


async def first_trouble(homeservers: Sequence[Homeserver], boots: Sequence[asyncio.Task[float]] = ()
                        ) -> tuple[int, str | BaseException]:
    """Once any homeserver has died on its own (its index and why) or failed to boot (its index and the error).
    Never returns while they all live and boot."""
    waits = [asyncio.ensure_future(hs.wait_died()) for hs in homeservers]
    failures = [asyncio.ensure_future(_failure(task)) for task in boots]
    try:
        done, _ = await asyncio.wait([*waits, *failures], return_when=asyncio.FIRST_COMPLETED)
        task = next(iter(done))
        if task in waits:
            return waits.index(task), task.result()
        return failures.index(task) + 1, task.result()
    finally:
        for task in [*waits, *failures]:
            task.cancel()


async def _failure(boot: asyncio.Task[float]) -> BaseException:
    """Returns a boot's error once it fails; never returns for one that succeeds or is cancelled."""
    await asyncio.wait([boot])
    error = None if boot.cancelled() else boot.exception()
    if error is None:
        await asyncio.Event().wait()  # booted: this homeserver's trouble, if any, is a death
    assert error is not None
    return error
