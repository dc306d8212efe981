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


# --- hold_to_device: m.room_key (room keys known by the ciphertext their sharer reported) ---------------------

ROOM_KEY_RULE = FaultRule.model_validate({"name": "key", "method": "GET", "path": "/sync$",
                                          "hold_to_device": "m.room_key", "count": "all"})


def _olm(*bodies: str) -> dict[str, Any]:
    return {"type": "m.room.encrypted", "sender": "@d:hs",
            "content": {"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "s",
                        "ciphertext": {f"k{i}": {"type": 0, "body": b} for i, b in enumerate(bodies)}}}


def test_olm_bodies_and_the_bodies_a_send_to_device_request_carries() -> None:
    from qa.shared.olm import olm_bodies, sent_bodies

    assert olm_bodies(_olm("a", "b")["content"]) == {"a", "b"}
    assert olm_bodies({"ciphertext": {"k": {"body": 3}, "j": "x", "i": {"type": 1, "body": "c"}}}) == {"c"}
    assert olm_bodies({"ciphertext": "x"}) == set() and olm_bodies(None) == set() and olm_bodies({}) == set()
    request = {"messages": {"@bot:hs": {"DEV": _olm("a")["content"], "D2": _olm("b")["content"]},
                            "@d:hs": {"OWN": _olm("c")["content"]}, "@x:hs": "junk"}}
    assert sent_bodies(json.dumps(request)) == {"a", "b", "c"}
    assert sent_bodies(json.dumps(request).encode()) == {"a", "b", "c"}
    assert sent_bodies(request) == {"a", "b", "c"}
    assert sent_bodies("{not json") == set() and sent_bodies(None) == set()
    assert sent_bodies('{"messages": []}') == set() and sent_bodies("[1]") == set()


def test_only_the_room_keys_shared_are_kept_other_olm_messages_pass() -> None:
    from qa.harness.fault_rules import is_held, take_to_device

    key, dummy, plain = _olm("key-body"), _olm("dummy-body"), {"type": "m.key.verification.start", "content": {}}
    assert is_held(key, "m.room_key", {"key-body"}) and not is_held(dummy, "m.room_key", {"key-body"})
    assert not is_held(key, "m.room_key") and not is_held("junk", "m.room_key", {"key-body"})
    # Another type whose ciphertext happens to match is not a room key's envelope.
    assert not is_held({**key, "type": "m.room_key"}, "m.room_key", {"key-body"})
    assert is_held(key, "m.room.encrypted") and is_held(dummy, "m.room.encrypted")  # by type: every Olm message
    kept, taken = take_to_device(answer(dummy, key, plain), "m.room_key", {"key-body"})
    assert taken == [key] and kept == answer(dummy, plain)
    hold, hits = ToDeviceHold(), []
    assert hold.answer(answer(key), ROOM_KEY_RULE, [ROOM_KEY_RULE], RECORD, hits) == answer(key)  # not known yet
    hold.note_room_keys({"key-body"})
    hold.note_room_keys(["other"])
    assert hold.room_keys == {"key-body", "other"}
    assert hold.answer(answer(dummy, key), ROOM_KEY_RULE, [ROOM_KEY_RULE], RECORD, hits) == answer(dummy)
    assert hits[-1]["what"] == "kept back 1 room key(s) the test users shared" and hits[-1]["events"] == 1
    assert ROOM_KEY_RULE.describe() == "GET /sync$ #1+: to-device room keys the test users shared kept back until " \
                                       "released"
    assert hold.answer(answer(), None, [], RECORD, hits) == answer(key)


async def test_a_test_users_client_reports_the_room_keys_it_shares(monkeypatch: Any) -> None:
    from nio import AsyncClient, ShareGroupSessionResponse, ToDeviceResponse

    from qa.actors import _TestUserClient

    sent: list[tuple[type, str]] = []

    async def fake_send(self: Any, response_class: type, method: str, path: str, data: Any = None,
                        *args: Any, **kwargs: Any) -> str:
        sent.append((response_class, path))
        return "sent"

    monkeypatch.setattr(AsyncClient, "_send", fake_send)
    client = _TestUserClient("http://hs", "@d:hs")
    try:
        share = json.dumps({"messages": {"@bot:hs": {"DEV": _olm("key-body")["content"]}}})
        assert await client._send(ShareGroupSessionResponse, "PUT", "/p", share, response_data=("!r", {})) == "sent"
        reported: list[set[str]] = []
        client.on_room_keys = reported.append
        await client._send(ShareGroupSessionResponse, "PUT", "/p2", share)
        await client._send(ToDeviceResponse, "PUT", "/p3", json.dumps({"messages": {"@bot:hs": {
            "DEV": _olm("dummy-body")["content"]}}}))  # any other to-device message is not a room key
        assert reported == [{"key-body"}]
        assert [p for _, p in sent] == ["/p", "/p2", "/p3"]
    finally:
        await client.close()
