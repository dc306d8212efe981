"""The image backend (`--homeserver-image`) runs matrix-qa's scenarios against the Complement-style Synapse image
built here (tests/images), and refuses the images that break the contract.

Against a real Docker engine (found, or started for the session) and the image built once per session:

* a representative slice of the `transport` profile passes through the image backend: the canary, a threaded
  exchange, an E2EE reply, a homeserver restart with the data kept, and the fault proxy in front of the
  container (a 403 on send, 502s and a stalled /sync); users registered by open registration through
  matrix-nio; the summary and report name the image and its id; the container's log is kept, redacted; nothing
  with the backend's label is left. The whole profile is run by hand (docs/homeservers.md gives the figure).
* SIGTERM in the middle of a scenario (the bot's model call hanging in the provider) ends the run with 143 and
  an `interrupted` summary, and removes the container, as a Ctrl-C or a CI cancel would.
* each contract-breaking variant is exit 2 within a bounded time, naming the image, the condition and the
  container's log, with nothing left running.

Skipped with the reason where no engine can be had (not root, docker.io not installed) or mmdebstrap is missing.
"""

# The fixtures are imported from tests.images.fixtures: their names are then parameters of the tests too,
# which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qa.homeserver.container import DEFAULT_START_TIMEOUT_S
from tests.images.build import Built
from tests.images.engine import Engine
from tests.images.fixtures import docker_engine, homeserver_image  # noqa: F401 (fixtures, used by name)
from tests.integration.conftest import REPO, RunResult, cli, our_processes

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SLICE = ("canary", "matrix-thread-follow-up", "matrix-e2ee-basic-reply", "matrix-homeserver-restart-resume",
         "matrix-send-forbidden", "matrix-sync-errors-reconnect")
# Generous bounds for the failing cases (the contract's judgement takes 0-10 s past the boot), never tight.
BAD_IMAGE_BOUND_S = 90.0
TAG_VARIABLE = "MATRIX_QA_TEST_RUN"  # which test made a container (image_runs_left)


def image_runs_left(engine: Engine, tag: str) -> list[str]:
    """The containers of this test's runs still there. Tests of this file run side by side under pytest-xdist, so
    each run's container carries the test's own tag in its environment (`--homeserver-env`), and only those count.
    """
    return [c.name for c in engine.client.containers.list(all=True, filters={"label": "matrix-qa=image"})
            if f"{TAG_VARIABLE}={tag}" in (c.attrs.get("Config", {}).get("Env") or [])]


def run_tag(tmp_path: Path) -> str:
    return str(tmp_path)  # unique across the xdist workers too (each has its own base temp dir)


def settings(image: str, tag: str, **more: Any) -> dict[str, Any]:
    env = [*more.pop("homeserver_env", []), f"{TAG_VARIABLE}={tag}"]
    return {"homeserver_image": image, "homeserver_env": env, **more}


async def test_a_transport_slice_passes_through_the_image_backend(
        homeserver_image: Built, docker_engine: Engine, run_qa: Any, tmp_path: Path) -> None:
    result: RunResult = await run_qa(*SLICE, homeserver="image", homeserver_settings=settings(
        homeserver_image.image, run_tag(tmp_path), homeserver_env=["SERVER_NAME=image-backend.test"]), jobs=2)
    statuses = {s["id"]: s["status"] for s in result.summary["scenarios"]}
    assert result.code == 0 and set(statuses.values()) == {"pass"}, (statuses, result.summary.get("errors"))
    assert set(statuses) == set(SLICE), "every scenario of the slice ran, the restart included"

    hs = result.summary["environment"]["homeserver"]
    engine_id = docker_engine.client.images.get(homeserver_image.image).id
    assert (hs["kind"], hs["image"], hs["imageId"]) == ("image", homeserver_image.image, engine_id)
    assert hs["registration"] == "open registration (m.login.dummy)"
    assert hs["serverName"] == "image-backend.test" and hs["version"].startswith("Synapse ")
    report = result.report
    assert homeserver_image.image in report and engine_id in report
    assert "| Test users registered by | open registration (m.login.dummy) |" in report
    console = (tmp_path / "console.log").read_text(encoding="utf-8")
    assert "test users are registered by open registration (m.login.dummy)" in console

    log = result.dir / hs["log"]
    text = log.read_text(encoding="utf-8")
    assert "Synapse now listening on TCP port 8008" in text, "the container's own log is kept"
    assert text.count("Synapse now listening on TCP port 8008") >= 2, "both starts (before and after the restart)"
    for secret in result.secrets:
        assert secret not in text
    assert image_runs_left(docker_engine, run_tag(tmp_path)) == []


