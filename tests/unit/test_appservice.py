"""Application-service bots (issue 33): the registration's content, the namespace rules, the push's token check and
the routing of pushed events by scenario (qa.shared.appservice); the bot file's `appservice:` and `{as_port}`; the
launch contract's tokens; the refusal of other backends; and the endpoint's forwarding (qa.homeserver.
appservice_host) against a stand-in bot on a loopback port, without a homeserver."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from qa.harness.botfile import load_bot_file
from qa.harness.launch import build_launch
from qa.homeserver import appservice_host
from qa.homeserver.appservice_host import AppserviceHost
from qa.kernel.errors import ConfigError
from qa.run.options import check_appservice
from qa.shared import appservice as rules
from tests.unit.test_launch import _facts

# --- the rules ------------------------------------------------------------------------------------------------


def test_the_namespace_cannot_hold_a_test_user_and_prefixes_overlap_both_ways() -> None:
    from qa.scenario.runner import _localpart

    assert _localpart("as", "canary", "20261206T120000Z-abcdef").startswith(rules.HARNESS_PREFIX)
    assert not rules.prefixes_overlap(rules.AS_PREFIX, rules.HARNESS_PREFIX)
    assert rules.prefixes_overlap("mqa-", "mqa-bot-") and rules.prefixes_overlap("mqa-bot-", "mqa-")
    assert rules.prefixes_overlap("abc", "abc")
    assert not rules.prefixes_overlap("abc", "abd") and not rules.prefixes_overlap("ab-x", "ab-y")
    # An actor named "as" is mqa-as-…: outside the exclusive namespace.
    assert not re.fullmatch(rules.namespace_regex(rules.AS_PREFIX), "@mqa-as-canary-1a2b:localhost")


def test_a_scenario_prefix_is_8_hex_digits_inside_the_namespace() -> None:
    assert rules.scenario_prefix("0a1b2c3d") == "mqa_as-0a1b2c3d-"
    for bad in ("0a1b2c3", "0a1b2c3d4", "0A1B2C3D", "0a1b2c3g", ""):
        with pytest.raises(ValueError) as err:
            rules.scenario_prefix(bad)
        assert str(err.value) == f"a scenario tag is 8 hex digits, got {bad!r}"


def test_the_namespace_regex_matches_its_users_only() -> None:
    regex = rules.namespace_regex("mqa_as-0a1b2c3d-", "local.host")
    assert regex == r"@mqa_as\-0a1b2c3d\-[^:]*:local\.host"
    assert re.fullmatch(regex, "@mqa_as-0a1b2c3d-bot:local.host")
    assert not re.fullmatch(regex, "@mqa_as-0a1b2c3d-bot:localXhost")
    assert not re.fullmatch(regex, "@mqa_as-0a1b2c3e-bot:local.host")
    assert not re.fullmatch(regex, "@mqa_asX0a1b2c3d-bot:local.host")
    assert re.fullmatch(rules.namespace_regex("p-"), "@p-x:any.server")


def test_the_registration_is_exclusive_over_its_namespace_with_its_sender_inside() -> None:
    reg = rules.registration(url="http://127.0.0.1:9", as_token="A" * 20, hs_token="H" * 20, server_name="hs")
    assert reg == {
        "id": "matrix-qa", "url": "http://127.0.0.1:9", "as_token": "A" * 20, "hs_token": "H" * 20,
        "sender_localpart": "mqa_as-sender",
        "namespaces": {"users": [{"exclusive": True, "regex": r"@mqa_as\-[^:]*:hs"}], "aliases": [], "rooms": []},
        "rate_limited": False,
    }
    with pytest.raises(ValueError) as err:
        rules.registration(url="u", as_token="a", hs_token="h", sender_localpart="outside")
    assert str(err.value) == "the sender 'outside' must be inside the namespace 'mqa_as-'"


def test_the_bots_copy_names_its_own_url_token_user_and_namespace() -> None:
    reg = rules.bot_registration(url="http://127.0.0.1:7", as_token="A", hs_token="h2", prefix="mqa_as-0a1b2c3d-",
                                 localpart="mqa_as-0a1b2c3d-bot", server_name="hs")
    assert reg["id"] == "matrix-qa-0a1b2c3d" and reg["url"] == "http://127.0.0.1:7"
    assert reg["sender_localpart"] == "mqa_as-0a1b2c3d-bot" and reg["hs_token"] == "h2"
    assert reg["namespaces"]["users"] == [{"exclusive": True, "regex": r"@mqa_as\-0a1b2c3d\-[^:]*:hs"}]


def test_the_push_token_comes_from_the_header_else_the_query() -> None:
    assert rules.bearer_token({"Authorization": "Bearer  tok "}, {"access_token": "q"}) == "tok"
    assert rules.bearer_token({"Authorization": "Basic tok"}, {"access_token": "q"}) == "q"
    assert rules.bearer_token({}, {}) is None
    assert rules.token_matches("secret", "secret")
    assert not rules.token_matches("secreT", "secret") and not rules.token_matches(None, "secret")
    assert not rules.token_matches("", "secret")


def _event(room: str, sender: str = "@mqa-driver:hs", **extra: Any) -> dict[str, Any]:
    return {"room_id": room, "sender": sender, "type": "m.room.message", **extra}


def test_routes_learn_a_room_from_the_invite_of_a_scenarios_user_and_split_in_order() -> None:
    routes = rules.Routes()
    routes.add("a", "mqa_as-aaaaaaaa-")
    routes.add("b", "mqa_as-bbbbbbbb-", rooms=["!given"])
    invite = _event("!r1", type="m.room.member", state_key="@mqa_as-aaaaaaaa-bot:hs")
    first, second = _event("!r1", body=1), _event("!r1", body=2)
    own = _event("!r2", sender="@mqa_as-bbbbbbbb-bot:hs")
    parts = routes.split([invite, first, _event("!given"), _event("!nobody"), own, second])
    assert parts == {"a": [invite, first, second], "b": [_event("!given"), own]}
    assert routes.dropped == 1
    assert routes.routes["a"].rooms == {"!r1"} and routes.routes["b"].rooms == {"!given", "!r2"}
    routes.remove("a")
    routes.remove("a")  # twice is fine
    assert routes.split([_event("!r1")]) == {} and routes.dropped == 2


def test_a_route_owns_only_its_users_and_no_room_without_a_string_id() -> None:
    route = rules.Route("mqa_as-aaaaaaaa-")
    assert route.rooms == set()
    assert route.owns_user("@mqa_as-aaaaaaaa-x:hs")
    assert not route.owns_user("mqa_as-aaaaaaaa-x:hs") and not route.owns_user(None)
    routes = rules.Routes()
    routes.add("a", "mqa_as-aaaaaaaa-")
    assert routes.owner({"sender": "@mqa_as-aaaaaaaa-x:hs"}) == "a"
    assert routes.routes["a"].rooms == set()


def test_two_scenarios_never_share_a_namespace() -> None:
    routes = rules.Routes()
    routes.add("a", "mqa_as-aaaaaaaa-")
    with pytest.raises(ValueError) as err:
        routes.add("b", "mqa_as-aaaaaaaa-x")
    assert str(err.value) == "the namespace 'mqa_as-aaaaaaaa-x' overlaps scenario 'a''s"
    routes.add("c", "mqa_as-cccccccc-")
    assert list(routes.routes) == ["a", "c"]


# --- the bot file, the launch, the backends --------------------------------------------------------------------


def _bot(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text("name: b\n" + text)
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("command: [x]\nappservice: {}\n", ":1:1: appservice needs the {as_port} placeholder in command or env"),
    ("command: [x, '{as_port}']\n", ":1:1: {as_port} is used but there is no appservice"),
    ("command: [x]\ncwd: '/{as_port}'\n", ":1:1: {as_port} is used but there is no appservice"),
    ("command: [x, '{as_port}']\nappservice: {}\nregistration: token\nregistration_prefix: b-\n",
     ":1:1: appservice and registration: token do not go together"),
    ("command: [x]\nregistration: token\nregistration_prefix: mqa_a\n",
     ":1:1: registration_prefix 'mqa_a' overlaps the application-service namespace (mqa_as-…)"),
    ("command: [x, '{as_port}']\nappservice: {localpart: 'Bad:x'}\n", ":3:25: appservice.localpart: String should"),
    ("command: [x, '{as_port}']\nappservice: {sender: x}\n", ":3:14: appservice.sender: unknown field"),
])
def test_bad_appservice_bot_files_are_refused_naming_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _bot(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert str(err.value).startswith(str(path) + expected), str(err.value)


def test_an_appservice_bot_file_may_use_as_port_in_env(tmp_path: Path) -> None:
    bot = load_bot_file(_bot(tmp_path, "command: [x]\nenv: {PORT: '{as_port}'}\nappservice: {localpart: main}\n"))
    assert bot.appservice is not None and bot.appservice.localpart == "main"
    assert load_bot_file(_bot(tmp_path, "command: [x, '{as_port}']\nappservice: {}\n")).appservice.localpart == "bot"


def test_the_launch_hands_the_tokens_in_the_environment_only(tmp_path: Path) -> None:
    path = _bot(tmp_path, "command: [x, '--port', '{as_port}']\nappservice: {}\nconfig_template: t.j2\n")
    (tmp_path / "t.j2").write_text("{{ appservice | tojson }}")
    facts = _facts(tmp_path, appservice={"registration": "/s/reg.yaml", "as_token": "as-token-123456",
                                         "hs_token": "hs-token-123456", "as_port": "4711", "prefix": "mqa_as-x-"})
    launch = build_launch(load_bot_file(path), facts, {}, {"PATH": "/bin"})
    assert launch.argv == ["x", "--port", "4711"]
    assert launch.env["MATRIX_QA_APPSERVICE_REGISTRATION"] == "/s/reg.yaml"
    assert launch.env["MATRIX_QA_AS_TOKEN"] == "as-token-123456"
    assert launch.env["MATRIX_QA_HS_TOKEN"] == "hs-token-123456"
    assert json.loads(launch.config_text or "") == {"registration": "/s/reg.yaml", "as_port": "4711",
                                                    "prefix": "mqa_as-x-"}
    plain = build_launch(load_bot_file(_bot(tmp_path, "command: [x]\n")), _facts(tmp_path), {}, {
        "MATRIX_QA_AS_TOKEN": "inherited", "PATH": "/bin"})
    assert not {k for k in plain.env if "APPSERVICE" in k or k in ("MATRIX_QA_AS_TOKEN", "MATRIX_QA_HS_TOKEN")}


def test_only_the_runs_own_synapse_can_host_an_appservice_bot(tmp_path: Path) -> None:
    bot = load_bot_file(_bot(tmp_path, "command: [x, '{as_port}']\nappservice: {}\n"))
    check_appservice(bot, "synapse")
    check_appservice(load_bot_file(_bot(tmp_path, "command: [x]\n")), "external")
    for backend in ("external", "tuwunel", "image"):
        with pytest.raises(ConfigError, match=f"appservice: .*--homeserver {backend} cannot be given one"):
            check_appservice(bot, backend)


# --- the endpoint, against a stand-in bot ------------------------------------------------------------------------


async def _stand_in_bot(port: int, seen: list[tuple[str, str, list[Any]]], status: list[int]) -> web.AppRunner:
    async def take(request: web.Request) -> web.Response:
        seen.append((request.match_info["txn"], request.headers.get("Authorization", ""),
                     (await request.json())["events"]))
        return web.json_response({}, status=status.pop(0) if status else 200)

    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn}", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _until(check: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_endpoint_forwards_each_scenarios_share_with_its_own_token(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(appservice_host, "RETRY_S", 0.01)
    host = AppserviceHost(tmp_path, "hs")

    async def register(base_url: str, localpart: str) -> dict[str, Any]:
        return {"user_id": f"@{localpart}:hs", "access_token": "session-" + localpart, "device_id": "D"}

    monkeypatch.setattr(host, "_register", register)
    reg = yaml.safe_load(host.write_registration().read_text())
    assert reg["url"] == host.url and reg["hs_token"] == host.hs_token
    assert (host.registration_path.stat().st_mode & 0o777) == 0o600
    await host.listen()
    try:
        one, two = await host.open_lease("http://hs", "bot"), await host.open_lease("http://hs", "bot")
        assert one.user_id.startswith("@mqa_as-") and one.user_id.endswith("-bot:hs") and one.hs_token != two.hs_token
        assert {one.hs_token, two.hs_token, host.as_token, host.hs_token, one.access_token} <= set(host.secrets)
        copy = host.bot_registration(one, "bot")
        assert copy["hs_token"] == one.hs_token and copy["url"] == f"http://127.0.0.1:{one.as_port}"
        seen: list[tuple[str, str, list[Any]]] = []
        url = host.url + "/_matrix/app/v1/transactions/t1"
        events = [_event("!a", type="m.room.member", state_key=one.user_id), _event("!b", sender=two.user_id),
                  _event("!a", body="x"), _event("!elsewhere")]
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.put(url, json={"events": events}, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 403
            async with http.put(url + "?access_token=" + host.hs_token, json={"nope": 1}) as resp:
                assert resp.status == 400
            # Pushed before the first bot listens: kept, then delivered in order once it does.
            async with http.put(url, json={"events": events},
                                headers={"Authorization": f"Bearer {host.hs_token}"}) as resp:
                assert resp.status == 200 and await resp.json() == {}
            bot = await _stand_in_bot(one.as_port, seen, status=[500])
            try:
                await _until(lambda: one.delivered == 1)
            finally:
                await bot.cleanup()
            # The homeserver's retry of t1 is not forwarded again; after its restart, a new t1 is.
            async with http.put(url, json={"events": events},
                                headers={"Authorization": f"Bearer {host.hs_token}"}) as resp:
                assert resp.status == 200
            host.homeserver_boots()
            async with http.put(url, json={"events": [_event("!a", body="after")]},
                                headers={"Authorization": f"Bearer {host.hs_token}"}) as resp:
                assert resp.status == 200
            bot = await _stand_in_bot(one.as_port, seen, status=[])
            try:
                await _until(lambda: one.delivered == 2)
            finally:
                await bot.cleanup()
        # Refused once (HTTP 500), then taken; each part under an id of the harness's own.
        assert [s[0] for s in seen] == ["mqa-1", "mqa-1", "mqa-2"]
        assert seen[-1][2] == [_event("!a", body="after")] and host.pushes == 2
        seen.pop()
        assert seen[-1][1] == f"Bearer {one.hs_token}" and seen[-1][2] == [events[0], events[2]]
        assert one.refused == ["transaction mqa-1: HTTP 500"] and len(one.latencies_ms) <= 1
        assert host.routes.dropped == 1 and host.rejected == 1
        record = await host.release(one.key)
        assert record["delivered"] == 2 and await host.release(one.key) == {}
        assert two.queue.qsize() + (1 if two.delivered else 0) <= 1
    finally:
        await host.close()
    assert host.leases == {}


async def test_a_homeserver_without_the_endpoint_is_a_configuration_error_naming_the_field(tmp_path: Path) -> None:
    """The run refuses other backends before anything starts; a homeserver of another kind that reaches a scenario
    (the pytest plugin, a backend registered from elsewhere) still says why, as a configuration error."""
    from types import SimpleNamespace

    from qa.scenario.appservice_bot import lease_appservice

    bot = load_bot_file(_bot(tmp_path, "command: [x, '{as_port}']\nappservice: {}\n"))
    elsewhere = SimpleNamespace(kind="external", appservice=None, base_url="http://hs")
    with pytest.raises(ConfigError) as err:
        await lease_appservice(elsewhere, bot, tmp_path, [])
    assert str(err.value) == (f"{tmp_path / 'bot.yaml'}: appservice: the external homeserver backend does not load "
                              "the harness's application-service registration (only --homeserver synapse does)")
    assert await lease_appservice(elsewhere, load_bot_file(_bot(tmp_path, "command: [x]\n")), tmp_path, []) is None


async def test_a_scenarios_lease_writes_the_bots_copy_privately_and_files_every_token_as_a_secret(
        tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from qa.scenario.appservice_bot import REGISTRATION_COPY, lease_appservice

    host = AppserviceHost(tmp_path / "hs", "hs")

    async def register(base_url: str, localpart: str) -> dict[str, Any]:
        return {"user_id": f"@{localpart}:hs", "access_token": "session-token-1234", "device_id": "DEV"}

    monkeypatch.setattr(host, "_register", register)
    bot = load_bot_file(_bot(tmp_path, "command: [x, '{as_port}']\nappservice: {localpart: main}\n"))
    secrets: list[str] = []
    try:
        made = await lease_appservice(SimpleNamespace(kind="synapse", appservice=host, base_url="http://hs"), bot,
                                      tmp_path, secrets)
        assert made is not None
        lease = made.lease
        assert lease.user_id == f"@{lease.prefix}main:hs"
        copy = tmp_path / REGISTRATION_COPY
        assert (copy.stat().st_mode & 0o777) == 0o600
        assert yaml.safe_load(copy.read_text()) == host.bot_registration(lease, "main")
        assert made.facts == {"registration": str(copy), "as_token": host.as_token, "hs_token": lease.hs_token,
                              "as_port": str(lease.as_port), "prefix": lease.prefix, "user_id": lease.user_id}
        assert secrets == [host.as_token, lease.hs_token, "session-token-1234"]
        creds = made.credentials()
        assert (creds.user_id, creds.password, creds.localpart, creds.access_token, creds.device_id) == (
            lease.user_id, "", f"{lease.prefix}main", "session-token-1234", "DEV")
        await made.release()
        assert host.leases == {} and host.routes.routes == {}
    finally:
        await host.close()
