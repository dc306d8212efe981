"""Pytest fixtures for tests that run the Complement-style image: an engine, the image built once, containers.

Import them where they are used (`from tests.images.fixtures import docker_engine, homeserver_image,
image_containers  # noqa: F401`); from tests/integration/conftest.py they would be shared by every module.

* `docker_engine` (session): an engine that answers, or a dockerd started for the session and stopped at its
  end; the tests using it are skipped, with the reason, where neither can be had.
* `homeserver_image` (session): the image and its fault variants, found by their labels or built (`Built`);
  skipped when a build tool is missing, an error when the build itself fails.
* `image_containers` (per test): starts containers on free loopback ports, all under one label, and removes
  them by that label afterwards; the test fails if anything with the label is left over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa.homeserver.external import wait_until_answering
from qa.homeserver.ports import find_free_port
from tests.images.build import Built, ToolMissing, ensure_image
from tests.images.engine import Engine, Unavailable
from tests.images.engine import docker_engine as start_engine

TEST_LABEL = "matrix-qa.image-test"
READY_S = 60.0  # a fresh container answers in 3-6 s on this 2-core machine, under load
STOP_GRACE_S = 10
LOG_LINES = 15


def handed_over_pid_file(controller_pid: int) -> Path:
    """Where an xdist worker leaves the pid of a dockerd it started, for the controller to stop at the very end
    (another worker may still be using it when this one's session ends)."""
    return Path(tempfile.gettempdir()) / f"matrix-qa-test-dockerd-{controller_pid}.pid"


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    worker = hasattr(request.config, "workerinput")  # the controller is this worker's parent process
    hand_over_to = handed_over_pid_file(os.getppid()) if worker else None
    try:
        with start_engine(tmp_path_factory.mktemp("dockerd"), hand_over_to=hand_over_to) as engine:
            yield engine
    except Unavailable as why:
        pytest.skip(f"no Docker engine: {why}")


@pytest.fixture(scope="session")
def homeserver_image(docker_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Built:
    build_log = tmp_path_factory.mktemp("image-build") / "build.log"
    with build_log.open("a", encoding="utf-8") as sink:
        try:
            return ensure_image(docker_engine.client, log=lambda line: print(line, file=sink, flush=True))
        except ToolMissing as why:
            pytest.skip(f"cannot build the homeserver image: {why}")


@dataclass
class Running:
    """One container of the image, published on loopback."""

    container: Any
    image: str
    server_name: str
    port: int
    federation_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = LOG_LINES) -> str:
        try:
            text = self.container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
        except Exception as exc:
            return f"(no log: {exc})"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def status(self) -> tuple[str, int | None]:
        try:
            self.container.reload()
        except Exception:
            return "gone", None
        return str(self.container.status), (self.container.attrs.get("State") or {}).get("ExitCode")

    async def wait_ready(self, timeout_s: float = READY_S) -> float:
        """Seconds until `/versions` answered 200; fails naming the image, what was seen and the log."""
        t0 = time.monotonic()

        async def exited() -> str | None:
            status, code = await asyncio.to_thread(self.status)
            return None if status in ("created", "running") else f"the container {status} (exit code {code})"

        problem = await wait_until_answering(self.base_url, t0 + timeout_s, check_every=5, gone=exited)
        if problem is not None:
            pytest.fail(f"{self.image} did not answer /_matrix/client/versions within {timeout_s:g}s: {problem}\n"
                        f"  its log:\n{self.log_tail()}")
        return time.monotonic() - t0

    async def restart(self) -> None:
        await asyncio.to_thread(self.container.restart, timeout=STOP_GRACE_S)


class Containers:
    """The containers of one test, under one label value."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.label = f"{TEST_LABEL}={secrets.token_hex(4)}"

    def start(self, image: str, *, server_name: str | None = None, env: Mapping[str, str] | None = None) -> Running:
        port, federation_port = find_free_port(), find_free_port()
        server_name = server_name or f"hs-{secrets.token_hex(3)}.test"
        key, value = self.label.split("=")
        container = self.client.containers.run(
            image, detach=True, labels={key: value},
            environment={"SERVER_NAME": server_name, "PUBLIC_BASEURL": f"http://127.0.0.1:{port}/", **(env or {})},
            ports={"8008/tcp": ("127.0.0.1", port), "8448/tcp": ("127.0.0.1", federation_port)},
        )
        return Running(container, image, server_name, port, federation_port)

    def ours(self) -> list[Any]:
        return self.client.containers.list(all=True, filters={"label": self.label})

    def remove_all(self) -> int:
        """Remove every container with this test's label (and its anonymous volumes, were there any)."""
        found = self.ours()
        for container in found:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        return len(found)


@pytest.fixture
def image_containers(docker_engine: Engine) -> Iterator[Containers]:
    containers = Containers(docker_engine.client)
    try:
        yield containers
    finally:
        containers.remove_all()
    left = containers.ours()
    assert left == [], f"containers labelled {containers.label} left over: {[c.name for c in left]}"


async def first_answer(url: str, timeout_s: float, *, ssl: bool = True) -> tuple[int, str]:
    """(status, body) of the first HTTP answer at `url` within `timeout_s`, for checks that a Matrix client
    library does not make (an image answering 404, the federation port); fails when nothing answers."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, ssl=ssl) as resp:
                    return resp.status, await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.05)
    pytest.fail(f"nothing answered at {url} within {timeout_s:g}s ({last})")
