"""Exec approvals and restart/resume on a real Synapse, and proof the checks fail on the bugs they guard."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

APPROVALS = ("matrix-approval-exec-metadata-single-event", "matrix-approval-exec-metadata-chunked",
             "matrix-approval-exec-deny")
RESTART = ("matrix-restart-resume", "matrix-restart-catchup-dedupe", "matrix-crash-mid-turn",
           "matrix-homeserver-restart-resume")


async def test_approval_scenarios_pass_with_lock_evidence(run_qa) -> None:
    result = await run_qa(*APPROVALS)
    assert result.code == 0, result.report
    # Waiting for the person's decision is I/O the lock evidence covers, and no hold spans it.
    lock = result.summary["lock"]
    assert lock["verdict"] == "pass" and lock["totalOverlapMs"] == 0
    trace = (result.dir / "scenarios/matrix-approval-exec-deny/bot-trace.jsonl").read_text()
    records = [json.loads(line) for line in trace.splitlines()]
    assert any(r["type"] == "approval.wait.start" for r in records)
    denied, approved = [r["approvalId"] for r in records if r["type"] == "approval.request"]
    ran = [r["approvalId"] for r in records if r["type"] == "exec.run"]
    assert ran == [approved], "a denied command must never run; the approved one runs once"


async def test_a_bot_without_approvals_fails_the_approval_scenario(run_qa) -> None:
    result = await run_qa("matrix-approval-exec-metadata-single-event", bot_overrides={"approvals.enabled": False})
    assert result.code == 1
    failure = result.scenario("matrix-approval-exec-metadata-single-event")["failure"]
    assert "asks for approval" in failure["expected"]


async def test_a_bot_that_runs_a_denied_command_untraced_fails_on_the_exec_file(run_qa) -> None:
    """The cheat the bot's own trace cannot catch: the denied command runs anyway, with no exec.run record, and
    the room and the model are told it did not. Only the file in the exec directory gives it away."""
    result = await run_qa("matrix-approval-exec-deny", bot_overrides={"testMutations": ["run-denied-exec"]})
    assert result.code == 1, result.report
    failure = result.scenario("matrix-approval-exec-deny")["failure"]
    assert failure["stepKind"] == "expect_exec_file", failure
    assert failure["seen"][0].endswith("is in the exec directory: the command ran although the bot said it did not")
    # Every check on the bot's word passed before it: the outcome said denied and no exec.run was traced.
    trace = (result.dir / "scenarios/matrix-approval-exec-deny/bot-trace.jsonl").read_text()
    assert not any(json.loads(line)["type"] == "exec.run" for line in trace.splitlines())


async def test_restart_scenarios_pass(run_qa) -> None:
    result = await run_qa(*RESTART)
    assert result.code == 0, result.report
    crash = result.scenario("matrix-crash-mid-turn")
    assert crash["status"] == "pass"
    trace = (result.dir / "scenarios/matrix-crash-mid-turn/bot-trace.jsonl").read_text()
    records = [json.loads(line) for line in trace.splitlines()]
    resumed = [r for r in records if r["type"] == "turn.start" and r.get("resumedFrom")]
    assert len(resumed) == 1, "the interrupted turn is resumed exactly once after the crash"
    # The crashed bot's transcript lines all parse (the runner fails the scenario otherwise), and are kept.
    assert list((result.dir / "scenarios/matrix-crash-mid-turn/transcripts").glob("*.jsonl"))


async def test_a_bot_that_forgets_its_state_answers_twice_and_fails(run_qa) -> None:
    result = await run_qa("matrix-restart-catchup-dedupe", bot_overrides={"forgetStateOnStart": True})
    assert result.code == 1
    failure = result.scenario("matrix-restart-catchup-dedupe")["failure"]
    assert failure["expected"] == "exactly 1 bot reply to 'old'"
    assert failure["seen"][0].startswith("2 replies")
