"""The heavy imports of a run (the harness's, the fork server's preload) with the cyclic collector off, and the
collector as it was afterwards (qa.shared.imports, qa.harness.zygote.preload_frozen, qa.run.backends)."""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Iterator

import pytest

from qa.harness import heap_holes, zygote
from qa.run import backends
from qa.shared.imports import imports_without_gc


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was_on = gc.isenabled()
    yield
    gc.enable() if was_on else gc.disable()


def test_the_collector_is_off_inside_and_back_afterwards_even_after_an_error() -> None:
    gc.enable()
    with imports_without_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ImportError), imports_without_gc():
        raise ImportError("a failed import")
    assert gc.isenabled()


def test_a_caller_that_had_the_collector_off_keeps_it_off() -> None:
    gc.disable()
    with imports_without_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_users_in_two_threads_leave_the_collector_on() -> None:
    # The interleaving a check-then-disable lost: A in (on -> off), B in (sees off), A out, B out. The collector is
    # one switch for the process, so the last one out turns it back on.
    gc.enable()
    a, b = imports_without_gc(), imports_without_gc()
    a.__enter__()
    b.__enter__()
    assert not gc.isenabled()
    a.__exit__(None, None, None)
    assert not gc.isenabled(), "B is still importing"
    b.__exit__(None, None, None)
    assert gc.isenabled()


def test_nested_users_restore_an_off_collector_off() -> None:
    gc.disable()
    with imports_without_gc(), imports_without_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_scenario_runner_is_imported_beside_the_homeserver_with_the_collector_off(monkeypatch) -> None:
    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(backends.importlib, "import_module", lambda name: seen.append((name, gc.isenabled())))
    gc.enable()
    backends._import_runner()
    assert seen == [("qa.scenario.runner", False)] and gc.isenabled()


def test_the_fork_server_preloads_with_the_collector_off_then_freezes_and_forks_bots_with_it_on(monkeypatch) -> None:
    seen: list[bool] = []
    module = types.ModuleType("gc_probe_preload")
    module.record = lambda: seen.append(gc.isenabled())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gc_probe_preload", module)
    gc.enable()
    # The suite's collection is frozen already (tests/conftest.py): the preload must freeze more than that.
    frozen_before = gc.get_freeze_count()
    try:
        zygote.preload_frozen(["gc_probe_preload:record"])
        assert seen == [False]
        assert gc.isenabled(), "a forked bot collects as a fresh interpreter does"
        assert gc.get_freeze_count() > frozen_before, "what the preload made is frozen"
    finally:
        gc.unfreeze()
        if frozen_before:  # the suite's collection, frozen again (with what the probe made: a few objects)
            gc.freeze()
        heap_holes.release()  # the preload's fillers (qa.harness.heap_holes): this process is no fork server
