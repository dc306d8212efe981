"""qa.homeserver.inline_db: Synapse's SQLite pool without its thread, the way Synapse's own tests run it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from qa.homeserver.inline_db import ReactorThreadPool, wrap_make_pool


class _Reactor:
    """Records callLater(0, ...) calls; `turn()` runs them, as the reactor's next iteration would."""

    def __init__(self) -> None:
        self.later: list[tuple[float, Any]] = []

    def callLater(self, delay: float, fn: Any) -> None:  # Twisted's name
        self.later.append((delay, fn))

    def turn(self) -> None:
        due, self.later = self.later, []
        for _, fn in due:
            fn()


def test_the_work_runs_on_a_later_turn_and_reports_its_result() -> None:
    reactor = _Reactor()
    pool = ReactorThreadPool(reactor)
    results: list[tuple[bool, Any]] = []
    pool.callInThreadWithCallback(lambda ok, value: results.append((ok, value)), lambda a, b=0: a + b, 2, b=3)
    assert results == []  # the caller gets its Deferred back before the work runs, as from a thread
    assert [delay for delay, _ in reactor.later] == [0]
    reactor.turn()
    assert results == [(True, 5)]


def test_a_failure_is_reported_as_a_failure_not_raised() -> None:
    reactor = _Reactor()
    results: list[tuple[bool, Any]] = []

    def broken() -> None:
        raise ValueError("no such table")

    ReactorThreadPool(reactor).callInThreadWithCallback(lambda ok, value: results.append((ok, value)), broken)
    reactor.turn()  # must not raise: a worker thread would have reported it, not thrown it into the reactor
    ((ok, failure),) = results
    assert ok is False
    assert failure.check(ValueError) and "no such table" in str(failure.value)


class _Engine:
    def __init__(self, single_threaded: bool) -> None:
        self.single_threaded = single_threaded


class _Pool:
    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.threadpool = "twisted's"


@pytest.mark.parametrize(("single_threaded", "inline"), [(True, True), (False, False)])
def test_only_single_threaded_engines_lose_their_thread(single_threaded: bool, inline: bool) -> None:
    reactor = object()
    make_pool = wrap_make_pool(lambda **kw: _Pool(kw["reactor"]))
    pool = make_pool(reactor=reactor, db_config=None, engine=_Engine(single_threaded), server_name="x")
    assert isinstance(pool.threadpool, ReactorThreadPool) is inline
    assert wrap_make_pool(make_pool) is make_pool  # wrapping twice changes nothing


_SYNAPSE_POOL = """
import sys, threading
from twisted.internet import defer, task
from qa.homeserver.seeded_boot import load_app
load_app("synapse.app.homeserver", {sys.argv[1]: sys.argv[2]})
from synapse.config.database import DatabaseConnectionConfig
from synapse.storage import database
from synapse.storage.engines import create_engine

async def main(reactor):
    db_config = DatabaseConnectionConfig("master", {"name": "sqlite3", "args": {"database": ":memory:"}})
    engine = create_engine(db_config.config)
    pool = database.make_pool(reactor=reactor, db_config=db_config, engine=engine, server_name="x")
    pool.start()
    try:
        ran_on = await pool.runInteraction(lambda txn: (txn.execute("SELECT 1"), threading.get_ident())[1])
        print(type(pool.threadpool).__name__, ran_on == threading.get_ident())
    finally:
        pool.close()

task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


@pytest.mark.parametrize(("env", "expected"), [
    ("UNRELATED", "ReactorThreadPool True"),
    ("MATRIX_QA_SYNAPSE_DB_THREAD", "ThreadPool False"),  # the way back, for comparing
])
def test_synapse_behind_the_launcher_runs_sqlite_on_the_reactor_thread(env: str, expected: str) -> None:
    """In a fresh interpreter (the patch is process-wide): the pool Synapse's own make_pool builds, behind
    seeded_boot, runs a real SQLite transaction on the reactor's thread; with the variable set, on its own."""
    pytest.importorskip("synapse")
    done = subprocess.run([sys.executable, "-c", _SYNAPSE_POOL, env, "1"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == expected
