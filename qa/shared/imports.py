"""Importing the modules a run needs without the cyclic garbage collector walking them as they are made.

An import allocates tens of thousands of long-lived objects (classes, pydantic schemas, functions) and no
garbage worth a collection, yet every 700 allocations start one: ~9 % of the harness's import CPU (~80 ms a
`matrix-qa run`, measured with gc.callbacks; issue 29). The collector is off for the import only and comes back as
it was, so nothing changes for the code that runs afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def imports_without_gc() -> Iterator[None]:
    """The collector off inside, and back as it was afterwards (a caller that had it off keeps it off)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
