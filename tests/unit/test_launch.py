"""From bot file and scenario facts to argv, environment and rendered config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from qa.harness.botfile import BotFile, builtin_bot_file, load_bot_file
from qa.harness.launch import (
    Launch,
    LaunchFacts,
    build_launch,
    compiled_template,
    set_dotted,
    template_context,
)
from qa.kernel.errors import ConfigError


def _facts(tmp_path: Path, **changes: object) -> LaunchFacts:
    values: dict[str, object] = dict(
        homeserver_url="http://127.0.0.1:8008", server_name="localhost", user_id="@bot:localhost",
        password="pw-secret-123", password_file=tmp_path / "bot-password", access_token="tok-abc-123",
        device_id="DEV1", rooms={"main": "!a:localhost", "side": "!b:localhost"},
        actors={"driver": "@driver:localhost"}, provider_base_url="http://127.0.0.1:9/scope/x/v1",
        provider_api_key="mock-key", model="mock-model", scenario_id="canary", scenario_title="Canary",
        bot={"requireMention": True, "allowBots": "off", "knownBots": [], "allowlist": ["@driver:localhost"],
             "sessionWriteLock": {"scope": "attempt"}, "textChunkLimit": 4000, "encryption": False},
        encryption=False, state_dir=tmp_path / "state" / "bot", trace_file=tmp_path / "state" / "bot-trace.jsonl",
    )
    values.update(changes)
    return LaunchFacts(**values)  # type: ignore[arg-type]


def test_the_contract_is_always_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text('name: b\ncommand: ["run", "{state_dir}", "--trace={trace_file}"]\n'
                                     'env: {MYBOT_HOME: "{state_dir}/home", PLAIN: "x"}\n')
    bot = load_bot_file(tmp_path / "b.yaml")
    facts = _facts(tmp_path)
    launch = build_launch(bot, facts, {}, {"PATH": "/bin", "MATRIX_QA_REGISTRATION_SHARED_SECRET": "s3cr3t",
                                          "MATRIX_QA_LIVE_OPENAI_KEY": "sk-live"})
    env = launch.env
    assert env["MATRIX_QA_HOMESERVER_URL"] == "http://127.0.0.1:8008"
    assert env["MATRIX_QA_USER_ID"] == "@bot:localhost"
    assert env["MATRIX_QA_PASSWORD"] == "pw-secret-123"
    assert env["MATRIX_QA_ACCESS_TOKEN"] == "tok-abc-123"
    assert env["MATRIX_QA_DEVICE_ID"] == "DEV1"
    assert env["MATRIX_QA_ROOM_IDS"] == "!a:localhost,!b:localhost"
    assert env["MATRIX_QA_STATE_DIR"] == str(facts.state_dir)
    assert env["MATRIX_QA_TRACE_FILE"] == str(facts.trace_file)
    assert env["MATRIX_QA_SCENARIO"] == "canary"
    assert env["MATRIX_QA_MODEL"] == "mock-model"
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:9/scope/x/v1"
    assert env["OPENAI_API_KEY"] == "mock-key"
    assert env["MYBOT_HOME"] == f"{facts.state_dir}/home" and env["PLAIN"] == "x"
    assert env["PATH"] == "/bin"
    # The harness's own secrets are never handed to a bot.
    assert "MATRIX_QA_REGISTRATION_SHARED_SECRET" not in env and "MATRIX_QA_LIVE_OPENAI_KEY" not in env
    assert launch.argv == ["run", str(facts.state_dir), f"--trace={facts.trace_file}"]
    assert launch.cwd == tmp_path.resolve()
    assert launch.config_path is None and "MATRIX_QA_CONFIG" not in env


def test_the_bot_file_cannot_override_the_contract(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text('name: b\ncommand: [x]\n')
    launch = build_launch(load_bot_file(tmp_path / "b.yaml"), _facts(tmp_path), {},
                          {"OPENAI_BASE_URL": "https://api.example.invalid/v1"})
    assert launch.env["OPENAI_BASE_URL"] == "http://127.0.0.1:9/scope/x/v1"


def test_the_anthropic_sdk_gets_the_same_scope_and_key(tmp_path: Path) -> None:
    """ANTHROPIC_BASE_URL is the scope without `/v1` (the anthropic SDK adds `/v1/messages`); the harness's own
    Anthropic key variable is never handed on, and the bot's environment cannot point the SDK elsewhere."""
    (tmp_path / "b.yaml").write_text('name: b\ncommand: [x]\n')
    launch = build_launch(load_bot_file(tmp_path / "b.yaml"), _facts(tmp_path), {},
                          {"ANTHROPIC_BASE_URL": "https://api.anthropic.com", "ANTHROPIC_API_KEY": "sk-ant-real-1",
                           "MATRIX_QA_LIVE_ANTHROPIC_KEY": "sk-ant-live-1"})
    assert launch.env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/scope/x"
    assert launch.env["ANTHROPIC_API_KEY"] == "mock-key"
    assert "MATRIX_QA_LIVE_ANTHROPIC_KEY" not in launch.env


