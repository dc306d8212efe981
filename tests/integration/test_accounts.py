"""Bots of several accounts (issue 33), with an independent bot of two accounts (tests/bots/router_agent_bot.py):
its router hands mentions to its agent account, which answers. It passes the generic canary, mention gating and
thread scenarios (a reply from any of its accounts is the bot's) and one that says `from: agent`; the variant
whose router answers itself fails that one, naming the account that spoke."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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
    # The agent's password and session are secrets of the run like the main account's: in no artifact.
    secrets = [s for s in result.secrets if len(s) >= 16]
    assert len(secrets) >= 4
    for path in result.dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not [s for s in secrets if s in text], path


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


def _environs() -> dict[int, tuple[str, bytes]]:
    """Every process's command line and exec-time environment that we may read (/proc/<pid>/environ)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found[int(proc.name)] = ((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"),
                                         (proc / "environ").read_bytes())
            except OSError:
                continue
    return found


async def test_a_bot_registering_its_agent_with_a_token_only_it_holds(run_qa) -> None:
    """`registration: token`: the bot registers its agent itself (localpart rab-…), which the harness then knows
    as the bot's; the token is in the bot's environment and in no other process's, nor in any artifact."""
    run = asyncio.ensure_future(run_qa("canary", "matrix-thread-follow-up", "router-agent-answers",
                                       scenario_paths=SCENARIOS, bot_file=BOTS / "router-agent-bot-registers.yaml"))
    snapshots = []
    while not run.done():  # bounded by the run's own scenario timeouts
        snapshots.append(_environs())
        await asyncio.wait({run}, timeout=0.1)
    result = run.result()
    assert result.code == 0, result.report
    for scenario_id in ("canary", "matrix-thread-follow-up", "router-agent-answers"):
        spoke = [s["account"] for s in result.scenario(scenario_id)["steps"] if s["kind"] == "expect_reply"]
        assert spoke and all(a.startswith("rab-agent-") for a in spoke), spoke
    # `from: agent` names the account it registered (rab-agent-<hex>): the same scenario as for the bot whose
    # agent the harness made.
    answers = result.scenario("router-agent-answers")["steps"]
    assert "from account 'rab-agent-" in answers[1]["detail"], answers
    tokens = {line.split(b"=", 1)[1] for snap in snapshots for _cmd, environ in snap.values()
              for line in environ.split(b"\0") if line.startswith(b"MATRIX_QA_REGISTRATION_TOKEN=")}
    assert len(tokens) == 3, "one fresh token per scenario, seen in a bot's environment"
    holders = {cmd for snap in snapshots for cmd, environ in snap.values() if any(t in environ for t in tokens)}
    assert holders and all("router_agent_bot.py" in cmd for cmd in holders), holders
    assert {t.decode() for t in tokens} <= set(result.secrets)
    for path in result.dir.rglob("*"):
        if path.is_file():
            assert not [t for t in tokens if t in path.read_bytes()], path


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
