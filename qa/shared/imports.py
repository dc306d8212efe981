"""Importing the modules a run needs without the cyclic garbage collector walking them as they are made.

An import allocates tens of thousands of long-lived objects (classes, pydantic schemas, functions) and no
garbage worth a collection, yet every 700 allocations start one: ~9 % of the harness's import CPU (~80 ms a
`matrix-qa run`, measured with gc.callbacks; issue 29). The collector is off for the import only and comes back as
it was, so nothing changes for the code that runs afterwards.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The collector is one switch for the whole process, and the harness imports from worker threads too
# (asyncio.to_thread): nested or overlapping users share one count, so the first in turns it off and the last out
# turns it back on, and only if it was on when the first came in.
_lock = threading.Lock()
_users = 0
_was_on = False


@contextmanager
def imports_without_gc() -> Iterator[None]:
    """The collector off inside, and back as it was afterwards (a caller that had it off keeps it off). Process-
    wide: other threads run without it meanwhile (an import is short; that is the point)."""
    global _users, _was_on
    with _lock:
        if _users == 0:
            _was_on = gc.isenabled()
            gc.disable()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _was_on:
                gc.enable()
