"""The Complement-style Synapse image built here (tests/images/build.py) meets the contract, for real.

Against a real Docker engine (found, or started for the session) and the image built once per session: a
container on a free loopback port answers /versions, two users register with m.login.dummy through
matrix-nio, one creates a room and writes, the other reads it; the same container restarted keeps the users,
the room and the message; removal by label leaves nothing. The variants that break the contract on purpose,
for the image backend's negative tests, are each shown to break it the way their name says.

Skipped with the reason where no engine can be had (not root, docker.io not installed) or mmdebstrap is missing.
"""

# The fixtures are imported from tests.images.fixtures (conftest.py does not import them yet): their names are
# then parameters of the tests too, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from nio import (
    AsyncClient,
    ErrorResponse,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from qa.homeserver.registration import register_with_shared_secret
from tests.images.build import Built, ensure_image
from tests.images.entrypoint import DEFAULT_SHARED_SECRET, EXIT_CODE
from tests.images.fixtures import (  # noqa: F401 (fixtures, used by name)
    Containers,
    Running,
    docker_engine,
    first_answer,
    homeserver_image,
    image_containers,
)
from tests.images.recipe import CONTRACT, LABEL_INPUTS, LABEL_SYNAPSE, LABEL_VARIANT

pytestmark = pytest.mark.integration
SYNC_S = 30.0
EXIT_S = 30.0
PASSWORD = "image-test-" + secrets.token_hex(8)


@asynccontextmanager
async def client(running: Running, localpart: str) -> AsyncIterator[AsyncClient]:
    nio_client = AsyncClient(running.base_url, f"@{localpart}:{running.server_name}")
    try:
        yield nio_client
    finally:
        await nio_client.close()


async def register(nio_client: AsyncClient, localpart: str) -> RegisterResponse:
    response = await nio_client.register(localpart, PASSWORD, device_name="image-test")
    assert isinstance(response, RegisterResponse), f"m.login.dummy registration of {localpart}: {response}"
    return response


async def sync_until_message(nio_client: AsyncClient, room_id: str, body: str) -> float:
    """Seconds until `body` arrived in `room_id` by /sync; fails after SYNC_S listing what did arrive."""
    t0, seen = time.monotonic(), []
    while time.monotonic() - t0 < SYNC_S:
        response = await nio_client.sync(timeout=1000, full_state=False)
        assert isinstance(response, SyncResponse), response
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, RoomMessageText):
                seen.append(event.body)
                if event.body == body:
                    return time.monotonic() - t0
    pytest.fail(f"{body!r} did not arrive in {room_id} within {SYNC_S:g}s; messages seen: {seen}")


def test_the_image_is_labelled_with_its_synapse_version_and_inputs(homeserver_image: Built,
                                                                    docker_engine) -> None:
    import importlib.metadata

    image = docker_engine.client.images.get(homeserver_image.image)
    assert image.labels[LABEL_SYNAPSE] == importlib.metadata.version("matrix-synapse")
    assert image.labels[LABEL_INPUTS] == homeserver_image.inputs
    assert image.labels[LABEL_VARIANT] == CONTRACT
    config = image.attrs["Config"]
    assert set(config["ExposedPorts"]) == {"8008/tcp", "8448/tcp"}
    assert not config.get("Volumes"), "storage must stay in the container: a volume would outlive a removal"


def test_a_second_build_finds_the_image_by_its_label(homeserver_image: Built, docker_engine) -> None:
    again = ensure_image(docker_engine.client, log=lambda line: None)
    assert (again.built, again.tags) == (False, homeserver_image.tags)  # the evidence: found, nothing built
    # Loose: a hit is a few label look-ups (0.2-1.9 s in whole suites, two suites on one engine included); a build
    # takes minutes.
    assert again.seconds < 60, f"a cache hit took {again.seconds:.1f}s"


async def test_two_users_talk_and_a_restart_keeps_users_rooms_and_messages(
        homeserver_image: Built, image_containers: Containers) -> None:
    running = image_containers.start(homeserver_image.image)
    await running.wait_ready()
    status, body = await first_answer(f"https://127.0.0.1:{running.federation_port}/_matrix/federation/v1/version",
                                      10, ssl=False)
    assert (status, '"Synapse"' in body) == (200, True), f"federation port 8448 (TLS): {status} {body}"
    marker = f"over the image {secrets.token_hex(4)}"
    async with client(running, "alice") as alice, client(running, "bob") as bob:
        await register(alice, "alice")
        await register(bob, "bob")
        created = await alice.room_create(name="image test", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        assert isinstance(await bob.join(created.room_id), JoinResponse)
        sent = await alice.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": marker})
        assert isinstance(sent, RoomSendResponse), sent
        await sync_until_message(bob, created.room_id, marker)

    await running.restart()
    await running.wait_ready()
    assert running.status()[0] == "running"
    async with client(running, "bob") as bob_again:
        login = await bob_again.login(PASSWORD, device_name="after restart")
        assert isinstance(login, LoginResponse), f"bob cannot log in after the restart: {login}"
        await sync_until_message(bob_again, created.room_id, marker)  # the initial sync carries it

    assert running.container.attrs["Mounts"] == [], "no volume: the data lives in the container"
    assert image_containers.remove_all() == 1
    assert image_containers.ours() == []


async def test_the_exit_variant_exits_at_once(homeserver_image: Built, image_containers: Containers) -> None:
    running = image_containers.start(homeserver_image.tags["exit"])
    deadline = time.monotonic() + EXIT_S
    while (state := running.status())[0] in ("created", "running") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert state == ("exited", EXIT_CODE), f"{state}; log:\n{running.log_tail()}"
    assert "fault exit" in running.log_tail()


async def test_the_no_versions_variant_answers_404(homeserver_image: Built, image_containers: Containers) -> None:
    running = image_containers.start(homeserver_image.tags["no-versions"])
    status, body = await first_answer(running.base_url + "/_matrix/client/versions", 30)
    assert (status, "M_UNRECOGNIZED" in body) == (404, True), body
    assert running.status()[0] == "running"


async def test_the_closed_registration_variant_refuses_dummy_registration(
        homeserver_image: Built, image_containers: Containers) -> None:
    running = image_containers.start(homeserver_image.tags["closed-registration"])
    await running.wait_ready()
    async with client(running, "carol") as carol:
        refused = await carol.register("carol", PASSWORD)
        assert isinstance(refused, ErrorResponse), refused
        assert refused.status_code == "M_FORBIDDEN", refused
    # Complement's other way in stays open: shared-secret registration with the secret the contract names.
    made = await register_with_shared_secret(running.base_url, DEFAULT_SHARED_SECRET, "dave", PASSWORD)
    assert made.user_id == f"@dave:{running.server_name}"
