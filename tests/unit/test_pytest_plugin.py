"""The pytest plugin without servers: it imports nothing heavy, every step kind is a fixture method with its
YAML fields, calls are checked with the scenario file's words, a lacking capability skips with the CLI's
reason, failures read like the report, and scenario files are collected (or refused) as the CLI loads them."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.harness.botfile import builtin_bot_file
from qa.pytest_plugin.failure import MatrixQAUsageError
from qa.pytest_plugin.fixture import MatrixQA, Skip, TestScenario, _validated
from qa.pytest_plugin.items import scenario_id_of
from qa.scenario.steps.registry import STEP_TYPES
from qa.shared.markers import MarkerFactory

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[2]


def _plugin_args() -> list[str]:
    installed = any(ep.name == "matrix_qa" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "qa.pytest_plugin"]


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    code = ("import sys, qa.pytest_plugin; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'nio', 'synapse', 'aiohttp', 'yaml'}), [m for m in sys.modules if m.startswith('qa.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[] ['qa.pytest_plugin']"


def test_every_step_kind_is_a_method_named_as_in_yaml_with_its_fields_as_keywords() -> None:
    for kind, cls in STEP_TYPES.items():
        method = getattr(MatrixQA, kind)
        assert inspect.iscoroutinefunction(method) and method.__name__ == kind
        params = list(inspect.signature(method).parameters)[1:]
        expected = [(f"{f.alias}_" if f.alias in ("as", "from") else (f.alias or n))
                    for n, f in cls.model_fields.items()]
        assert params == expected, kind
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(inspect.signature(method).parameters
                                                                          .values())[1:])
        assert cls.does.split()[0] in method.__doc__
    assert "as_" in inspect.signature(MatrixQA.send).parameters
    assert inspect.signature(MatrixQA.send).parameters["body"].default is inspect.Parameter.empty
    assert inspect.signature(MatrixQA.send).parameters["room"].default == "main"


class _FakeSession:
    def __init__(self, bot_file: Any = None) -> None:
        self.base = SimpleNamespace(markers=MarkerFactory("seed"))
        self._bot_file = bot_file or builtin_bot_file()

    async def on_loop(self, coro: Any) -> Any:
        return await coro

    def resources_for(self, scenario: Any) -> Any:
        return SimpleNamespace(bot_file=self._bot_file, provider=object())


def test_setup_checks_the_header_with_the_scenario_files_words() -> None:
    qa = MatrixQA(_FakeSession(), "t-one", "tests/x.py::t")
    with pytest.raises(MatrixQAUsageError) as bad:
        asyncio.run(qa.setup(actors=["driver", "bot"]))
    assert str(bad.value) == "setup(): actors[1]: 'bot' is reserved for the bot under test; it is always present"
    with pytest.raises(MatrixQAUsageError, match=r"setup\(\): `steps` is not a setup field"):
        asyncio.run(qa.setup(steps=[]))
    with pytest.raises(MatrixQAUsageError, match=r"roms: unknown field \(did you mean 'rooms'\?"):
        asyncio.run(qa.setup(roms={}))


def test_a_step_is_checked_against_the_steps_before_it() -> None:
    header = {"id": "t", "title": "t", "profiles": ["python"]}
    ask = {"send": {"as": "driver", "body": "hi", "id": "ask"}}
    assert _validated({**header, "steps": [ask]}, "send()").steps[-1].kind == "send"
    with pytest.raises(MatrixQAUsageError) as bad:
        _validated({**header, "steps": [ask, {"expect_reply": {"to": "asq"}}]}, "expect_reply()")
    assert str(bad.value) == ("expect_reply(): steps[1].expect_reply.to: unknown step id 'asq' (ids defined before "
                              "this step: ask)")
    with pytest.raises(MatrixQAUsageError, match=r"steps\[0\]\.send\.bdy: unknown field \(did you mean 'body'\?"):
        _validated({**header, "steps": [{"send": {"as": "driver", "bdy": "x"}}]}, "send()")
    assert TestScenario.model_validate(header).steps == []


def test_a_capability_the_bot_lacks_skips_with_the_clis_reason() -> None:
    from qa.harness.botfile import load_bot_file

    nio = load_bot_file(REPO / "tests" / "bots" / "nio-reply-bot.yaml")
    qa = MatrixQA(_FakeSession(nio), "t", "t")
    qa.scenario = _validated({"id": "t", "title": "t", "profiles": ["python"],
                              "steps": [{"send": {"as": "driver", "body": "x", "id": "a"}},
                                        {"expect_trace": {"type": "inbound", "to": "a"}}]}, "x")
    qa._res = SimpleNamespace(bot_file=nio, provider=object())
    with pytest.raises(Skip) as skipped:
        qa._check_needs("expect_trace()")
    assert str(skipped.value) == "skipped: bot 'nio-reply-bot' lacks 'trace' (step 2 (expect_trace))"


def test_markers_are_the_tests_own() -> None:
    qa = MatrixQA(_FakeSession(), "t-one", "t")
    other = MatrixQA(_FakeSession(), "t-two", "t")
    assert qa.marker("token") == MarkerFactory("seed").child("t-one")["token"]
    assert qa.marker("token") != other.marker("token") and qa.marker("token").startswith("MQA-")
    with pytest.raises(MatrixQAUsageError, match="has not started"):
        qa.room_id()


def test_a_tests_scenario_id_is_a_valid_unique_id() -> None:
    config = SimpleNamespace(stash=pytest.Stash())

    def node(path: str, name: str) -> Any:
        return SimpleNamespace(config=config, path=Path(path), name=name, nodeid=f"{path}::{name}")

    assert scenario_id_of(node("tests/test_Bot.py", "test_reply[a b]")) == "test-bot-test-reply-a-b"
    first = scenario_id_of(node("a/test_x.py", "test_y"))
    second = scenario_id_of(node("b/test_x.py", "test_y"))
    assert first == "test-x-test-y" and second.startswith("test-x-test-y-") and second != first
    assert scenario_id_of(node("a/test_x.py", "test_y")) == first
    assert len(scenario_id_of(node("m.py", "test_" + "long" * 40))) <= 60


SCENARIO = """\
id: tiny
title: A tiny scenario
profiles: [fast, lock]
steps:
  - send: {as: driver, body: hi}
