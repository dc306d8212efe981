"""The walking skeleton end to end: the canary on a real Synapse through the real mock provider."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from qa.shared.redact import scan_for_secrets
from tests.integration.conftest import REPO, cli, our_processes
from tests.nothing_early import NOTHING_EARLY

pytestmark = pytest.mark.integration

EXPECTED_FILES = [
    "matrix-qa-summary.json",
    "matrix-qa-report.md",
    "matrix-qa-output.log",
    "matrix-qa-observed-events.json",
    "junit.xml",
    "provider-journal.json",
    "scenarios/canary/bot-trace.jsonl",
    "scenarios/canary/bot.log",
    "homeserver/synapse.log",
]


@pytest.mark.own_homeserver  # the homeserver's log among the artifacts, its boot time in the summary
async def test_canary_passes_and_writes_every_artifact(run_qa) -> None:
    result = await run_qa("canary")
    assert result.code == 0, result.report
    for name in EXPECTED_FILES:
        assert (result.dir / name).is_file(), f"missing artifact {name}"
    summary = result.summary
    assert summary["schema"].startswith("matrix-qa.summary/")
    assert summary["status"] == "pass"
    assert summary["counts"] == {"total": 1, "passed": 1, "failed": 0, "skipped": 0, "interrupted": 0, "flaky": 0}
    env = summary["environment"]
    assert env["homeserver"]["kind"] == "synapse" and env["homeserver"]["version"]
    assert env["homeserver"]["serverName"] and env["homeserver"]["baseUrl"].startswith("http://127.0.0.1:")
    assert env["provider"] == {"mode": "mock", "model": "mock-model", "baseUrlHost": env["provider"]["baseUrlHost"]}
    assert summary["timings"]["homeserverBootMs"] > 0 and summary["timings"]["botBootMs"] > 0
    canary = result.scenario("canary")
    assert canary["status"] == "pass" and canary["durationMs"] > 0
    # The bot's reply went through the provider: the journal holds the marker prompt it was asked.
    journal = json.loads((result.dir / "provider-journal.json").read_text())
    assert any("reply with only this exact marker: MQA-" in json.dumps(e["messages"]) for e in journal)
    assert "canary" in result.report and "synapse" in result.report
    # Passwords of the run's users and the homeserver's registration secret never reach an artifact.
    assert len(result.secrets) >= 3
    assert scan_for_secrets(result.dir, result.secrets) == []


async def test_wrong_reply_fails_with_expected_and_seen(run_qa) -> None:
    # The embedded agent does not stream here, so its first reply is its answer: no wait for an edit (the
    # default would wait out the step's 30 s), same failure (--reply-edit-wait).
    result = await run_qa("canary", provider_rules=[REPO / "fixtures/mock-provider/broken-marker.yaml"],
                          reply_edit_wait_s=0)
    assert result.code == 1
    canary = result.scenario("canary")
    assert canary["status"] == "fail"
    failure = canary["failure"]
    assert "MQA-" in failure["expected"]
    assert any("not-the-marker" in line for line in failure["seen"])
    assert "not-the-marker" in result.report and "Expected" in result.report


# The two refusals below come before the run needs a homeserver or a bot: NOTHING_EARLY (tests/nothing_early.py),
# so the run starts importing neither a Synapse nor the agent only to stop them unused.
def test_unknown_scenario_id_exits_2_listing_known_ids() -> None:
    proc = cli("run", "--scenario", "no-such-scenario", *NOTHING_EARLY)
    assert proc.returncode == 2
    assert "no-such-scenario" in proc.stderr and "canary" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invalid_scenario_file_exits_2_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\ntitle: Bad\nprofiles: [fast]\nsteps:\n  - send: {as: driver, bdy: hi}\n")
    proc = cli("run", "--scenarios-dir", str(tmp_path), "--no-builtin-scenarios", "--output-dir", str(tmp_path / "out"),
               *NOTHING_EARLY)
    assert proc.returncode == 2
    assert f"{bad}:5:" in proc.stderr and "bdy" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_homeserver_that_cannot_start_exits_2_naming_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = tmp_path / "out"
        proc = cli("run", "--scenario", "canary", "--homeserver-port", str(port), "--output-dir", str(out),
                   tmpdir=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "synapse" in proc.stderr.lower() and str(port) in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    assert summary["status"] == "error" and summary["errors"][0]["component"] == "homeserver"
    assert (out / "matrix-qa-report.md").exists()
    assert our_processes(str(tmp_path)) == []


# Ctrl-C mid-turn (nothing left, partial results kept) is test_hostile_runs'
# test_a_signal_mid_turn_ends_the_run_honestly[2-130], which makes every check this file's own Ctrl-C run made.