async def test_shared_secret_registration_through_the_image(
        homeserver_image: Built, docker_engine: Engine, run_qa: Any, tmp_path: Path) -> None:
    # The closed-registration variant refuses m.login.dummy; Complement's admin route still makes users.
    result = await run_qa("canary", homeserver="image", homeserver_settings=settings(
        homeserver_image.tags["closed-registration"], run_tag(tmp_path), registration="shared-secret",
        registration_shared_secret="complement"))
    assert result.code == 0, result.summary.get("errors")
    hs = result.summary["environment"]["homeserver"]
    assert hs["registration"] == "shared-secret registration (/_synapse/admin/v1/register)"
    assert "complement" in result.secrets
    assert "complement" not in (result.dir / hs["log"]).read_text(encoding="utf-8")
    assert image_runs_left(docker_engine, run_tag(tmp_path)) == []


# Each condition as a pattern: how long the judgement took is in its words ("exited at once" under 5 s, else "after
# Ns"; "answered HTTP 404 for Ns" from 10 s on), and a loaded machine (or a second suite on the engine) notices later,
# but under 30 s, half the start timeout (DEFAULT_START_TIMEOUT_S, 60 s): a start that polls so rarely it judges only
# near the timeout fails here, not only at the run's whole 90 s bound.
# The wording at each time is qa.homeserver.image_options.judge_start's, checked in tests/unit; here the condition.
@pytest.mark.parametrize(("variant", "condition"), [
    ("exit", r"the container exited (at once|after ([5-9]|[12]\d)s) with exit code 3, before answering "
             r"/_matrix/client/versions"),
    ("no-versions", r"no /_matrix/client/versions: it answered HTTP 404 for ([12]\d)s "),
    ("closed-registration", re.escape("it refuses open registration (registering @mqa-probe-")),
], ids=["exit", "no-versions", "closed-registration"])
def test_an_image_that_breaks_the_contract_is_exit_2_naming_it(
        homeserver_image: Built, docker_engine: Engine, tmp_path: Path, variant: str, condition: str) -> None:
    assert DEFAULT_START_TIMEOUT_S == 60, "the figures in the conditions above are bounded by half of it, 30 s"
    image = homeserver_image.tags[variant]
    t0 = time.monotonic()
    done = cli("run", "--homeserver-image", image, "--homeserver-env", f"{TAG_VARIABLE}={run_tag(tmp_path)}",
               "--scenario", "canary", "--output-dir", str(tmp_path / "out"), "--progress", "plain",
               timeout=BAD_IMAGE_BOUND_S + 60)
    took = time.monotonic() - t0
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    # The evidence first: a run that waited out the start timeout instead says "did not answer ... within 60s".
    contract = f"the homeserver image {re.escape(image)} does not meet Complement's image contract: {condition}"
    assert re.search(contract, output), output
    assert took < BAD_IMAGE_BOUND_S, f"{variant}: {took:.0f}s"
    assert "last lines:" in output and "Traceback" not in output
    log = tmp_path / "out" / "homeserver" / "image.log"
    assert f"its log is saved at {log}" in output and log.stat().st_size > 0
    assert image_runs_left(docker_engine, run_tag(tmp_path)) == []


def test_sigterm_mid_scenario_removes_the_container_and_says_interrupted(
        homeserver_image: Built, docker_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    hang = REPO / "fixtures" / "mock-provider" / "hang.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "run", "--homeserver-image", homeserver_image.image, "--homeserver-env",
         f"{TAG_VARIABLE}={run_tag(tmp_path)}", "--scenario", "canary",
         "--provider-rules", str(hang), "--output-dir", str(out)],
        cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)}, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # ends with the run, so a run that never gets this far fails below
            seen.append(line)
            if "1. send:" in line:
                break
        assert seen and "1. send:" in seen[-1], "".join(seen)
        assert image_runs_left(docker_engine, run_tag(tmp_path)), "the run's container is up while the turn hangs"
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=BAD_IMAGE_BOUND_S)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, rest
    assert "Traceback" not in rest
    assert image_runs_left(docker_engine, run_tag(tmp_path)) == [], "no container outlives the interrupted run"
    assert our_processes(str(tmp_path)) == []
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    assert (summary["status"], summary["exitCode"]) == ("interrupted", 143)
    assert summary["scenarios"][0]["status"] == "interrupted"
