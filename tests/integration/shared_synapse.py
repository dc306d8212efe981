"""One Synapse for a whole pytest session (per xdist worker), lent to every in-process run that does not need
a homeserver of its own: booting Synapse was most of the wall time of a one-scenario test.

Why sharing is sound: the scenario runner gives every user a per-run suffix (`mqa-<role>-<scenario>-<run id>`)
and every room a name with the run id, and a scenario only ever sees the rooms its own users create or are
invited to, so two runs on one server share nothing but the process. A run's `restart_homeserver` step restarts
the shared server itself (same address, same data: what the step means), which is harmless to the runs after it.

How: the server lives on its own event loop in a thread (its process watcher and HTTP pool belong to that loop),
and each run gets a `BorrowedSynapse` built by the registry's "synapse" backend while the run lasts
(`lend_to_runs`). The run talks to it as to its own Synapse (kind, version, server name, secrets to redact),
with two honest differences: its boot time is the time to see the server answer, and its log (shared by every
run) is not copied into the run's artifacts. Tests that look at the homeserver's process, log or boot, or kill
it, are marked `own_homeserver` and get the ordinary per-run Synapse.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from qa.homeserver import registry
from qa.homeserver import synapse as synapse_module
from qa.homeserver.base import Homeserver, UserCredentials
from qa.homeserver.registration import register_with_shared_secret
from qa.homeserver.synapse import SynapseHomeserver
from qa.kernel import event_loop

T = TypeVar("T")
# Boot, restart and stop of the shared server are bounded: a hung one fails the test that waits, not the session.
CALL_TIMEOUT_S = 120.0


class SessionSynapse:
    """The shared server and the event loop (in a daemon thread) that owns it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The harness's own loop (uvloop unless MATRIX_QA_HARNESS_LOOP=asyncio), as in the runs it serves.
        _, self._loop = event_loop.new_loop(event_loop.HARNESS_ENV, os.environ)
        self._thread = threading.Thread(target=self._loop.run_forever, name="session-synapse", daemon=True)
        self._thread.start()
        self._generation = 0
        self.hs = self._new_server()
        self.boots = 0
        self._atexit = False

    def _new_server(self) -> SynapseHomeserver:
        self._generation += 1
        where = self.root / f"synapse-{self._generation}"
        # With the application-service registration (issue 33): the runs of every bot file share this server.
        return SynapseHomeserver(where / "work", where / "logs", appservice=True)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's loop and wait for it here (blocking: for fixtures, not for tests' loops)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's loop and await it from another loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT_S)

    def ensure_running(self) -> None:
        """Boot the server, or a fresh one if the last one died (a test that broke it must not break the rest)."""
        if self.hs.death is not None:
            self.call(self.hs.stop())
            self.hs = self._new_server()
        if self.hs.pid is None:
            self.call(self.hs.start())
            self.boots += 1
            self._untrack()

    def restart(self) -> None:
        self.call(self.hs.restart())
        self._untrack()

    def _untrack(self) -> None:
        """Each run's teardown SIGKILLs every Synapse the process tracks (kill_all_children, its last resort):
        the shared one must not be among them. This object stops it instead (close(), and atexit)."""
        if (pid := self.hs.pid) is not None:
            synapse_module._LIVE_CHILDREN.discard(pid)
            if not self._atexit:
                atexit.register(self._kill)
                self._atexit = True

    def _kill(self) -> None:
        if (pid := self.hs.pid) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.hs.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class BorrowedSynapse(Homeserver):
    """A run's view of the shared server: what a SynapseHomeserver shows a run, minus owning the process."""

    kind = "synapse"
    mints_registration_tokens = True

    def __init__(self, shared: SessionSynapse) -> None:
        self.shared = shared
        self.server_name = shared.hs.server_name
        self.log_path = None  # shared by every run of the session: not this run's artifact
        self._http: aiohttp.ClientSession | None = None
        self._watch: asyncio.Future[str] | None = None

    @property
    def base_url(self) -> str:
        return self.shared.hs.base_url

    @property
    def appservice(self) -> SharedAppservice | None:
        host = self.shared.hs.appservice
        return SharedAppservice(self.shared, host) if host is not None else None

    @property
    def secrets(self) -> list[str]:
        return self.shared.hs.secrets

    async def start(self) -> None:
        t0 = time.monotonic()
        await asyncio.to_thread(self.shared.ensure_running)
        self.version = self.shared.hs.version
        self.boot_ms = (time.monotonic() - t0) * 1000
        self._watch_death()

    def _watch_death(self) -> None:
        """The run stops when the server dies under it, as with its own Synapse."""
        future = asyncio.run_coroutine_threadsafe(self.shared.hs.wait_died(), self.shared._loop)
        self._watch = asyncio.wrap_future(future)
        self._watch.add_done_callback(lambda f: None if f.cancelled() else self.mark_died(f.result()))

    async def stop(self) -> None:
        """The server stays up for the next run; only this run's connections and watcher go."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def restart(self) -> None:
        """The step restarts the real server (stop, start, same address and data), as it would its own."""
        t0 = time.monotonic()
        await asyncio.to_thread(self.shared.restart)
        self.boot_ms = self.shared.hs.boot_ms or (time.monotonic() - t0) * 1000

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        return await register_with_shared_secret(self.base_url, self.shared.hs.shared_secret, localpart, password,
                                                 admin=admin, session=self._session())

    async def register_session(self, localpart: str, password: str, *, device_name: str) -> UserCredentials:
        return await register_with_shared_secret(self.base_url, self.shared.hs.shared_secret, localpart, password,
                                                 session=self._session(), device_name=device_name)

    async def registration_token(self, uses: int, valid_s: float) -> str:
        # Minted by the shared server's own admin, on the loop that owns its connections.
        return await self.shared.acall(self.shared.hs.registration_token(uses, valid_s))

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http


class SharedAppservice:
    """A run's view of the shared server's application-service endpoint, whose I/O lives on the server's loop."""

    def __init__(self, shared: SessionSynapse, host: Any) -> None:
        self.shared = shared
        self.host = host
        self.as_token = host.as_token

    async def open_lease(self, base_url: str, localpart: str, push_faults: Any = None) -> Any:
        return await self.shared.acall(self.host.open_lease(base_url, localpart, push_faults=push_faults))

    async def set_push_faults(self, key: str, rules: Any, why: str = "set_faults") -> None:
        await self.shared.acall(self.host.set_push_faults(key, rules, why))

    async def wait_push_hits(self, key: str, condition: Any, timeout_s: float) -> None:
        await self.shared.acall(self.host.wait_push_hits(key, condition, timeout_s))

    def bot_registration(self, lease: Any, localpart: str) -> dict[str, Any]:
        return dict(self.host.bot_registration(lease, localpart))

    async def release(self, key: str) -> dict[str, Any]:
        return dict(await self.shared.acall(self.host.release(key)))


@contextlib.contextmanager
def lend_to_runs(shared: SessionSynapse) -> Iterator[None]:
    """While inside, the "synapse" backend builds a BorrowedSynapse of `shared` instead of its own server."""
    original = registry.get("synapse")
    registry.unregister("synapse")
    registry.register(dataclasses.replace(original, create=lambda request: BorrowedSynapse(shared)))
    try:
        yield
    finally:
        registry.unregister("synapse")
        registry.register(original)
