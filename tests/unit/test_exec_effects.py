"""The exec side effect without servers: the launch names the exec directory, the embedded agent's exec tool
runs commands there, and expect_exec_file judges the directory's listing (file:line errors for a bad name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.evidence.approvals import exec_file_problems, plain_file_name
from tests.unit.test_scenario_loader import line_of, only_error, scenario_file


def test_a_present_file_is_judged_from_the_listing() -> None:
    assert exec_file_problems(["MQA-1", "other"], "MQA-1", True) == []
    assert exec_file_problems(["other"], "MQA-1", False) == []
    assert exec_file_problems(["b", "a"], "MQA-1", True) == [
        "'MQA-1' is not in the exec directory (it holds: a, b): the command never ran there"]
    assert exec_file_problems([], "MQA-1", True) == [
        "'MQA-1' is not in the exec directory (it holds: nothing): the command never ran there"]
    assert exec_file_problems(["MQA-1"], "MQA-1", False) == [
        "'MQA-1' is in the exec directory: the command ran although the bot said it did not"]
    # A name that only contains the wanted one is not it.
    assert exec_file_problems(["MQA-10"], "MQA-1", True) != []


@pytest.mark.parametrize("name", ["a/b", "../x", "..", ".", "a\\b", "/abs"])
def test_a_path_is_not_a_file_name(name: str) -> None:
    with pytest.raises(ValueError) as err:
        plain_file_name(name)
    assert str(err.value) == f"must be a plain file name inside the exec directory, not a path: {name!r}"
    assert plain_file_name("{token}-x.txt") == "{token}-x.txt"


def test_a_path_in_expect_exec_file_is_a_file_line_error(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n- expect_exec_file: {file: ../x, present: false}\n")
    err = only_error(path)
    assert (err.line, err.field) == (line_of(path, "expect_exec_file"), "steps[1].expect_exec_file.file")
    assert "plain file name" in err.message
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n- expect_exec_file: {file: x}\n", name="t.yaml")
    err = only_error(path)
    assert (err.field, err.message) == ("steps[1].expect_exec_file.present", "required field missing")


def test_the_launch_gives_the_exec_directory_beside_the_state(tmp_path: Path) -> None:
    from qa.harness.launch import contract_env
    from tests.unit.test_launch import _facts

    facts = _facts(tmp_path)
    assert contract_env(facts, None)["MATRIX_QA_EXEC_DIR"] == str(tmp_path / "state" / "exec")
    moved = _facts(tmp_path, exec_dir=tmp_path / "elsewhere")
    assert contract_env(moved, None)["MATRIX_QA_EXEC_DIR"] == str(tmp_path / "elsewhere")


def test_the_exec_dir_step_needs_the_capability(tmp_path: Path) -> None:
    from qa.harness.capabilities import missing
    from qa.scenario.loader import load_scenario

    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n- expect_exec_file: {file: x, present: true}\n")
    lacking = missing(load_scenario(path), ["approvals", "trace"])
    assert [(n.capability, n.why) for n in lacking] == [("exec-dir", "step 2 (expect_exec_file)")]


async def test_the_agent_runs_a_command_in_the_exec_directory(tmp_path: Path) -> None:
    from qa.agent.exec_tool import DEFAULT_ALLOWED_PROGRAMS, run_command

    result = await run_command("touch made-here", DEFAULT_ALLOWED_PROGRAMS, 10.0, str(tmp_path))
    assert result.ran and result.exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["made-here"]
    refused = await run_command("rm made-here", DEFAULT_ALLOWED_PROGRAMS, 10.0, str(tmp_path))
    assert not refused.ran and (tmp_path / "made-here").exists()
