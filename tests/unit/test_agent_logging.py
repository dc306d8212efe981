"""The embedded agent's log (its stderr, the run's bot.log): the libraries' per-event and per-request INFO lines stay
out of it (each was a pipe write inside a reply's path), their warnings and the agent's own INFO lines stay in."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qa.agent.__main__ import CHATTY_LOGGERS, configure_logging

KEPT = ("qa.agent.verification", "nio.crypto.log", "nio.client.base_client")


@pytest.fixture(autouse=True)
def _levels_restored() -> Iterator[None]:
    names = ("", *CHATTY_LOGGERS, *KEPT)
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_per_event_and_per_request_lines_are_off_and_the_rest_stays() -> None:
    configure_logging()
    logging.getLogger().setLevel(logging.INFO)  # as basicConfig sets it in the bot (pytest has its own handlers)
    for name in ("nio.rooms", "httpx2", "httpx"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    for name in KEPT:
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name
