"""The Synapse floor for bench/latency_breakdown.py: a raw sender and a raw receiver on the run's own homeserver,
while the run goes on (same server, same load), so a reply's latency can be set against what Synapse alone takes.

Loaded by sitecustomize.py in the harness process only (MATRIX_QA_LATENCY_FLOOR, removed from the environment
at once so no bot inherits it). Once the embedded Synapse has started, a task registers two users, makes a room
and then, every SAMPLE_EVERY_S: the receiver's /sync is already parked (as the bot's and the observer's are),
the sender PUTs a message, and the time until the receiver's /sync returns it is written to
<dir>/floor.jsonl: `t0` (PUT starts), `t1` (PUT answered), `t2` (the receiver's /sync returned the event), all
CLOCK_MONOTONIC ms. Plain aiohttp, no SDK, no parsing beyond json: what any client pays at least. The task dies
with the run (its server stops; every error ends it quietly).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from typing import Any

SAMPLE_EVERY_S = 0.25
PARKED_S = 0.05  # how long the receiver's /sync is given to reach Synapse before the send (a bench, not a check)


def _now() -> float:
    return time.monotonic_ns() / 1_000_000


def install(directory: str) -> None:
    from qa.homeserver.synapse import SynapseHomeserver

    original = SynapseHomeserver.start

    async def start_then_probe(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        if not getattr(self, "_floor_probe", None):
            self._floor_probe = asyncio.ensure_future(_probe(self, os.path.join(directory, "floor.jsonl")))
        return result

    SynapseHomeserver.start = start_then_probe


async def _probe(hs: Any, path: str) -> None:
    import aiohttp

    with contextlib.suppress(Exception):
        suffix = secrets.token_hex(3)
        sender, receiver = await asyncio.gather(*(
            hs.register_session(f"mqa-floor-{who}-{suffix}", secrets.token_urlsafe(18), device_name="floor")
            for who in ("sender", "receiver")))
        async with aiohttp.ClientSession(base_url=hs.base_url) as http:
            await _loop(http, sender.access_token, receiver.access_token, receiver.user_id, path)


async def _loop(http: Any, send_token: str, recv_token: str, recv_user: str, path: str) -> None:
    as_sender = {"Authorization": f"Bearer {send_token}"}
    as_receiver = {"Authorization": f"Bearer {recv_token}"}
    async with http.post("/_matrix/client/v3/createRoom", headers=as_sender,
                         json={"preset": "private_chat", "invite": [recv_user]}) as resp:
        room_id = (await resp.json())["room_id"]
    async with http.post(f"/_matrix/client/v3/join/{room_id}", headers=as_receiver, json={}) as resp:
        resp.raise_for_status()
    quiet = json.dumps({"room": {"rooms": [room_id], "timeline": {"limit": 10}, "state": {"lazy_load_members": True}},
                        "presence": {"types": []}, "account_data": {"types": []}})
    since = await _sync(http, as_receiver, quiet, None, 0)
    with open(path, "a", encoding="utf-8") as out:
        for n in range(1_000_000):
            parked = asyncio.ensure_future(_sync(http, as_receiver, quiet, since, 30_000, want=True))
            await asyncio.sleep(PARKED_S)
            t0 = _now()
            async with http.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/floor{n}",
                                headers=as_sender, json={"msgtype": "m.text", "body": f"floor {n}"}) as resp:
                event_id = (await resp.json())["event_id"]
            t1 = _now()
            since, seen = await parked
            while event_id not in seen:  # the /sync woke for something else (the join, a receipt): again
                since, seen = await _sync(http, as_receiver, quiet, since, 30_000, want=True)
            out.write(json.dumps({"t0": t0, "t1": t1, "t2": _now()}) + "\n")
            out.flush()
            await asyncio.sleep(SAMPLE_EVERY_S)


async def _sync(http: Any, headers: dict[str, str], sync_filter: str, since: str | None, timeout_ms: int,
                want: bool = False) -> Any:
    params = {"timeout": str(timeout_ms), "filter": sync_filter, **({"since": since} if since else {})}
    async with http.get("/_matrix/client/v3/sync", headers=headers, params=params) as resp:
        body = await resp.json()
    if not want:
        return body["next_batch"]
    seen = {e.get("event_id") for room in body.get("rooms", {}).get("join", {}).values()
            for e in room.get("timeline", {}).get("events", [])}
    return body["next_batch"], seen
