"""Bots of several accounts (issue 33), with an independent bot of two accounts (tests/bots/router_agent_bot.py):
its router hands mentions to its agent account, which answers. It passes the generic canary, mention gating and
thread scenarios (a reply from any of its accounts is the bot's) and one that says `from: agent`; the variant
whose router answers itself fails that one, naming the account that spoke."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qa.shared.redact import scan_for_secrets
from tests.integration.proc_watch import (
    bot_processes,
    environs,
    started_by,
    still_running,
    watched,
    watched_with_parents,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOTS = REPO / "tests" / "bots"
SCENARIOS = [REPO / "scenarios", BOTS / "router-scenarios"]
GENERIC = ["canary", "matrix-mention-gating", "matrix-thread-follow-up"]


async def test_a_router_and_its_agent_pass_and_the_report_names_the_agent(run_qa) -> None:
    result = await run_qa(*GENERIC, "router-agent-answers", bot_file=BOTS / "router-agent-bot.yaml",
                          scenario_paths=SCENARIOS)
    assert result.code == 0, result.report
    for scenario_id in [*GENERIC, "router-agent-answers"]:
        scenario = result.scenario(scenario_id)
        assert scenario["status"] == "pass", scenario
        spoke = {step["account"] for step in scenario["steps"] if step["kind"] == "expect_reply"}
        assert spoke <= {"agent"}, scenario  # never the router, in every scenario that checked a reply
    answers = result.scenario("router-agent-answers")["steps"]
    assert [s["account"] for s in answers if s["kind"] == "expect_reply"] == ["agent", "agent"]
    assert "from account 'agent'" in answers[1]["detail"]
    line = next(x for x in result.report.splitlines() if x.startswith("Which of the bot's accounts answered: "))
    assert "`canary` step 2 agent" in line and "`router-agent-answers` step 2 agent, step 5 agent" in line
    # The HTML page and the JUnit XML say it too.
    html = (result.dir / "matrix-qa-report.html").read_text()
    assert "<code>router-agent-answers</code> step 2 agent, step 5 agent" in html
    junit = (result.dir / "junit.xml").read_text()
    assert "the bot's accounts that answered: step 2 agent, step 5 agent" in junit
    # The agent's password and session are secrets of the run like the main account's: in no artifact.
    secrets = [s for s in result.secrets if len(s) >= 16]
    assert len(secrets) >= 4
    assert scan_for_secrets(result.dir, secrets) == []


async def test_a_router_that_answers_itself_fails_naming_the_account(run_qa) -> None:
    result = await run_qa("router-agent-answers", bot_file=BOTS / "router-agent-bot-router-answers.yaml",
                          scenario_paths=SCENARIOS)
    assert result.code == 1, result.report
    failure = result.scenario("router-agent-answers")["failure"]
    assert failure["step"] == 2 and failure["stepKind"] == "expect_reply"
    said = "the reply came from the bot's account 'bot' (@mqa-bot-router-agent-answers-"
    assert any(line.startswith(said) and "expected its account 'agent' (@mqa-bot.agent-" in line
               for line in failure["seen"]), failure
    assert "the reply came from the bot's account 'bot'" in result.report


async def test_a_bot_registering_its_agent_with_a_token_only_it_holds(run_qa) -> None:
    """`registration: token`: the bot registers its agent itself (localpart rab-…), which the harness then knows
    as the bot's; the token is in the bot's environment and in no other process's, nor in any artifact."""
    result, looks = await watched_with_parents(run_qa("canary", "matrix-thread-follow-up", "router-agent-answers",
                                                      scenario_paths=SCENARIOS,
                                                      bot_file=BOTS / "router-agent-bot-registers.yaml"))
    snapshots = [snap for snap, _parent in looks]
    assert result.code == 0, result.report
    for scenario_id in ("canary", "matrix-thread-follow-up", "router-agent-answers"):
        spoke = [s["account"] for s in result.scenario(scenario_id)["steps"] if s["kind"] == "expect_reply"]
        assert spoke and all(a.startswith("rab-agent-") for a in spoke), spoke
    # `from: agent` names the account it registered (rab-agent-<hex>): the same scenario as for the bot whose
    # agent the harness made.
    answers = result.scenario("router-agent-answers")["steps"]
    assert "from account 'rab-agent-" in answers[1]["detail"], answers
    # This run's bots (other runs on the machine hand their own bots tokens of their own): one fresh token each.
    ours = bot_processes(snapshots, result.summary["runId"])
    tokens = {line.split(b"=", 1)[1] for snap in snapshots for pid, (_cmd, environ) in snap.items() if pid in ours
              for line in environ.split(b"\0") if line.startswith(b"MATRIX_QA_REGISTRATION_TOKEN=")}
    assert len(tokens) == 3, "one fresh token per scenario, seen in a bot's environment"
    # The bot, or a process it started (the openai SDK runs `uname -p` for its platform headers, a child that
    # inherits the bot's environment): nothing the harness runs holds them.
    holders = {(pid, cmd): pid in ours and started_by(pid, parent, snap, "router_agent_bot.py")
               for snap, parent in looks for pid, (cmd, environ) in snap.items() if any(t in environ for t in tokens)}
    assert holders and all(holders.values()), holders
    assert {t.decode() for t in tokens} <= set(result.secrets)
    assert scan_for_secrets(result.dir, [t.decode() for t in tokens]) == []


