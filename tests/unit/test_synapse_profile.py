"""bench/synapse_profile.py: each sample lands in the bucket of what it served; the CPU split is cut at the first
and last scenario request of the log."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("synapse_profile", REPO / "bench" / "synapse_profile.py")
assert _spec is not None and _spec.loader is not None
sp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sp)

REACTOR = "ReactorBase.run (twisted/internet/base.py:686);ReactorBase.mainLoop (twisted/internet/base.py:697)"
PLUMBING = "run_in_background (synapse/logging/context.py:800);_inlineCallbacks (twisted/internet/defer.py:1835)"


def _bucket(stack: str) -> tuple[str, str]:
    return sp.bucket(*sp.frames(stack))


def test_a_servlet_wins_over_what_it_awaits() -> None:
    stack = (f"thread (1): MainThread;{REACTOR};{PLUMBING};SyncRestServlet.on_GET (synapse/rest/client/sync.py:200);"
             "EventCreationHandler._persist_events (synapse/handlers/message.py:1500)")
    assert _bucket(stack) == ("client request (servlet)", "SyncRestServlet.on_GET (client/sync.py)")


def test_persistence_outside_a_request_and_the_database_thread() -> None:
    stack = (f"thread (1): MainThread;{REACTOR};{PLUMBING};"
             "EventsPersistenceStorageController._process_event_persist_queue_task (synapse/storage/x.py:1)")
    assert _bucket(stack)[0] == "event persistence outside a request"
    db = ("thread (2): PoolThread-1-0;DatabasePool.new_transaction (synapse/storage/database.py:9);"
          "PersistEventsStore._persist_events_txn (synapse/storage/databases/main/events.py:3)")
    assert _bucket(db) == ("database thread", "PersistEventsStore._persist_events_txn")


def test_boot_is_what_runs_before_the_reactor() -> None:
    imports = ("thread (1): MainThread;main (qa/homeserver/seeded_boot.py:109);"
               "_find_and_load (<frozen importlib._bootstrap>:1176)")
    assert _bucket(imports)[0] == "boot: imports"
    assert _bucket("thread (1): MainThread;main (synapse/app/homeserver.py:400)")[0] == "boot: the rest"


def test_the_rest_of_the_reactor_by_its_outermost_synapse_frame() -> None:
    stack = (f"thread (1): MainThread;{REACTOR};{PLUMBING};"
             "SyncHandler._generate_room_entry.<locals>.handle (synapse/handlers/sync.py:2904);"
             "LruCache.get (synapse/util/caches/lrucache.py:10)")
    assert _bucket(stack) == ("reactor, other",
                              "SyncHandler._generate_room_entry.<locals>.handle (synapse/handlers/sync.py)")


def test_cpu_split_cuts_at_the_users_requests_too(tmp_path: Path) -> None:
    # The registrations come first and a user's requests last: a split cut at the last registration (the
    # pattern once matched the user's name only after "Processed request", where it never is) says "after"
    # for the scenarios' own work.
    log = tmp_path / "synapse.log"
    base = time.mktime((2026, 12, 7, 4, 0, 0, 0, 0, -1))

    def line(seconds: int, who: str, path: str) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(base + seconds))
        return (f"{stamp},000 - synapse.access.http.1 - 643 - INFO - GET-1 - 127.0.0.1 - 1 - {{{who}}} Processed "
                f'request: 0.001sec/0.001sec ru=(0.001sec, 0.000sec) db=(0.000sec/0.000sec/0) 2B 200 "GET {path}"')

    log.write_text("\n".join([line(10, "None", "/_synapse/admin/v1/register"),
                              line(20, "@mqa-driver-canary-abc123:localhost", "/_matrix/client/v3/sync"),
                              line(30, "@other:localhost", "/_matrix/client/v3/sync")]) + "\n")
    samples = [(base + 5, 100), (base + 10, 300), (base + 15, 400), (base + 20, 900), (base + 40, 1000)]
    split = sp.cpu_split(samples, log)
    ticks = sp.TICKS
    assert f"boot {300 / ticks:.2f} s, scenarios {600 / ticks:.2f} s over 10.0 s" in split
    assert f"after {100 / ticks:.2f} s" in split
