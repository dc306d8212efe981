"""Exec approvals and restart/resume on a real Synapse, and proof the checks fail on the bugs they guard."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

APPROVALS = ("matrix-approval-exec-metadata-single-event", "matrix-approval-exec-metadata-chunked",
             "matrix-approval-exec-deny", "matrix-approval-reaction-not-allowed", "matrix-approval-in-thread",
             "matrix-approval-expires")
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
    _denied, approved = [r["approvalId"] for r in records if r["type"] == "approval.request"]
    ran = [r["approvalId"] for r in records if r["type"] == "exec.run"]
    assert ran == [approved], "a denied command must never run; the approved one runs once"


async def test_a_bot_without_approvals_fails_the_approval_scenario(run_qa) -> None:
    result = await run_qa("matrix-approval-exec-metadata-single-event", bot_overrides={"approvals.enabled": False})
    assert result.code == 1
    failure = result.scenario("matrix-approval-exec-metadata-single-event")["failure"]
    assert "asks for approval" in failure["expected"]


RAN_ANYWAY = "is in the exec directory: the command ran although the bot said it did not"


async def test_each_approval_scenario_fails_on_the_bug_it_guards(run_qa) -> None:
    """One run, one bug each (the mutations leave each other's scenarios alone). run-denied-exec is the cheat the
    bot's own trace cannot catch: a refused command runs anyway, with no exec.run record, and the room and the
    model are told it did not; only the file in the exec directory gives it away."""
    bugs = ["run-denied-exec", "anyone-approves", "approval-top-level"]
    result = await run_qa("matrix-approval-exec-deny", "matrix-approval-reaction-not-allowed",
                          "matrix-approval-in-thread", "matrix-approval-expires", bot_overrides={"testMutations": bugs})
    assert result.code == 1, result.report
    failures = {s["id"]: s["failure"] for s in result.summary["scenarios"]}
    assert all(s["status"] == "fail" for s in result.summary["scenarios"]), result.report
    # Denied (step 7) and expired (step 6): every check on the bot's word passed before the directory was seen.
    for scenario_id, step in (("matrix-approval-exec-deny", 7), ("matrix-approval-expires", 6)):
        failure = failures[scenario_id]
        assert (failure["stepKind"], failure["step"]) == ("expect_exec_file", step), failure
        assert failure["seen"][0].endswith(RAN_ANYWAY), failure
        trace = (result.dir / f"scenarios/{scenario_id}/bot-trace.jsonl").read_text()
        ran = [json.loads(line) for line in trace.splitlines() if json.loads(line)["type"] == "exec.run"]
        assert ran == [], "the cheat leaves no exec.run record"
    # The observer's ✅ decided the request: the ignored record never came.
    outsider = failures["matrix-approval-reaction-not-allowed"]
    assert (outsider["stepKind"], outsider["step"]) == ("expect_trace", 4), outsider
    # The request went to the top level: the pending check sees each chunk out of the thread.
    thread = failures["matrix-approval-in-thread"]
    assert (thread["stepKind"], thread["step"]) == ("expect_approval", 3), thread
    assert any(line.endswith("is at the top level, not in the thread on " + line.rsplit(" ", 1)[-1])
               for line in thread["seen"]), thread


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


async def test_a_bot_that_never_resumes_the_crashed_turn_fails(run_qa) -> None:
    # The model call is held until after the restart (fixtures/mock-provider/crash.yaml): the killed process can
    # never have answered first, however slow the machine (with the old fixed 1.5 s latency it could, and a bot
    # that never resumes then passed). The restarted bot never asks again, so nothing is held to release.
    result = await run_qa("matrix-crash-mid-turn", bot_overrides={"testMutations": ["no-resume"]})
    assert result.code == 1
    failure = result.scenario("matrix-crash-mid-turn")["failure"]
    assert (failure["stepKind"], failure["step"]) == ("release_hold", 4), failure
    assert "held under 'crash'" in failure["expected"], failure


async def test_a_bot_that_forgets_its_state_answers_twice_and_fails(run_qa) -> None:
    result = await run_qa("matrix-restart-catchup-dedupe", bot_overrides={"forgetStateOnStart": True})
    assert result.code == 1
    failure = result.scenario("matrix-restart-catchup-dedupe")["failure"]
    assert failure["expected"] == "exactly 1 bot reply to 'old'"
    assert failure["seen"][0].startswith("2 replies")