def test_template_sees_every_fact(tmp_path: Path) -> None:
    (tmp_path / "t.ini.j2").write_text(
        "[matrix]\nurl={{ homeserver_url }}\nuser={{ user_id }}\ntoken={{ access_token }}\n"
        "rooms={{ rooms.main }},{{ room_ids | join(',') }}\nmention={{ bot.requireMention }}\n"
        "allow={{ bot.allowlist | join(',') }}\nmodel={{ provider.model }}@{{ provider.base_url }}\n"
        "scenario={{ scenario }}\nconfig={{ config }}\n")
    (tmp_path / "b.yaml").write_text('name: b\ncommand: [x, --config, "{config}"]\nconfig_template: t.ini.j2\n')
    facts = _facts(tmp_path)
    launch = build_launch(load_bot_file(tmp_path / "b.yaml"), facts, {}, {})
    assert launch.config_path is not None and launch.config_path.name == "bot-t.ini"
    assert launch.argv == ["x", "--config", str(launch.config_path)]
    assert launch.env["MATRIX_QA_CONFIG"] == str(launch.config_path)
    text = launch.config_text or ""
    assert "url=http://127.0.0.1:8008" in text and "token=tok-abc-123" in text
    assert "rooms=!a:localhost,!a:localhost,!b:localhost" in text
    assert "mention=True" in text and "allow=@driver:localhost" in text
    assert "model=mock-model@http://127.0.0.1:9/scope/x/v1" in text and "scenario=canary" in text
    assert f"config={launch.config_path}" in text


def test_template_with_an_unknown_variable_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("x={{ homeserver }}\n")
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [x]\nconfig_template: t.j2\n")
    with pytest.raises(ConfigError, match="unknown variable"):
        build_launch(load_bot_file(tmp_path / "b.yaml"), _facts(tmp_path), {}, {})


def test_template_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("ok\n{% if %}\n")
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [x]\nconfig_template: t.j2\n")
    with pytest.raises(ConfigError, match=r"t\.j2:2: template syntax error"):
        build_launch(load_bot_file(tmp_path / "b.yaml"), _facts(tmp_path), {}, {})