"""


def test_scenario_files_are_items_named_by_id_with_profiles_as_markers(pytester: pytest.Pytester) -> None:
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "tiny.yaml").write_text(SCENARIO)
    (scenarios / "other.yaml").write_text(SCENARIO.replace("tiny", "other").replace("fast, lock", "slow"))
    (scenarios / "bot.yaml").write_text("name: my-bot\ncommand: [x]\n")  # a bot file: not a scenario
    result = pytester.runpytest(*_plugin_args(), "--collect-only", "-q", "-m", "fast", "scenarios")
    result.stdout.fnmatch_lines(["scenarios/tiny.yaml::tiny", "*1/2 tests collected (1 deselected)*"])
    assert "bot.yaml" not in result.stdout.str()
    # YAML deeper than the folders pytest was given is not taken for scenarios (bot files, fixtures, rules).
    assert "tiny" not in pytester.runpytest(*_plugin_args(), "--collect-only", "-q", ".").stdout.str()


def test_a_broken_scenario_file_is_a_collection_error_naming_file_line_and_field(pytester: pytest.Pytester) -> None:
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "bad.yaml").write_text(SCENARIO.replace("body: hi", "bdy: hi"))
    result = pytester.runpytest(*_plugin_args(), "--collect-only", "-q", "scenarios")
    result.stdout.fnmatch_lines(["*scenarios/bad.yaml:5:*: steps[[]0].send.bdy: unknown field (did you mean 'body'?*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest's "errors during collection"


def test_a_session_without_the_fixture_starts_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest(*_plugin_args(), "-q")
    result.assert_outcomes(passed=1)
    assert "matrix-qa" not in result.stdout.str()


def test_options_are_offered_on_the_command_line_and_in_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(textwrap.dedent("""\
        [pytest]
        matrix_qa_provider = replay
        matrix_qa_scenarios = more
    """))
    pytester.makeconftest(textwrap.dedent("""\
        from qa.pytest_plugin import option

        def pytest_report_header(config):
            return [f"provider={option(config, 'matrix_qa_provider')} bot={option(config, 'matrix_qa_bot')} "
                    f"scenarios={option(config, 'matrix_qa_scenarios')}"]
    """))
    result = pytester.runpytest(*_plugin_args(), "--collect-only", "--matrix-qa-bot", "b.yaml", "-p",
                                "no:cacheprovider")
    result.stdout.fnmatch_lines(["provider=replay bot=b.yaml scenarios=['more']"])
    help_text = pytester.runpytest(*_plugin_args(), "--help").stdout.str()
    for flag in ("--matrix-qa-bot", "--matrix-qa-homeserver", "--matrix-qa-homeserver-url", "--matrix-qa-registration",
                 "--matrix-qa-provider", "--matrix-qa-cassettes", "--matrix-qa-report", "--matrix-qa-scenarios"):
        assert flag in help_text


def test_each_xdist_worker_writes_its_own_record(tmp_path: Path) -> None:
    from qa.pytest_plugin import report_dir, xdist_worker

    assert report_dir(tmp_path / "r", "") == (tmp_path / "r").resolve()
    assert report_dir(tmp_path / "r", "gw1") == (tmp_path / "r" / "gw1").resolve()
    # A worker is known by its config; a pytest a worker's test starts inherits PYTEST_XDIST_WORKER only.
    assert xdist_worker(SimpleNamespace(workerinput={"workerid": "gw3"})) == "gw3"  # type: ignore[arg-type]
    assert xdist_worker(SimpleNamespace()) == ""  # type: ignore[arg-type]


OPTIONS_HEADER = textwrap.dedent("""\
    from qa.pytest_plugin import OPTIONS, option

    def pytest_report_header(config):
        return [" ".join(f"{ini}={option(config, ini)}" for _flag, ini, _help in OPTIONS)]
