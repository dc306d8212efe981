"""The GitHub Action (action.yml): its shape (inputs, outputs, steps that name only what exists) and its shell
parts, run here with a stand-in matrix-qa: the arguments it builds, the outputs it sets, the annotations it
prints for a failed step (file and line of that step). The Action, this repository's workflow and the workflow
`matrix-qa init` writes are also validated against the official schemas that check-jsonschema ships
(vendor.github-actions, vendor.github-workflows: bundled, so no network), and a broken Action is refused by it."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qa.report.annotations import annotation_lines, command, escape, main, relative, step_lines_of

ROOT = Path(__file__).resolve().parents[2]
ACTION: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
STEPS = ACTION["runs"]["steps"]

FAILING = """\
id: mine
title: fails at its second step
steps:
  - send: {as: driver, mention: bot, body: "hi {token}", id: ask}

  - expect_reply:
      to: ask
      body: "{token}"
"""


def step(name: str) -> dict[str, Any]:
    return next(s for s in STEPS if s.get("name") == name)


def test_the_action_is_composite_and_complete() -> None:
    assert {"name", "description", "runs"} <= set(ACTION) and ACTION["runs"]["using"] == "composite"
    for name, spec in ACTION["inputs"].items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name) and spec["description"] and "default" in spec
        assert set(spec) <= {"description", "required", "default", "deprecationMessage"}
    assert {"bot-file", "profile", "scenarios-dir", "extra-args", "python-version", "shard"} <= set(ACTION["inputs"])
    assert {"verdict", "report"} <= set(ACTION["outputs"])
    for spec in ACTION["outputs"].values():
        assert set(spec) == {"description", "value"}
    for s in STEPS:
        assert ("uses" in s) != ("run" in s)
        if "run" in s:
            assert s["shell"] == "bash"


def test_every_reference_names_an_input_or_a_step_that_exists() -> None:
    text = (ROOT / "action.yml").read_text(encoding="utf-8")
    ids = {s["id"] for s in STEPS if "id" in s}
    for used in re.findall(r"inputs\.([a-z0-9-]+)", text):
        assert used in ACTION["inputs"], used
    for used, output in re.findall(r"steps\.([a-z0-9-]+)\.outputs\.([a-z0-9-]+)", text):
        assert used in ids, used
        assert re.search(rf"{output}=", step_run_of(used)), (used, output)


def step_run_of(step_id: str) -> str:
    return next(s["run"] for s in STEPS if s.get("id") == step_id)


def bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=env, cwd=cwd,
                          capture_output=True, text=True, check=False, timeout=60)


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "ws" / "matrix-qa" / "scenarios").mkdir(parents=True)
    scenario = tmp_path / "ws" / "matrix-qa" / "scenarios" / "mine.yaml"
    scenario.write_text(FAILING)
    fake = tmp_path / "bin" / "matrix-qa"
    fake.parent.mkdir()
    # Stands in for matrix-qa: records its arguments and writes a failed run's summary, exit 1.
    fake.write_text(f"""#!{sys.executable}
import json, sys, pathlib
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--output-dir") + 1]); out.mkdir(parents=True, exist_ok=True)
(out / "args.json").write_text(json.dumps(args))
(out / "matrix-qa-summary.json").write_text(json.dumps({{"status": "fail", "errors": [], "scenarios": [
    {{"id": "mine", "status": "fail", "source": {str(scenario)!r},
      "failure": {{"step": 2, "stepKind": "expect_reply", "expected": "a reply with body 'MQA-1'",
                   "seen": ["'hi', 10:04"]}}}}]}}))
sys.exit(1)
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "RUNNER_TEMP": str(tmp_path / "tmp"),
           "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_WORKSPACE": str(tmp_path / "ws"),
           "PYTHONPATH": str(ROOT)}
    return {"env": env, "scenario": scenario, "tmp": tmp_path}


