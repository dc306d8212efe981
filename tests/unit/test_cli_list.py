"""`matrix-qa --version`, `list --profile P -k PATTERN --json`, and run's help groups and epilog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.cli import build_parser, main

MINE = """\
id: mine
title: My own scenario, with no profiles
steps:
  - send: {as: driver, body: hi}
"""


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("matrix-qa ") and out.strip() != "matrix-qa"


def test_the_version_is_looked_up_only_when_asked() -> None:
    # The package metadata costs every command ~20 ms (a fresh interpreter: this one may have loaded it already).
    import os
    import subprocess
    import sys

    script = "import sys; from qa.cli import build_parser; build_parser(); print('importlib.metadata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "False", out.stderr


def test_list_marks_what_the_profile_leaves_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--profile", "e2ee"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line[2:].split()[0]: line[0] for line in lines[:-1]}
    assert rows["canary"] == "-"
    assert " " in rows.values() and "-" in rows.values()
    kept = sum(1 for mark in rows.values() if mark == " ")
    assert lines[-1] == (f"{len(rows)} scenario(s); --profile e2ee runs {kept}, leaves out {len(rows) - kept} "
                         "(marked -)")


def test_list_json_says_which_run_and_where_each_file_is(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--profile", "fast", "-k", "canary", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["profile"], listed["keywords"]) == ("fast", ["canary"])
    runs = [s["id"] for s in listed["scenarios"] if s["runs"]]
    assert runs == ["canary"]
    canary = next(s for s in listed["scenarios"] if s["id"] == "canary")
    assert canary["file"].endswith("canary.yaml") and "fast" in canary["profiles"] and canary["title"]


def test_own_scenarios_without_profiles_run_in_any_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.yaml").write_text(MINE)
    assert main(["list", str(tmp_path), "--profile", "slow"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("  mine") and "(every)" in out[0]
    assert out[-1] == "1 scenario(s); --profile slow runs 1, leaves out 0"


def test_run_help_has_groups_examples_and_exit_codes() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    titles = [g.title for g in run._action_groups]
    for title in ("bot under test", "homeserver", "model provider", "selecting scenarios", "output and config",
                  "speed, repeats and deadlines"):
        assert title in titles
    grouped = {a.dest for g in run._action_groups if g.title not in ("options", "positional arguments")
               for a in g._group_actions}
    assert {a.dest for a in run._actions} - grouped == {"help"}  # every flag is in a group
    text = run.format_help()
    assert "examples:" in text and "exit codes:" in text and "matrix-qa run -k" in text


@pytest.mark.parametrize("keep", [True, False])
def test_keep_work_dir_keeps_it_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], keep: bool) -> None:
    from qa.run import Run

    seen: list[Path] = []

    async def no_run(self: Run, work: Path) -> None:
        (work / "state").mkdir()
        seen.append(work)

    monkeypatch.setattr(Run, "_run_all", no_run)
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--scenario", "canary", "--output-dir", str(tmp_path / "out"), "--progress", "plain"]
    main([*argv, "--keep-work-dir"] if keep else argv)
    err = capsys.readouterr().err
    assert (seen[0] / "state").is_dir() is keep
    assert ("kept the work dir" in err and str(seen[0]) in err) is keep
    if keep:
        import shutil

        shutil.rmtree(seen[0])


def test_every_builtin_scenario_names_its_profiles() -> None:
    # Leaving profiles out is for an author's own scenarios; a built-in one would run in every profile.
    from qa.run import default_scenario_paths
    from qa.scenario.loader import load_scenarios

    assert all(s.profiles for s in load_scenarios(default_scenario_paths()))