async def test_a_router_that_answers_itself_fails_when_the_agent_is_one_it_registered(run_qa) -> None:
    """`from: agent` with an agent the bot registered itself: the router's reply fails, naming both accounts."""
    result = await run_qa("router-agent-answers", bot_file=BOTS / "router-agent-bot-registers-router-answers.yaml",
                          scenario_paths=SCENARIOS)
    assert result.code == 1, result.report
    failure = result.scenario("router-agent-answers")["failure"]
    assert failure["step"] == 2 and failure["stepKind"] == "expect_reply"
    said = "the reply came from the bot's account 'bot' (@mqa-bot-router-agent-answers-"
    assert any(line.startswith(said) and "expected its account 'agent' (one it registered itself: @rab-agent…)"
               in line for line in failure["seen"]), failure


async def test_a_bot_of_two_accounts_killed_mid_turn_fails_naming_its_death_and_leaks_neither_session(
        run_qa) -> None:
    """The whole bot (router and agent in one process) SIGKILLed while the agent's model request is out: the
    scenario fails at once naming the death and the bot's log, nothing it ran is left, and neither account's
    password or session reaches an artifact."""
    result, snapshots = await watched(run_qa("canary", bot_file=BOTS / "router-agent-bot-die-mid-turn.yaml"))
    assert result.code == 1, result.report
    assert result.summary["status"] == "fail"
    canary = result.scenario("canary")
    assert canary["status"] == "fail" and canary["failure"]["stepKind"] == "expect_reply", canary
    seen = "\n".join(canary["failure"]["seen"])
    assert "killed by SIGKILL unexpectedly" in seen and "bot.log" in seen, seen
    assert "deliberate bug enabled: die-mid-turn" in seen, "the log tail is shown"
    assert canary["durationMs"] < 30_000, "not the scenario's 60 s timeout"
    ran = bot_processes(snapshots, result.summary["runId"])
    assert any("router_agent_bot.py" in cmd for cmd in ran.values()), ran
    assert still_running(ran) == []
    secrets = [s for s in result.secrets if len(s) >= 16]
    assert len(secrets) >= 4, "both accounts' password and session"
    assert scan_for_secrets(result.dir, secrets) == []


def test_sigterm_while_the_harness_mints_the_registration_token(tmp_path: Path) -> None:
    """`matrix-qa run` SIGTERMed while it mints the bot's registration token (held there by
    tests/integration/held_mint.py, so the signal lands in the minting every time): exit 143, the run and its
    scenario `interrupted`, the token in no artifact and no process, nothing left running, the temp dir gone."""
    from tests.integration.conftest import REPO, our_processes
    from tests.integration.held_mint import HELD

    out, token_file = tmp_path / "out", tmp_path / "minted-token"
    env = {**os.environ, "TMPDIR": str(tmp_path), "HELD_MINT_TOKEN_FILE": str(token_file)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.held_mint", "run", "--scenario", "canary",
                             "--bot", str(BOTS / "router-agent-bot-registers.yaml"), "--output-dir", str(out)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # ends when the run does, so a run that never mints fails below
        seen.append(line)
        if HELD in line:
            break
    assert seen and HELD in seen[-1], "".join(seen)
    token = token_file.read_text()
    assert len(token) >= 16
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=90)[1]
    assert proc.returncode == 143, rest
    assert "Traceback" not in rest and token not in rest and token not in "".join(seen)
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["exitCode"] == 143, summary
    canary = summary["scenarios"][0]
    assert canary["id"] == "canary" and canary["status"] == "interrupted", canary
    assert "SIGTERM received" in canary["details"], canary
    assert scan_for_secrets(out, [token]) == []
    assert not [cmd for cmd, environ in environs().values() if token.encode() in environ]
    assert our_processes(str(tmp_path)) == []
    assert sorted(tmp_path.glob("matrix-qa-*")) == [], "the temp dir with the homeserver's secrets is gone"
