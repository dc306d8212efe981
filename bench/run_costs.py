"""What one run costs the test suite, by the way a test starts it: a pytest module to run on its own.

    python bench/suite_time.py --top 30 -- bench/run_costs.py -p tests.integration.conftest -p no:cacheprovider -n 0

(tests/integration/conftest.py is loaded as a plugin: its session Synapse, fork servers and fixtures, as the
integration tests have them). Each kind runs ROUNDS times after one warm-up run that boots the session's Synapse
and the agent's fork server, so the figures are each kind's own cost, the shared servers already up:
- an in-process run of the canary (`run_qa`, what most integration tests do);
- a CLI run of the canary on the session's Synapse by URL (`cli` + `shared_homeserver_cli`): a new interpreter, the
  harness's imports, an early fork server importing the agent;
- a CLI run of the canary booting its own Synapse (`cli` alone): the above plus an early Synapse's import and boot;
- a CLI refusal (an unknown scenario, exit 2) on the session's Synapse by URL, and the same refusal with
  tests/nothing_early.py's flags (no early Synapse, no early fork server); `matrix-qa --version`;
- the mock provider started as a process of its own (as test_external_and_live's endpoint), then stopped.
suite_time.py prints each test's CPU (its whole process tree, bench/cpu_per_test.py) and wall; this module also
prints one line per test splitting it by process (`split:`, pytest -s shows it; suite_time.py keeps it in its
output): the harness (this process: in-process runs, their test users' clients, the mock provider), the session's
Synapse, the session's fork servers with the bots they forked and reaped, and processes this one started and
reaped (CLI runs with all they started). Not a test: the suite does not collect it (not named test_*.py);
nothing is asserted beyond each run having worked.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, cli
from tests.nothing_early import NOTHING_EARLY

ROUNDS = 3
TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int | None) -> float:
    """user+sys of `pid` and of the children it reaped (/proc/PID/stat), 0 when gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICK


def _split(request: pytest.FixtureRequest) -> dict[str, float]:
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    synapse = request.getfixturevalue("session_synapse")
    forks = request.getfixturevalue("session_fork_servers")
    return {"harness": own.ru_utime + own.ru_stime, "synapse": _tree_cpu(synapse.hs.pid),
            "fork servers + bots": sum(_tree_cpu(s.pid) for s in forks._servers.values()),
            "reaped children": reaped.ru_utime + reaped.ru_stime}


@pytest.fixture(autouse=True)
def _per_process(request: pytest.FixtureRequest) -> Iterator[None]:
    before = _split(request)
    yield
    after = _split(request)
    print(f"\nsplit: {request.node.name}: " + ", ".join(f"{k} {after[k] - before[k]:.2f}" for k in before))


async def test_0_warm_up(run_qa: Any) -> None:
    assert (await run_qa("canary")).code == 0


@pytest.mark.parametrize("i", range(ROUNDS))
async def test_1_in_process_canary(run_qa: Any, i: int) -> None:
    assert (await run_qa("canary")).code == 0


@pytest.mark.parametrize("i", range(ROUNDS))
def test_2_cli_canary_on_the_session_synapse(tmp_path: Path, shared_homeserver_cli: tuple[list[str], dict[str, str]],
                                             i: int) -> None:
    flags, env = shared_homeserver_cli
    proc = cli("run", "--scenario", "canary", *flags, "--output-dir", str(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("i", range(ROUNDS))
def test_3_cli_canary_with_its_own_synapse(tmp_path: Path, i: int) -> None:
    proc = cli("run", "--scenario", "canary", "--output-dir", str(tmp_path / "out"), tmpdir=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("i", range(ROUNDS))
def test_4_cli_refusal_on_the_session_synapse(shared_homeserver_cli: tuple[list[str], dict[str, str]],
                                              i: int) -> None:
    flags, env = shared_homeserver_cli
    assert cli("run", "--scenario", "no-such-scenario", *flags, env=env).returncode == 2


@pytest.mark.parametrize("i", range(ROUNDS))
def test_4b_cli_refusal_starting_nothing_early(i: int) -> None:
    assert cli("run", "--scenario", "no-such-scenario", *NOTHING_EARLY).returncode == 2


@pytest.mark.parametrize("i", range(ROUNDS))
def test_5_cli_version(i: int) -> None:
    assert cli("--version").returncode == 0


@pytest.mark.parametrize("i", range(ROUNDS))
def test_6_mock_provider_process(i: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "qa.provider.mock", "--port", "0", "--api-key", "k" * 24],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("http://")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) is not None
