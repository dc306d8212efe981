"""One clock for every process in a run.

The bot, the harness and the mock provider all stamp events with CLOCK_MONOTONIC in milliseconds. On Linux
that clock is system-wide, so intervals recorded in different processes (a lock hold in the bot, a model
request in the provider) can be compared directly without wall-clock skew.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def mono_ms() -> float:
    return time.monotonic_ns() / 1_000_000


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
