"""Session-wide hooks for the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel, built once per session for every test and xdist worker that installs or reads it
    (tests/integration/wheel_cache.py): the unit test of its contents and the integration tests that install it."""
    from tests.integration import wheel_cache
    from tests.integration.test_install_anywhere import _clean_env

    return wheel_cache.built_wheel(wheel_cache.session_root(tmp_path_factory.getbasetemp()), _clean_env())


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The controller of a pytest-xdist run outlives every worker: it stops a dockerd a worker started for the
    # image tests and handed over (tests/images/fixtures.py), so no worker stops it under another's feet.
    if hasattr(session.config, "workerinput"):
        return
    from tests.images.engine import stop_handed_over
    from tests.images.fixtures import handed_over_pid_file

    stop_handed_over(handed_over_pid_file(os.getpid()))
