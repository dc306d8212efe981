"""Entrypoint of the Complement-style Synapse image: render Synapse's config from the environment, then exec it.

Runs inside the container as `python3 /opt/matrix-qa/entrypoint.py` (Debian's Python, Synapse and its
dependencies on PYTHONPATH). Only the standard library is imported at module level, so the host's unit tests
import this file as `tests.images.entrypoint` and check the pure parts (settings, config) without a container.

Complement's image contract (https://github.com/matrix-org/complement#image-requirements), point by point:

* client traffic on 8008 (plain HTTP), federation on 8448 (TLS: a certificate signed by Complement's CA when
  /complement/ca is mounted, else a self-signed one); the image EXPOSEs both (tests/images/build.py);
* `GET /_matrix/client/versions` answers 200 once Synapse is up;
* the server name comes from `SERVER_NAME` (`localhost` when unset);
* storage lives in the container itself (/data: SQLite, media, keys), with no volume, so a restart of the same
  container keeps the data and removing the container removes it;
* this script runs again on every start: secrets and keys made on the first start are kept, the config is
  rendered anew from the same inputs;
* registration is open with `m.login.dummy`, and the shared secret for `/_synapse/admin/v1/register` is
  `complement` (REGISTRATION_SHARED_SECRET overrides it).

MATRIX_QA_IMAGE_FAULT makes an image that breaks the contract on purpose, for the negative tests:
`exit` (exits at once), `no-versions` (answers 404 to every request instead of starting Synapse),
`closed-registration` (Synapse with registration closed).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CLIENT_PORT = 8008
FEDERATION_PORT = 8448
DATA_DIR = Path("/data")
INSTALL_DIR = Path("/opt/matrix-qa")  # this file and the build's settings, in the image
SELF_PATH = INSTALL_DIR / "entrypoint.py"
BASE_CONFIG_PATH = INSTALL_DIR / "base-config.json"
COMPLEMENT_CA = Path("/complement/ca")  # where Complement mounts its CA (ca.crt, ca.key)
DEFAULT_SERVER_NAME = "localhost"
DEFAULT_SHARED_SECRET = "complement"  # what Complement itself registers admins with
FAULT_ENV = "MATRIX_QA_IMAGE_FAULT"
FAULTS = ("exit", "no-versions", "closed-registration")
EXIT_CODE = 3  # the `exit` fault's code, and a bad setting's: distinct from a crash of Synapse


@dataclass(frozen=True)
class Settings:
    """What the container's environment asks of this start."""

    server_name: str
    shared_secret: str
    public_baseurl: str
    fault: str = ""


def read_settings(env: Mapping[str, str]) -> Settings:
    """The settings from the environment; ValueError names a fault this image does not know."""
    fault = env.get(FAULT_ENV, "").strip()
    if fault and fault not in FAULTS:
        raise ValueError(f"{FAULT_ENV}={fault!r} is not one of: {', '.join(FAULTS)}")
    server_name = env.get("SERVER_NAME", "").strip() or DEFAULT_SERVER_NAME
    return Settings(
        server_name=server_name,
        shared_secret=env.get("REGISTRATION_SHARED_SECRET") or DEFAULT_SHARED_SECRET,
        public_baseurl=env.get("PUBLIC_BASEURL") or f"http://{server_name}:{CLIENT_PORT}/",
        fault=fault,
    )


def data_paths(data_dir: Path) -> dict[str, Path]:
    """Every file this image keeps, all under the container's own /data."""
    return {
        "config": data_dir / "homeserver.yaml",
        "log_config": data_dir / "log_config.yaml",
        "secrets": data_dir / "secrets.json",
        "database": data_dir / "homeserver.db",
        "media": data_dir / "media_store",
        "signing_key": data_dir / "signing.key",
        "tls_cert": data_dir / "tls.crt",
        "tls_key": data_dir / "tls.key",
    }


def listeners() -> list[dict[str, Any]]:
    """8008 for clients (and /_synapse/admin), 8448 for federation over TLS. 0.0.0.0 inside the container is
    what a published port reaches; the host decides how far it is published (127.0.0.1 in our tests)."""
    return [
        {"port": CLIENT_PORT, "bind_addresses": ["0.0.0.0"], "type": "http", "tls": False, "x_forwarded": False,
         "resources": [{"names": ["client"], "compress": False}]},
        {"port": FEDERATION_PORT, "bind_addresses": ["0.0.0.0"], "type": "http", "tls": True,
         "resources": [{"names": ["federation"], "compress": False}]},
    ]


