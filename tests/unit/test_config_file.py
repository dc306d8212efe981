"""The config file (qa.config_file, qa.cli_run): found from the current directory upward, every run flag settable
there, flags beat the file, the file beats defaults, paths relative to the file, the summary says which file; a
typo or bad value is exit 2 naming the file and the key."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from qa import cli
from qa.cli_run import _file_keys, _standalone, apply_config, blame_file
from qa.config_file import ConfigFile, find_config_file, load_config_file
from qa.kernel.errors import ConfigError
from qa.run import Run

# A valid value for each flag whose value a bare type cannot make up.
SAMPLES: dict[str, Any] = {
    "timeout": "20m", "shard": "1/2", "bot-set": ["a=1", "b.c=true"], "min-pass-rate": "80%",
    "homeserver-port": 8448, "replay-speed": "fast", "jobs": 3, "repeat": 4, "model-timeout": 2.5,
    "reply-edit-wait": "5s", "model-retries": 5, "homeserver-url": "http://127.0.0.1:8008", "profile": "slow",
    "step-timeout-cap": "10s", "homeservers": 2,
}


def sample(key: str, action: argparse.Action) -> Any:
    if key in SAMPLES:
        return SAMPLES[key]
    if action.nargs == 0:
        return True
    if action.choices:
        return list(action.choices)[-1]
    if isinstance(action, argparse._AppendAction):
        return ["one", "two"]
    return "some/value"


def test_every_run_flag_can_be_set_in_the_file(tmp_path: Path) -> None:
    parser = _standalone()
    keys = _file_keys(parser)
    assert {"bot", "scenarios-dir", "profile", "provider", "provider-rules", "jobs", "output-dir", "timeout",
            "keyword", "keep-work-dir", "homeserver"} <= set(keys)
    for key, action in keys.items():
        args = parser.parse_args([])
        raw = sample(key, action)
        config = ConfigFile(path=tmp_path / "matrix-qa.toml", values={key: raw})
        applied = apply_config(args, [], config)
        assert applied == {key: raw}
        got = getattr(args, action.dest)
        assert got != action.default, key
        if isinstance(got, Path):
            assert got == tmp_path / "some/value", key
        elif isinstance(got, list) and got and isinstance(got[0], Path):
            assert got == [tmp_path / "one", tmp_path / "two"], key


def test_flags_beat_the_file_and_the_file_beats_defaults(tmp_path: Path) -> None:
    parser = _standalone()
    argv = ["--profile", "fast", "--jobs", "1", "--scenarios-dir", "mine"]
    args = parser.parse_args(argv)
    config = ConfigFile(path=tmp_path / "matrix-qa.toml", values={
        "profile": "slow", "jobs": 4, "scenarios-dir": ["theirs"], "fail-fast": True, "timeout": "5m"})
    apply_config(args, argv, config)
    assert (args.profile, args.jobs, args.scenarios_dir) == ("fast", 1, [Path("mine")])
    assert (args.fail_fast, args.timeout) == (True, "5m")


def test_a_key_may_be_a_single_value_for_a_repeatable_flag(tmp_path: Path) -> None:
    args = _standalone().parse_args([])
    apply_config(args, [], ConfigFile(path=tmp_path / "matrix-qa.toml", values={"keyword": "lock"}))
    assert args.keyword == ["lock"]


@pytest.mark.parametrize(("values", "message"), [
    ({"jbos": 2}, "jbos: unknown key; did you mean 'jobs'?"),
    ({"scenarios_dir": "x"}, "scenarios_dir: unknown key; did you mean 'scenarios-dir'?"),
    ({"zzzzzz": 1}, "zzzzzz: unknown key; the keys are run's flags without their dashes"),
    ({"config": "x.toml"}, "config: unknown key"),
    ({"jobs": 0}, "jobs: must be at least 1, got 0"),
    ({"jobs": "many"}, "jobs: expected a whole number, got 'many'"),
    ({"fail-fast": "yes"}, "fail-fast: expected true or false, got 'yes'"),
    ({"provider": "magic"}, "provider: invalid choice: 'magic'"),
    ({"profile": ["fast"]}, "profile: expected a string or a number, got ['fast']"),
    ({"jobs": True}, "jobs: expected a string or a number, got True"),
    ({"timeout": "soon"}, "timeout: invalid duration 'soon'"),
    ({"shard": "3/2"}, "shard: --shard 3/2: I must be between 1 and N"),
    ({"bot-set": ["nokey"]}, "bot-set: --bot-set expects KEY=VALUE"),
    ({"keyword": [{"a": 1}]}, "keyword: expected a string or a number"),
])
def test_a_bad_key_or_value_names_the_file_and_the_key(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    config = ConfigFile(path=tmp_path / "matrix-qa.toml", values=values)
    with pytest.raises(ConfigError) as err:
        apply_config(_standalone().parse_args([]), [], config)
    assert str(err.value).startswith(f"{tmp_path / 'matrix-qa.toml'}: ")
    assert message in str(err.value)


def test_every_bad_key_is_reported_on_its_own_line(tmp_path: Path) -> None:
    config = ConfigFile(path=tmp_path / "pyproject.toml", values={"jbos": 1, "jobs": 0, "profile": "slow"})
    with pytest.raises(ConfigError) as err:
        apply_config(_standalone().parse_args([]), [], config)
    assert str(err.value).splitlines() == [
        f"{tmp_path / 'pyproject.toml'}: [tool.matrix-qa] jbos: unknown key; did you mean 'jobs'?",
        f"{tmp_path / 'pyproject.toml'}: [tool.matrix-qa] jobs: must be at least 1, got 0",
    ]


def test_an_absolute_path_in_the_file_stays_as_it_is(tmp_path: Path) -> None:
    args = _standalone().parse_args([])
    apply_config(args, [], ConfigFile(path=tmp_path / "matrix-qa.toml", values={"bot": "/abs/bot.yaml"}))
    assert args.bot == Path("/abs/bot.yaml")


# --- finding and reading the file --------------------------------------------------------------------------


def test_the_file_is_found_from_the_current_directory_upward(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config_file(deep) is None
    (tmp_path / "pyproject.toml").write_text('[tool.matrix-qa]\njobs = 2\n')
    assert find_config_file(deep) == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "pyproject.toml").write_text('[project]\nname = "not-ours"\n')  # passed over
    assert find_config_file(deep) == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "matrix-qa.toml").write_text("jobs = 3\n")
    assert find_config_file(deep) == tmp_path / "a" / "matrix-qa.toml"
    (tmp_path / "a" / "b" / "pyproject.toml").write_text('[tool."matrix-qa"]\n')
    assert find_config_file(deep) == deep / "pyproject.toml"


def test_matrix_qa_toml_wins_over_pyproject_in_the_same_folder(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.matrix-qa]\njobs = 2\n')
    (tmp_path / "matrix-qa.toml").write_text("jobs = 3\n")
    assert find_config_file(tmp_path) == tmp_path / "matrix-qa.toml"


def test_reading_takes_the_table_of_a_pyproject_and_the_whole_of_its_own_file(tmp_path: Path) -> None:
    py = tmp_path / "pyproject.toml"
    py.write_text('[project]\nname = "x"\n[tool.matrix-qa]\njobs = 2\nbot = "b.yaml"\n')
    assert load_config_file(py) == ConfigFile(py, {"jobs": 2, "bot": "b.yaml"})
    own = tmp_path / "matrix-qa.toml"
    own.write_text('jobs = 3\n')
    loaded = load_config_file(own)
    assert (loaded.values, loaded.base, loaded.where("jobs")) == ({"jobs": 3}, tmp_path, f"{own}: jobs")
    assert load_config_file(py).where("jobs") == f"{py}: [tool.matrix-qa] jobs"


def test_an_unreadable_or_broken_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "matrix-qa.toml"
    broken.write_text("jobs = \n")
    with pytest.raises(ConfigError, match=r"matrix-qa.toml: not valid TOML: .*line 1"):
        load_config_file(broken)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config_file(tmp_path / "missing.toml")
    py = tmp_path / "pyproject.toml"
    py.write_text('[tool]\nmatrix-qa = 3\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml: \[tool.matrix-qa\] must be a table"):
        load_config_file(py)


# --- through the command line, to the summary ----------------------------------------------------------------


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    async def no_run(self: Run, work: Path) -> None:
        return None

    monkeypatch.setattr(Run, "_run_all", no_run)
    return cli.main(argv)


def test_the_summary_records_the_file_and_its_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.matrix-qa]\noutput-dir = "out"\njobs = 1\nprofile = "fast"\nkeyword = ["canary"]\n')
    monkeypatch.chdir(project / "sub")
    run_cli(["run", "--progress", "plain"], monkeypatch)
    summary = json.loads((project / "out" / "matrix-qa-summary.json").read_text())
    env = summary["environment"]
    assert env["configFile"] == str(project / "pyproject.toml")
    assert env["configSettings"] == {"output-dir": "out", "jobs": 1, "profile": "fast", "keyword": ["canary"]}
    assert summary["jobs"] == 1
    assert [s["id"] for s in summary["scenarios"]] == ["canary"]


def test_config_names_the_file_to_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "matrix-qa.toml").write_text("jobs = 0\n")  # would fail, but --config points elsewhere
    other = tmp_path / "other.toml"
    other.write_text('output-dir = "elsewhere"\nscenario = ["canary"]\n')
    run_cli(["run", "--config", str(other), "--progress", "plain"], monkeypatch)
    summary = json.loads((tmp_path / "elsewhere" / "matrix-qa-summary.json").read_text())
    assert summary["environment"]["configFile"] == str(other)
    assert run_cli(["run", "--config", str(tmp_path / "nope.toml")], monkeypatch) == 2
    assert "--config " in capsys.readouterr().err


def test_a_bad_file_found_upward_is_exit_2_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "matrix-qa.toml").write_text("jbos = 2\n")
    monkeypatch.chdir(tmp_path)
    assert run_cli(["run"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert f"matrix-qa: {tmp_path / 'matrix-qa.toml'}: jbos: unknown key; did you mean 'jobs'?" in err
    assert "Traceback" not in err


# --- a value from the file that the run refuses later names the file and the key, not the flag -----------------


def test_a_bot_set_from_the_file_refused_by_the_bot_names_the_file_and_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.matrix-qa]\nbot-set = ["session.nope=1"]\n')
    monkeypatch.chdir(tmp_path)
    assert run_cli(["run"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"matrix-qa: {tmp_path / 'pyproject.toml'}: [tool.matrix-qa] bot-set session.nope: ")
    assert "--bot-set" not in err and "Traceback" not in err


def test_a_setting_from_the_file_that_the_run_does_not_use_names_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "matrix-qa.toml").write_text('model = "gpt-x"\n')
    monkeypatch.chdir(tmp_path)
    assert run_cli(["run"], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"matrix-qa: {tmp_path / 'matrix-qa.toml'}: model: not used by this run (--homeserver synapse, "
                   "--provider mock): model")


def test_a_flag_on_the_command_line_is_still_named_as_the_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "matrix-qa.toml").write_text('bot-set = ["session.nope=1"]\nprofile = "fast"\n')
    monkeypatch.chdir(tmp_path)
    assert run_cli(["run", "--bot-set", "session.other=1"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("matrix-qa: --bot-set") and "session.other" in err and "matrix-qa.toml" not in err


def test_blame_file_rewrites_only_the_lines_naming_a_flag_from_the_file() -> None:
    blamed = {"--bot-set": "f.toml: bot-set", "--jobs": "f.toml: jobs"}
    exc = ConfigError("--bot-set: --bot-set a.b: unknown key\nuse --jobs 2 or less\n--profile x: nothing\n"
                      "the --bot-setting is not a flag")
    got = blame_file(exc, blamed)
    assert isinstance(got, ConfigError) and got.exit_code == exc.exit_code
    assert str(got).splitlines() == ["f.toml: bot-set a.b: unknown key", "f.toml: jobs: use jobs 2 or less",
                                     "--profile x: nothing", "the --bot-setting is not a flag"]
    same = ConfigError("--profile x: nothing")
    assert blame_file(same, blamed) is same


# --- `list` reads the file as `run` does -----------------------------------------------------------------------

MINE = "id: mine\ntitle: Mine\nsteps:\n  - send: {as: driver, body: hi}\n"


def test_list_takes_the_files_scenario_dirs_profile_and_keywords(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.yaml").write_text(MINE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "matrix-qa.toml").write_text('scenarios-dir = ["mine"]\nprofile = "e2ee"\nkeyword = ["mine"]\n')
    monkeypatch.chdir(tmp_path / "sub")
    assert cli.main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["profile"], listed["keywords"]) == ("e2ee", ["mine"])
    assert [s["id"] for s in listed["scenarios"] if s["runs"]] == ["mine"]
    assert "canary" in {s["id"] for s in listed["scenarios"]}  # the library too, as run adds it
    # Flags beat the file.
    assert cli.main(["list", "--json", "--profile", "fast", "-k", "canary"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["profile"], [s["id"] for s in listed["scenarios"] if s["runs"]]) == ("fast", ["canary"])


def test_list_with_only_own_scenarios_and_ids_from_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.yaml").write_text(MINE)
    (tmp_path / "other.toml").write_text('scenarios-dir = ["."]\nno-builtin-scenarios = true\nscenario = ["x"]\n')
    assert cli.main(["list", "--config", str(tmp_path / "other.toml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["- mine  (every)               Mine",
                   "1 scenario(s); --profile fast runs 0, leaves out 1 (marked -)"]


def test_list_refuses_a_bad_file_as_run_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "matrix-qa.toml").write_text("jbos = 2\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["list"]) == 2
    assert f"matrix-qa: {tmp_path / 'matrix-qa.toml'}: jbos: unknown key" in capsys.readouterr().err
