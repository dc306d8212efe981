"""The Tuwunel backend's container lifecycle against a real Docker engine, with a stand-in image built offline
(tests/integration/docker_standin.py: busybox httpd answering the version endpoints; no Matrix, no registration).

What this proves: start, readiness, restart of the same container (same id, same data), log capture (redacted),
removal on success, on failure and on Ctrl-C/SIGTERM, cleanup by label, a container that dies mid-run being
reported, and an image that cannot be pulled. What it does not: that Tuwunel itself boots from its image and
serves Matrix; no registry is reachable here to pull it (the README says so).

Skipped with the reason where no engine answers and none can be started (not root, docker.io not installed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qa.homeserver.tuwunel import DEFAULT_IMAGE, LABEL, TuwunelHomeserver, remove_all_containers
from qa.kernel.errors import InfraError
from tests.images.fixtures import handed_over_pid_file
from tests.integration.conftest import REPO, cli
from tests.integration.docker_standin import (
    CRASHING,
    SERVING,
    SLOW,
    STANDIN_VERSION,
    Unavailable,
    build_images,
    engine,
)

pytestmark = pytest.mark.integration
BOUND_S = 30.0  # every wait on the engine below gives up after this long
TAG_VARIABLE = "MATRIX_QA_TEST_RUN"  # which test made a container (Scope)


@pytest.fixture(scope="module")
def docker_client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Under xdist a dockerd started here outlives this module: image tests on this worker or another may use it.
    hand_over_to = handed_over_pid_file(os.getppid()) if hasattr(request.config, "workerinput") else None
    try:
        with engine(tmp_path_factory.mktemp("dockerd"), hand_over_to) as client:
            build_images(client)
            yield client
    except Unavailable as why:
        pytest.skip(f"no real Docker engine: {why}")


class Scope:
    """The engine as one test sees it: only the containers this test made count. Other tests of this file run
    side by side on other xdist workers, and another suite may share the engine; a container with this
    backend's label that is not ours is theirs, so it neither fails this test nor is removed by it. Each container
    of this test carries the test's tag in its environment (`env` for an in-process TuwunelHomeserver, `flags`
    for a run of the CLI: --homeserver-env), as test_homeserver_image_backend.py's runs do."""

    def __init__(self, client: Any, tag: str) -> None:
        self.client = client
        self.tag = tag
        self.env = {TAG_VARIABLE: tag}
        self.flags = ["--homeserver-env", f"{TAG_VARIABLE}={tag}"]

    def ours(self, instance: str | None = None) -> list[Any]:
        """This test's containers (or the one of that instance: its label is unique), whatever their state."""
        if instance:
            return _listed(self.client, f"{LABEL}={instance}")
        return tagged(self.client, lambda tag: tag == self.tag)


def tagged(client: Any, whose: Any) -> list[Any]:
    """The backend's containers whose test tag satisfies `whose` (untagged ones are no test's of this file)."""
    found = []
    for container in _listed(client, "matrix-qa=tuwunel"):
        env = (container.attrs.get("Config") or {}).get("Env") or []
        tags = [item.split("=", 1)[1] for item in env if item.startswith(f"{TAG_VARIABLE}=")]
        if tags and whose(tags[0]):
            found.append(container)
    return found


def _listed(client: Any, label: str) -> list[Any]:
    import docker.errors

    for _ in range(20):
        try:
            return client.containers.list(all=True, filters={"label": label})
        except docker.errors.NotFound:
            continue  # listing inspects each container; one was removed in between (a run tearing down)
    return client.containers.list(all=True, filters={"label": label})


def wait_for(check: Any, what: str) -> Any:
    deadline = time.monotonic() + BOUND_S
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {BOUND_S:g}s: {what}")
        time.sleep(0.1)
    return value


@pytest.fixture
def clean(docker_client: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scope]:
    # The tag is the test's own temporary directory: unique across tests, xdist workers and suites. An earlier test
    # of this worker left a container if one carries a tag under this worker's base directory (this worker runs
    # one test at a time; other workers and other suites have other base directories).
    worker = str(tmp_path_factory.getbasetemp()) + os.sep
    earlier = tagged(docker_client, lambda tag: tag.startswith(worker))
    assert earlier == [], "a container of an earlier test is left over"
    scope = Scope(docker_client, str(tmp_path))
    yield scope
    leftovers = scope.ours()
    for container in leftovers:
        container.remove(force=True, v=True)
    assert leftovers == [], "the test left a container behind"


async def test_start_restart_same_container_log_capture_and_removal(clean: Scope, tmp_path: Path) -> None:
    hs = TuwunelHomeserver(tmp_path / "hs", image=SERVING, env=clean.env)
    await hs.start()
    try:
        assert hs.version == STANDIN_VERSION, "the version comes from the server's own answer"
        assert hs.boot_ms is not None and hs.boot_ms > 0
        (container,) = clean.ours(hs.instance)
        ports = container.attrs["HostConfig"]["PortBindings"]["8008/tcp"]
        assert ports == [{"HostIp": "127.0.0.1", "HostPort": str(hs.port)}], "published on loopback only"
        assert container.exec_run(["sh", "-c", "echo kept > /var/lib/tuwunel/db"]).exit_code == 0
        url, first_id = hs.base_url, container.id
        await hs.restart()
        (after,) = clean.ours(hs.instance)
        assert (after.id, hs.base_url) == (first_id, url), "the same container at the same address"
        assert after.exec_run(["busybox", "cat", "/var/lib/tuwunel/db"]).output == b"kept\n", "its data survived"
        assert after.status == "running"
    finally:
        await hs.stop()
    assert clean.ours(hs.instance) == [], "removed on success"
    log = hs.log_path.read_text()
    assert log.count("tuwunel stand-in starting") == 2 and "SIGTERM, stopping" in log
    assert hs.registration_token not in log and "registration_token=***" in log


