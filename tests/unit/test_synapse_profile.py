"""bench/synapse_profile.py: each sample lands in the bucket of what it served; the CPU split is cut at the first
and last scenario request of the log."""

from __future__ import annotations

import importlib.util
import threading
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


def _proc(root: Path, pid: int | str, ppid: int, cmdline: bytes, ticks: tuple[int, int] = (0, 0)) -> None:
    entry = root / str(pid)
    entry.mkdir()
    rest = ["S", str(ppid)] + ["0"] * 9 + [str(ticks[0]), str(ticks[1])] + ["0"] * 10
    (entry / "stat").write_text(f"{pid} (python) " + " ".join(rest))
    (entry / "cmdline").write_bytes(cmdline)


def test_find_synapse_finds_the_forked_server_after_its_zygote(tmp_path: Path) -> None:
    """Synapses are forked from an early interpreter that exits once it has forked: both carry its command line and
    the run (a subreaper) is the parent of both. The profile must follow the second; before, it attached to the
    first found, the zygote, and profiled only the import ("scenarios 0.00 s")."""
    line = b"python\0-m\0qa.homeserver.seeded_boot\0synapse.app.homeserver\0-c\0x.yaml"
    _proc(tmp_path, 100, 1, b"python\0-m\0qa.cli\0run")
    _proc(tmp_path, 200, 100, line)
    _proc(tmp_path, 150, 100, b"python\0-m\0qa.harness.zygote")  # the fork server: not a Synapse
    (tmp_path / "self").symlink_to(tmp_path / "100")  # /proc/self: skipped, not an int() error
    assert sp.find_synapse(100, set(), tmp_path) == 200
    assert sp.find_synapse(100, {200}, tmp_path) is None  # not forked yet
    _proc(tmp_path, 300, 100, line)
    assert sp.find_synapse(100, {200}, tmp_path) == 300
    assert sp.find_synapse(999, set(), tmp_path) is None


def test_sample_cpu_sums_the_zygote_and_the_forked_server(tmp_path: Path) -> None:
    """A forked process's CPU counts from zero: the homeserver's CPU is the exited zygote's last figure plus the
    forked server's."""
    _proc(tmp_path, 200, 100, b"z", (300, 50))
    _proc(tmp_path, 300, 100, b"s", (20, 5))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    pids = [200, 300]
    sampler = threading.Thread(target=sp.sample_cpu, args=(pids, samples, stop, tmp_path))
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while not samples and time.monotonic() < deadline:
            time.sleep(0.01)
        assert samples and samples[-1][1] == 375
        for child in (tmp_path / "200").iterdir():  # the zygote exits: its last figure stays
            child.unlink()
        (tmp_path / "200").rmdir()
        (tmp_path / "300" / "stat").write_text("300 (python) S 100 " + " ".join(["0"] * 9 + ["40", "10"] + ["0"] * 10))
        seen = len(samples)
        while len(samples) < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert samples[-1][1] == 350 + 50
    finally:
        stop.set()
        sampler.join()
