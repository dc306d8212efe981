"""Opt-in HTTP timing probe for bench/latency_breakdown.py: never imported unless this directory is on
PYTHONPATH, and inert unless MATRIX_QA_LATENCY_PROBE names a directory.

Every process of the run (harness, bots; they inherit PYTHONPATH) appends one JSON line per HTTP request to
<dir>/http-<pid>.jsonl: method, URL without query (so no access token), CLOCK_MONOTONIC ms at start and when
the response headers arrived, and for a Matrix send the event id it created. aiohttp covers matrix-nio, httpx2
covers the openai SDK. With MATRIX_QA_LATENCY_FLOOR set, the harness also measures the Synapse floor
(floor_probe.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

_DIR = os.environ.get("MATRIX_QA_LATENCY_PROBE")


def _now() -> float:
    return time.monotonic_ns() / 1_000_000


def _cpu() -> float:
    """This process's CPU ms (all threads): what it spent between two requests, whatever the scheduler did."""
    return round(time.process_time_ns() / 1_000_000, 3)


def _install(directory: str) -> None:
    handle = open(os.path.join(directory, f"http-{os.getpid()}.jsonl"), "a", encoding="utf-8")  # noqa: SIM115

    def record(**fields: Any) -> None:
        handle.write(json.dumps({"pid": os.getpid(), **fields}) + "\n")
        handle.flush()

    try:
        import aiohttp
    except ImportError:
        aiohttp = None
    if aiohttp is not None:
        original = aiohttp.ClientSession._request

        async def timed_request(self: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            started, cpu = _now(), _cpu()
            resp = await original(self, method, url, *args, **kwargs)
            fields: dict[str, Any] = {"m": method, "u": str(url).split("?")[0], "t0": started, "t1": _now(),
                                      "c0": cpu, "c1": _cpu(), "status": resp.status}
            if method == "PUT" and "/send/" in str(url):
                with contextlib.suppress(Exception):  # the probe must never change what the client sees
                    fields["ev"] = (await resp.json(content_type=None)).get("event_id")
            record(**fields)
            return resp

        aiohttp.ClientSession._request = timed_request

    try:
        import httpx2
    except ImportError:
        return
    original_send = httpx2.AsyncClient.send

    async def timed_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        started = _now()
        resp = await original_send(self, request, *args, **kwargs)
        record(m=request.method, u=str(request.url).split("?")[0], t0=started, t1=_now(), httpx=True)
        return resp

    httpx2.AsyncClient.send = timed_send


if _DIR:
    _install(_DIR)
    # The Synapse floor (floor_probe.py) runs in the harness only: the one process started with this variable,
    # which it takes out of the environment at once so that no bot or homeserver inherits it.
    if os.environ.pop("MATRIX_QA_LATENCY_FLOOR", None):
        import floor_probe

        floor_probe.install(_DIR)