async def test_a_container_that_exits_at_start_fails_with_its_code_and_log_and_is_removed(
        clean: Scope, tmp_path: Path) -> None:
    hs = TuwunelHomeserver(tmp_path / "hs", image=CRASHING, env=clean.env)
    with pytest.raises(InfraError) as failed:
        await hs.start()
    message = str(failed.value)
    assert "exited with exit code 3" in message and "is locked by another process" in message
    assert str(hs.log_path) in message and hs.registration_token not in message
    # By its instance label too: the tag-scoped list misses a container the tag never reached.
    assert clean.ours() == [] and clean.ours(hs.instance) == [], "removed on failure"


async def test_never_ready_hits_the_start_deadline_and_is_removed(clean: Scope, tmp_path: Path) -> None:
    hs = TuwunelHomeserver(tmp_path / "hs", image=SLOW, start_timeout_s=2, env=clean.env)
    with pytest.raises(InfraError, match=r"did not answer /_matrix/client/versions within 2s"):
        await hs.start()
    assert clean.ours() == [] and clean.ours(hs.instance) == []


async def test_a_container_that_dies_mid_run_is_reported_at_once(clean: Scope, tmp_path: Path) -> None:
    hs = TuwunelHomeserver(tmp_path / "hs", image=SERVING, env=clean.env)
    await hs.start()
    try:
        clean.ours(hs.instance)[0].kill()
        reason = await asyncio.wait_for(hs.wait_died(), BOUND_S)
        assert hs.container_name in reason and "exited with exit code 137" in reason
    finally:
        await hs.stop()
    assert clean.ours() == [] and clean.ours(hs.instance) == []


async def test_cleanup_by_label_finds_containers_without_a_handle(clean: Scope, tmp_path: Path) -> None:
    # A start cancelled mid-readiness (Ctrl-C): the container exists, start() never returned it.
    cancelled = TuwunelHomeserver(tmp_path / "a", image=SLOW, env=clean.env)
    task = asyncio.create_task(cancelled.start())
    await asyncio.to_thread(wait_for, lambda: clean.ours(cancelled.instance), "the container is created")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await cancelled.stop()
    assert clean.ours(cancelled.instance) == []
    # The last resort at exit removes by label whatever this process still has, handle or not.
    lost = TuwunelHomeserver(tmp_path / "b", image=SERVING, env=clean.env)
    await lost.start()
    lost._container = None
    await asyncio.to_thread(remove_all_containers)
    assert clean.ours() == [] and clean.ours(lost.instance) == []


def test_an_image_that_cannot_be_pulled_is_exit_2_naming_it(clean: Scope, tmp_path: Path) -> None:
    done = cli("run", "--homeserver", "tuwunel", *clean.flags, "--scenario", "canary",
               "--output-dir", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"could not pull the Tuwunel homeserver image {DEFAULT_IMAGE}" in done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads((tmp_path / "out" / "matrix-qa-summary.json").read_text())
    assert summary["status"] == "error" and DEFAULT_IMAGE in summary["errors"][0]["message"]


def test_a_run_that_fails_removes_its_container_and_keeps_the_log(clean: Scope, tmp_path: Path) -> None:
    # The stand-in serves no registration: the run is an infrastructure error (retried once, then exit 2).
    out = tmp_path / "out"
    done = cli("run", "--homeserver", "tuwunel", "--tuwunel-image", SERVING, *clean.flags, "--scenario", "canary",
               "--output-dir", str(out), timeout=120)
    assert done.returncode == 2, done.stderr
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    hs = summary["environment"]["homeserver"]
    assert (hs["kind"], hs["version"], hs["image"]) == ("tuwunel", STANDIN_VERSION, SERVING)
    assert summary["errors"][0]["component"] == "homeserver"
    assert len(summary["scenarios"][0]["retries"]) == 1, "the infrastructure error was retried once"
    log = (out / hs["log"]).read_text()
    assert "tuwunel stand-in starting" in log and "registration_token=***" in log


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_container_starts_removes_it(clean: Scope, tmp_path: Path, sig: signal.Signals,
                                                         code: int) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "qa.cli", "run", "--homeserver", "tuwunel", "--tuwunel-image",
                             SLOW, *clean.flags, "--scenario", "canary", "--output-dir", str(out)], cwd=REPO,
                            env={**os.environ, "TMPDIR": str(tmp_path)}, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: clean.ours(), "the run's container exists")
        proc.send_signal(sig)
        err = proc.communicate(timeout=BOUND_S * 2)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert clean.ours() == [], "no container outlives the run"
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    assert (summary["status"], summary["exitCode"]) == ("interrupted", code)
