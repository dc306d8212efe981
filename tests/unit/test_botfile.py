"""Bot files: what a bot author writes, and the one-line errors they get for what is wrong in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.agent.overrides import validate_agent_overrides
from qa.harness.botfile import (
    BotFile,
    ReadySpec,
    builtin_bot_file,
    check_overrides,
    check_runnable,
    command_bot_file,
    load_bot_file,
)
from qa.kernel.errors import ConfigError


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
    ("name: b\ncommand: [x]\nready: {log: '(unclosed'}\n", "invalid regex '(unclosed': missing )"),
    ("name: b\ncommand: ['{confg}']\n", "unknown placeholder {confg}"),
    ("name: b\ncommand: [x]\ncomand: [y]\n", "comand: unknown field"),
    ("name: b\ncommand: [x]\nconfig_template: missing.j2\n", "does not exist"),
    ("name: 'has space'\ncommand: [x]\n", "name"),
    ("- not a mapping\n", "a bot file is a mapping"),
    ("name: b\ncommand: [x\n", "YAML syntax error"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nname: b\ncommand: *b\n", "aliases/anchors are not allowed"),
    ("name: b\ncommand: [x]\nready: {log: 'a{99999999999}'}\n", "a repeat count past the engine's limit"),
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
                                     "lock", "media", "streaming", "verification", "membership", "hot-reload",
                                     "redactions", "markdown", "exec-dir", "agent-wording", "model-timeout",
                                     "room-key-trace"}
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
KNOWN = "(known: {config}, {state_dir}, {trace_file}, {python}, {bot_dir}, {scenario}, {as_port})"
EXACTLY_ONE = "ready: ready needs exactly one condition: {trace: true}, {log: REGEX} or {joined: true}"


# The whole message, file:line:column included: it is all a bot author gets, so its wording is the contract.
@pytest.mark.parametrize(("text", "expected"), [
    ("name: b\ncommand: ['{confg}']\n", f":2:11: command[0]: unknown placeholder {{confg}} {KNOWN}"),
    ("name: b\ncommand: [x]\nready: {log: '(unclosed'}\n",
     ":3:14: ready.log: invalid regex '(unclosed': missing ), unterminated subpattern at position 0"),
    ("name: b\ncommand: [x]\nready: {joined: true, wait: 3}\n", ":3:23: ready.wait: unknown field"),
    ("name: b\ncommand: [x]\nready: {}\n", f":3:8: {EXACTLY_ONE}"),
    ("name: b\ncommand: [x]\nready: {trace: true, joined: true}\n", f":3:8: {EXACTLY_ONE} (got trace, joined)"),
    ("name: b\ncommand: [x]\nready: {log: a, joined: true}\n", f":3:8: {EXACTLY_ONE} (got log, joined)"),
    ("name: b\ncommand: [x]\nready: {log: ''}\n", ":3:14: ready.log: String should have at least 1 character"),
    ("name: b\ncommand: [x]\nready: {joined: true, timeout: 601}\n",
     ":3:32: ready.timeout: Input should be less than or equal to 600"),
    ("name: b\ncommand: [x]\nconfig_template: ''\n",
     ":3:18: config_template: String should have at least 1 character"),
    ("name: b\ncommand: [x]\nconfig_format: toml\n",
     ":3:16: config_format: Input should be 'json' or 'yaml', got 'toml'"),
    ("name: b\ncommand: [x]\nstop_timeout: 121\n", ":3:15: stop_timeout: Input should be less than or equal to 120"),
    ("name: b\ncommand: [x]\n  \ncomand: [y]\n", ":4:1: comand: unknown field"),
    ("name: b\ncommand: [x, '{nope}']\nready:\n  timeout: 0\n  joined: true\n",
     f":2:14: command[1]: unknown placeholder {{nope}} {KNOWN}\n"
     "{path}:4:12: ready.timeout: Input should be greater than 0"),
    ("- not a mapping\n", ": a bot file is a mapping with at least `name` and `command`"),
    ("name: b\ncommand: [x\n", ":3:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"),
    ("a: &a [x]\nname: b\ncommand: *a\n", ": YAML aliases/anchors are not allowed in a bot file"),
    ("name: b\x07\ncommand: [x]\n",
     ":1:8: control character #x0007 is not allowed in YAML (write it as an escape in a double-quoted string if "
     "you mean it)"),
    ("name: b\ncommand: [x]\nconfig_template: missing.j2\n", ": config_template: {dir}/missing.j2 does not exist"),
    # Read through qa.safe_yaml like every other file: pathological nesting stops before pydantic sees it.
    ("name: b\ncommand: " + "[" * 70 + "]" * 70 + "\n", ":2:73: nested deeper than 64 levels"),
])
def test_each_bad_bot_file_gets_its_exact_message(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert str(err.value) == str(path) + expected.replace("{path}", str(path)).replace("{dir}", str(tmp_path.resolve()))


def test_a_template_that_does_not_parse_or_read_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "bad.j2").write_text("[x]\n{% if %}\n")
    (tmp_path / "latin.j2").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as err:
        load_bot_file(_write(tmp_path, "name: b\ncommand: [x]\nconfig_template: bad.j2\n"))
    assert str(err.value) == (f"{tmp_path.resolve()}/bad.j2:2: template syntax error: "
                              "Expected an expression, got 'end of statement block'")
    with pytest.raises(ConfigError) as err:
        load_bot_file(_write(tmp_path, "name: b\ncommand: [x]\nconfig_template: latin.j2\n"))
    assert str(err.value).startswith(f"{tmp_path.resolve()}/latin.j2: cannot read config template: 'utf-8' codec")


def test_an_unreadable_bot_file_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_bot_file(tmp_path / "nope.yaml")
    assert str(err.value) == f"{tmp_path / 'nope.yaml'}: cannot read bot file: No such file or directory"


def test_every_placeholder_and_the_limits_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("x\n")
    every = ", ".join(f"'{{{p}}}'" for p in ("config", "state_dir", "trace_file", "python", "bot_dir", "scenario"))
    bot = load_bot_file(_write(tmp_path, f"name: b\ncommand: [{every}]\nenv: {{A: '{{trace_file}}'}}\n"
                                         "cwd: '{bot_dir}/{scenario}'\nconfig_template: t\nconfig_format: yaml\n"
                                         "ready: {log: x, timeout: 0.5}\nstop_timeout: 0.5\n"))
    assert (bot.ready.timeout, bot.stop_timeout, bot.config_format, bot.config_file_name()) == (0.5, 0.5, "yaml", "t")
    assert load_bot_file(_write(tmp_path, "name: b\ncommand: [x]\nready: {joined: true, timeout: 600}\n"
                                          "stop_timeout: 120\n")).ready.timeout == 600


def test_defaults_of_a_minimal_bot_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: b\ncommand: [x]\n")
    bot = load_bot_file(path)
    # README: readiness `joined` within 20 s; a bot gets 10 s to stop.
    assert (bot.ready.timeout, bot.stop_timeout, bot.env, bot.cwd) == (20.0, 10.0, {}, None)
    assert bot.source == str(path) and bot.config_file_name() == "bot-config" and bot.template_path() is None


def test_readiness_describes_what_is_waited_for() -> None:
    assert [ReadySpec(**kw).describe() for kw in ({"trace": True}, {"log": "^sync"}, {"joined": True})] == [
        "a `ready` trace record", "a log line matching /^sync/", "the bot's join in every room"]


def test_the_command_shortcut_has_no_file_and_no_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bot = command_bot_file("run it")
    assert (bot.name, bot.source, bot.env, bot.directory) == ("bot-command", "--bot-command (bot-command)", {},
                                                             tmp_path)
    with pytest.raises(ConfigError) as err:
        command_bot_file("run '{confg}'")
    assert str(err.value) == f"--bot-command: command[1]: unknown placeholder {{confg}} {KNOWN}"
    for command, message in (("  ", "--bot-command is empty"),
                             ("x 'open", "--bot-command: cannot split \"x 'open\": No closing quotation")):
        with pytest.raises(ConfigError) as err:
            command_bot_file(command)
        assert str(err.value) == message


def _editable(tmp_path: Path, extra: str = "") -> BotFile:
    (tmp_path / "c.json.j2").write_text("{}\n")
    return load_bot_file(_write(tmp_path, "name: b\ncommand: [x]\nconfig_template: c.json.j2\n" + extra))


def test_bot_set_needs_a_template_with_a_format(tmp_path: Path) -> None:
    check_overrides(command_bot_file("x"), {})  # nothing to check
    message = ("--bot-set needs a bot file whose rendered config it can edit; {} has no config_template with "
               "config_format: json|yaml")
    no_format = _editable(tmp_path)
    for bot in (command_bot_file("x"), no_format):
        with pytest.raises(ConfigError) as err:
            check_overrides(bot, {"a": 1})
        assert str(err.value) == message.format(bot.source)
    format_only = _write(tmp_path, "name: b\ncommand: [x]\nconfig_format: json\n", "f.yaml")
    with pytest.raises(ConfigError) as err:
        load_bot_file(format_only)  # refused when the file is read, before any --bot-set
    assert str(err.value) == f"{format_only}:1:1: config_format needs a config_template"
    check_overrides(_editable(tmp_path, "config_format: json\n"), {"a": 1})  # no checker: anything goes


def test_bot_set_runs_the_bot_files_checker(tmp_path: Path) -> None:
    bot = _editable(tmp_path, "config_format: json\noverrides_check: qa.agent.overrides:validate_agent_overrides\n")
    problems = validate_agent_overrides({"nope": 1, "nada": 2})
    assert len(problems) == 2
    with pytest.raises(ConfigError) as err:
        check_overrides(bot, {"nope": 1, "nada": 2})
    assert str(err.value) == "; ".join(str(p) for p in problems)
    assert all(str(p).startswith("--bot-set nope") or str(p).startswith("--bot-set nada") for p in problems)
    with pytest.raises(ConfigError) as err:  # a checker that cannot be loaded is refused with the file
        _editable(tmp_path, "config_format: json\noverrides_check: no_such_module_q:check\n")
    assert str(err.value) == (f"{tmp_path / 'bot.yaml'}: overrides_check no_such_module_q:check: cannot load it: "
                              "No module named 'no_such_module_q'")


@pytest.mark.parametrize("name", sorted(__import__("qa.harness.botfile", fromlist=["CONTRACT_ENV"]).CONTRACT_ENV))
def test_no_contract_variable_can_be_set_by_a_bot_file(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, f"name: b\ncommand: [x]\nenv: {{{name}: elsewhere}}\n")
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert str(err.value) == (f"{path}:1:1: env: {name} belong to the launch contract; the harness sets them "
                              "(a bot file must not point the bot somewhere else than the run reports)")


def test_the_contract_a_bot_file_may_not_touch_is_the_one_the_launch_sets(tmp_path: Path) -> None:
    from qa.harness.botfile import CONTRACT_ENV
    from qa.harness.launch import contract_env
    from tests.unit.test_launch import _facts

    facts = _facts(tmp_path)
    facts.accounts = {"router": {"user_id": "@r:hs", "password": "p", "access_token": "t", "device_id": "D"}}
    facts.registration_token = "reg-token"
    facts.provider_timeout_s = 5.0
    facts.appservice = {"registration": "/r.yaml", "as_token": "a" * 16, "hs_token": "h" * 16, "as_port": "9"}
    assert set(CONTRACT_ENV) == set(contract_env(facts, tmp_path / "config"))
    path = _write(tmp_path, "name: b\ncommand: [x]\nenv: {OPENAI_API_KEY: k, MATRIX_QA_MODEL: m, A: b}\n")
    with pytest.raises(ConfigError, match=r"env: MATRIX_QA_MODEL, OPENAI_API_KEY belong to the launch contract"):
        load_bot_file(path)


def test_ready_conditions_default_to_off() -> None:
    spec = ReadySpec(log="x")
    assert spec.trace is False and spec.joined is False


def test_config_without_a_template_and_non_functions_are_pinned(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: b\ncommand: [x]\ncwd: '{config}'\n")
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert str(err.value) == f"{path}:1:1: {{config}} is used but there is no config_template to render it from"
    path = _write(tmp_path, "name: b\ncommand: [x]\noverrides_check: 'qa.run:Run'\n")
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert str(err.value) == f"{path}: overrides_check qa.run:Run is not a function"


def test_check_runnable_resolves_placeholders_and_paths_as_the_launch_will(tmp_path: Path) -> None:
    sh = {"PATH": "/usr/bin:/bin"}
    missing_py = load_bot_file(_write(tmp_path, "name: b\ncommand: ['{python}-not-there']\n"))
    with pytest.raises(ConfigError) as err:
        check_runnable(missing_py, sh)
    assert str(err.value) == (f"{missing_py.source}: command: {__import__('sys').executable + '-not-there'!r} "
                              "is not an executable on PATH (nor a file)")
    with pytest.raises(ConfigError, match="is not an executable"):
        check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: ['{bot_dir}/nope.sh']\n")), sh)
    # A program named by a scenario's placeholder can only be checked at launch.
    check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: ['{scenario}-bot']\n")), sh)
    # The bot's own PATH is where it is looked for, not the harness's.
    with pytest.raises(ConfigError, match="'sh' is not an executable on PATH"):
        check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: [sh]\n")), {"PATH": ""})
    # A relative path is relative to the bot file's folder, wherever the run was started from.
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: [./run.sh]\n")), sh)
    for cwd in ("'{bot_dir}/nowhere'", "'{python}'"):
        bot = load_bot_file(_write(tmp_path, f"name: b\ncommand: [sh]\ncwd: {cwd}\n"))
        with pytest.raises(ConfigError) as err:
            check_runnable(bot, sh)
        assert str(err.value).startswith(f"{bot.source}: cwd: ") and str(err.value).endswith(" is not a directory")


# --- the seam's fields (issue 24): env_check, lock_probe, fork_server ---------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("env_check: 'no_such_module_here:f'\n", "env_check no_such_module_here:f: cannot load it"),
    ("env_check: 'qa.run:Run'\n", "env_check qa.run:Run is not a function"),
    ("env_check: 'not a name'\n", "env_check: String should match pattern"),
    ("lock_probe: []\n", "lock_probe: List should have at least 1 item"),
    ("lock_probe: [probe, '{confg}']\n", "unknown placeholder {confg}"),
    ("lock_probe: [probe, '{config}']\n", "{config} is used but there is no config_template"),
    ("fork_server: {preload: ['not a module']}\n", "fork_server.preload[0]: String should match pattern"),
    ("fork_server: {imports: [x]}\n", "fork_server.imports: unknown field"),
    ("fork_server: {}\n", "fork_server needs a command of the form"),
])
def test_bad_seam_fields_are_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, "name: b\ncommand: [x]\n" + text)
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_a_fork_server_without_preload_preloads_nothing(tmp_path: Path) -> None:
    bot = load_bot_file(_write(tmp_path, "name: b\ncommand: ['{python}', '-m', 'mybot']\nfork_server: {}\n"))
    assert bot.fork_server is not None and bot.fork_server.preload == []


def test_the_embedded_agent_names_its_probe_its_env_check_and_its_fork_server() -> None:
    bot = builtin_bot_file()
    assert bot.lock_probe == ["{python}", "-m", "qa.agent.lock_probe", "{state_dir}"]
    assert bot.env_check == "qa.agent.overrides:validate_agent_env"
    assert bot.fork_server is not None and "qa.agent.__main__" in bot.fork_server.preload


def test_env_check_runs_before_anything_starts_and_its_problems_are_the_message(tmp_path: Path) -> None:
    bot = builtin_bot_file()
    name = "MATRIX_QA_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS"
    with pytest.raises(ConfigError) as err:
        check_runnable(bot, {"PATH": "/usr/bin:/bin", name: "abc"})
    assert str(err.value) == (f"{name}='abc': expected a whole number of milliseconds from 1 to 86400000 "
                              "(one day)")
    check_runnable(bot, {"PATH": "/usr/bin:/bin", name: "5000", "MATRIX_QA_SESSION_WRITE_LOCK_STALE_MS": ""})
    # Another bot's environment is its own business: no env_check, no opinion.
    check_runnable(load_bot_file(_write(tmp_path, "name: b\ncommand: [sh]\n")), {"PATH": "/usr/bin:/bin",
                                                                                   name: "abc"})


def test_env_check_problems_are_joined_and_a_broken_checker_is_named(tmp_path: Path) -> None:
    from qa.harness.botfile import check_env

    (tmp_path / "envcheck_mod_q.py").write_text(
        "def two(env):\n    return ['A is bad', 'B is bad'] if 'A' in env else []\n"
        "def boom(env):\n    raise RuntimeError('no')\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        bot = load_bot_file(_write(tmp_path, "name: b\ncommand: [sh]\nenv_check: envcheck_mod_q:two\n"))
        with pytest.raises(ConfigError) as err:
            check_env(bot, {"A": "1"})
        assert str(err.value) == "A is bad; B is bad"
        check_env(bot, {})
        broken = load_bot_file(_write(tmp_path, "name: b\ncommand: [sh]\nenv_check: envcheck_mod_q:boom\n"))
        with pytest.raises(ConfigError) as err:
            check_env(broken, {})
        assert str(err.value) == (f"{tmp_path / 'bot.yaml'}: env_check envcheck_mod_q:boom failed on the "
                                  "environment: RuntimeError: no")
    finally:
        sys.path.remove(str(tmp_path))


def test_python_module_reads_only_a_written_out_dash_m_module() -> None:
    from qa.harness.botfile import python_module

    assert python_module(["{python}", "-m", "qa.agent", "--config", "{config}"]) == "qa.agent"
    assert python_module(["{python}", "-m", "mybot"]) == "mybot"
    for argv in (["{python}", "-m"], ["python", "-m", "x"], ["{python}", "-c", "x"], ["{python}", "-m", "{config}"],
                 ["{python}", "-m", "a..b"], ["{python}", "-m", "1x"], ["{python}", "-m", "x.1"]):
        assert python_module(argv) is None, argv
