"""Flakes measured and a deadline for the whole run, on the real pipeline (Synapse, mock provider, the bot).

The flaky scenario is flaky on purpose: a mock rule answers every other matching request wrongly, so the right
pass rate is known in advance (2 of 4 → 50 %)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.conftest import cli, our_processes, run_in_process
from tests.nothing_early import NOTHING_EARLY

pytestmark = pytest.mark.integration

# The wrong answer comes at once, and the embedded agent never edits an answer (no streaming here), so
# `reply_edit_wait_s=0` fails a wrong one at once, with the same failure, instead of waiting out the step's time
# for an edit (16 of the test's 19 s with 8 s); the step's 30 s bound the right answer only, which takes ~0.2 s quiet
# and came later than 6 s in a loaded suite (tests/integration/conftest.py): 8 s was too near.
FLAKY_SCENARIO = """\
id: {id}
title: Echoes the marker ({id})
profiles: [test-only]
timeout: 60s
steps:
  - send: {{as: driver, mention: bot, body: "{verb}: {{token}}", id: ask}}
  - expect_reply: {{to: ask, body: "{{token}}", top_level: true{limit}}}
"""
# The run's deadline in the deadline test: long enough for a-quick's whole run (its own Synapse's boot, the bot's,
# one answer) on a loaded machine, where a bot's boot alone took up to 20 s (test_attack_bots); shorter than b-stalls'
# 60 s, which it must cut. 20 s left a-quick's finishing to the machine's load.
DEADLINE = "40s"
RULES = """\
rules:
  - name: flaky-marker
    every: 2
    match: {latest_user: "reply with only this exact marker"}
    reply: {text: "not the marker"}
  - name: stall
    match: {latest_user: "slow reply with marker"}
    reply: {text: "never sent"}
    hold: true
"""


def _library(tmp_path: Path, **scenarios: str) -> tuple[Path, Path]:
    lib = tmp_path / "scenarios"
    lib.mkdir()
    for sid, verb in scenarios.items():
        # A stalled model is waited for 60 s, as long as the scenario lasts, past the run's 40 s deadline, so only
        # the deadline ends it (without a timeout of its own the step would get the default 30 s, which ends it
        # before the deadline whenever its wait starts within 10 s of the run's start, as it does on a quiet machine).
        limit = ", timeout: 60s" if verb.startswith("slow") else ", timeout: 30s"
        (lib / f"{sid}.yaml").write_text(FLAKY_SCENARIO.format(id=sid, verb=verb, limit=limit), encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    return lib, rules


async def test_repeat_measures_the_pass_rate_of_a_scenario_flaky_on_purpose(tmp_path: Path) -> None:
    lib, rules = _library(tmp_path, **{"flaky-echo": "reply with only this exact marker"})
    result = await run_in_process(tmp_path / "out", tmp_path / "console.log", scenario_paths=[lib],
                                  scenario_ids=["flaky-echo"], provider_rules=[rules], repeat=4, jobs=1,
                                  min_pass_rate=0.5, reply_edit_wait_s=0)
    record = result.scenario("flaky-echo")
    rate = record["passRate"]
    assert [a["status"] for a in rate["attempts"]] == ["pass", "fail", "pass", "fail"], record["details"]
    assert (rate["passed"], rate["finished"], rate["passRate"], rate["flaky"]) == (2, 4, 0.5, True)
    # 50 % meets --min-pass-rate 0.5: the scenario, the run's verdict and the exit code all say pass.
    assert (record["status"], result.summary["status"], result.code) == ("pass", "pass", 0)
    assert result.summary["counts"]["flaky"] == 1 and result.summary["repeat"] == 4
    # Fresh users and rooms each time: four bots, four rooms, each attempt's own artifacts and journal scope.
    events = json.loads((result.dir / "matrix-qa-observed-events.json").read_text())
    events = events["events"] if isinstance(events, dict) else events
    rooms = {e["scenario"]: e.get("roomId") or e.get("room_id") for e in events}
    assert sorted(rooms) == [f"flaky-echo~{k}" for k in range(1, 5)] and len(set(rooms.values())) == 4
    journal = json.loads((result.dir / "provider-journal.json").read_text())
    entries = journal["entries"] if isinstance(journal, dict) else journal
    chats = [e for e in entries if str(e.get("path", "")).endswith("/chat/completions")]
    assert [e["rule"] for e in chats] == ["exact-marker", "flaky-marker"] * 2
    assert len({e["path"] for e in chats}) == 4
    for k in range(1, 5):
        assert (result.dir / "scenarios" / f"flaky-echo~{k}" / "bot.log").is_file()
    assert "| `flaky-echo` | 2 of 4 | 50 % | ✅ pass | ⚠️ flaky | ✅ ❌ ✅ ❌ |" in result.report
    case = ET.parse(result.dir / "junit.xml").getroot().find("testcase")
    assert case is not None and {p.get("name"): p.get("value") for p in case.iter("property")}["flaky"] == "true"


def test_a_run_past_its_deadline_stops_everything_and_says_what_finished(tmp_path: Path) -> None:
    lib, rules = _library(tmp_path, **{"a-quick": "reply with only this exact marker", "b-stalls": "slow reply with "
                                       "marker", "c-never": "reply with only this exact marker"})
    out = tmp_path / "out"
    # a-quick is answered (the first match of the every-other rule falls through to the marker echo), b-stalls
    # waits on a model that never answers, and c-never is still queued when the deadline passes.
    done = cli("run", "--no-builtin-scenarios", "--scenarios-dir", str(lib), "--profile", "test-only", "--jobs", "1",
               "--provider-rules", str(rules), "--timeout", DEADLINE, "--output-dir", str(out), tmpdir=tmp_path,
               timeout=150)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"deadline: the run's --timeout of {DEADLINE} passed; stopping every process" in done.stderr
    assert our_processes(str(tmp_path)) == []
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    assert (summary["status"], summary["exitCode"]) == ("error", 2)
    statuses = {s["id"]: s["status"] for s in summary["scenarios"]}
    assert statuses == {"a-quick": "pass", "b-stalls": "interrupted", "c-never": "skip"}
    assert summary["deadline"] == {"timeout": DEADLINE, "timeoutMs": 40000.0, "reached": True,
                                   "finished": ["a-quick"], "unfinished": ["b-stalls", "c-never"]}
    assert [e["component"] for e in summary["errors"]] == ["deadline"]
    report = (out / "matrix-qa-report.md").read_text()
    assert f"--timeout {DEADLINE}: reached; every process stopped; 1 finished, 2 did not" in report
    # What the deadline left undone is what --rerun-failed picks up.
    # A refusal before a homeserver or a bot is needed: NOTHING_EARLY (tests/nothing_early.py), as test_canary's
    # refusals, so it starts importing neither a Synapse nor the agent only to stop them (the deadline's run above
    # has its own Synapse: it must stop it).
    again = cli("run", "--rerun-failed", str(out / "matrix-qa-summary.json"), "--scenario", "a-quick",
                *NOTHING_EARLY)
    assert again.returncode == 2 and "not both" in again.stderr
