"""Bots that misbehave the way real ones do, from the attack on the bot seam (tests/attack): each verdict must
be the true one, never a false pass and never a false fail."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ATTACK = Path(__file__).resolve().parents[1] / "attack"


async def test_a_reply_edited_into_a_wrong_answer_fails(run_qa) -> None:
    result = await run_qa("canary", bot_file=ATTACK / "evil-edit-garbage.yaml")
    assert result.code == 1, result.report
    seen = "\n".join(result.scenario("canary")["failure"]["seen"])
    assert "WRONG ANSWER" in seen, seen
    # Also when the homeserver is slow: the edit is then seen well after the reply, and the room must be watched
    # for as long as the bot's messages take to arrive (this variant passed with a fixed 0.15 s quiet).
    slow = await run_qa(scenario_paths=[ATTACK / "scenarios-slow-send"], bot_file=ATTACK / "evil-edit-garbage.yaml")
    assert slow.code == 1, slow.report
    seen = "\n".join(slow.scenario("attack-canary-slow-send")["failure"]["seen"])
    assert "WRONG ANSWER" in seen, seen


async def test_a_traced_bot_s_edit_sent_after_its_turn_ended_is_judged(run_qa) -> None:
    # A bot with a trace says when every turn ended; its last edit, held 400 ms on its way, reaches the test
    # user's client after that. The final checks wait for the events the trace says were sent (this passed
    # when they ran as soon as the turns ended).
    result = await run_qa(scenario_paths=[ATTACK / "scenarios-slow-send"],
                          bot_file=ATTACK / "evil-trace-edit-late.yaml")
    assert result.code == 1, result.report
    seen = "\n".join(result.scenario("attack-canary-slow-send")["failure"]["seen"])
    assert "WRONG ANSWER" in seen, seen


async def test_a_streamed_answer_is_judged_by_its_final_edit(run_qa) -> None:
    result = await run_qa("canary", bot_file=ATTACK / "evil-edit-stream.yaml")
    assert result.code == 0, result.report


async def test_plain_replies_are_counted_through_the_journal(run_qa) -> None:
    result = await run_qa(scenario_paths=[ATTACK / "scenarios-count"], bot_file=ATTACK / "evil-no-relation.yaml")
    assert result.code == 0, result.report
    steps = result.scenario("attack-reply-count")["steps"]
    assert steps[1]["method"] == "journal"


async def test_a_double_answer_is_counted(run_qa) -> None:
    result = await run_qa(scenario_paths=[ATTACK / "scenarios-count-after"], bot_file=ATTACK / "evil-double.yaml")
    assert result.code == 1, result.report
    assert "2 replies" in "\n".join(result.scenario("attack-reply-count-after")["failure"]["seen"])


async def test_a_bot_writing_only_the_ready_record_is_judged_on_what_it_does(run_qa) -> None:
    result = await run_qa("canary", bot_file=ATTACK / "evil-trace-ready-only.yaml")
    assert result.code == 0, result.report
    assert result.scenario("canary")["steps"][1]["method"] == "relation"


async def test_a_late_unwanted_reply_fails_the_scenario(run_qa) -> None:
    result = await run_qa("matrix-mention-gating", bot_file=ATTACK / "evil-debounce-short.yaml")
    assert result.code == 1, result.report
    scenario = result.scenario("matrix-mention-gating")
    assert any(c["unwantedReplies"] for c in scenario["negativeChecks"]), scenario["negativeChecks"]


async def test_a_crash_is_seen_although_a_helper_keeps_stdout_open(run_qa) -> None:
    result = await run_qa("canary", bot_file=ATTACK / "evil-crash-with-helper.yaml")
    assert result.code == 1
    seen = "\n".join(result.scenario("canary")["failure"]["seen"])
    assert "exited with code 1 unexpectedly" in seen, seen
    # Timed from the step that waits for the reply, not from the run's start: the bot's boot (up to 20 s for a
    # script bot on a loaded machine) is no part of how soon the death is seen.
    waited = result.scenario("canary")["steps"][1]
    assert waited["kind"] == "expect_reply" and waited["durationMs"] < 25_000, "at once, not after the step's time"


async def test_a_bot_that_exits_at_once_says_so(run_qa) -> None:
    result = await run_qa("canary", bot_file=ATTACK / "p-fork-exit.yaml")
    assert result.code == 1
    assert "exited with code 0" in result.scenario("canary")["details"], result.scenario("canary")["details"]


async def test_a_bot_without_a_trace_answering_ignored_messages_is_caught_whenever_it_answers(run_qa) -> None:
    """Issue 28: the answer to an ignored message, whenever it comes, is an unwanted reply. A bot answering in
    order: while the control's model request is not even made, that answer is not taken for the control's (the
    journal ties it to the trigger). A bot answering out of order, after the control's answer: seen by the step
    itself, which watches on after that answer for as long as the bot's turnaround and the model's latency in the
    scenario say an answer could still come (before, the step passed and only the scenario's end caught it)."""
    serial = await run_qa(scenario_paths=[ATTACK / "scenarios-ooo" / "ooo-guess.yaml"],
                          bot_file=ATTACK / "evil-serial-plain.yaml")
    assert serial.code == 1, serial.report
    guess = serial.scenario("attack-ooo-guess")
    seen = "\n".join(guess["failure"]["seen"])
    assert "control reply body" not in seen, seen
    assert guess["negativeChecks"][0]["unwantedReplies"], guess["negativeChecks"]
    assert "carries the model's answer to the trigger" in seen, seen
    concurrent = await run_qa(scenario_paths=[ATTACK / "scenarios-ooo" / "ooo-late.yaml"],
                              bot_file=ATTACK / "evil-concurrent-plain.yaml")
    assert concurrent.code == 1, concurrent.report
    late = concurrent.scenario("attack-ooo-late")
    assert late["status"] == "fail" and late["failure"]["step"] == 2, late
    seen = "\n".join(late["failure"]["seen"])
    assert "carries the model's answer to the trigger (provider journal), after the control's answer" in seen, late
