"""The final checks look at the room as the bot left it (qa.scenario.fence): a bot whose trace says every turn
ended, and which then edits a checked answer into a wrong one, or answers a message it traced as dropped, without
a trace record, fails the scenario naming the late event. The buggy command bots send those events as they shut
down, after every turn.end and after the first look, so only the look after the bot's exit can see them (on main
both scenarios passed)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BOTS = Path(__file__).resolve().parents[1] / "bots"


async def test_an_untraced_edit_after_the_turn_ended_fails_the_scenario(run_qa) -> None:
    result = await run_qa("canary", bot_file=BOTS / "mautrix-command-bot-edit-after-turn.yaml")
    assert result.code == 1, result.report
    canary = result.scenario("canary")
    assert canary["status"] == "fail", canary
    assert all(step["status"] == "pass" for step in canary["steps"]), "every step held at its own time"
    details = canary["details"]
    assert details.startswith("after the bot exited: the bot later edited its reply "), details
    assert "into 'not " in details, details
    seen = canary["failure"]["seen"]
    late = [line for line in seen if line.startswith("late: m.room.message")]
    assert late and "'rel_type': 'm.replace'" in late[0], seen
    assert "after the bot exited" in result.report


async def test_an_untraced_late_answer_to_an_ignored_message_fails_the_scenario(run_qa) -> None:
    result = await run_qa("matrix-mention-gating", bot_file=BOTS / "mautrix-command-bot-late-answer-ignored.yaml")
    assert result.code == 1, result.report
    scenario = result.scenario("matrix-mention-gating")
    assert scenario["status"] == "fail", scenario
    details = scenario["details"]
    assert details.startswith("after the bot exited: the bot answered 'unmentioned' after its check had passed: $"), \
        details
    check = scenario["negativeChecks"][0]
    assert check["unwantedReplies"] and check["unwantedReplies"][0] in details, check
    assert any(line.startswith("late: ") and check["unwantedReplies"][0] in line
               for line in scenario["failure"]["seen"]), scenario["failure"]


async def test_what_the_first_look_missed_stays_not_checked_after_the_fence(run_qa,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence covers the observer's rooms and what the homeserver persisted before it, not a traced send still in
    flight when the bot was stopped: the first look's NOT CHECKED must survive a fence that arrived (the review
    found it erased: the canary said '2 steps passed')."""
    from qa.scenario import runner

    real = runner.late_evidence_in

    async def in_flight(ctx):  # the first look as it would read with a send still in flight
        await real(ctx)
        return "the bot's trace still shows 1 send(s) in flight (preview.edit.start without its end)"

    monkeypatch.setattr(runner, "late_evidence_in", in_flight)
    result = await run_qa("canary")
    canary = result.scenario("canary")
    assert canary["status"] == "pass" and "NOT CHECKED" in canary["details"], canary["details"]
    assert "in flight" in canary["details"], canary["details"]


async def test_an_untraced_plain_late_answer_to_an_ignored_message_fails_the_scenario(run_qa) -> None:
    """No reply relation ties the late answer to the ignored command, only its text (the command's marker): on main
    the scenario passed, since the check of an ignored message counted replies by their relation."""
    result = await run_qa("matrix-mention-gating",
                          bot_file=BOTS / "mautrix-command-bot-late-plain-answer-ignored.yaml")
    assert result.code == 1, result.report
    scenario = result.scenario("matrix-mention-gating")
    assert scenario["status"] == "fail", scenario
    assert all(step["status"] == "pass" for step in scenario["steps"]), "every step held at its own time"
    details = scenario["details"]
    assert details.startswith("after the bot exited: the bot answered 'unmentioned' in 1 message(s) relating to "
                              "nothing that its trace does not account for"), details
    check = scenario["negativeChecks"][0]
    assert check["unwantedReplies"] and check["unwantedReplies"][0] in details, check
    assert any(line.startswith("late: m.room.message") and check["unwantedReplies"][0] in line
               and "relates_to" not in line for line in scenario["failure"]["seen"]), scenario["failure"]


async def test_a_checked_reply_redacted_after_the_turn_fails_the_scenario(run_qa) -> None:
    """The bot takes back the answer the canary's check passed on, as it shuts down: on main the scenario passed."""
    result = await run_qa("canary", bot_file=BOTS / "mautrix-command-bot-redact-after-turn.yaml")
    assert result.code == 1, result.report
    canary = result.scenario("canary")
    assert canary["status"] == "fail", canary
    assert all(step["status"] == "pass" for step in canary["steps"]), "every step held at its own time"
    details = canary["details"]
    assert details.startswith("after the bot exited: the bot redacted its reply $"), details
    assert "to 'ask' ($" in details and "the answer the check passed on is gone" in details, details
    assert any(line.startswith("late: m.room.redaction") for line in canary["failure"]["seen"]), canary["failure"]


async def test_an_untraced_plain_late_message_that_is_not_the_answer_is_not_checked(run_qa) -> None:
    """Neither tied to the ignored command nor ruled out: the final checks say NOT CHECKED, naming it (a pass on
    main said nothing of it)."""
    result = await run_qa("matrix-mention-gating", bot_file=BOTS / "mautrix-command-bot-late-plain-note-ignored.yaml")
    assert result.code == 0, result.report
    scenario = result.scenario("matrix-mention-gating")
    details = scenario["status"], scenario["details"]
    # One 'goodbye' (the bot reads the second command, its id typed before it, as no command): after both.
    assert details[0] == "pass" and "final checks NOT CHECKED: the bot sent 1 message(s) after the first look " \
        "that relate to nothing and that its trace does not account for ($" in details[1], details
    assert "whether one answers 'unmentioned'" in details[1] and "whether one answers 'id_in_body'" in details[1], \
        details


async def test_a_bot_that_cleans_up_its_answer_to_a_redacted_question_passes(run_qa) -> None:
    """The honest counterpart of redact-after-turn: the bot redacts its answer once the driver redacted the question.
    Its redaction is clean-up, not a reply taken back (the first version of the redaction rule failed it)."""
    result = await run_qa("matrix-redaction-not-a-trigger", bot_file=BOTS / "mautrix-command-bot-cleanup.yaml")
    scenario = result.scenario("matrix-redaction-not-a-trigger")
    assert result.code == 0 and scenario["status"] == "pass", (scenario["details"], scenario.get("failure"))
    assert "NOT CHECKED" not in scenario["details"], scenario["details"]
    logs = "".join(p.read_text(encoding="utf-8", errors="replace") for p in result.dir.rglob("*") if p.is_file()
                   and p.suffix in (".log", ".txt", ".jsonl"))
    assert "cleaned up $" in logs, "the bot redacted its answer (its log says so)"
