"""A traced bot's messages that its trace does not account for, after a message it traced as ignored (docs/
trace-format.md, "Untraced messages"): an answer hidden behind a quote of the question, an answer that is word for
word the question (an echo bot, say "{text}"), more answers than the sends traced without an event id, fail; an
honest bot that quotes the question stays green, or NOT CHECKED when its quote cannot be told from an answer; a
thread answer naming no event is not a second answer to the thread's root. Every buggy bot here passed on main
(exit 0), and the thread-no-fallback bot failed there (the root counted 2 replies)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import run_in_process

pytestmark = pytest.mark.integration

BOTS = Path(__file__).resolve().parents[1] / "bots"
GATING = "matrix-mention-gating"


async def test_an_answer_after_a_quote_of_the_ignored_command_fails(run_qa) -> None:
    result = await run_qa(GATING, bot_file=BOTS / "mautrix-command-bot-quoted-answer-ignored.yaml")
    scenario = result.scenario(GATING)
    assert result.code == 1 and scenario["status"] == "fail", (result.code, scenario["details"])
    assert "the bot answered 'unmentioned' in 1 message(s) relating to nothing that its trace does not account " \
        "for" in scenario["details"], scenario["details"]


async def test_an_echo_bots_untraced_answer_word_for_word_fails(run_qa) -> None:
    """say "{text}": the ignored message is its own marker, and so is its answer."""
    result = await run_qa(GATING, bot_file=BOTS / "mautrix-command-bot-bare-late-plain-answer-ignored.yaml")
    scenario = result.scenario(GATING)
    assert result.code == 1 and scenario["status"] == "fail", (result.code, scenario["details"])
    assert "the bot answered 'unmentioned' in 1 message(s) relating to nothing" in scenario["details"], \
        scenario["details"]


async def test_more_untraced_answers_than_sends_traced_without_an_id_fail(run_qa) -> None:
    result = await run_qa(GATING, bot_file=BOTS / "mautrix-command-bot-late-plain-answers-one-unnamed.yaml")
    scenario = result.scenario(GATING)
    assert result.code == 1 and scenario["status"] == "fail", (result.code, scenario["details"])
    assert "the bot answered 'unmentioned' in 2 message(s)" in scenario["details"], scenario["details"]
    assert "(1 traced send(s) without an event id can account for 1 message(s) at most, not all 2)" in \
        scenario["details"], scenario["details"]


async def test_an_honest_notice_quoting_the_ignored_command_passes(run_qa) -> None:
    result = await run_qa(GATING, bot_file=BOTS / "mautrix-command-bot-notice-ignored.yaml")
    scenario = result.scenario(GATING)
    assert result.code == 0 and scenario["status"] == "pass", (result.code, scenario["details"])
    assert "NOT CHECKED" not in scenario["details"], scenario["details"]


async def test_an_echo_bots_notice_quoting_the_ignored_message_is_not_checked(run_qa) -> None:
    """Its quote is the marker itself: 'not answered: T' and 'Sure! T' read alike, so neither pass nor fail."""
    result = await run_qa(GATING, bot_file=BOTS / "mautrix-command-bot-bare-notice-ignored.yaml")
    scenario = result.scenario(GATING)
    assert result.code == 0 and scenario["status"] == "pass", (result.code, scenario["details"])
    assert "NOT CHECKED" in scenario["details"], scenario["details"]
    assert "whether one quotes 'unmentioned' or answers it cannot be told" in scenario["details"], \
        scenario["details"]


THREAD = {
    "id": "bare-thread-follow-up",
    "title": "A follow-up in the root's thread, answered without m.in_reply_to, is no second answer to the root",
    "timeout": "60s",
    "steps": [
        {"send": {"as": "driver", "mention": "bot", "body": "reply with only this exact marker: {token}",
                  "id": "root"}},
        {"expect_reply": {"to": "root", "body": "{token}"}},
        {"send": {"as": "driver", "mention": "bot", "thread": "root",
                  "body": "reply with only this exact marker: {token2}", "id": "follow_up"}},
        {"expect_reply": {"to": "follow_up", "body": "{token2}"}},
        {"expect_reply_count": {"to": "root", "count": 1}},
    ],
}


async def test_a_thread_answer_naming_no_event_after_a_follow_up_is_no_second_answer_to_the_root(tmp_path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "bare-thread-follow-up.yaml").write_text(yaml.safe_dump(THREAD, sort_keys=False), encoding="utf-8")
    bot = BOTS / "mautrix-command-bot-thread-no-fallback.yaml"
    result = await run_in_process(tmp_path / "run", tmp_path / "console.log", scenario_ids=["bare-thread-follow-up"],
                                  scenario_paths=[scenarios], bot_file=bot)
    scenario = result.scenario("bare-thread-follow-up")
    assert result.code == 0 and scenario["status"] == "pass", (result.code, scenario["details"],
                                                                scenario.get("failure"))
