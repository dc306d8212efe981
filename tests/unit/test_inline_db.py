"""qa.homeserver.inline_db: Synapse's SQLite pool without its thread, the way Synapse's own tests run it."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from qa.homeserver import seeded_boot
from qa.homeserver.inline_db import ReactorThreadPool, run_sqlite_inline, wrap_make_pool
from tests.unit.test_synapse_zygote import _drive, _orders


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


# A real SQLite transaction through the pool Synapse's own make_pool builds: which pool it is, and whether the work
# ran on the reactor's thread.
_POOL_CHECK = """
import threading
from twisted.internet import defer, task

async def check(reactor):
    from synapse.config.database import DatabaseConnectionConfig
    from synapse.storage import database
    from synapse.storage.engines import create_engine

    db_config = DatabaseConnectionConfig("master", {"name": "sqlite3", "args": {"database": ":memory:"}})
    engine = create_engine(db_config.config)
    pool = database.make_pool(reactor=reactor, db_config=db_config, engine=engine, server_name="x")
    pool.start()
    try:
        ran_on = await pool.runInteraction(lambda txn: (txn.execute("SELECT 1"), threading.get_ident())[1])
        print(type(pool.threadpool).__name__, ran_on == threading.get_ident(), flush=True)
    finally:
        pool.close()

def main():
    task.react(lambda reactor: defer.ensureDeferred(check(reactor)))
"""

_SPAWNED = _POOL_CHECK + """
import sys
from qa.homeserver.seeded_boot import load_app
load_app("synapse.app.homeserver", {sys.argv[1]: sys.argv[2]})
main()
"""

_ESCAPE_HATCH = [
    ("UNRELATED", "ReactorThreadPool True"),
    ("MATRIX_QA_SYNAPSE_DB_THREAD", "ThreadPool False"),  # the way back, for comparing
]


@pytest.mark.parametrize(("env", "expected"), _ESCAPE_HATCH)
def test_synapse_behind_the_launcher_runs_sqlite_on_the_reactor_thread(env: str, expected: str) -> None:
    """In a fresh interpreter (the patch is process-wide): the pool Synapse's own make_pool builds, behind
    seeded_boot, runs a real SQLite transaction on the reactor's thread; with the variable set, on its own."""
    pytest.importorskip("synapse")
    done = subprocess.run([sys.executable, "-c", _SPAWNED, env, "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == expected


@pytest.mark.parametrize(("env", "expected"), _ESCAPE_HATCH)
def test_a_synapse_forked_from_the_zygote_runs_sqlite_on_its_reactor_thread(
        env: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Synapse of a run is forked from the zygote (seeded_boot --await-config): the zygote installs the inline
    pool before forking, read from the environment it was started with, and the forked child's pool, built on the
    reactor it installs after the fork, runs a real transaction on that reactor's thread."""
    pytest.importorskip("synapse")
    monkeypatch.setenv(env, "1")  # the driver (the harness's stand-in) starts the zygote with its environment
    seen = _drive(tmp_path, "pool_app", _POOL_CHECK, _orders(tmp_path, "us"))
    log = (tmp_path / "out.log").read_text()
    assert seen["code"] == 0, log[-2000:]
    assert log.splitlines()[-1] == expected
    assert "keeps its database thread" not in log  # said only when the inline pool could not be installed


def test_a_synapse_without_make_pool_keeps_its_thread_and_its_log_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another Synapse's layout: nothing to wrap, Synapse boots as it always did, and the launcher says why."""
    # A stand-in package, not the real one: importing Synapse here would install Twisted's reactor in this process.
    for name in ("synapse", "synapse.storage", "synapse.storage.database"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules["synapse.storage"], "database", sys.modules["synapse.storage.database"],
                        raising=False)
    assert run_sqlite_inline() is False
    monkeypatch.setattr(seeded_boot, "remember_schema_checks", lambda: None)  # process-wide: not in this test
    monkeypatch.setattr(seeded_boot, "cache_label_lookups", lambda: None)  # nor this
    app, note = seeded_boot.load_app("json", {})
    assert app.__name__ == "json" and note is not None and "keeps its database thread" in note
    # the thread and the label lookups as they are
    asked = {seeded_boot.DB_THREAD_ENV: "1", seeded_boot.METRIC_LABELS_ENV: "1"}
    assert seeded_boot.load_app("json", asked)[1] is None
