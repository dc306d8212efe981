"""A module imported at its first use instead of when the test module naming it is collected.

Every pytest-xdist worker collects (imports) every test module, but runs only its share of them: the unit tests of
the test bots' pure logic (tests/bots/test_*_logic.py) imported the bots, and with them matrix-nio, mautrix and the
OpenAI SDK, in all four workers (about 1.5 CPU-seconds each on this machine) for tests one worker runs.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """`LazyModule("pkg.mod").name` is `pkg.mod.name`, the module imported (once, by Python's own cache) at the
    first attribute read."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # what pytest's collection probes every module global for (fixture marks, ...)
            raise AttributeError(attr)
        return getattr(self.module, attr)
