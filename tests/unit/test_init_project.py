"""`matrix-qa init`: the files it writes load as what they are, questions fill what flags left open, placeholders
when nobody answered, and nothing is ever overwritten."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from qa.cli import main
from qa.cli_run import _standalone, apply_config
from qa.config_file import load_config_file
from qa.harness.botfile import load_bot_file
from qa.init_project import (
    BOT_FILE,
    CONFIG_FILE,
    PLACEHOLDER,
    SAY_QUESTION,
    SCENARIO_FILE,
    WORKFLOW_FILE,
    Answers,
    ask,
    files,
    init,
)
from qa.kernel.errors import ConfigError
from qa.scenario.json_schema import schema_for, schema_text
from qa.scenario.loader import load_scenario

ANSWERS = Answers(name="nio-bot", command=["{python}", "bot.py"], ready_log="^syncing as @",
                  capabilities=["threads", "restart"])


def written(tmp_path: Path, answers: Answers) -> list[str]:
    said: list[str] = []
    assert init(tmp_path, answers, None, said.append) == 0
    return said


def test_every_file_loads_as_what_it_is(tmp_path: Path) -> None:
    said = written(tmp_path, ANSWERS)
    (tmp_path / "bot.py").write_text("")
    bot = load_bot_file(tmp_path / BOT_FILE)
    assert (bot.name, bot.command, bot.ready.log, bot.capabilities) == (
        "nio-bot", ["{python}", "bot.py"], "^syncing as @", ["threads", "restart"])
    scenario = load_scenario(tmp_path / SCENARIO_FILE)
    assert scenario.id == "hello" and scenario.profiles == []
    args = _standalone().parse_args([])
    apply_config(args, [], load_config_file(tmp_path / CONFIG_FILE))
    assert args.bot == tmp_path / BOT_FILE and args.scenarios_dir == [tmp_path / SCENARIO_FILE.parent]
    assert args.no_builtin_scenarios
    workflow = yaml.safe_load((tmp_path / WORKFLOW_FILE).read_text())
    uses = [s.get("uses", "") for s in workflow["jobs"]["matrix-qa"]["steps"]]
    assert any(u.startswith("matrix-qa/matrix-qa@") for u in uses)
    assert said == [*(f"wrote {tmp_path / rel}" for rel in files(ANSWERS)), f"next: cd {tmp_path} && matrix-qa run"]


def test_the_scenario_and_bot_file_name_their_schema_and_meet_it(tmp_path: Path) -> None:
    written(tmp_path, ANSWERS)
    for rel, kind in ((SCENARIO_FILE, "scenario"), (BOT_FILE, "bot")):
        text = (tmp_path / rel).read_text()
        first = text.splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=")
        schema_path = (tmp_path / rel).parent / first.split("=", 1)[1]
        assert schema_path.is_file() and schema_path.read_text() == schema_text(kind)
        jsonschema.validate(yaml.safe_load(text), schema_for(kind))


def test_without_answers_the_files_carry_placeholders_the_run_refuses_by_name(tmp_path: Path) -> None:
    said = written(tmp_path, Answers())
    assert PLACEHOLDER in (tmp_path / BOT_FILE).read_text()
    assert said[-1] == f"next: put your bot's command where {BOT_FILE} says {PLACEHOLDER}, then: cd {tmp_path} && " \
                       "matrix-qa run"
    from qa.harness.botfile import check_runnable

    with pytest.raises(ConfigError, match="command: 'FILL-IN' is not an executable"):
        check_runnable(load_bot_file(tmp_path / BOT_FILE), {"PATH": "/usr/bin"})


def test_nothing_is_overwritten_nor_half_written(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("mine = 1\n")
    with pytest.raises(ConfigError) as err:
        written(tmp_path, ANSWERS)
    assert str(err.value).startswith(f"init writes nothing over existing files: {tmp_path / CONFIG_FILE}")
    assert not (tmp_path / BOT_FILE).exists() and (tmp_path / CONFIG_FILE).read_text() == "mine = 1\n"


def test_questions_fill_what_the_flags_left_open() -> None:
    replies = iter(["python -m mybot --verbose", "^ready$", "threads, e2ee", ""])
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return next(replies)

    got = ask(Answers(), prompt)
    assert (got.command, got.ready_log, got.capabilities) == (
        ["python", "-m", "mybot", "--verbose"], "^ready$", ["threads", "e2ee"])
    assert len(asked) == 4 and asked[3] == SAY_QUESTION
    empty = ask(Answers(), lambda q: "  ")
    assert (empty.command, empty.ready_log, empty.capabilities) == (None, None, [])
    kept = ask(Answers(command=["x"], ready_log="r", capabilities=["trace"], say="!e {text}"),
               lambda q: pytest.fail(q))
    assert (kept.command, kept.ready_log, kept.capabilities, kept.say) == (["x"], "r", ["trace"], "!e {text}")


def test_a_bot_without_a_model_is_asked_for_its_say_command_until_it_holds_the_text_once(tmp_path: Path) -> None:
    replies = iter(["python bot.py", "", "threads", "!echo", "!echo {text} {text}", " !echo {text} "])
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return next(replies)

    said: list[str] = []
    assert init(tmp_path, Answers(), prompt, said.append) == 0
    again = "say needs {text} exactly once: the text the bot is to answer with, e.g. \"!echo {text}\"; again"
    assert asked[3] == SAY_QUESTION and asked[4].startswith(again) and asked[5].startswith(again)
    bot = load_bot_file(tmp_path / BOT_FILE)
    assert bot.say == "!echo {text}" and bot.capabilities == ["threads"] and not bot.has("model")
    # The scenario init writes is say-able: the bot is sent its command with the marker, not the prompt.
    from qa.harness.capabilities import missing

    assert missing(load_scenario(tmp_path / SCENARIO_FILE), bot.abilities()) == []
    # A bot that claims a model is not asked.
    claims = ask(Answers(command=["x"], ready_log="r", capabilities=["model"]), lambda q: pytest.fail(q))
    assert claims.say is None


def test_the_say_flag_is_checked_before_anything_is_written(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path), "--command", "python bot.py", "--say", "!echo"]) == 2
    assert "--say: say needs {text} exactly once" in capsys.readouterr().err
    assert main(["init", str(tmp_path), "--command", "b", "--say", "!e {text}", "--capabilities", "model"]) == 2
    assert "--say is for a bot without a model, and --capabilities names model" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["init", str(tmp_path), "--command", "python bot.py", "--say", "!echo {text}"]) == 0
    assert load_bot_file(tmp_path / BOT_FILE).say == "!echo {text}"
    assert "say:" not in files(ANSWERS)[BOT_FILE]  # a bot with a model: no say line


def test_prompting_happens_only_when_the_command_is_open(tmp_path: Path) -> None:
    said: list[str] = []
    init(tmp_path, Answers(command=["bot"]), lambda q: pytest.fail(q), said.append)
    assert "FILL-IN" not in (tmp_path / BOT_FILE).read_text()


def test_an_unknown_capability_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--capabilities: unknown thredas; known: trace, threads"):
        written(tmp_path, Answers(capabilities=["thredas"]))
    assert not any(tmp_path.iterdir())


def test_the_cli_without_a_terminal_writes_placeholders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path)]) == 0
    assert PLACEHOLDER in (tmp_path / BOT_FILE).read_text()
    assert main(["init", str(tmp_path), "--command", "python bot.py"]) == 2
    assert "init writes nothing over existing files" in capsys.readouterr().err