""")


def test_options_come_from_flags_then_ini_then_the_matrix_qa_config_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "sub").mkdir()
    (pytester.path / "matrix-qa.toml").write_text(textwrap.dedent("""\
        bot = "b.yaml"
        provider = "replay"
        homeserver = "tuwunel"
        cassettes = "cas"
        output-dir = "rep"
        scenarios-dir = ["mine"]
        jobs = 2
        homeserver-url = "https://file.example.org"
        registration = "token"
    """))
    pytester.makeini("[pytest]\nmatrix_qa_provider = mock\nmatrix_qa_registration = shared-secret\n")
    pytester.makeconftest(OPTIONS_HEADER)
    result = pytester.runpytest(*_plugin_args(), "--collect-only", "-p", "no:cacheprovider",
                                "--matrix-qa-homeserver", "synapse", "--matrix-qa-registration", "open")
    root = pytester.path
    # The file's paths are relative to the file; its scenarios-dir is run's business, not the session's.
    result.stdout.fnmatch_lines([f"matrix_qa_bot={root / 'b.yaml'} matrix_qa_homeserver=synapse "
                                 "matrix_qa_homeserver_url=https://file.example.org matrix_qa_registration=open "
                                 f"matrix_qa_provider=mock matrix_qa_cassettes={root / 'cas'} "
                                 f"matrix_qa_report={root / 'rep'} matrix_qa_scenarios=None"])
    # Without the flag, the ini's mode beats the file's.
    result = pytester.runpytest(*_plugin_args(), "--collect-only", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["* matrix_qa_registration=shared-secret *"])


def test_a_bad_matrix_qa_config_file_ends_the_session_naming_file_and_key(pytester: pytest.Pytester) -> None:
    (pytester.path / "pyproject.toml").write_text('[tool.matrix-qa]\nprovider = "magic"\n')
    pytester.makeconftest(OPTIONS_HEADER)
    result = pytester.runpytest(*_plugin_args(), "--collect-only", "-p", "no:cacheprovider")
    assert result.ret == 2
    result.stdout.fnmatch_lines([f"*matrix-qa: {pytester.path / 'pyproject.toml'}: [[]tool.matrix-qa[]] provider: "
                                 "invalid choice: 'magic'*"])


USES_THE_FIXTURE = "def test_x(matrix_qa):\n    pass\n"


@pytest.mark.parametrize(("args", "env", "line"), [
    (["--matrix-qa-homeserver-url", "ftp://matrix.example.org", "--matrix-qa-registration", "open"], {},
     "matrix-qa: --matrix-qa-homeserver-url must be an http(s) URL such as https://matrix.example.org, "
     "got 'ftp://matrix.example.org'"),
    (["--matrix-qa-homeserver-url", "https://u:pw@matrix.example.org", "--matrix-qa-registration", "open"], {},
     "matrix-qa: --matrix-qa-homeserver-url must not contain credentials (user:password@); *"),
    (["--matrix-qa-registration", "open"], {},
     "matrix-qa: --matrix-qa-registration needs --matrix-qa-homeserver-url URL *"),
    (["--matrix-qa-homeserver-url", "https://matrix.example.org", "--matrix-qa-registration", "magic"], {},
     "matrix-qa: --matrix-qa-registration 'magic' is not a registration mode; use open, shared-secret or token"),
    # The secret comes from the environment only, checked as run checks it.
    (["--matrix-qa-homeserver-url", "https://matrix.example.org", "--matrix-qa-registration", "shared-secret"], {},
     "matrix-qa: --matrix-qa-registration shared-secret needs * MATRIX_QA_REGISTRATION_SHARED_SECRET)"),
    (["--matrix-qa-homeserver-url", "https://matrix.example.org"], {"MATRIX_QA_REGISTRATION_TOKEN": "short"},
     "matrix-qa: * shorter than 8 characters*"),
])
def test_a_bad_existing_homeserver_ends_the_session_before_anything_starts(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str],
        line: str) -> None:
    for name in ("MATRIX_QA_REGISTRATION_TOKEN", "MATRIX_QA_REGISTRATION_SHARED_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(USES_THE_FIXTURE)
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", *args)
    assert result.ret == 2
    result.stdout.fnmatch_lines([f"*{line}*"])  # pytest's "! Exit: …!" line
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "synapse" not in result.stdout.str().lower(), "nothing may start before the options are checked"


def test_a_bad_registration_mode_in_the_config_file_is_refused_naming_file_and_key(pytester: pytest.Pytester
                                                                                    ) -> None:
    (pytester.path / "matrix-qa.toml").write_text('homeserver-url = "https://matrix.example.org"\n'
                                                  'registration = "magic"\n')
    pytester.makepyfile(USES_THE_FIXTURE)
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider")
    assert result.ret == 2
    result.stdout.fnmatch_lines([f"*matrix-qa: {pytester.path / 'matrix-qa.toml'}: registration: invalid choice: "
                                 "'magic'*"])
