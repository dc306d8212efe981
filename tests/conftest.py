"""Session-wide hooks for the whole suite."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel, built once per session for every test and xdist worker that installs or reads it
    (tests/integration/wheel_cache.py): the unit test of its contents and the integration tests that install it."""
    from tests.integration import wheel_cache
    from tests.integration.test_install_anywhere import _clean_env

    return wheel_cache.built_wheel(wheel_cache.session_root(tmp_path_factory.getbasetemp()), _clean_env())


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Iterator[None]:
    """Collection without the cyclic collector, then what it made frozen out of it.

    Every pytest process (each of the four xdist workers) imports every test module and builds every item: long-lived
    objects (modules, classes, pydantic models, ~4000 items) and next to no cyclic garbage, yet each 700 allocations
    set off a collection, five of them full ones over a growing heap. Frozen (gc.freeze) afterwards, those objects are
    never walked again: not by the full collections the tests set off, nor by the five pytest makes at exit to find
    unraisable exceptions. gc.freeze takes everything alive then (pytest's own start-up objects too), so one full
    collection goes first: the cyclic garbage collection made with the collector off (~14 % of the heap, some MB a
    worker) is freed, not kept for the session. What the tests make is collected as before. The collector is back
    on as it was before collection."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        return (yield)
    finally:
        gc.collect()
        gc.freeze()
        if was_on:
            gc.enable()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The controller of a pytest-xdist run outlives every worker: it stops a dockerd a worker started for the
    # image tests and handed over (tests/images/fixtures.py), so no worker stops it under another's feet.
    if hasattr(session.config, "workerinput"):
        return
    from tests.images.engine import stop_handed_over
    from tests.images.fixtures import handed_over_pid_file

    stop_handed_over(handed_over_pid_file(os.getpid()))