def test_the_run_step_builds_the_arguments_and_sets_the_outputs(workspace: dict[str, Any]) -> None:
    env = {**workspace["env"], "BOT_FILE": "matrix-qa/bot.yaml", "PROFILE": "", "SCENARIOS_DIR": "matrix-qa/scenarios",
           "SHARD": "2/4", "EXTRA_ARGS": "--jobs 2 -k 'not slow'"}
    done = bash(step_run_of("run"), env, workspace["tmp"] / "ws")
    assert done.returncode == 0, done.stderr  # the verdict step fails the job, after upload and annotations
    out = outputs(workspace["tmp"] / "output")
    assert (out["exit-code"], out["verdict"]) == ("1", "fail")
    assert out["report"] == f"{workspace['tmp'] / 'tmp' / 'matrix-qa'}/matrix-qa-report.md"
    args = json.loads((Path(out["dir"]) / "args.json").read_text())
    assert args == ["run", "--progress", "plain", "--output-dir", out["dir"], "--bot", "matrix-qa/bot.yaml",
                    "--scenarios-dir", "matrix-qa/scenarios", "--shard", "2/4", "--jobs", "2", "-k", "not slow"]


def test_the_annotate_step_points_at_the_failed_step(workspace: dict[str, Any]) -> None:
    bash(step_run_of("run"), {**workspace["env"], "EXTRA_ARGS": ""}, workspace["tmp"] / "ws")
    out = outputs(workspace["tmp"] / "output")
    done = bash(step("Annotate failed steps")["run"], {**workspace["env"], "OUT": out["dir"]}, workspace["tmp"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "::error file=matrix-qa/scenarios/mine.yaml,line=6,title=matrix-qa%3A mine failed at step 2 (expect_reply)"
        "::a reply with body 'MQA-1'%0Aseen: 'hi', 10:04",
    ]


def test_the_verdict_step_exits_with_the_run_code() -> None:
    run = step("Verdict")["run"]
    assert bash(run, {**os.environ, "CODE": "1", "VERDICT": "fail"}, ROOT).returncode == 1
    assert bash(run, {**os.environ, "CODE": "0", "VERDICT": "pass"}, ROOT).returncode == 0


def test_the_artifact_is_named_by_the_shard(tmp_path: Path) -> None:
    for shard, name, expected in (("", "", "matrix-qa"), ("2/4", "", "matrix-qa-shard-2-of-4"), ("1/2", "x", "x")):
        env = {**os.environ, "SHARD": shard, "NAME": name, "GITHUB_OUTPUT": str(tmp_path / f"o{shard[:1]}{name}")}
        assert bash(step("Name the artifact")["run"], env, tmp_path).returncode == 0
        assert outputs(Path(env["GITHUB_OUTPUT"])) == {"artifact": expected}


# --- the annotation lines (pure) ---------------------------------------------------------------------------


def summary(*scenarios: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"scenarios": list(scenarios), "errors": errors or []}


def test_a_failed_step_is_an_error_on_its_line() -> None:
    s = {"id": "a", "status": "fail", "source": "/ws/s/a.yaml",
         "failure": {"step": 2, "stepKind": "expect_reply", "expected": "x", "seen": ["1", "2", "3", "4"]}}
    assert annotation_lines(summary(s), {"/ws/s/a.yaml": [4, 9]}, Path("/ws")) == [
        "::error file=s/a.yaml,line=9,title=matrix-qa%3A a failed at step 2 (expect_reply)::x%0Aseen: 1; 2; 3"]


def test_passes_and_skips_say_nothing_and_interrupted_is_a_warning() -> None:
    lines = annotation_lines(summary({"id": "p", "status": "pass"}, {"id": "s", "status": "skip"},
                                     {"id": "i", "status": "interrupted", "details": "SIGTERM"}), {})
    assert lines == ["::warning title=matrix-qa%3A i interrupted::SIGTERM"]


def test_a_step_line_unknown_or_out_of_range_leaves_the_line_out() -> None:
    s = {"id": "a", "status": "fail", "source": "a.yaml", "failure": {"step": 3, "expected": "x"}}
    assert annotation_lines(summary(s), {"a.yaml": [1, 2]}) == [
        "::error file=a.yaml,title=matrix-qa%3A a failed at step 3 (None)::x"]
    s["failure"] = {"step": 0, "expected": "x"}
    assert annotation_lines(summary(s), {"a.yaml": [1, 2]}) == ["::error file=a.yaml,title=matrix-qa%3A a failed::x"]
    s["failure"] = {"step": 1, "expected": "x"}
    assert "line=1," in annotation_lines(summary(s), {"a.yaml": [1, 2]})[0]
    no_source = {"id": "b", "status": "fail", "details": "setup failed"}
    assert annotation_lines(summary(no_source), {}) == ["::error title=matrix-qa%3A b failed::setup failed"]


def test_errors_of_the_run_are_errors_without_a_file() -> None:
    lines = annotation_lines(summary(errors=[{"component": "homeserver", "message": "died: 100%\nbye"}]), {})
    assert lines == ["::error title=matrix-qa run::homeserver: died: 100%25%0Abye"]


def test_escaping_keeps_each_annotation_one_line_and_its_properties_apart() -> None:
    assert escape("a%b\r\nc") == "a%25b%0D%0Ac"
    assert command("error", "m", file="a,b:c", line=None) == "::error file=a%2Cb%3Ac::m"
    assert command("notice", "m") == "::notice::m"


def test_paths_outside_the_workspace_stay_as_they_are(tmp_path: Path) -> None:
    assert relative("/elsewhere/a.yaml", tmp_path) == "/elsewhere/a.yaml"
    assert relative(str(tmp_path / "x" / "a.yaml"), tmp_path) == "x/a.yaml"
    assert relative("a.yaml", None) == "a.yaml"


def test_step_lines_are_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(FAILING)
    assert step_lines_of(path) == [4, 6]
    path.write_text("id: x\nactors: [driver, helper]\nsteps:\n  - a: {}\n")
    assert step_lines_of(path) == [4]  # the steps' lines, not those of the list before them
    path.write_text("[1, 2]\n")
    assert step_lines_of(path) == []
    path.write_text("id: x\nsteps: {}\n")
    assert step_lines_of(path) == []
    path.write_text("a: [\n")
    assert step_lines_of(path) == []
    assert step_lines_of(tmp_path / "missing.yaml") == []


def test_a_missing_summary_is_said_as_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.json")]) == 0
    assert capsys.readouterr().out.startswith("::error title=matrix-qa run::no matrix-qa summary to annotate from")


def compare_stand_in(tmp_path: Path, code: int) -> dict[str, str]:
    """A matrix-qa whose `compare` prints a line and exits `code`, as the real one does (1: regressed)."""
    fake = tmp_path / "bin" / "matrix-qa"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('compare', *sys.argv[2:])\nsys.exit({code})\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "out").mkdir(exist_ok=True)
    return {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "BASE": "base.json",
            "OUT": str(tmp_path / "out"), "GITHUB_OUTPUT": str(tmp_path / "output"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}


@pytest.mark.parametrize(("code", "regressed", "warned"), [(1, "true", False), (0, "false", False),
                                                           (2, "false", True)])
def test_the_compare_step_reports_a_regression_without_failing_the_job(tmp_path: Path, code: int, regressed: str,
                                                                     warned: bool) -> None:
    compare = step("Compare with the base run")
    assert compare["if"] == "always() && inputs.compare-with != ''"
    env = compare_stand_in(tmp_path, code)
    done = bash(compare["run"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert outputs(tmp_path / "output") == {"regressed": regressed}
    shown = f"compare base.json {tmp_path / 'out'}/matrix-qa-summary.json\n"
    assert (tmp_path / "out" / "compare.md").read_text() == shown
    assert (tmp_path / "summary.md").read_text() == shown
    assert ("::warning" in done.stdout) is warned


def _schema_check(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return subprocess.run([tool, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_action_and_the_workflows_meet_githubs_schemas(tmp_path: Path) -> None:
    from qa.init_project import workflow_text

    written = tmp_path / "init-workflow.yml"
    written.write_text(workflow_text(), encoding="utf-8")
    action = _schema_check("vendor.github-actions", ROOT / "action.yml")
    assert action.returncode == 0, action.stdout + action.stderr
    workflows = _schema_check("vendor.github-workflows", *sorted((ROOT / ".github" / "workflows").glob("*.yml")),
                              written)
    assert workflows.returncode == 0, workflows.stdout + workflows.stderr


def test_the_schema_check_refuses_a_broken_action(tmp_path: Path) -> None:
    broken = dict(ACTION)
    broken["runs"] = {"using": "composite", "steps": [{"name": "no run and no uses"}], "main": 3}
    path = tmp_path / "action.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = _schema_check("vendor.github-actions", path)
    assert done.returncode == 1, done.stdout + done.stderr
