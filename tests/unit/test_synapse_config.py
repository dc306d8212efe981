"""Synapse config generation and admin-side registration, without starting a homeserver.

The config is checked through Synapse's own parser where it matters: Synapse silently ignores keys it does
not know, so a misspelt rate limit would otherwise look fine here and still produce 429s in a scenario.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from qa.homeserver import synapse as synapse_mod
from qa.homeserver.registration import (
    DUMMY_STAGE,
    TOKEN_STAGE,
    UNSTABLE_TOKEN_STAGE,
    choose_flow,
    register_with_shared_secret,
    register_with_token,
    shared_secret_mac,
)
from qa.homeserver.synapse import SynapseHomeserver
from qa.homeserver.synapse_config import (
    build_log_config,
    build_synapse_config,
    deep_merge,
    write_signing_key,
)
from qa.kernel.errors import InfraError

SECRET_KEYS = ("registration_shared_secret", "macaroon_secret_key", "form_secret")


def _config(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    return build_synapse_config(workdir=tmp_path / "hs", port=18008, **kwargs)


def _parsed_by_synapse(config: dict[str, Any], tmp_path: Path) -> Any:
    from synapse.config.homeserver import HomeServerConfig

    # The key config section loads the signing key file, so it has to exist for the parser.
    key_path = Path(config["signing_key_path"])
    key_path.parent.mkdir(parents=True, exist_ok=True)
    write_signing_key(key_path)
    parsed = HomeServerConfig()
    parsed.parse_config_dict(config, config_dir_path=str(tmp_path), data_dir_path=str(tmp_path))
    return parsed


def test_listens_only_on_loopback_http(tmp_path: Path) -> None:
    config = _config(tmp_path)
    [listener] = config["listeners"]
    assert listener["bind_addresses"] == ["127.0.0.1"]
    assert listener["port"] == 18008
    assert listener["type"] == "http"
    assert listener["tls"] is False
    assert listener["x_forwarded"] is False
    assert [name for res in listener["resources"] for name in res["names"]] == ["client"]
    assert config["public_baseurl"] == "http://127.0.0.1:18008/"


def test_all_state_lives_in_the_workdir(tmp_path: Path) -> None:
    workdir = (tmp_path / "hs").resolve()
    config = _config(tmp_path)
    assert config["database"] == {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}}
    for key in ("signing_key_path", "media_store_path", "log_config", "pid_file"):
        assert Path(config[key]).parent == workdir, key


def test_building_touches_no_files(tmp_path: Path) -> None:
    _config(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_secrets_are_random_per_call(tmp_path: Path) -> None:
    first, second = _config(tmp_path), _config(tmp_path)
    for key in SECRET_KEYS:
        assert len(first[key]) >= 32
        assert first[key] != second[key], key
    assert len({first[key] for key in SECRET_KEYS}) == len(SECRET_KEYS)


def test_no_secret_in_log_config(tmp_path: Path) -> None:
    config = _config(tmp_path)
    log_yaml = yaml.safe_dump(build_log_config(tmp_path / "logs" / "synapse.log"))
    for key in SECRET_KEYS:
        assert config[key] not in log_yaml


def test_log_config_writes_info_to_file_and_warnings_to_console(tmp_path: Path) -> None:
    log_config = build_log_config(tmp_path / "synapse.log")
    handlers = log_config["handlers"]
    assert handlers["file"]["filename"] == str(tmp_path / "synapse.log")
    assert handlers["console"]["level"] == "WARNING"
    assert log_config["root"] == {"level": "INFO", "handlers": ["file", "console"]}
    # DEBUG on the SQL logger would put access tokens in the log.
    assert log_config["loggers"]["synapse.storage.SQL"]["level"] == "INFO"


def test_harness_settings(tmp_path: Path) -> None:
    config = _config(tmp_path)
    # Registration is closed to anyone without a token, and only the harness's admin mints tokens (issue 33).
    assert config["enable_registration"] is True and config["registration_requires_token"] is True
    assert config["report_stats"] is False
    assert config["trusted_key_servers"] == []
    assert config["federation_domain_whitelist"] == []
    assert config["federation_sender_instances"] == []
    assert config["bcrypt_rounds"] == 4
    assert config["presence"] == {"enabled": False}
    assert config["push"] == {"enabled": False}
    assert config["caches"]["sync_response_cache_duration"] == 0


def test_synapse_parses_it_with_every_rate_limit_raised(tmp_path: Path) -> None:
    from synapse.api.ratelimiting import RatelimitSettings

    parsed = _parsed_by_synapse(_config(tmp_path), tmp_path)
    limits = {
        name: value
        for name, value in vars(parsed.ratelimiting).items()
        if isinstance(value, RatelimitSettings)
    }
    # Measured in bytes, not requests; remote media is never fetched here.
    limits.pop("remote_media_downloads")
    assert len(limits) >= 20, sorted(limits)
    too_low = {name: (s.per_second, s.burst_count) for name, s in limits.items() if s.burst_count < 1000}
    assert too_low == {}
    assert all(s.per_second >= 1000 for s in limits.values())
    assert parsed.ratelimiting.rc_federation.reject_limit >= 1000


def test_synapse_reads_the_other_settings_as_intended(tmp_path: Path) -> None:
    config = _config(tmp_path, server_name="matrix-qa.test")
    parsed = _parsed_by_synapse(config, tmp_path)
    assert parsed.server.server_name == "matrix-qa.test"
    assert parsed.registration.registration_shared_secret == config["registration_shared_secret"]
    assert parsed.registration.bcrypt_rounds == 4
    assert parsed.server.presence_enabled is False
    assert parsed.push.enable_push is False  # no push rules run per event, no unread counts per /sync
    assert parsed.caches.sync_response_cache_duration.as_millis() == 0
    assert parsed.key.key_servers == []
    assert parsed.federation.federation_domain_whitelist == {}
    assert parsed.worker.send_federation is False  # the sender off: nothing queued per event for nobody
    assert parsed.background_updates.sleep_duration_ms >= 100_000
    assert parsed.background_updates.min_batch_size >= 100_000


def test_extra_config_merges_into_nested_sections(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        extra_config={"rc_message": {"per_second": 1}, "rc_login": {"address": {"burst_count": 2}}, "x": 1},
    )
    assert config["rc_message"] == {"per_second": 1, "burst_count": 10_000}
    assert config["rc_login"]["address"] == {"per_second": 10_000, "burst_count": 2}
    assert config["rc_login"]["account"] == {"per_second": 10_000, "burst_count": 10_000}
    assert config["x"] == 1


def test_deep_merge_does_not_alias_its_inputs() -> None:
    base = {"a": {"b": 1}}
    override = {"a": {"c": [1]}}
    merged = deep_merge(base, override)
    merged["a"]["c"].append(2)
    merged["a"]["b"] = 9
    assert base == {"a": {"b": 1}}
    assert override == {"a": {"c": [1]}}


def test_shared_secret_mac_matches_synapse_definition() -> None:
    expected = hmac.new(b"s3cret", b"nonce\x00alice\x00pw\x00notadmin", hashlib.sha1).hexdigest()
    assert shared_secret_mac("s3cret", "nonce", "alice", "pw", admin=False) == expected
    admin = hmac.new(b"s3cret", b"nonce\x00alice\x00pw\x00admin", hashlib.sha1).hexdigest()
    assert shared_secret_mac("s3cret", "nonce", "alice", "pw", admin=True) == admin


def test_choose_flow_picks_the_shortest_we_can_complete() -> None:
    flows = [
        {"stages": ["m.login.recaptcha", TOKEN_STAGE]},
        {"stages": [TOKEN_STAGE, DUMMY_STAGE]},
        {"stages": [UNSTABLE_TOKEN_STAGE]},
    ]
    assert choose_flow(flows) == [UNSTABLE_TOKEN_STAGE]
    assert choose_flow([{"stages": ["m.login.email.identity"]}]) is None
    assert choose_flow([]) is None


async def test_missing_synapse_is_reported_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synapse_mod, "synapse_installed", lambda: False)
    hs = SynapseHomeserver(tmp_path / "hs", tmp_path / "logs")
    with pytest.raises(InfraError, match=r"pip install matrix-synapse"):
        await hs.start()
    await hs.stop()


# A scripted homeserver for the registration-token flow: token stage, then a dummy stage, as some servers do.


class FakeRegistrar:
    def __init__(self, token: str, flows: list[list[str]]) -> None:
        self.token = token
        self.flows = flows
        self.completed: list[str] = []
        self.requests: list[dict[str, Any]] = []

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        auth = body.get("auth")
        if auth is not None:
            assert auth["session"] == "sess-1"
            if auth["type"] in (TOKEN_STAGE, UNSTABLE_TOKEN_STAGE) and auth.get("token") != self.token:
                return self._challenge(errcode="M_FORBIDDEN", error=f"Invalid token {auth.get('token')}")
            self.completed.append(auth["type"])
        if self.completed and any(self.completed == flow for flow in self.flows):
            return web.json_response({"user_id": f"@{body['username']}:fake.test"})
        return self._challenge()

    def _challenge(self, **error: str) -> web.Response:
        body = {
            "session": "sess-1",
            "flows": [{"stages": f} for f in self.flows],
            "completed": self.completed,
        }
        return web.json_response({**body, **error}, status=401)


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_token_flow_completes_every_advertised_stage() -> None:
    registrar = FakeRegistrar("tok-123", [[TOKEN_STAGE, DUMMY_STAGE]])
    app = web.Application()
    app.router.add_post("/_matrix/client/v3/register", registrar.register)
    server = await _serve(app)
    try:
        base_url = str(server.make_url("")).rstrip("/")
        creds = await register_with_token(base_url, "tok-123", "carol", "pw-carol-9")
    finally:
        await server.close()
    assert creds.user_id == "@carol:fake.test"
    assert registrar.completed == [TOKEN_STAGE, DUMMY_STAGE]
    assert registrar.requests[1]["auth"] == {"type": TOKEN_STAGE, "session": "sess-1", "token": "tok-123"}
    assert "token" not in registrar.requests[2]["auth"]
    assert all(r["inhibit_login"] is True for r in registrar.requests)


async def test_token_flow_failure_names_the_error_but_not_the_secrets() -> None:
    registrar = FakeRegistrar("right-token", [[TOKEN_STAGE]])
    app = web.Application()
    app.router.add_post("/_matrix/client/v3/register", registrar.register)
    server = await _serve(app)
    try:
        base_url = str(server.make_url("")).rstrip("/")
        with pytest.raises(InfraError) as caught:
            await register_with_token(base_url, "wrong-token-xyz", "dave", "pw-dave-secret")
    finally:
        await server.close()
    message = str(caught.value)
    assert "401" in message
    assert "M_FORBIDDEN" in message
    assert "wrong-token-xyz" not in message  # the fake server echoes it; we must scrub it
    assert "pw-dave-secret" not in message


async def test_shared_secret_failure_never_leaks_the_secret_or_password() -> None:
    async def nonce(_: web.Request) -> web.Response:
        return web.json_response({"nonce": "n1"})

    async def refuse(request: web.Request) -> web.Response:
        body = await request.json()
        # A server that echoes its input is the worst case for leaking.
        return web.json_response(
            {"errcode": "M_UNKNOWN", "error": f"HMAC incorrect {json.dumps(body)} the-shared-secret"},
            status=403,
        )

    app = web.Application()
    app.router.add_get("/_synapse/admin/v1/register", nonce)
    app.router.add_post("/_synapse/admin/v1/register", refuse)
    server = await _serve(app)
    try:
        base_url = str(server.make_url("")).rstrip("/")
        with pytest.raises(InfraError) as caught:
            await register_with_shared_secret(base_url, "the-shared-secret", "erin", "pw-erin-secret")
    finally:
        await server.close()
    message = str(caught.value)
    assert "403" in message and "M_UNKNOWN" in message and "@erin" in message
    assert "the-shared-secret" not in message
    assert "pw-erin-secret" not in message


async def test_unreachable_server_is_an_infra_error() -> None:
    free_port = synapse_mod.find_free_port()
    with pytest.raises(InfraError, match=r"could not reach http://127\.0\.0\.1:\d+"):
        await register_with_shared_secret(f"http://127.0.0.1:{free_port}", "s", "frank", "pw")


def test_synapse_loads_the_application_service_registration_it_is_given(tmp_path: Path) -> None:
    """Issue 33: the registration the harness writes, read by Synapse's own loader: its sender, namespace and
    URL as meant, the namespace exclusive, and none of the harness's test users inside it."""
    from synapse.config.appservice import load_appservices

    hs = SynapseHomeserver(tmp_path / "work", tmp_path / "logs", port=18008, appservice=True)
    hs._prepare()
    assert hs.appservice is not None
    files = hs._config["app_service_config_files"] if hs._config else []
    assert files == [str(hs.appservice.registration_path)]
    [service] = load_appservices("localhost", files)
    assert service.sender.to_string() == "@mqa_as-sender:localhost" and service.url == hs.appservice.url
    assert service.token == hs.appservice.as_token and service.hs_token == hs.appservice.hs_token
    assert service.is_exclusive_user("@mqa_as-0a1b2c3d-bot:localhost")
    assert not service.is_interested_in_user("@mqa-as-canary-1a2b3c:localhost")
    assert not service.is_interested_in_user("@mqa_as-x:elsewhere")
    assert {hs.appservice.as_token, hs.appservice.hs_token} <= set(hs.secrets)
    plain = SynapseHomeserver(tmp_path / "w2", tmp_path / "l2", port=18009)
    plain._prepare()
    assert plain.appservice is None and "app_service_config_files" not in (plain._config or {})
