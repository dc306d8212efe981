"""Step mutate_bot_state without a homeserver: the bot file's named command, its checks, its skip rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from qa.harness.bot_process import BotUnderTest
from qa.harness.botfile import BotFile
from qa.harness.capabilities import missing, skip_reason
from qa.harness.launch import Launch
from qa.harness.state_mutation import run_state_mutation
from qa.scenario.schema import Scenario

SCRIPT = ("import os, sys, time\n"
          "if sys.argv[2:] == ['hang']: time.sleep(60)\n"
          "open(os.path.join(sys.argv[1], 'mutated'), 'w').write(' '.join(sys.argv[2:]))\n"
          "print('rewound for', os.environ['MATRIX_QA_USER_ID'], 'password', os.environ['MATRIX_QA_PASSWORD'])\n"
          "sys.exit(3 if sys.argv[2:] == ['fail'] else 0)\n")


def _bot(tmp_path: Path, secrets: list[str]) -> BotUnderTest:
    state = tmp_path / "state"
    state.mkdir()
    bot = BotFile(name="b", command=["x"], state_mutations={"rewind": ["{python}", "-c", SCRIPT, "{state_dir}"]})
    env = {"MATRIX_QA_USER_ID": "@bot:qa", "MATRIX_QA_PASSWORD": "pw-very-secret", "PATH": "/usr/bin:/bin"}
    launch = Launch(["x"], env, tmp_path, None, None, values={"python": sys.executable, "state_dir": str(state)})
    return BotUnderTest(bot, launch, tmp_path / "bot.log", tmp_path / "t", tmp_path / "c", secrets)


async def test_the_named_command_runs_with_placeholders_args_and_the_launch_env(tmp_path: Path) -> None:
    bot = _bot(tmp_path, ["pw-very-secret"])
    result = await run_state_mutation(bot, "rewind", ["to", "start"], 10, tmp_path / "m.log", bot.secrets)
    assert result.ok and (tmp_path / "state" / "mutated").read_text() == "to start"
    assert result.tail == ["rewound for @bot:qa password [REDACTED]"]
    log = (tmp_path / "m.log").read_text()
    assert "pw-very-secret" not in log and "$ mutate_bot_state rewind:" in log and "exited with code 0" in log


async def test_a_failing_or_hanging_mutation_is_reported_not_raised(tmp_path: Path) -> None:
    bot = _bot(tmp_path, [])
    failed = await run_state_mutation(bot, "rewind", ["fail"], 10, tmp_path / "m.log", [])
    assert not failed.ok and failed.code == 3
    hung = await run_state_mutation(bot, "rewind", ["hang"], 0.5, tmp_path / "m.log", [])
    assert not hung.ok and hung.code is None
    assert "killed after 0.5s" in (tmp_path / "m.log").read_text()


def _scenario(*steps: dict[str, object]) -> Scenario:
    return Scenario.model_validate({"id": "s", "title": "t", "profiles": ["all"], "steps": list(steps)})


def test_a_mutation_is_allowed_only_while_the_bot_is_stopped() -> None:
    _scenario({"stop_bot": {}}, {"mutate_bot_state": {"mutation": "rewind"}}, {"start_bot": {}})
    for steps in ([{"mutate_bot_state": {"mutation": "rewind"}}],
                  [{"stop_bot": {}}, {"start_bot": {}}, {"mutate_bot_state": {"mutation": "rewind"}}],
                  [{"stop_bot": {}}, {"restart_bot": {}}, {"mutate_bot_state": {"mutation": "rewind"}}]):
        with pytest.raises(ValidationError, match="the bot must be stopped first"):
            _scenario(*steps)


def test_a_bot_without_the_named_mutation_is_skipped_with_the_reason() -> None:
    s = _scenario({"stop_bot": {}}, {"mutate_bot_state": {"mutation": "rewind"}},
                  {"mutate_bot_state": {"mutation": "rewind"}}, {"start_bot": {}})
    assert missing(s, ["restart"], ["rewind"]) == []
    assert skip_reason("b", missing(s, ["restart"], ["other"])) == (
        "skipped: bot 'b' lacks 'state mutation rewind' (step 2 (mutate_bot_state))")
    assert [n.capability for n in missing(s, [], [])] == ["restart", "state mutation rewind"]


def test_bot_file_mutations_are_checked_like_its_command() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        BotFile(name="b", command=["x"], state_mutations={"r": ["{stat_dir}"]})
    with pytest.raises(ValidationError, match="no config_template"):
        BotFile(name="b", command=["x"], state_mutations={"r": ["tool", "{config}"]})
    with pytest.raises(ValidationError):
        BotFile(name="b", command=["x"], state_mutations={"Bad Name": ["tool"]})
    with pytest.raises(ValidationError):
        BotFile(name="b", command=["x"], state_mutations={"r": []})