def render_config(base: Mapping[str, Any], settings: Settings, kept: Mapping[str, str],
                  data_dir: Path) -> dict[str, Any]:
    """homeserver.yaml (written as JSON, which YAML reads) for this start. Pure.

    `base` holds the test-homeserver settings fixed at build time (rate limits raised, bcrypt_rounds 4, ...);
    everything that depends on the container (names, paths, ports, secrets, registration) is set here and
    wins over `base`. `kept` are the secrets made on the first start."""
    paths = data_paths(data_dir)
    config = copy.deepcopy(dict(base))
    config.update({
        "server_name": settings.server_name,
        "public_baseurl": settings.public_baseurl,
        "listeners": listeners(),
        "database": {"name": "sqlite3", "args": {"database": str(paths["database"])}},
        "log_config": str(paths["log_config"]),
        "media_store_path": str(paths["media"]),
        "signing_key_path": str(paths["signing_key"]),
        "tls_certificate_path": str(paths["tls_cert"]),
        "tls_private_key_path": str(paths["tls_key"]),
        "registration_shared_secret": settings.shared_secret,
        "macaroon_secret_key": kept["macaroon_secret_key"],
        "form_secret": kept["form_secret"],
        "enable_registration": settings.fault != "closed-registration",
        # Open registration with m.login.dummy, as Complement registers its users: no token asked, whatever the
        # base (qa's embedded Synapse asks one, for the bots that register their own accounts).
        "registration_requires_token": False,
        "enable_registration_without_verification": True,
    })
    return config


def log_config() -> dict[str, Any]:
    """Synapse's logging: everything to stdout, which is the container's log (`docker logs`)."""
    fmt = "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
    return {
        "version": 1,
        "formatters": {"precise": {"format": fmt}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "precise",
                                 "stream": "ext://sys.stdout"}},
        # DEBUG here would log access tokens.
        "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
        "root": {"level": "INFO", "handlers": ["console"]},
        "disable_existing_loggers": False,
    }


def new_secrets() -> dict[str, str]:
    return {"macaroon_secret_key": secrets.token_hex(32), "form_secret": secrets.token_hex(32)}


def say(message: str) -> None:
    print(f"matrix-qa image: {message}", file=sys.stderr, flush=True)


# --- I/O: the first start's files, then Synapse --------------------------------------------------------------


def keep_secrets(path: Path) -> dict[str, str]:
    """The secrets of the first start: made and written then, read on every later start."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    made = new_secrets()
    write_private(path, json.dumps(made))
    return made


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def ensure_signing_key(path: Path) -> None:
    if path.exists():
        return
    from signedjson.key import generate_signing_key, write_signing_keys

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        write_signing_keys(fh, [generate_signing_key("a_" + secrets.token_hex(2))])


def ensure_tls(cert_path: Path, key_path: Path, server_name: str, ca_dir: Path = COMPLEMENT_CA) -> None:
    """A certificate for 8448: signed by Complement's CA when it is mounted, else self-signed."""
    if cert_path.exists() and key_path.exists():
        return
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)])
    issuer, signer = subject, key
    if (ca_dir / "ca.crt").exists() and (ca_dir / "ca.key").exists():
        issuer = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes()).subject
        signer = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
            .sign(signer, hashes.SHA256()))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode())
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def prepare(settings: Settings, data_dir: Path = DATA_DIR, base_path: Path = BASE_CONFIG_PATH) -> Path:
    """Write this start's files under `data_dir`; returns the config's path."""
    paths = data_paths(data_dir)
    paths["media"].mkdir(parents=True, exist_ok=True)
    base = json.loads(base_path.read_text(encoding="utf-8"))
    config = render_config(base, settings, keep_secrets(paths["secrets"]), data_dir)
    write_private(paths["config"], json.dumps(config, indent=1, sort_keys=True))
    paths["log_config"].write_text(json.dumps(log_config(), indent=1), encoding="utf-8")
    ensure_signing_key(paths["signing_key"])
    ensure_tls(paths["tls_cert"], paths["tls_key"], settings.server_name)
    return paths["config"]


class NotFound(BaseHTTPRequestHandler):
    """The `no-versions` fault: a server that is up but is no homeserver."""

    def do_GET(self) -> None:
        body = b'{"errcode": "M_UNRECOGNIZED", "error": "matrix-qa image fault: no-versions"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        say(f"no-versions: {self.command} {self.path} -> 404")


def serve_not_found() -> int:
    # As PID 1 the default SIGTERM action is ignored: without a handler `docker stop` would wait its grace out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("0.0.0.0", CLIENT_PORT), NotFound)
    say(f"fault no-versions: answering 404 to everything on {CLIENT_PORT}, not starting Synapse")
    server.serve_forever()
    return 0


def main(env: Mapping[str, str] = os.environ, data_dir: Path = DATA_DIR, base_path: Path = BASE_CONFIG_PATH) -> int:
    try:
        settings = read_settings(env)
    except ValueError as exc:
        say(str(exc))
        return EXIT_CODE
    if settings.fault == "exit":
        say("fault exit: exiting at once, before any homeserver starts")
        return EXIT_CODE
    if settings.fault == "no-versions":
        return serve_not_found()
    config_path = prepare(settings, data_dir, base_path)
    say(f"starting Synapse for {settings.server_name} (registration "
        f"{'closed: fault closed-registration' if settings.fault else 'open with m.login.dummy'})")
    # exec: Synapse becomes PID 1 and gets `docker stop`'s SIGTERM itself.
    os.execv(sys.executable, [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config_path)])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
