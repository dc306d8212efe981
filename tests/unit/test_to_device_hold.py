"""The fault proxy's kept-back to-device events without sockets: kept while the rule is installed, given back
once it is not (into the next /sync answer of the rule's path), each step a hit; and the fault proxy doing it
end to end against a small upstream."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from qa.harness.fault_proxy import FaultProxy
from qa.harness.fault_rules import FaultRule
from qa.harness.to_device_hold import ToDeviceHold

RULE = FaultRule.model_validate({"name": "late", "method": "GET", "path": "/sync$",
                                 "hold_to_device": "m.room.encrypted", "count": "all"})
KEY = {"type": "m.room.encrypted", "content": {"ciphertext": "k"}}
RECORD = {"method": "GET", "path": "/sync", "status": 200, "startedAt": 1.0}


def answer(*events: Any) -> dict[str, Any]:
    return {"next_batch": "s", "to_device": {"events": list(events)}}


def test_kept_while_installed_then_given_back() -> None:
    hold, hits = ToDeviceHold(), []
    assert not hold.gives_back("GET", "/sync") and hold.releasing([]) == []
    assert hold.answer(answer(), RULE, [RULE], RECORD, hits) == answer() and hits == []  # nothing to keep
    assert hold.answer(answer(KEY), RULE, [RULE], RECORD, hits) == answer()
    assert hold.answer(answer(KEY, {"type": "x"}), RULE, [RULE], RECORD, hits) == answer({"type": "x"})
    assert [(h["action"], h["occurrence"], h["events"]) for h in hits] == [("hold-to-device", 1, 1),
                                                                          ("hold-to-device", 2, 1)]
    assert hold.gives_back("GET", "/_matrix/client/v3/sync") and not hold.gives_back("PUT", "/sync")
    assert not hold.gives_back("GET", "/keys/query")
    assert hold.releasing([RULE]) == [] and hold.releasing([]) == [RULE]
    # Released while a long-poll decided under the rule was open: its answer gives back, in the order kept.
    assert hold.answer(answer({"type": "y"}), RULE, [], RECORD, hits) == answer({"type": "y"}, KEY, KEY)
    assert hits[-1]["action"] == "release-to-device" and hits[-1]["events"] == 2 and hits[-1]["rule"] == "late"
    assert hits[-1]["what"] == "gave back 2 kept to-device event(s)" and hits[0]["what"] == (
        "kept back 1 to-device m.room.encrypted event(s)")
    assert not hold.gives_back("GET", "/sync") and hold.answer(answer(), None, [], RECORD, hits) == answer()
    assert len(hits) == 3


async def test_the_proxy_keeps_a_key_back_and_gives_it_in_an_answer_at_once() -> None:
    seen: list[str] = []
    queue = [answer(KEY), answer()]

    async def sync(request: web.Request) -> web.Response:
        seen.append(request.query.get("timeout", ""))
        return web.json_response(queue.pop(0) if queue else answer())

    app = web.Application()
    app.router.add_get("/_matrix/client/v3/sync", sync)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    proxy = FaultProxy(f"http://127.0.0.1:{runner.addresses[0][1]}", [RULE])
    base = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{base}/_matrix/client/v3/sync?timeout=30000"
            async with http.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                assert json.loads(await resp.read())["to_device"]["events"] == []
            proxy.set_rules([])
            async with http.get(url) as resp:
                assert (await resp.json())["to_device"]["events"] == [KEY]
            async with http.get(url) as resp:  # given back once
                assert (await resp.json())["to_device"]["events"] == []
    finally:
        await proxy.stop()
        await runner.cleanup()
    assert seen == ["30000", "0", "30000"]  # the answer with news does not wait out the long-poll
    assert [h["action"] for h in proxy.hits] == ["hold-to-device", "release-to-device"]


def test_each_hit_is_a_whole_record_counted_per_rule_and_action(monkeypatch: Any) -> None:
    monkeypatch.setattr("qa.harness.to_device_hold.mono_ms", lambda: 99.96)
    hold = ToDeviceHold()
    other_rule = [{"rule": "other", "action": "hold-to-device"}, {"rule": "late", "action": "release-to-device"}]
    hits: list[dict[str, Any]] = list(other_rule)
    record = {"method": "GET", "path": "/_matrix/client/v3/sync", "status": 200, "startedAt": 12.34}
    hold.answer(answer(KEY), RULE, [RULE], record, hits)
    hit = hits[-1]
    assert set(hit) == {"rule", "occurrence", "action", "method", "path", "status", "startedAt", "endedAt", "what",
                        "events"}
    assert (hit["rule"], hit["occurrence"], hit["action"], hit["method"], hit["path"], hit["status"],
            hit["startedAt"]) == ("late", 1, "hold-to-device", "GET", "/_matrix/client/v3/sync", 200, 12.3)
    assert hit["endedAt"] == 100.0
