"""The Tuwunel backend without a Docker engine: the container spec, and its lifecycle against a stand-in client.

The stand-in's "container" is a real HTTP server on the published host port, so start/restart/stop go through
the same readiness polling, version lookup and log saving as with Docker. What only a real engine can show
(the image actually booting) is not claimed here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from qa.homeserver import container as shared_docker
from qa.homeserver import tuwunel
from qa.homeserver.base import UserCredentials
from qa.homeserver.tuwunel import (
    DEFAULT_IMAGE,
    LABEL,
    TuwunelHomeserver,
    build_container_spec,
    connect_docker,
    remove_all_containers,
)
from qa.kernel.errors import InfraError
from tests.lazy_module import LazyModule

REPO = Path(__file__).resolve().parents[2]
# Imported when a fake first raises one: every xdist worker collects this file, and docker's import (0.3-0.45 s) is
# then paid only by a worker that runs a test that needs it (tests/lazy_module.py).
docker_errors = LazyModule("docker.errors")

EXPECTED_ENV = {
    "TUWUNEL_SERVER_NAME": "localhost",
    "TUWUNEL_DATABASE_PATH": "/var/lib/tuwunel",
    "TUWUNEL_ADDRESS": "0.0.0.0",
    "TUWUNEL_PORT": "8008",
    "TUWUNEL_ALLOW_REGISTRATION": "true",
    "TUWUNEL_ALLOW_FEDERATION": "false",
    "TUWUNEL_ALLOW_ENCRYPTION": "true",
    "TUWUNEL_TRUSTED_SERVERS": "[]",
}


# --- the stand-in Docker client ---------------------------------------------------------------------------


class FakeServer:
    """What the container would serve on its published port; `ready` decides whether /versions says 200."""

    def __init__(self, port: int, ready: bool) -> None:
        self.ready = ready
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/_matrix/client/versions" and outer.ready:
                    self._json(200, {"versions": ["v1.11"]})
                elif self.path == "/_matrix/federation/v1/version":
                    # Federation is off in our container; Tuwunel's own endpoint still answers.
                    self._json(403, {"errcode": "M_FORBIDDEN", "error": "Federation is disabled."})
                elif self.path == "/_tuwunel/server_version":
                    self._json(200, {"name": "Tuwunel", "version": "1.5.1"})
                else:
                    self._json(503 if self.path == "/_matrix/client/versions" else 404, {"errcode": "M_UNRECOGNIZED"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeContainer:
    def __init__(self, client: FakeClient, spec: dict[str, Any]) -> None:
        self.client = client
        self.spec = spec
        self.labels = spec["labels"]
        self.status = "created"
        self.attrs: dict[str, Any] = {"State": {"ExitCode": 0}}
        self.removed_with: dict[str, Any] | None = None
        self.calls: list[str] = []
        self.server: FakeServer | None = None
        self._start()

    @property
    def host_port(self) -> int:
        return int(self.spec["ports"]["8008/tcp"][1])

    def _start(self) -> None:
        self.calls.append("start")
        if self.client.exit_code is not None:
            self.status = "exited"
            self.attrs["State"]["ExitCode"] = self.client.exit_code
            return
        self.status = "running"
        self.server = FakeServer(self.host_port, ready=self.client.ready)

    def start(self) -> None:
        self._start()

    def stop(self, timeout: int = 10) -> None:
        self.calls.append(f"stop(timeout={timeout})")
        self.status = "exited"
        if self.server:
            self.server.close()
            self.server = None

    def reload(self) -> None:
        if self.removed_with is not None:
            raise docker_errors.NotFound("no such container")

    def logs(self, **kwargs: Any) -> bytes:
        token = self.spec["environment"]["TUWUNEL_REGISTRATION_TOKEN"]
        return (f"INFO tuwunel: starting\nDEBUG config registration_token={token}\n"
                f"ERROR boom (exit {self.attrs['State']['ExitCode']})\n").encode()

    def remove(self, **kwargs: Any) -> None:
        self.stop()
        self.removed_with = kwargs
        self.client.live.remove(self)


class FakeContainers:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def run(self, **spec: Any) -> FakeContainer:
        self.client.run_specs.append(spec)
        container = FakeContainer(self.client, spec)
        self.client.live.append(container)
        self.client.created.append(container)
        return container

    def list(self, all: bool = False, filters: dict[str, str] | None = None) -> list[FakeContainer]:
        key, _, value = (filters or {}).get("label", "").partition("=")
        return [c for c in self.client.live if c.labels.get(key) == value]


class FakeImages:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def get(self, image: str) -> object:
        if image not in self.client.local_images:
            raise docker_errors.ImageNotFound(f"No such image: {image}")
        return object()

    def pull(self, image: str) -> object:
        if self.client.pull_error:
            raise docker_errors.APIError(self.client.pull_error)
        self.client.pulled.append(image)
        self.client.local_images.add(image)
        return object()


class FakeClient:
    def __init__(self, *, images: set[str] | None = None, ready: bool = True, exit_code: int | None = None) -> None:
        self.local_images = set(images or ())
        self.ready = ready
        self.exit_code = exit_code
        self.pull_error: str | None = None
        self.pulled: list[str] = []
        self.run_specs: list[dict[str, Any]] = []
        self.live: list[FakeContainer] = []
        self.created: list[FakeContainer] = []
        self.containers = FakeContainers(self)
        self.images = FakeImages(self)


@pytest.fixture
def fake() -> Any:
    client = FakeClient()
    yield client
    for container in list(client.live):
        container.remove(force=True, v=True)


def _hs(tmp_path: Path, client: FakeClient, **kwargs: Any) -> TuwunelHomeserver:
    return TuwunelHomeserver(tmp_path / "logs", docker_factory=lambda: client, **kwargs)


# --- the spec -----------------------------------------------------------------------------------------------


def test_container_spec_is_loopback_only_with_the_documented_env() -> None:
    spec = build_container_spec(image=DEFAULT_IMAGE, name="matrix-qa-tuwunel-x", host_port=40123,
                                registration_token="tok-123456", instance="abc")
    assert spec["image"] == "ghcr.io/matrix-construct/tuwunel:v1.5.1"
    assert spec["environment"] == {**EXPECTED_ENV, "TUWUNEL_REGISTRATION_TOKEN": "tok-123456"}
    assert spec["ports"] == {"8008/tcp": ("127.0.0.1", 40123)}
    assert spec["labels"][LABEL] == "abc"
    assert spec["detach"] is True
    # Removal is explicit in stop(): auto_remove would lose the log and make restart impossible.
    assert "auto_remove" not in spec and "remove" not in spec


def test_each_instance_gets_a_fresh_registration_token(tmp_path: Path) -> None:
    a, b = TuwunelHomeserver(tmp_path), TuwunelHomeserver(tmp_path)
    assert a.registration_token != b.registration_token and len(a.registration_token) >= 24
    assert a.secrets == [a.registration_token]
    assert a.registration_token not in repr(a.__dict__.get("_client"))


def test_compose_file_runs_the_same_service() -> None:
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    service = compose["services"]["tuwunel"]
    assert DEFAULT_IMAGE in service["image"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert {k: env[k] for k in EXPECTED_ENV if k != "TUWUNEL_SERVER_NAME"} == {
        k: v for k, v in EXPECTED_ENV.items() if k != "TUWUNEL_SERVER_NAME"}
    assert "TUWUNEL_REGISTRATION_TOKEN" in env and "MATRIX_QA_REGISTRATION_TOKEN" in env["TUWUNEL_REGISTRATION_TOKEN"]
    assert all(str(p).startswith("127.0.0.1:") for p in service["ports"]), "published on loopback only"


def test_cli_help_names_the_default_image() -> None:
    from qa.cli import build_parser

    run = next(a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions  # type: ignore[union-attr]
               if "--tuwunel-image" in a.option_strings)
    assert DEFAULT_IMAGE in (run.help or "")


# --- no engine ----------------------------------------------------------------------------------------------


def test_no_engine_is_infra_error_naming_where_it_looked_and_the_ways_on(tmp_path: Path) -> None:
    where = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(InfraError) as caught:
        connect_docker({"DOCKER_HOST": where})
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert where in message and "no" in message.lower()
    assert "--homeserver synapse" in message and "--homeserver-url" in message


def test_cli_without_engine_exits_2_with_one_message_and_starts_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "qa.cli", "run", "--homeserver", "tuwunel", "--scenario", "canary",
         "--output-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": f"unix://{tmp_path}/docker.sock", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Docker engine" in lines[0] and f"unix://{tmp_path}/docker.sock" in lines[0]
    assert "--homeserver synapse" in lines[0] and "--homeserver-url" in lines[0]
    assert not out.exists(), "nothing should start (or write artifacts) for a usage-level problem"


# --- lifecycle against the stand-in -------------------------------------------------------------------------


async def test_start_pulls_registers_restarts_saves_log_and_removes(
    tmp_path: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[tuple[str, str, str]] = []

    async def fake_register(base_url: str, token: str, localpart: str, password: str) -> UserCredentials:
        registered.append((base_url, token, localpart))
        return UserCredentials(user_id=f"@{localpart}:localhost", password=password, localpart=localpart)

    monkeypatch.setattr(tuwunel, "register_with_token", fake_register)
    hs = _hs(tmp_path, fake)
    await hs.start()

    assert fake.pulled == [DEFAULT_IMAGE], "absent image is pulled"
    [spec] = fake.run_specs
    token = spec["environment"]["TUWUNEL_REGISTRATION_TOKEN"]
    assert token == hs.registration_token
    assert hs.base_url == f"http://127.0.0.1:{hs.port}" and spec["ports"]["8008/tcp"] == ("127.0.0.1", hs.port)
    assert hs.version == "1.5.1", "the server's own answer, not the image tag"
    assert hs.boot_ms is not None and hs.boot_ms > 0

    creds = await hs.register_user("mqa-driver-x", "pw-123456")
    assert creds.user_id == "@mqa-driver-x:localhost"
    assert registered == [(hs.base_url, token, "mqa-driver-x")], "the m.login.registration_token flow with our token"

    [container] = fake.created
    port = hs.port
    await hs.restart()
    assert container.calls == ["start", "stop(timeout=10)", "start"], "same container: same data"
    assert hs.port == port and fake.run_specs == [spec]

    await hs.stop()
    assert container.removed_with == {"force": True, "v": True}, "container and its volumes removed"
    assert fake.live == []
    log = hs.log_path
    assert log is not None and log.parent == (tmp_path / "logs").resolve()
    text = log.read_text()
    assert "INFO tuwunel: starting" in text
    assert token not in text, "the registration token is redacted from the saved log"
    assert hs.instance not in shared_docker._LIVE
    await hs.stop()  # idempotent


async def test_image_present_is_not_pulled_and_custom_image_is_used(tmp_path: Path) -> None:
    image = "example.org/tuwunel:custom"
    client = FakeClient(images={image})
    hs = _hs(tmp_path, client, image=image)
    try:
        await hs.start()
        assert client.pulled == [] and client.run_specs[0]["image"] == image
    finally:
        await hs.stop()
    assert client.live == []


async def test_image_that_cannot_be_pulled_names_it_and_the_flag(tmp_path: Path) -> None:
    client = FakeClient()
    client.pull_error = "manifest unknown"
    hs = _hs(tmp_path, client, image="ghcr.io/matrix-construct/tuwunel:v0.0.0-nope")
    with pytest.raises(InfraError) as caught:
        await hs.start()
    message = str(caught.value)
    assert "ghcr.io/matrix-construct/tuwunel:v0.0.0-nope" in message and "--tuwunel-image" in message
    assert "manifest unknown" in message
    assert client.created == []
    await hs.stop()


async def test_container_that_exits_fails_start_with_exit_code_and_log(tmp_path: Path) -> None:
    client = FakeClient(exit_code=101)
    hs = _hs(tmp_path, client, start_timeout_s=20)
    with pytest.raises(InfraError) as caught:
        await hs.start()
    message = str(caught.value)
    assert "exit code 101" in message and str(hs.log_path) in message
    assert "ERROR boom" in message, "the log's last lines explain the failure"
    assert hs.registration_token not in message
    assert client.live == [] and client.created[0].removed_with == {"force": True, "v": True}


async def test_never_ready_hits_the_deadline_and_removes_the_container(tmp_path: Path) -> None:
    client = FakeClient(ready=False)
    hs = _hs(tmp_path, client, start_timeout_s=0.5)
    with pytest.raises(InfraError, match=r"did not answer /_matrix/client/versions within 0\.5s \(HTTP 503\)"):
        await hs.start()
    assert client.live == []


async def test_cancelled_start_like_ctrl_c_leaves_no_container(tmp_path: Path) -> None:
    client = FakeClient(ready=False)
    hs = _hs(tmp_path, client, start_timeout_s=30)
    task = asyncio.create_task(hs.start())
    # Wait for the container to exist (the start is then polling readiness), then cancel like Ctrl-C does.
    async with asyncio.timeout(10):
        while not client.created:
            await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await hs.stop()  # what the run's finally-block does
    assert client.live == []
    assert (tmp_path / "logs" / "tuwunel.log").exists(), "the log is saved even on Ctrl-C"


def test_remove_all_containers_is_the_last_resort(tmp_path: Path) -> None:
    client = FakeClient()
    hs = _hs(tmp_path, client)
    asyncio.run(hs.start())
    assert client.live
    remove_all_containers()  # synchronous: what atexit and run_sync's KeyboardInterrupt path call
    assert client.live == [] and shared_docker._LIVE == {}


# --- a container that stops on its own -----------------------------------------------------------------------


async def test_a_container_that_stops_on_its_own_is_reported_dead(
    tmp_path: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_docker, "WATCH_EVERY_S", 0.01)
    hs = _hs(tmp_path, fake)
    await hs.start()
    [container] = fake.created
    container.attrs["State"]["ExitCode"] = 139
    container.stop()  # what a crash looks like from outside: the container is no longer running
    reason = await asyncio.wait_for(hs.wait_died(), 10)
    assert reason == f"the Tuwunel container {hs.container_name} exited with exit code 139"
    await hs.stop()


async def test_restart_and_stop_on_purpose_are_not_deaths(
    tmp_path: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_docker, "WATCH_EVERY_S", 0.005)
    hs = _hs(tmp_path, fake)
    await hs.start()
    [container] = fake.created
    stop = container.stop

    def slow_stop(timeout: int = 10) -> None:
        stop(timeout)
        time.sleep(0.2)  # the container is down for a while, as a real restart's is: a watch still on it would see

    container.stop = slow_stop  # type: ignore[method-assign]
    await hs.restart()
    assert hs.death is None
    container.stop = stop  # type: ignore[method-assign]
    container.attrs["State"]["ExitCode"] = 1
    stop()
    assert "exited with exit code 1" in await asyncio.wait_for(hs.wait_died(), 10), "watched again after restart"
    await hs.stop()
