"""The Complement-style image's entrypoint (tests/images/entrypoint.py), on the host: settings from the
environment, the rendered config (checked by Synapse's own parser), the first start's files and a restart's,
the federation certificate, and the fault switches."""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import stat
import threading
import urllib.error
import urllib.request
from dataclasses import FrozenInstanceError
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from qa.homeserver.synapse_config import build_synapse_config
from tests.images import entrypoint as ep
from tests.images import recipe as rc

# --- entrypoint: settings and config -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_server_no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that reaches Synapse's exec or the fault server by mistake fails at once instead of replacing the
    test process or serving on port 8008 forever; the tests that want either stand in for it themselves."""
    def refuse(*args: object) -> None:
        raise AssertionError(f"not in a unit test: {args}")

    monkeypatch.setattr(os, "execv", refuse)
    monkeypatch.setattr(ep, "serve_not_found", refuse)


def test_the_image_layout_is_where_the_build_puts_it_and_complement_mounts_its_ca() -> None:
    assert str(ep.SELF_PATH) == "/opt/matrix-qa/entrypoint.py"
    assert str(ep.BASE_CONFIG_PATH) == "/opt/matrix-qa/base-config.json"
    assert str(ep.DATA_DIR) == "/data"
    assert str(ep.COMPLEMENT_CA) == "/complement/ca"
    changes = rc.commit_changes({})
    assert changes[0] == 'ENTRYPOINT ["python3", "/opt/matrix-qa/entrypoint.py"]'
    assert "WORKDIR /data" in changes


def test_settings_default_to_complement_values() -> None:
    assert ep.read_settings({}) == ep.Settings("localhost", "complement", "http://localhost:8008/", "")
    assert ep.Settings("hs", "s", "u").fault == ""
    with pytest.raises(FrozenInstanceError):
        ep.read_settings({}).fault = "exit"  # type: ignore[misc]
    assert ep.read_settings({"SERVER_NAME": "  ", "REGISTRATION_SHARED_SECRET": ""}).server_name == "localhost"


def test_settings_come_from_the_environment() -> None:
    settings = ep.read_settings({"SERVER_NAME": " hs1 ", "REGISTRATION_SHARED_SECRET": "s3",
                                 "PUBLIC_BASEURL": "http://127.0.0.1:9/", "MATRIX_QA_IMAGE_FAULT": " exit "})
    assert settings == ep.Settings("hs1", "s3", "http://127.0.0.1:9/", "exit")
    assert ep.read_settings({"SERVER_NAME": "hs2"}).public_baseurl == "http://hs2:8008/"


def test_an_unknown_fault_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError) as refused:
        ep.read_settings({"MATRIX_QA_IMAGE_FAULT": "crash"})
    assert str(refused.value) == "MATRIX_QA_IMAGE_FAULT='crash' is not one of: exit, no-versions, closed-registration"


KEPT = {"macaroon_secret_key": "m" * 8, "form_secret": "f" * 8}


def test_the_config_opens_registration_with_dummy_auth_on_8008_and_federates_over_tls_on_8448() -> None:
    # qa's embedded Synapse (the base) asks a registration token; the image's registration is open.
    base = {"bcrypt_rounds": 4, "server_name": "stale", "enable_registration": False,
            "registration_requires_token": True}
    config = ep.render_config(base, ep.read_settings({"SERVER_NAME": "hs1"}), KEPT, Path("/d"))
    assert (config["server_name"], config["bcrypt_rounds"]) == ("hs1", 4)
    assert config["enable_registration"] is True
    assert config["registration_requires_token"] is False
    assert config["enable_registration_without_verification"] is True
    assert config["registration_shared_secret"] == "complement"
    assert (config["macaroon_secret_key"], config["form_secret"]) == ("m" * 8, "f" * 8)
    assert config["public_baseurl"] == "http://hs1:8008/"
    assert config["listeners"] == [
        {"port": 8008, "bind_addresses": ["0.0.0.0"], "type": "http", "tls": False, "x_forwarded": False,
         "resources": [{"names": ["client"], "compress": False}]},
        {"port": 8448, "bind_addresses": ["0.0.0.0"], "type": "http", "tls": True,
         "resources": [{"names": ["federation"], "compress": False}]},
    ]
    assert base == {"bcrypt_rounds": 4, "server_name": "stale", "enable_registration": False,
                    "registration_requires_token": True}


def test_the_config_is_a_copy_down_to_the_nested_settings() -> None:
    base = {"rc_message": {"per_second": 10_000}}
    config = ep.render_config(base, ep.read_settings({}), KEPT, Path("/d"))
    config["rc_message"]["per_second"] = 1
    assert base == {"rc_message": {"per_second": 10_000}}


def test_every_file_of_the_config_lives_under_the_data_dir() -> None:
    config = ep.render_config({}, ep.read_settings({}), KEPT, Path("/d"))
    assert config["database"] == {"name": "sqlite3", "args": {"database": "/d/homeserver.db"}}
    paths = [config[key] for key in ("log_config", "media_store_path", "signing_key_path", "tls_certificate_path",
                                     "tls_private_key_path")]
    assert paths == ["/d/log_config.yaml", "/d/media_store", "/d/signing.key", "/d/tls.crt", "/d/tls.key"]


def test_the_closed_registration_fault_closes_registration_only() -> None:
    settings = ep.read_settings({"MATRIX_QA_IMAGE_FAULT": "closed-registration"})
    config = ep.render_config({}, settings, KEPT, Path("/d"))
    assert config["enable_registration"] is False
    assert config["registration_shared_secret"] == "complement"


def test_synapse_logs_to_stdout_which_is_the_container_log() -> None:
    assert ep.log_config() == {
        "version": 1,
        "formatters": {"precise": {
            "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "precise",
                                 "stream": "ext://sys.stdout"}},
        "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
        "root": {"level": "INFO", "handlers": ["console"]},
        "disable_existing_loggers": False,
    }


def test_new_secrets_are_fresh_and_long() -> None:
    one, two = ep.new_secrets(), ep.new_secrets()
    assert set(one) == {"macaroon_secret_key", "form_secret"}
    assert one != two and len(one["form_secret"]) == len(one["macaroon_secret_key"]) == 64


# --- entrypoint: the first start's files, and later starts -----------------------------------------------------


def write_base(tmp_path: Path) -> Path:
    base = tmp_path / "base-config.json"
    base.write_text(json.dumps(rc.base_config(build_synapse_config(workdir=Path("/data"), port=8008))))
    return base


def test_the_first_start_writes_private_files_that_a_restart_keeps(tmp_path: Path) -> None:
    data, base = tmp_path / "data", write_base(tmp_path)
    config_path = ep.prepare(ep.read_settings({"SERVER_NAME": "hs1"}), data, base)
    assert config_path == data / "homeserver.yaml"
    kept = {name: (data / name).read_bytes() for name in ("secrets.json", "signing.key", "tls.crt", "tls.key")}
    for name in ("secrets.json", "signing.key", "tls.key", "homeserver.yaml"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert (data / "media_store").is_dir()
    text = config_path.read_text()
    first = json.loads(text)
    assert text == json.dumps(first, indent=1, sort_keys=True)
    assert (data / "log_config.yaml").read_text() == json.dumps(ep.log_config(), indent=1)
    ep.prepare(ep.read_settings({"SERVER_NAME": "hs1"}), data, base)
    assert {name: (data / name).read_bytes() for name in kept} == kept
    assert json.loads(config_path.read_text()) == first
    assert first["macaroon_secret_key"] == json.loads(kept["secrets.json"])["macaroon_secret_key"]
    assert json.loads((data / "log_config.yaml").read_text()) == ep.log_config()
    assert re.fullmatch(rb"ed25519 a_[0-9a-f]{4} \S+\n", kept["signing.key"]), kept["signing.key"]


def test_the_rendered_config_is_one_synapse_accepts(tmp_path: Path) -> None:
    from synapse.config.homeserver import HomeServerConfig

    data = tmp_path / "data"
    config = json.loads(ep.prepare(ep.read_settings({"SERVER_NAME": "hs1"}), data, write_base(tmp_path)).read_text())
    parsed = HomeServerConfig()
    parsed.parse_config_dict(config, config_dir_path=str(data), data_dir_path=str(data))
    assert parsed.server.server_name == "hs1"
    assert parsed.registration.enable_registration is True
    assert parsed.registration.enable_registration_without_verification is True
    assert [listener.port for listener in parsed.server.listeners] == [8008, 8448]
    assert parsed.ratelimiting.rc_message.per_second >= 1000


def test_the_federation_certificate_is_signed_by_complements_ca_when_mounted(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ep.ensure_tls(ca_dir / "ca.crt", ca_dir / "ca.key", "Complement CA")
    ep.ensure_tls(tmp_path / "hs.crt", tmp_path / "hs.key", "hs1", ca_dir)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "hs.crt").read_bytes())
    assert cert.issuer == ca.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert (san.value.get_values_for_type(x509.DNSName), san.critical) == (["hs1"], False)
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=366)
    assert cert.not_valid_before_utc < datetime.datetime.now(datetime.UTC) < cert.not_valid_after_utc


def test_a_certificate_without_its_key_is_made_again(tmp_path: Path) -> None:
    ep.ensure_tls(tmp_path / "hs.crt", tmp_path / "hs.key", "hs1", tmp_path / "no-ca")
    first = (tmp_path / "hs.crt").read_bytes()
    (tmp_path / "hs.key").unlink()
    ep.ensure_tls(tmp_path / "hs.crt", tmp_path / "hs.key", "hs1", tmp_path / "no-ca")
    assert (tmp_path / "hs.key").exists() and (tmp_path / "hs.crt").read_bytes() != first


def test_a_ca_certificate_without_its_key_is_not_used(tmp_path: Path) -> None:
    from cryptography import x509

    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ep.ensure_tls(ca_dir / "ca.crt", ca_dir / "ca.key", "Complement CA")
    (ca_dir / "ca.key").unlink()
    ep.ensure_tls(tmp_path / "hs.crt", tmp_path / "hs.key", "hs1", ca_dir)
    cert = x509.load_pem_x509_certificate((tmp_path / "hs.crt").read_bytes())
    assert cert.issuer == cert.subject


def test_without_a_ca_the_federation_certificate_signs_itself(tmp_path: Path) -> None:
    from cryptography import x509

    ep.ensure_tls(tmp_path / "hs.crt", tmp_path / "hs.key", "hs1", tmp_path / "no-ca")
    cert = x509.load_pem_x509_certificate((tmp_path / "hs.crt").read_bytes())
    assert cert.issuer == cert.subject


def test_main_execs_synapse_with_the_rendered_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    assert ep.main({"SERVER_NAME": "hs1"}, tmp_path / "data", write_base(tmp_path)) == 0
    [(path, argv)] = calls
    assert argv[1:] == ["-m", "synapse.app.homeserver", "--config-path", str(tmp_path / "data" / "homeserver.yaml")]
    assert path == argv[0]


@pytest.mark.parametrize(("env", "said"), [
    ({"MATRIX_QA_IMAGE_FAULT": "exit"}, "fault exit: exiting at once, before any homeserver starts"),
    ({"MATRIX_QA_IMAGE_FAULT": "bad"}, "MATRIX_QA_IMAGE_FAULT='bad' is not one of: exit, no-versions, "
                                       "closed-registration")])
def test_the_exit_fault_and_a_bad_setting_exit_at_once(env: dict[str, str], said: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert ep.main(env, tmp_path / "data", tmp_path / "missing.json") == ep.EXIT_CODE == 3
    assert capsys.readouterr().err == f"matrix-qa image: {said}\n"
    assert not (tmp_path / "data").exists()


def test_main_says_how_registration_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "execv", lambda path, argv: None)
    base = write_base(tmp_path)
    ep.main({"SERVER_NAME": "hs1"}, tmp_path / "a", base)
    assert "matrix-qa image: starting Synapse for hs1 (registration open with m.login.dummy)" in capsys.readouterr().err
    ep.main({"MATRIX_QA_IMAGE_FAULT": "closed-registration"}, tmp_path / "b", base)
    assert "(registration closed: fault closed-registration)" in capsys.readouterr().err


def test_main_hands_the_no_versions_fault_to_its_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ep, "serve_not_found", lambda: 7)
    assert ep.main({"MATRIX_QA_IMAGE_FAULT": "no-versions"}, tmp_path / "data", tmp_path / "missing.json") == 7
    assert not (tmp_path / "data").exists()


def test_the_no_versions_fault_answers_404_to_everything(capsys: pytest.CaptureFixture[str]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ep.NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for method in ("GET", "POST", "PUT"):
            url = f"http://127.0.0.1:{server.server_port}/_matrix/client/versions"
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(urllib.request.Request(url, data=b"{}" if method != "GET" else None,
                                                              method=method), timeout=5)
            assert raised.value.code == 404
            assert raised.value.headers["Content-Type"] == "application/json"
            body = raised.value.read()
            assert int(raised.value.headers["Content-Length"]) == len(body)
            assert json.load(io.BytesIO(body)) == {"errcode": "M_UNRECOGNIZED",
                                                   "error": "matrix-qa image fault: no-versions"}
    finally:
        server.shutdown()
        server.server_close()
    said = capsys.readouterr().err
    assert "matrix-qa image: no-versions: POST /_matrix/client/versions -> 404" in said
