"""The Complement-style image's pure parts, without an engine: recipe, pins, hash, names, labels, the commit
changes (tests/images/recipe.py); the entrypoint's settings, config and first-start files
(tests/images/entrypoint.py); when the engine helper may start a dockerd (tests/images/engine.py)."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from qa.homeserver.synapse import build_synapse_config
from tests.images import entrypoint as ep
from tests.images import recipe as rc
from tests.images.engine import DEFAULT_HOST, endpoint, why_not_start

# --- recipe ------------------------------------------------------------------------------------------------------


def test_the_rootfs_is_python3_extracted_without_docs_into_a_tarball() -> None:
    argv = rc.RootfsRecipe().argv(Path("/c/out.tar"))
    assert argv[:4] == ["mmdebstrap", "--variant=extract", "--format=tar", "--include=python3"]
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert argv[-2:] == ["bookworm", "/c/out.tar"]
    assert rc.RootfsRecipe(packages=("python3", "tzdata"), mirror="http://m/debian").argv(Path("o"))[-3:] == [
        "bookworm", "o", "http://m/debian"]
    assert "--include=python3,tzdata" in rc.RootfsRecipe(packages=("python3", "tzdata")).argv(Path("o"))


@pytest.mark.parametrize("change", [{"suite": "trixie"}, {"python": "3.13"}, {"variant": "minbase"},
                                    {"packages": ("python3", "x")}, {"excludes": ()}, {"mirror": "http://m"}])
def test_every_field_of_the_recipe_changes_its_digest(change: dict[str, Any]) -> None:
    base = rc.RootfsRecipe()
    assert base.digest() == rc.RootfsRecipe().digest()
    assert replace(base, **change).digest() != base.digest()
    assert len(base.digest()) == 64


def test_the_rootfs_tarball_is_named_by_suite_and_digest() -> None:
    recipe = rc.RootfsRecipe()
    assert rc.rootfs_name(recipe) == f"rootfs-bookworm-{recipe.digest()[:12]}.tar"


@dataclass
class FakeDist:
    name: str
    version: str
    requires: list[str] | None = None
    metadata: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = {"Name": self.name}


def fake_index(*dists: FakeDist) -> Any:
    by_name = {canonicalize_name(d.name): d for d in dists}
    calls: list[str] = []

    def distribution(name: str) -> FakeDist:
        calls.append(name)
        return by_name[canonicalize_name(name)]

    distribution.calls = calls  # type: ignore[attr-defined]
    return distribution


def test_the_closure_follows_requirements_extras_and_markers() -> None:
    index = fake_index(
        FakeDist("Root", "1.0", ["a>=1", "Twisted[tls]>=2", "never; python_version < '3'", "opt; extra == 'x'"]),
        FakeDist("a", "1.1", ["Root"]),  # a cycle ends
        FakeDist("twisted", "24.1", ["zope_interface", "idna; extra == 'tls'", "other; extra == 'conch'"]),
        FakeDist("zope.interface", "6.0"),
        FakeDist("idna", "3.0", None),
    )
    closure = rc.requirement_closure("Root", index)
    assert closure == {"root": "1.0", "a": "1.1", "twisted": "24.1", "zope-interface": "6.0", "idna": "3.0"}
    assert rc.pins(closure) == ["a==1.1", "idna==3.0", "root==1.0", "twisted==24.1", "zope-interface==6.0"]


def test_a_distribution_met_again_with_more_extras_is_walked_again() -> None:
    index = fake_index(
        FakeDist("root", "1", ["lib", "b"]),
        FakeDist("b", "1", ["lib[x]"]),
        FakeDist("lib", "2", ["plain", "extra-only; extra == 'x'"]),
        FakeDist("plain", "1"),
        FakeDist("extra-only", "1"),
    )
    assert set(rc.requirement_closure("root", index)) == {"root", "b", "lib", "plain", "extra-only"}


def test_a_distribution_met_again_with_no_new_extras_is_not_walked_again() -> None:
    index = fake_index(FakeDist("root", "1", ["lib", "b", "c"]), FakeDist("b", "1", ["lib"]),
                       FakeDist("c", "1", ["lib"]), FakeDist("lib", "2", ["leaf"]), FakeDist("leaf", "1"))
    assert rc.requirement_closure("root", index) == {"root": "1", "b": "1", "c": "1", "lib": "2", "leaf": "1"}
    assert index.calls.count("leaf") == 1


def test_the_image_keeps_qa_test_settings_and_leaves_per_container_ones_to_the_entrypoint() -> None:
    full = build_synapse_config(workdir=Path("/data"), port=8008)
    config = rc.base_config(full)
    assert config["bcrypt_rounds"] == 4
    assert config["rc_message"] == full["rc_message"]
    assert config["rc_login"]["failed_attempts"]["burst_count"] >= 1000
    assert config["trusted_key_servers"] == []
    assert set(config) == set(full) - set(rc.PER_CONTAINER_KEYS)
    for key in ("server_name", "listeners", "registration_shared_secret", "federation_domain_whitelist"):
        assert key not in config


def test_the_inputs_digest_changes_with_every_input_and_only_then() -> None:
    recipe, pinned, config, sources = rc.RootfsRecipe(), ["a==1", "b==2"], {"k": 1}, {"e.py": b"x"}
    digest = rc.inputs_digest(recipe, pinned, config, sources)
    assert digest == rc.inputs_digest(recipe, list(reversed(pinned)), {"k": 1}, {"e.py": b"x"})
    others = [
        rc.inputs_digest(replace(recipe, suite="trixie"), pinned, config, sources),
        rc.inputs_digest(recipe, ["a==1", "b==3"], config, sources),
        rc.inputs_digest(recipe, pinned, {"k": 2}, sources),
        rc.inputs_digest(recipe, pinned, config, {"e.py": b"y"}),
        rc.inputs_digest(recipe, pinned, config, {"e.py": b"x", "b.py": b""}),
    ]
    assert len({digest, *others}) == 6
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_tags_and_labels_carry_the_synapse_version_and_the_inputs() -> None:
    inputs = "0123456789abcdef" * 4
    assert rc.image_tag("1.163.2", inputs) == "matrix-qa/complement-synapse:1.163.2-0123456789ab"
    assert rc.image_tag("1.163.2", inputs, "exit") == "matrix-qa/complement-synapse:1.163.2-0123456789ab-exit"
    assert rc.image_labels("1.163.2", inputs) == {
        "org.matrix-qa.image": "complement-synapse", "org.matrix-qa.synapse-version": "1.163.2",
        "org.matrix-qa.inputs": inputs, "org.matrix-qa.variant": "contract"}
    assert rc.image_labels("1", inputs, "exit")["org.matrix-qa.variant"] == "exit"


def test_the_commit_exposes_the_contract_ports_runs_the_entrypoint_and_declares_no_volume() -> None:
    changes = rc.commit_changes({"org.matrix-qa.variant": "contract", "b": 'say "hi"'})
    assert changes[0] == 'ENTRYPOINT ["python3", "/opt/matrix-qa/entrypoint.py"]'
    for line in ("EXPOSE 8008/tcp", "EXPOSE 8448/tcp", "ENV PYTHONPATH=/opt/synapse", "ENV PYTHONUNBUFFERED=1",
                 "WORKDIR /data"):
        assert line in changes
    assert changes[-2:] == ['LABEL b="say \\"hi\\""', 'LABEL org.matrix-qa.variant="contract"']
    assert not any(line.startswith(("VOLUME", "CMD")) for line in changes)


def test_a_fault_variant_switches_its_fault_on_and_says_so_in_its_label() -> None:
    labels = rc.image_labels("1.0", "f" * 64)
    changes = rc.fault_changes(labels, "no-versions")
    assert changes[0] == "ENV MATRIX_QA_IMAGE_FAULT=no-versions"
    assert 'LABEL org.matrix-qa.variant="no-versions"' in changes
    assert 'LABEL org.matrix-qa.variant="contract"' not in changes
    assert 'LABEL org.matrix-qa.synapse-version="1.0"' in changes
    assert len(changes) == 1 + len(labels)
    assert rc.FAULT_VARIANTS == ep.FAULTS


@pytest.mark.parametrize(("wanted", "host", "editable", "source"), [
    ("auto", "3.11", False, "host"), ("auto", "3.12", False, "pip"), ("auto", "3.11", True, "pip"),
    ("pip", "3.11", False, "pip"), ("host", "3.11", False, "host"), ("pip", "3.12", True, "pip"),
])
def test_the_synapse_layer_comes_from_the_host_only_when_it_fits(wanted: str, host: str, editable: bool,
                                                                 source: str) -> None:
    assert rc.synapse_source(wanted, host, rc.RootfsRecipe(), editable) == source


def test_forcing_the_host_where_it_cannot_serve_says_why() -> None:
    with pytest.raises(ValueError, match=r"Python 3\.12, the image's is 3\.11"):
        rc.synapse_source("host", "3.12", rc.RootfsRecipe(), False)
    with pytest.raises(ValueError, match="an editable install"):
        rc.synapse_source("host", "3.11", rc.RootfsRecipe(), True)
    with pytest.raises(ValueError, match="auto, host, pip, not 'wheel'"):
        rc.synapse_source("wheel", "3.11", rc.RootfsRecipe(), False)


def test_pip_installs_exactly_the_pins_as_wheels_for_the_image_python() -> None:
    argv = rc.pip_argv(rc.RootfsRecipe(python="3.13"), Path("/t"), ["a==1", "b==2"])
    assert argv[1:4] == ["-m", "pip", "install"]
    assert argv[argv.index("--target") + 1] == "/t"
    assert argv[argv.index("--python-version") + 1] == "3.13"
    assert {"--no-deps", "--only-binary=:all:", "manylinux2014_x86_64"} <= set(argv)
    assert argv[-2:] == ["a==1", "b==2"]


def test_the_cache_dir_follows_its_variable_then_xdg_then_home() -> None:
    assert rc.cache_dir({"MATRIX_QA_IMAGE_CACHE": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")
    assert rc.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/matrix-qa/images")
    assert rc.cache_dir({}) == Path.home() / ".cache" / "matrix-qa" / "images"


def test_images_are_removed_children_first() -> None:
    ranks = [rc.removal_rank(labels) for labels in ({}, {rc.LABEL_VARIANT: "contract"}, {rc.LABEL_VARIANT: "exit"})]
    assert ranks == [2, 1, 0]


# --- entrypoint: settings and config -------------------------------------------------------------------------


def test_settings_default_to_complement_values() -> None:
    assert ep.read_settings({}) == ep.Settings("localhost", "complement", "http://localhost:8008/", "")
    assert ep.read_settings({"SERVER_NAME": "  ", "REGISTRATION_SHARED_SECRET": ""}).server_name == "localhost"


def test_settings_come_from_the_environment() -> None:
    settings = ep.read_settings({"SERVER_NAME": " hs1 ", "REGISTRATION_SHARED_SECRET": "s3",
                                 "PUBLIC_BASEURL": "http://127.0.0.1:9/", "MATRIX_QA_IMAGE_FAULT": " exit "})
    assert settings == ep.Settings("hs1", "s3", "http://127.0.0.1:9/", "exit")
    assert ep.read_settings({"SERVER_NAME": "hs2"}).public_baseurl == "http://hs2:8008/"


def test_an_unknown_fault_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="MATRIX_QA_IMAGE_FAULT='crash' is not one of: exit, no-versions, closed-"):
        ep.read_settings({"MATRIX_QA_IMAGE_FAULT": "crash"})


KEPT = {"macaroon_secret_key": "m" * 8, "form_secret": "f" * 8}


def test_the_config_opens_registration_with_dummy_auth_on_8008_and_federates_over_tls_on_8448() -> None:
    base = {"bcrypt_rounds": 4, "server_name": "stale", "enable_registration": False}
    config = ep.render_config(base, ep.read_settings({"SERVER_NAME": "hs1"}), KEPT, Path("/d"))
    assert (config["server_name"], config["bcrypt_rounds"]) == ("hs1", 4)
    assert config["enable_registration"] is True
    assert config["enable_registration_without_verification"] is True
    assert config["registration_shared_secret"] == "complement"
    assert (config["macaroon_secret_key"], config["form_secret"]) == ("m" * 8, "f" * 8)
    client, federation = config["listeners"]
    assert (client["port"], client["tls"], client["resources"][0]["names"]) == (8008, False, ["client"])
    assert (federation["port"], federation["tls"], federation["resources"][0]["names"]) == (8448, True,
                                                                                           ["federation"])
    assert client["bind_addresses"] == federation["bind_addresses"] == ["0.0.0.0"]
    assert base == {"bcrypt_rounds": 4, "server_name": "stale", "enable_registration": False}


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
    config = ep.log_config()
    assert config["handlers"]["console"]["stream"] == "ext://sys.stdout"
    assert config["root"] == {"level": "INFO", "handlers": ["console"]}
    assert config["loggers"]["synapse.storage.SQL"]["level"] == "INFO"


def test_new_secrets_are_fresh_and_long() -> None:
    one, two = ep.new_secrets(), ep.new_secrets()
    assert set(one) == {"macaroon_secret_key", "form_secret"}
    assert one != two and len(one["form_secret"]) == 64


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
    first = json.loads(config_path.read_text())
    ep.prepare(ep.read_settings({"SERVER_NAME": "hs1"}), data, base)
    assert {name: (data / name).read_bytes() for name in kept} == kept
    assert json.loads(config_path.read_text()) == first
    assert first["macaroon_secret_key"] == json.loads(kept["secrets.json"])["macaroon_secret_key"]
    assert json.loads((data / "log_config.yaml").read_text()) == ep.log_config()


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
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["hs1"]
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert cert.not_valid_after_utc > cert.not_valid_before_utc


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


@pytest.mark.parametrize(("env", "said"), [({"MATRIX_QA_IMAGE_FAULT": "exit"}, "fault exit: exiting at once"),
                                           ({"MATRIX_QA_IMAGE_FAULT": "bad"}, "is not one of")])
def test_the_exit_fault_and_a_bad_setting_exit_at_once(env: dict[str, str], said: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert ep.main(env, tmp_path / "data", tmp_path / "missing.json") == ep.EXIT_CODE == 3
    assert said in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_the_no_versions_fault_answers_404_to_everything() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ep.NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for method in ("GET", "POST", "PUT"):
            url = f"http://127.0.0.1:{server.server_port}/_matrix/client/versions"
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(urllib.request.Request(url, data=b"{}" if method != "GET" else None,
                                                              method=method), timeout=5)
            assert raised.value.code == 404
            assert json.load(io.BytesIO(raised.value.read()))["errcode"] == "M_UNRECOGNIZED"
    finally:
        server.shutdown()
        server.server_close()


# --- engine ---------------------------------------------------------------------------------------------------


def test_a_dockerd_is_started_only_for_the_default_socket_when_installed_and_root() -> None:
    assert why_not_start({}, "/usr/sbin/dockerd", 0) is None
    assert why_not_start({"DOCKER_HOST": DEFAULT_HOST}, "/usr/sbin/dockerd", 0) is None
    assert "apt-get install docker.io" in why_not_start({}, None, 0)
    assert "needs root" in why_not_start({}, "/usr/sbin/dockerd", 1000)
    assert "DOCKER_HOST=tcp://h:2375" in why_not_start({"DOCKER_HOST": "tcp://h:2375"}, "/usr/sbin/dockerd", 0)
    assert endpoint({}) == DEFAULT_HOST == "unix:///var/run/docker.sock"
    assert endpoint({"DOCKER_HOST": "tcp://h:2375"}) == "tcp://h:2375"
