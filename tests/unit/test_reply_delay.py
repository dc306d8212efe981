""""Does not delay", measured (issue 27): a reply's latency against a baseline reply of the same scenario
(qa.evidence.replies.delay_problems), and the expect_reply option that asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.agent.policy import BOT_SENDER_BLOCKED, CORRECT, Inbound, Mutations, RoomPolicy, decide
from qa.evidence.replies import delay_problems
from qa.scenario.loader import ScenarioErrors, load_scenario


def test_within_the_slack_is_in_time_and_beyond_it_is_a_delay() -> None:
    assert delay_problems(2400.0, 400.0, "baseline", 2000.0) == []
    assert delay_problems(100.0, 400.0, "baseline", 0.0) == []  # faster than the baseline is fine
    assert delay_problems(2401.0, 400.0, "base", 2000.0) == [
        "the reply took 2401 ms, the baseline 'base' 400 ms: 2001 ms slower, more than the 2000 ms slack"]


def test_a_baseline_without_a_latency_is_said_not_passed() -> None:
    assert delay_problems(1.0, None, "b", 2000.0) == ["the reply 'b' has no measured latency to compare with"]


HEAD = """id: s
title: t
profiles: [fast]
steps:
  - send: {as: driver, mention: bot, body: a, id: a}
  - expect_reply: {to: a, id: base}
  - send: {as: driver, mention: bot, body: b, id: b}
"""


def test_no_slower_than_loads_with_a_default_slack(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "  - expect_reply: {to: b, no_slower_than: base}\n"
                           "  - expect_reply: {to: b, no_slower_than: base, slack: 500ms}\n", encoding="utf-8")
    steps = load_scenario(path).steps
    assert (steps[3].no_slower_than, steps[3].slack) == ("base", 2.0)  # type: ignore[union-attr]
    assert steps[4].slack == 0.5  # type: ignore[union-attr]


@pytest.mark.parametrize(("step", "says"), [
    ("{to: b, no_slower_than: a}", "no_slower_than"),  # a sent message, not a reply
    ("{to: b, no_slower_than: later}", "later"),
    ("{to: b, no_slower_than: base, slack: soon}", "slack"),
])
def test_bad_no_slower_than_names_file_and_line(tmp_path: Path, step: str, says: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + f"  - expect_reply: {step}\n", encoding="utf-8")
    with pytest.raises(ScenarioErrors) as caught:
        load_scenario(path)
    assert f"{path}:8:" in str(caught.value) and says in str(caught.value), str(caught.value)


def test_known_bots_ignored_treats_a_blocked_bot_as_a_person() -> None:
    bot_says = Inbound("$e", "!r", "@other-bot:hs", "m.text", "hi", mentioned=False)
    policy = RoomPolicy(require_mention=False, allow_bots="off", known_bots=frozenset({"@other-bot:hs"}))
    assert decide(bot_says, "@bot:hs", policy, CORRECT).reason == BOT_SENDER_BLOCKED
    assert decide(bot_says, "@bot:hs", policy, Mutations(known_bots_ignored=True)).accept
