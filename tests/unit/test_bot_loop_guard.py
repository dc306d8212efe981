"""The loop guard (issue 27): two bots that both answer everything stop after `botLoopLimit` answers in a row to
known bots in one conversation (qa.agent.policy.guard_bot_loop), and the step that plays the second bot."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.agent.config import AgentConfig
from qa.agent.policy import ACCEPT, BOT_LOOP, Decision, guard_bot_loop
from qa.scenario.loader import ScenarioErrors, load_scenario

DROP = Decision(False, "mention-required")


def test_bot_answers_count_up_to_the_limit_then_are_dropped() -> None:
    streak, seen = 0, []
    for _ in range(5):
        decision, streak = guard_bot_loop(ACCEPT, True, streak, 3)
        seen.append(decision.reason)
    assert seen == ["accepted", "accepted", "accepted", BOT_LOOP, BOT_LOOP]
    assert streak == 3  # a drop leaves the count where it was
    assert guard_bot_loop(ACCEPT, True, 3, 3)[0] == Decision(False, BOT_LOOP)  # dropped, not just renamed


def test_a_person_resets_the_count_and_a_drop_changes_nothing() -> None:
    assert guard_bot_loop(ACCEPT, False, 3, 3) == (ACCEPT, 0)
    assert guard_bot_loop(DROP, True, 2, 3) == (DROP, 2)
    assert guard_bot_loop(DROP, False, 2, 3) == (DROP, 2)  # a person the bot does not answer resets nothing


def test_no_limit_is_no_guard() -> None:
    assert guard_bot_loop(ACCEPT, True, 1000, None) == (ACCEPT, 1001)


def test_the_limit_defaults_to_three_and_null_turns_it_off() -> None:
    base = {"homeserver": "http://hs", "userId": "@b:hs", "stateDir": "/tmp/s", "rooms": {},
            "model": {"baseUrl": "http://m", "model": "x"}}
    assert AgentConfig.model_validate(base).bot_loop_limit == 3
    assert AgentConfig.model_validate({**base, "botLoopLimit": None}).bot_loop_limit is None
    with pytest.raises(ValueError, match="botLoopLimit"):
        AgentConfig.model_validate({**base, "botLoopLimit": 0})


HEAD = """id: s
title: t
profiles: [fast]
actors: [driver, other]
steps:
  - send: {as: other, body: a, id: a}
"""


def test_answer_every_reply_loads_with_a_default_quiet_window(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "  - answer_every_reply: {as: other, to: a, body: b, max: 5}\n", encoding="utf-8")
    step = load_scenario(path).steps[1]
    assert (step.actor, step.max, step.quiet) == ("other", 5, 3.0)  # type: ignore[union-attr]


@pytest.mark.parametrize(("step", "says"), [
    ("{as: other, to: a, body: b, max: 0}", "max"),
    ("{as: other, to: a, body: b}", "max"),
    ("{as: nobody, to: a, body: b, max: 3}", "nobody"),
    ("{as: other, to: later, body: b, max: 3}", "later"),
    ("{as: other, to: a, body: b, max: 3, quiet: never}", "quiet"),
])
def test_bad_answer_every_reply_names_file_and_line(tmp_path: Path, step: str, says: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + f"  - answer_every_reply: {step}\n", encoding="utf-8")
    with pytest.raises(ScenarioErrors) as caught:
        load_scenario(path)
    assert f"{path}:7:" in str(caught.value) and says in str(caught.value), str(caught.value)
