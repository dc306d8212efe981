"""Errors that stop a run before it can produce a verdict.

A failing scenario is a result (exit 1), not an exception. These are for runs that could not be carried out,
so the CLI exits 2 and CI can tell "the bot is broken" apart from "the run never happened".
"""

from __future__ import annotations


class QAError(Exception):
    exit_code: int = 2


class InfraError(QAError):
    """A homeserver, provider or bot process could not be started or reached."""


class ConfigError(QAError):
    """The user asked for something invalid: bad flags, bad settings, unreadable files."""


class HomeserverError(InfraError):
    """The homeserver refused or failed what any scenario needs (registration, login, a room): the run's
    infrastructure is broken, not the bot, so it is a run error (exit 2), not a scenario failure."""
