"""Inside the embedded Synapse: its SQLite transactions run on the reactor thread, as in Synapse's own test suite.

Synapse talks to SQLite through Twisted's `adbapi.ConnectionPool`, whose one worker thread (SQLite gets a single
connection: cp_min = cp_max = 1) runs each transaction and hands the result back to the reactor thread: a queue
put, a condition variable, the reactor's waker pipe and two GIL hand-overs per transaction, thousands of times per
run, on a 2-core machine shared with the harness and the bots. Little runs in parallel in exchange: the one
connection serialises the transactions, and only SQLite's own C code (not the Python half of a transaction, nor
the reactor's Python) runs without the GIL. Measured with bench/synapse_config_pairs.py --base-db-thread (the same
scenario-shaped batches on two Synapses in turn): about 6 % less Synapse CPU per scenario (issue 29).

`run_sqlite_inline()` makes every SQLite pool Synapse creates use `ReactorThreadPool`, which runs the work as a
reactor call (`callLater(0)`, so the caller still gets its Deferred back first and the result comes on a later
turn, as from a thread). It is the pool Synapse's own unit tests run their SQLite databases on (tests/server.py,
its "threadless thread pool"), so this is a way Synapse's developers run its storage code on every change. What a
client sees is unchanged: the same transactions, in the same order (the one connection serialised them before
too), with the same results. What changes is only who waits: a transaction now holds the reactor for its
duration instead of letting it parse a request meanwhile. MATRIX_QA_SYNAPSE_DB_THREAD=1 (qa.homeserver.seeded_boot)
keeps the thread. The harness's Synapses are forked from one interpreter that imported Synapse (qa.homeserver.
synapse_zygote): it installs this once, before forking, and every child inherits it.

PostgreSQL pools (a non-embedded Synapse, or an `extra_config` that chose it) keep their threads: they have
real parallel connections to lose.

Imports Twisted and Synapse lazily: the harness imports this module's package without either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_PATCHED = "_matrix_qa_runs_sqlite_inline"


class ReactorThreadPool:
    """The part of `twisted.python.threadpool.ThreadPool` that `adbapi.ConnectionPool` uses, without threads.

    `callInThreadWithCallback` runs the function on a later reactor turn and reports to `on_result` exactly as a
    worker thread would: (True, result) or (False, Failure).
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThreadWithCallback(  # Twisted's name and signature
        self, on_result: Callable[[bool, Any], None], function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        from twisted.python.failure import Failure

        def run() -> None:
            try:
                result = function(*args, **kwargs)
            except BaseException:  # a worker thread reports whatever ended the work; so do we
                on_result(False, Failure())
            else:
                on_result(True, result)

        self._reactor.callLater(0, run)


def wrap_make_pool(make_pool: Callable[..., Any]) -> Callable[..., Any]:
    """`synapse.storage.database.make_pool` whose single-threaded (SQLite) pools run on the reactor thread."""
    if getattr(make_pool, _PATCHED, False):
        return make_pool

    def inline_make_pool(*args: Any, **kwargs: Any) -> Any:
        pool = make_pool(*args, **kwargs)
        # Read defensively: another Synapse or Twisted whose engine or pool lacks these keeps its thread rather than
        # failing to boot.
        reactor = getattr(pool, "_reactor", None)
        if getattr(kwargs.get("engine"), "single_threaded", False) and reactor is not None:
            pool.threadpool = ReactorThreadPool(reactor)
        return pool

    setattr(inline_make_pool, _PATCHED, True)
    return inline_make_pool


def run_sqlite_inline() -> bool:
    """Install the inline pool for every database pool Synapse makes from now on (idempotent).

    False when this Synapse has no `make_pool` to wrap (another version's layout): it then runs as it always did.
    """
    try:
        from synapse.storage import database
    except ImportError:
        return False
    make_pool = getattr(database, "make_pool", None)
    if make_pool is None:
        return False
    database.make_pool = wrap_make_pool(make_pool)
    return True
