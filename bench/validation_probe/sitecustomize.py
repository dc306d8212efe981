"""Opt-in probe for bench/sync_validation_cost.py: never imported unless this directory is on PYTHONPATH, and inert
unless MATRIX_QA_VALIDATION_PROBE names a directory.

Every process of the run that imports matrix-nio (the harness, its test users; the bots) writes, at exit,
<dir>/validation-<pid>.json: the thread CPU its nio spent validating responses and events against its JSON schemas
(`validate_json`, by schema), the CPU of each /sync response's parse (body to SyncResponse, the validation
included; an upper bound, as other tasks that run while the body is read count too) and the main thread's CPU in
all. Thread CPU, not wall time and not a profiler's: a profiler's per-call cost
multiplies jsonschema's many small calls, and a loaded machine's waits are not in it. Measuring only; what nio
returns is unchanged.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

_DIR = os.environ.get("MATRIX_QA_VALIDATION_PROBE")


def _install(directory: str) -> None:
    import nio.client.async_client as async_client
    import nio.events.misc as misc
    import nio.events.room_events as room_events
    import nio.events.to_device as to_device
    import nio.responses as responses
    import nio.schemas as schemas

    names = {id(value): name for name, value in vars(schemas.Schemas).items() if isinstance(value, dict)}
    stats: dict[str, Any] = {"validate": {}, "syncs": []}
    validate = schemas.validate_json

    def timed_validate(instance: Any, schema: Any) -> None:
        started = time.thread_time()
        try:
            validate(instance, schema)
        finally:
            spent = stats["validate"].setdefault(names.get(id(schema), "?"), [0.0, 0])
            spent[0] += time.thread_time() - started
            spent[1] += 1

    for module in (responses, room_events, to_device, misc):
        if hasattr(module, "validate_json"):
            module.validate_json = timed_validate
    parse = async_client.AsyncClient.create_matrix_response

    async def timed_parse(self: Any, response_class: type, *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        resp = await parse(self, response_class, *args, **kwargs)
        if response_class is responses.SyncResponse:
            stats["syncs"].append(time.thread_time() - started)
        return resp

    async_client.AsyncClient.create_matrix_response = timed_parse

    def write() -> None:
        stats["mainThreadCpuS"] = time.thread_time()
        with open(os.path.join(directory, f"validation-{os.getpid()}.json"), "w", encoding="utf-8") as handle:
            json.dump(stats, handle)

    atexit.register(write)


if _DIR:
    _install(_DIR)
