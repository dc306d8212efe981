"""Session-wide hooks for the whole suite."""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The controller of a pytest-xdist run outlives every worker: it stops a dockerd a worker started for the
    # image tests and handed over (tests/images/fixtures.py), so no worker stops it under another's feet.
    if hasattr(session.config, "workerinput"):
        return
    from tests.images.engine import stop_handed_over
    from tests.images.fixtures import handed_over_pid_file

    stop_handed_over(handed_over_pid_file(os.getpid()))