def test_bot_set_needs_an_editable_config(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [x]\n")
    with pytest.raises(ConfigError, match="--bot-set"):
        build_launch(load_bot_file(tmp_path / "b.yaml"), _facts(tmp_path), {"a": 1}, {})
    (tmp_path / "t.j2").write_text("a=1\n")
    (tmp_path / "c.yaml").write_text("name: c\ncommand: [x]\nconfig_template: t.j2\n")
    with pytest.raises(ConfigError, match="config_format"):
        build_launch(load_bot_file(tmp_path / "c.yaml"), _facts(tmp_path), {"a": 1}, {})


def test_embedded_agent_config_renders_the_scenario_and_takes_overrides(tmp_path: Path) -> None:
    facts = _facts(tmp_path, provider_timeout_s=12.5, provider_max_retries=1)
    launch = build_launch(builtin_bot_file(), facts, {"rooms.*.requireMention": False, "forgetStateOnStart": True},
                          {})
    config = json.loads(launch.config_text or "")
    assert config["homeserver"] == "http://127.0.0.1:8008"
    assert config["userId"] == "@bot:localhost"
    assert config["passwordFile"] == str(facts.password_file)
    assert "pw-secret-123" not in (launch.config_text or ""), "the password stays in its own file"
    assert config["tracePath"] == str(facts.trace_file)
    assert set(config["rooms"]) == {"!a:localhost", "!b:localhost"}
    assert config["rooms"]["!a:localhost"] == {"requireMention": False, "allowlist": ["@driver:localhost"],
                                               "allowBots": "off"}
    assert config["model"] == {"baseUrl": "http://127.0.0.1:9/scope/x/v1", "model": "mock-model",
                               "timeoutS": 12.5, "maxRetries": 1}
    assert config["session"] == {"writeLock": {"scope": "attempt"}}
    assert config["forgetStateOnStart"] is True
    assert launch.cwd == facts.state_dir, "not qa/agent: its module names would shadow the standard library"
    # And the agent accepts what was rendered.
    from qa.agent.config import AgentConfig

    AgentConfig.model_validate(config)


def test_set_dotted() -> None:
    config: dict[str, object] = {"rooms": {"!a": {"x": 1}, "!b": {"x": 1}}, "model": {"m": "a"}}
    set_dotted(config, "rooms.*.x", 2)
    set_dotted(config, "model.timeoutS", 3)
    set_dotted(config, "new.deep.key", True)
    assert config == {"rooms": {"!a": {"x": 2}, "!b": {"x": 2}}, "model": {"m": "a", "timeoutS": 3},
                      "new": {"deep": {"key": True}}}
    with pytest.raises(ConfigError, match="not a mapping"):
        set_dotted(config, "model.m.deeper", 1)


def _bot(tmp_path: Path, text: str, template: str | None = None, name: str = "t.j2") -> BotFile:
    if template is not None:
        (tmp_path / name).write_text(template)
    (tmp_path / "b.yaml").write_text(text)
    return load_bot_file(tmp_path / "b.yaml")


def test_every_placeholder_is_filled_and_config_needs_a_template(tmp_path: Path) -> None:
    bot = _bot(tmp_path, 'name: b\ncommand: ["{python}", "{bot_dir}", "{scenario}"]\n')
    launch = build_launch(bot, _facts(tmp_path), {}, {})
    assert launch.argv == [sys.executable, str(tmp_path.resolve()), "canary"]
    with pytest.raises(ConfigError, match="no config_template to render it from"):
        _bot(tmp_path, 'name: b\ncommand: ["x", "c={config}"]\n')  # never silently an empty path


def test_template_sees_the_rest_of_the_facts(tmp_path: Path) -> None:
    template = ("{{ server_name }} {{ password }} {{ device_id }} {{ actors.driver }} {{ scenario_title }} "
                "{{ provider.api_key }} {{ provider.timeout_s is none }} {{ provider.max_retries is none }}\n")
    bot = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\n", template)
    text = build_launch(bot, _facts(tmp_path), {}, {}).config_text
    # The trailing newline of the template is kept: a config file ends with one.
    assert text == "localhost pw-secret-123 DEV1 @driver:localhost Canary mock-key True True\n"


def test_tojson_is_plain_json_not_html_escaped(tmp_path: Path) -> None:
    # Jinja's own tojson escapes <, >, & and ' for HTML; a bot's JSON config must get the title as written.
    bot = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\n", '{"title": {{ scenario_title | tojson }}}')
    text = build_launch(bot, _facts(tmp_path, scenario_title="Bob's <canary> & co"), {}, {}).config_text
    assert text == '{"title": "Bob\'s <canary> & co"}'


def test_template_problems_at_render_time_are_one_exact_line(tmp_path: Path) -> None:
    bot = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\n", "x={{ homeserver }}\n")
    path = tmp_path.resolve() / "t.j2"
    with pytest.raises(ConfigError) as err:
        build_launch(bot, _facts(tmp_path), {}, {})
    assert str(err.value) == f"{path}: template uses an unknown variable: 'homeserver' is undefined"
    path.write_text("ok\n{% if %}\n")  # broken between the check at load time and the launch
    with pytest.raises(ConfigError) as err:
        build_launch(bot, _facts(tmp_path), {}, {})
    assert str(err.value) == f"{path}:2: template syntax error: Expected an expression, got 'end of statement block'"
    path.unlink()  # gone between the check at load time and the launch
    with pytest.raises(ConfigError) as err:
        build_launch(bot, _facts(tmp_path), {}, {})
    assert str(err.value) == f"{path}: cannot read config template: No such file or directory"


def test_bot_set_refusals_are_exact(tmp_path: Path) -> None:
    plain = _bot(tmp_path, "name: b\ncommand: [x]\n")
    with pytest.raises(ConfigError) as err:
        build_launch(plain, _facts(tmp_path), {"a": 1}, {})
    assert str(err.value) == (f"--bot-set needs a bot file whose rendered config it can edit; {plain.source} has no "
                              "config_template (with config_format: json|yaml)")
    no_format = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\n", "a: 1\n")
    with pytest.raises(ConfigError) as err:
        build_launch(no_format, _facts(tmp_path), {"a": 1}, {})
    assert str(err.value) == (f"--bot-set edits the rendered config only when {no_format.source} says "
                              "config_format: json or yaml")


def test_bot_set_edits_yaml_keeping_the_key_order(tmp_path: Path) -> None:
    bot = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\nconfig_format: yaml\n", "zeta: 1\nalpha: 2\n")
    assert build_launch(bot, _facts(tmp_path), {"alpha": 3}, {}).config_text == "zeta: 1\nalpha: 3\n"


def test_bot_set_writes_json_indented_by_two(tmp_path: Path) -> None:
    bot = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\nconfig_format: json\n", '{"a": {"b": 1}}')
    assert build_launch(bot, _facts(tmp_path), {"a.b": 2}, {}).config_text == '{\n  "a": {\n    "b": 2\n  }\n}'


@pytest.mark.parametrize(("fmt", "template", "expected"), [
    # YAML would read `{a: 1}`; a config that says json must be JSON.
    ("json", "{a: 1}", "the rendered config is not valid json: Expecting property name enclosed in double quotes: "
                       "line 1 column 2 (char 1)"),
    ("json", "[1]", "the rendered config is not a json mapping, so --bot-set cannot edit it"),
    ("yaml", "- 1\n", "the rendered config is not a yaml mapping, so --bot-set cannot edit it"),
])
def test_a_rendered_config_bot_set_cannot_edit_is_refused(tmp_path: Path, fmt: str, template: str,
                                                          expected: str) -> None:
    bot = _bot(tmp_path, f"name: b\ncommand: [x]\nconfig_template: t.j2\nconfig_format: {fmt}\n", template)
    with pytest.raises(ConfigError) as err:
        build_launch(bot, _facts(tmp_path), {"a": 2}, {})
    assert str(err.value) == f"{tmp_path.resolve() / 't.j2'}: {expected}"


def test_a_wildcard_reaches_keys_nested_below_it() -> None:
    config: dict[str, object] = {"rooms": {"!a": {"x": 1}, "!b": {}}}
    set_dotted(config, "rooms.*.policy.mention", False)
    assert config == {"rooms": {"!a": {"x": 1, "policy": {"mention": False}}, "!b": {"policy": {"mention": False}}}}
    with pytest.raises(ConfigError) as err:
        set_dotted(config, "rooms.!a.x.y", 1)
    assert str(err.value) == "--bot-set rooms.!a.x.y: x is not a mapping in the bot's config"


def test_a_relative_cwd_is_under_the_bot_files_folder_and_an_absolute_one_is_kept(tmp_path: Path) -> None:
    relative = _bot(tmp_path, 'name: b\ncommand: [x]\ncwd: "run/{scenario}"\n')
    assert build_launch(relative, _facts(tmp_path), {}, {}).cwd == tmp_path.resolve() / "run" / "canary"
    absolute = _bot(tmp_path, 'name: b\ncommand: [x]\ncwd: "{state_dir}"\n')
    facts = _facts(tmp_path)
    assert build_launch(absolute, facts, {}, {}).cwd == facts.state_dir


def test_the_blocked_path_below_a_wildcard_names_the_wildcard_and_the_key_before_it() -> None:
    from qa.kernel.dotted import set_dotted as raw_set

    config: dict[str, object] = {"cfg": {"rooms": {"!a": {"policy": 3}}}}
    assert raw_set(config, "cfg.rooms.*.policy.mention", False) == ["cfg", "rooms", "*", "policy"]
    assert raw_set(config, "cfg.rooms.*.other.mention", False) is None


def test_what_a_bot_may_inherit_has_nothing_withheld_and_no_contract_name() -> None:
    from qa.harness.launch import inherited_env
    base = {"PATH": "/bin", "PYTHONPATH": "/src", "MATRIX_QA_REGISTRATION_SHARED_SECRET": "s",
            "MATRIX_QA_LIVE_OPENAI_KEY": "k", "MATRIX_QA_LIVE_ANTHROPIC_KEY": "a", "OPENAI_API_KEY": "user-own",
            "ANTHROPIC_API_KEY": "user-own", "MATRIX_QA_CONFIG": "/elsewhere", "MATRIX_QA_OTHER": "kept"}
    assert inherited_env(base) == {"PATH": "/bin", "PYTHONPATH": "/src", "MATRIX_QA_OTHER": "kept"}


def test_a_contract_name_the_harness_inherited_never_reaches_a_bot_without_that_contract_entry(
        tmp_path: Path) -> None:
    launch = build_launch(builtin_bot_file(), _facts(tmp_path), {}, {"MATRIX_QA_CONFIG": "/stray", "PATH": "/bin"})
    assert launch.env["MATRIX_QA_CONFIG"] != "/stray"
    (tmp_path / "b.yaml").write_text('name: b\ncommand: ["run"]\n')
    plain = build_launch(load_bot_file(tmp_path / "b.yaml"), _facts(tmp_path), {}, {"MATRIX_QA_CONFIG": "/stray"})
    assert "MATRIX_QA_CONFIG" not in plain.env


def test_a_template_is_compiled_once_per_text_and_an_edited_one_again(tmp_path: Path) -> None:
    bot = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\n", "a={{ scenario }} {{ 'x' | tojson }}\n")
    compiled_template.cache_clear()
    first = build_launch(bot, _facts(tmp_path), {}, {}).config_text
    second = build_launch(bot, _facts(tmp_path, scenario_id="other"), {}, {}).config_text
    assert (first, second) == ('a=canary "x"\n', 'a=other "x"\n')  # one compiled template, each its own facts
    assert compiled_template.cache_info().misses == 1 and compiled_template.cache_info().hits == 1
    (tmp_path / "t.j2").write_text("b={{ scenario }}\n")  # edited mid-run: read again, compiled anew
    assert build_launch(bot, _facts(tmp_path), {}, {}).config_text == "b=canary\n"
    assert compiled_template.cache_info().misses == 2


def test_the_later_contract_variables_and_facts_reach_the_bot(tmp_path: Path) -> None:
    # Exec dir, model timeout, extra accounts and a registration token: set exactly when given, named exactly.
    template = "{{ accounts | tojson }} g{{ config_generation }}\n"
    bot = _bot(tmp_path, "name: b\ncommand: [x]\nconfig_template: t.j2\n", template)
    plain = build_launch(bot, _facts(tmp_path), {}, {})
    assert plain.env["MATRIX_QA_EXEC_DIR"] == str(tmp_path / "state" / "exec")  # beside the bot's state by default
    assert not {"MATRIX_QA_MODEL_TIMEOUT_S", "MATRIX_QA_ACCOUNTS", "MATRIX_QA_REGISTRATION_TOKEN"} & set(plain.env)
    assert plain.values["config"] == str(plain.config_path) and plain.config_text == "{} g1\n"
    accounts = {"zed": {"user_id": "@z:localhost"}, "amy": {"user_id": "@a:localhost"}}  # not in key order
    full = build_launch(bot, _facts(tmp_path, exec_dir=tmp_path / "elsewhere", provider_timeout_s=2.5,
                                    accounts=accounts, registration_token="reg-tok-123"), {}, {})
    assert full.env["MATRIX_QA_EXEC_DIR"] == str(tmp_path / "elsewhere")
    assert full.env["MATRIX_QA_MODEL_TIMEOUT_S"] == "2.5"
    assert full.env["MATRIX_QA_ACCOUNTS"] == '{"amy": {"user_id": "@a:localhost"}, "zed": {"user_id": "@z:localhost"}}'
    assert full.env["MATRIX_QA_REGISTRATION_TOKEN"] == "reg-tok-123"
    assert full.config_text == '{"zed": {"user_id": "@z:localhost"}, "amy": {"user_id": "@a:localhost"}} g1\n'


def test_a_launch_without_a_template_has_an_empty_config_placeholder(tmp_path: Path) -> None:
    launch = build_launch(_bot(tmp_path, "name: b\ncommand: [x]\n"), _facts(tmp_path), {}, {})
    assert launch.values["config"] == "" and launch.config_path is None
    assert Launch(argv=[], env={}, cwd=tmp_path, config_path=None, config_text=None).values == {}
    assert template_context(builtin_bot_file(), _facts(tmp_path), None)["config_generation"] == 1  # the first
