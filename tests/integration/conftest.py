"""Integration tests drive the real pipeline: embedded Synapse, the mock HTTP provider, the bot process.

In-process runs (`run_qa`, `run_in_process`) share one Synapse per session (tests/integration/shared_synapse.py)
and one fork server per bot file (tests/integration/shared_fork_server.py) unless the test is marked
`own_homeserver`: those look at the homeserver's process, log or boot, and get a
Synapse of their own per run, as a user's run does. Runs through the CLI (`cli`) boot their own, unless the test
passes them the shared one (`shared_homeserver_cli`: as a user's own server, by URL) because it does not look at
the homeserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qa.harness.output import Output
from qa.kernel import event_loop
from qa.run import Run, RunOptions
from tests.integration import shared_fork_server
from tests.integration.shared_fork_server import SessionForkServers
from tests.integration.shared_synapse import SessionSynapse, lend_to_runs

REPO = Path(__file__).resolve().parents[2]
# --step-timeout-cap for runs that are expected to fail: a step the bug makes wait out (a reply or trace record that
# never comes) fails after this, at the same step with the same failure, instead of after its 20-30 s. Passing waits
# end early and are untouched: the longest any took in a whole suite run on this 2-core machine at load 15 was under
# 6 s with the mock model, so this leaves them a margin.
MUTANT_STEP_CAP_S = 10.0


@dataclass
class RunResult:
    code: int
    dir: Path
    summary: dict[str, Any]
    secrets: list[str]

    def scenario(self, scenario_id: str) -> dict[str, Any]:
        return next(s for s in self.summary["scenarios"] if s["id"] == scenario_id)

    @property
    def report(self) -> str:
        return (self.dir / "matrix-qa-report.md").read_text(encoding="utf-8")


# The session's shared Synapse while a test that may borrow it runs (set by the autouse fixture below).
_LENDER: list[SessionSynapse] = []
# The session's shared fork servers, lent under the same conditions (tests/integration/shared_fork_server.py).
_FORK_LENDER: list[SessionForkServers] = []


@pytest.fixture(scope="session")
def session_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionSynapse]:
    """Booted by the first run that borrows it; stopped at the end of the session (of this xdist worker)."""
    shared = SessionSynapse(tmp_path_factory.mktemp("session-synapse"))
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture(scope="session")
def session_fork_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionForkServers]:
    """Started by the first run that borrows one; stopped at the end of the session (of this xdist worker)."""
    shared = SessionForkServers(tmp_path_factory.mktemp("session-fork-servers"))
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def shared_homeserver_cli(session_synapse: SessionSynapse) -> tuple[list[str], dict[str, str]]:
    """For a run through the CLI whose test does not look at the homeserver: (flags, environment) that point it
    at the session's Synapse as at a user's own server (`--homeserver-url`, users registered with its shared
    secret, passed in the environment as a user would), so it boots no Synapse of its own. With
    MATRIX_QA_TESTS_OWN_SYNAPSE=1, nothing: the run boots its own, as before the sharing."""
    if os.environ.get("MATRIX_QA_TESTS_OWN_SYNAPSE") == "1":
        return [], {}
    session_synapse.ensure_running()
    return (["--homeserver-url", session_synapse.hs.base_url, "--registration", "shared-secret"],
            {"MATRIX_QA_REGISTRATION_SHARED_SECRET": session_synapse.hs.shared_secret})


@pytest.fixture
def shared_homeserver_pytest(shared_homeserver_cli: tuple[list[str], dict[str, str]]
                             ) -> tuple[list[str], dict[str, str]]:
    """`shared_homeserver_cli` for a pytest session of the plugin: the same server, mode and secret, in the
    plugin's flags (`--matrix-qa-homeserver-url`, `--matrix-qa-registration`); nothing with
    MATRIX_QA_TESTS_OWN_SYNAPSE=1."""
    flags, env = shared_homeserver_cli
    return [flag.replace("--", "--matrix-qa-", 1) if flag.startswith("--") else flag for flag in flags], env


@contextlib.contextmanager
def borrowing(shared: SessionSynapse, forks: SessionForkServers | None = None) -> Iterator[None]:
    """In-process runs inside borrow `shared` (for a fixture wider than a test, which the autouse one is not),
    and the fork servers of `forks`."""
    _LENDER.append(shared)
    if forks is not None:
        _FORK_LENDER.append(forks)
    try:
        yield
    finally:
        _LENDER.pop()
        if forks is not None:
            _FORK_LENDER.pop()


@pytest.fixture(autouse=True)
def _lend_session_synapse(request: pytest.FixtureRequest) -> Iterator[None]:
    # MATRIX_QA_TESTS_OWN_SYNAPSE=1: every run boots its own, as before the sharing (to compare, or rule it out).
    if request.node.get_closest_marker("own_homeserver") or os.environ.get("MATRIX_QA_TESTS_OWN_SYNAPSE") == "1":
        yield
        return
    # MATRIX_QA_TESTS_OWN_FORK_SERVER=1: every run starts its own fork server, as before the sharing.
    forks = None if os.environ.get("MATRIX_QA_TESTS_OWN_FORK_SERVER") == "1" \
        else request.getfixturevalue("session_fork_servers")
    with borrowing(request.getfixturevalue("session_synapse"), forks):
        yield


async def run_in_process(out_dir: Path, console: Path, **options: Any) -> RunResult:
    """One real run in this process (the CLI's code path); progress lines go to `console`. It borrows the
    session's Synapse unless the test is marked `own_homeserver` (see the module notes)."""
    options.setdefault("scenario_paths", [REPO / "scenarios"])
    # The suite's own concurrency: pytest already runs four workers on two cores, so a run that names no --jobs
    # takes 2 (the old default), not the CLI's two per core. More jobs inside a run add no CPU to a suite that
    # is CPU-bound, only more bots contending at once; test_jobs_and_shards runs --jobs 4 on purpose.
    options.setdefault("jobs", 2)
    if _LENDER:
        # The lent session Synapse is one server, as --homeserver-url's is; `auto` would lend that same server
        # once per homeserver it counts (the lent backend is still called "synapse"), and the summary would list
        # one server twice.
        options.setdefault("homeservers", 1)
    run = Run(RunOptions(output_dir=out_dir, **options), Output(stream := console.open("a", encoding="utf-8")))
    try:
        with lend_to_runs(_LENDER[-1]) if _LENDER else contextlib.nullcontext(), \
                shared_fork_server.lend_to_runs(_FORK_LENDER[-1]) if _FORK_LENDER else contextlib.nullcontext():
            code = await run.execute()
    finally:
        stream.close()
    summary = json.loads((out_dir / "matrix-qa-summary.json").read_text())
    return RunResult(code, out_dir, summary, list(run.secrets))


@pytest.fixture
def run_qa(tmp_path: Path):
    """Run matrix-qa in-process on the repo's scenarios; returns the exit code, summary and secrets."""

    async def _run(*ids: str, **options: Any) -> RunResult:
        out_dir = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        return await run_in_process(out_dir, tmp_path / "console.log", scenario_ids=list(ids), **options)

    return _run


def cli(*args: str, cwd: Path = REPO, timeout: float = 300, tmpdir: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would. `tmpdir` becomes its TMPDIR, so its child processes can be found."""
    full_env = {**os.environ, **(env or {})}
    if tmpdir:
        full_env["TMPDIR"] = str(tmpdir)
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=full_env)


def our_processes(marker: str) -> list[str]:
    """Synapse or bot processes whose command line or working directory mentions `marker` (a tmp dir unique to
    the test). A bot forked from the fork server keeps the server's command line (`python -m qa.harness.zygote
    … --serve qa.agent`), so for those the working directory (the scenario's state dir, the server's work dir)
    is what names the run."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if "synapse.app.homeserver" not in line and "qa.agent" not in line:
            continue
        pid = line.split(maxsplit=1)[0]
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile, or not ours to look at
            cwd = ""
        if marker in line or marker in cwd:
            found.append(f"{line} (cwd {cwd})")
    return found


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """In-process runs (`run_qa`, `run_in_process`) on the loop `matrix-qa run` runs on: uvloop where installed,
    asyncio's with MATRIX_QA_HARNESS_LOOP=asyncio (qa.kernel.event_loop), so the suite checks what users run. The
    name is the test's parameter id (`[uvloop]`)."""
    name, factory = event_loop.loop_factory(event_loop.HARNESS_ENV, os.environ)
    return {name: factory or asyncio.new_event_loop}
