"""What application-service bots cost (issue 33). Not a test: nothing is asserted.

    python bench/appservice_cost.py [--boots N] [--messages N]

1. Boot delta: the embedded Synapse booted in turn without and with the harness's registration (A B A B …, from
   its database template), median boot_ms of each.
2. Forwarding: on the one with the registration, a scenario's lease and a stand-in bot listening on its port; a test
   user makes a room with the lease's user and sends N messages, one at a time. Per pushed part: the harness's
   forwarding (homeserver's push received -> stand-in bot answered 200, the lease's latenciesMs), and the whole
   path (message sent -> stand-in bot got it).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from qa.homeserver.synapse import SynapseHomeserver


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def boot_ms(root: Path, appservice: bool, index: int) -> float:
    hs = SynapseHomeserver(root / f"hs-{index}" / "work", root / f"hs-{index}" / "logs", appservice=appservice)
    try:
        await hs.start()
        return float(hs.boot_ms or 0)
    finally:
        await hs.stop()


async def forwarding(root: Path, messages: int) -> dict[str, Any]:
    hs = SynapseHomeserver(root / "fwd" / "work", root / "fwd" / "logs", appservice=True)
    await hs.start()
    assert hs.appservice is not None
    got: dict[str, float] = {}
    arrived = asyncio.Event()

    async def take(request: web.Request) -> web.Response:
        for event in (await request.json())["events"]:
            body = (event.get("content") or {}).get("body")
            if isinstance(body, str) and body.startswith("bench-"):
                got[body] = time.monotonic()
                arrived.set()
        return web.json_response({})

    try:
        lease = await hs.appservice.open_lease(hs.base_url, "bot")
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", lease.as_port).start()
        user = await hs.register_session(f"mqa-bench-{secrets.token_hex(3)}", secrets.token_urlsafe(12),
                                         device_name="bench")
        auth = {"Authorization": f"Bearer {user.access_token}"}
        whole = []
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.post(hs.base_url + "/_matrix/client/v3/createRoom",
                                 json={"invite": [lease.user_id], "preset": "private_chat"}) as resp:
                room = (await resp.json())["room_id"]
            # The service joins as its user (the as_token and ?user_id=): from then on the room's events are pushed.
            async with http.post(f"{hs.base_url}/_matrix/client/v3/join/{room}", params={"user_id": lease.user_id},
                                 headers={"Authorization": f"Bearer {hs.appservice.as_token}"}) as resp:
                assert resp.status == 200, await resp.text()
            for i in range(messages):
                body = f"bench-{i}"
                arrived.clear()
                sent = time.monotonic()
                url = f"{hs.base_url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{secrets.token_hex(6)}"
                async with http.put(url, json={"msgtype": "m.text", "body": body}) as resp:
                    await resp.read()
                async with asyncio.timeout(10):
                    while body not in got:
                        await arrived.wait()
                        arrived.clear()
                whole.append((got[body] - sent) * 1000)
        record = await hs.appservice.release(lease.key)
        await runner.cleanup()
        return {"forward": record["latenciesMs"], "whole": whole}
    finally:
        await hs.stop()


async def main_async(boots: int, messages: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="appservice-cost-"))
    without, with_ = [], []
    for i in range(boots):
        without.append(await boot_ms(root, False, 2 * i))
        with_.append(await boot_ms(root, True, 2 * i + 1))
    delta = statistics.median(with_) - statistics.median(without)
    print(f"Synapse boot, median of {boots}: without the registration {statistics.median(without):.0f} ms, "
          f"with it {statistics.median(with_):.0f} ms (delta {delta:+.0f} ms)")
    print(f"  without: {[round(x) for x in without]}  with: {[round(x) for x in with_]}")
    result = await forwarding(root, messages)
    forward, whole = result["forward"], result["whole"]
    print(f"forwarding by the harness over {len(forward)} pushed parts: p50 {_pct(forward, 0.5):.1f} ms, "
          f"p95 {_pct(forward, 0.95):.1f} ms, max {max(forward):.1f} ms")
    print(f"message sent -> service got it, over {len(whole)} messages: p50 {_pct(whole, 0.5):.1f} ms, "
          f"p95 {_pct(whole, 0.95):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--messages", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main_async(args.boots, args.messages))


if __name__ == "__main__":
    main()
