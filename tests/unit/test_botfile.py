"""Bot files: what a bot author writes, and the one-line errors they get for what is wrong in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.errors import ConfigError
from qa.harness.botfile import builtin_bot_file, check_overrides, check_runnable, command_bot_file, load_bot_file


def _write(tmp_path: Path, text: str, name: str = "bot.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_bot_file_defaults_to_joined_readiness(tmp_path: Path) -> None:
    bot = load_bot_file(_write(tmp_path, 'name: my-bot\ncommand: ["python", "-m", "mybot"]\n'))
    assert bot.name == "my-bot"
    assert bot.ready.kind == "joined"
    assert bot.capabilities == []
    assert bot.directory == tmp_path.resolve()
    assert not bot.has("trace")


def test_full_bot_file(tmp_path: Path) -> None:
    (tmp_path / "mybot.ini.j2").write_text("[x]\n")
    bot = load_bot_file(_write(tmp_path, """
name: my-bot
command: ["python", "-m", "mybot", "--config", "{config}"]
env: {MYBOT_LOG: debug, MYBOT_STATE: "{state_dir}"}
config_template: mybot.ini.j2
ready: {log: "Starting sync loop", timeout: 5}
capabilities: [threads, restart]
"""))
    assert bot.ready.kind == "log" and bot.ready.timeout == 5
    assert bot.template_path() == tmp_path.resolve() / "mybot.ini.j2"
    assert bot.config_file_name() == "mybot.ini"
    assert bot.has("threads") and bot.has("restart") and not bot.has("e2ee")


def test_trace_readiness_is_no_claim_to_the_rest_of_the_trace(tmp_path: Path) -> None:
    # Every trace record is optional: a bot that writes only `ready` is judged on what the harness sees.
    bot = load_bot_file(_write(tmp_path, "name: b\ncommand: [x]\nready: {trace: true}\n"))
    assert not bot.has("trace")
    claimed = load_bot_file(_write(tmp_path, "name: b\ncommand: [x]\nready: {trace: true}\ncapabilities: [trace]\n"))
    assert claimed.has("trace")


@pytest.mark.parametrize(("text", "expected"), [
    ("name: b\n", "command"),
    ("name: b\ncommand: []\n", "command"),
    ("name: b\ncommand: [x]\ncapabilities: [telepathy]\n", "capabilities[0]"),
    ("name: b\ncommand: [x]\nready: {}\n", "exactly one condition"),
    ("name: b\ncommand: [x]\nready: {trace: true, joined: true}\n", "exactly one condition"),
    ("name: b\ncommand: [x]\nready: {log: '(unclosed'}\n", "not a valid regular expression"),
    ("name: b\ncommand: ['{confg}']\n", "unknown placeholder {confg}"),
    ("name: b\ncommand: [x]\ncomand: [y]\n", "comand: unknown field"),
    ("name: b\ncommand: [x]\nconfig_template: missing.j2\n", "does not exist"),
    ("name: 'has space'\ncommand: [x]\n", "name"),
    ("- not a mapping\n", "a bot file is a mapping"),
    ("name: b\ncommand: [x\n", "YAML syntax error"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nname: b\ncommand: *b\n", "aliases/anchors are not allowed"),
    ("name: b\ncommand: [x]\nready: {log: 'a{99999999999}'}\n", "not a valid regular expression"),
    ("name: b\ncommand: [x]\nenv: {OPENAI_BASE_URL: 'https://api.example/v1'}\n", "belong to the launch contract"),
    ("name: b\ncommand: [x, '{config}']\n", "no config_template"),
    ("name: b\ncommand: [x]\nconfig_format: json\n", "config_format needs a config_template"),
    ("name: b\ncommand: [x]\noverrides_check: 'no_such_module_here:f'\n", "cannot load it"),
    ("name: b\ncommand: [x]\noverrides_check: 'qa.run:Run'\n", "is not a function"),
    ("name: b\ncommand: [x]\noverrides_check: 'qa.run:nothing_by_this_name'\n", "cannot load it"),
])
def test_bad_bot_files_are_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_errors_name_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: b\ncommand: [x]\nready:\n  log: '(bad'\n")
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert f"{path}:4:" in str(err.value)


def test_missing_bot_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read bot file"):
        load_bot_file(tmp_path / "nope.yaml")


def test_bot_command_shortcut() -> None:
    bot = command_bot_file("python -m mybot --verbose 'two words'")
    assert bot.command == ["python", "-m", "mybot", "--verbose", "two words"]
    assert bot.ready.kind == "joined"
    assert bot.capabilities == []
    with pytest.raises(ConfigError, match="empty"):
        command_bot_file("   ")
    with pytest.raises(ConfigError, match="cannot split"):
        command_bot_file("python 'unterminated")


def test_the_embedded_agent_is_a_bot_file_with_every_capability() -> None:
    bot = builtin_bot_file()
    assert bot.name == "matrix-qa-agent"
    assert bot.ready.kind == "trace"
    assert set(bot.capabilities) == {"trace", "threads", "restart", "approvals", "e2ee", "reactions", "policy",
                                     "lock"}
    assert bot.template_path() is not None and bot.template_path().is_file()
    assert bot.config_format == "json"


def test_a_checker_that_breaks_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{}")
    bot = load_bot_file(_write(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\nconfig_format: json\n"
                                         "overrides_check: 'builtins:print'\n"))
    with pytest.raises(ConfigError, match="failed on the --bot-set values: TypeError"):
        check_overrides(bot, {"a": 2})


def test_check_runnable(tmp_path: Path) -> None:
    missing = load_bot_file(_write(tmp_path, "name: b\ncommand: [no-such-program-mqa]\n"))
    with pytest.raises(ConfigError, match="'no-such-program-mqa' is not an executable on PATH"):
        check_runnable(missing, {"PATH": "/usr/bin:/bin"})
    check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: ['{python}', bot.py]\n")), {"PATH": ""})
    check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: [sh, -c, 'true']\n")), {"PATH": "/usr/bin:/bin"})
    bad_cwd = load_bot_file(_write(tmp_path, "name: b\ncommand: [sh]\ncwd: nowhere\n"))
    with pytest.raises(ConfigError, match="cwd: nowhere is not a directory"):
        check_runnable(bad_cwd, {"PATH": "/usr/bin:/bin"})
    check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: [sh]\ncwd: '{state_dir}'\n")),
                   {"PATH": "/usr/bin:/bin"})
