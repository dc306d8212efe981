"""The bot's crypto store with its tables bound once, not around every call (issue 29).

matrix-nio's SQLite store wraps each of its methods in `database.bind_ctx(models)`: on the way in it binds every
one of its ~20 peewee models to the store's database, walking each model's graph of references, and on the way
out binds them all back. That is ~0.8 ms of CPU per store call (a start's store load makes a dozen, every sync of
an encrypted bot one more, an encrypted turn several): more than the SQL it wraps.

Here the models are bound when a call finds them bound elsewhere (the first call, or after another store of this
process ran) and left bound after it. The queries, their transactions and what lands on disk are the same; only
the peewee bookkeeping around them goes. A process with two stores (a relogin makes a second before it closes the
first) still has every call run on its own store's database: each call checks the binding of every model it uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from nio.crypto import ENCRYPTION_ENABLED


class _BoundOnce:
    """peewee's `bind_ctx`, minus the unbinding: binds `models` to `database` unless they all already are."""

    def __init__(self, database: Any, models: Sequence[Any], bind_refs: bool, bind_backrefs: bool) -> None:
        self._database = database
        self._models = models
        self._refs = (bind_refs, bind_backrefs)

    def __enter__(self) -> Sequence[Any]:
        if any(model._meta.database is not self._database for model in self._models):
            self._database.bind(self._models, *self._refs)
        return self._models

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


def bound_once(database: Any) -> Any:
    """`database` with its bind_ctx replaced by `_BoundOnce` (the instance only: no other database changes)."""
    database.bind_ctx = lambda models, bind_refs=True, bind_backrefs=True: _BoundOnce(database, models, bind_refs,
                                                                                    bind_backrefs)
    return database


if ENCRYPTION_ENABLED:
    from nio.store import DefaultStore

    class BoundOnceStore(DefaultStore):  # type: ignore[misc]
        """nio's default store, its database's models bound once (module docstring)."""

        def _create_database(self) -> Any:
            return bound_once(super()._create_database())

    STORE: type | None = BoundOnceStore
else:  # no E2EE libraries: nio makes no store, and the client's config keeps its default
    STORE = None
