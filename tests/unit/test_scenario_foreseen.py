"""A refused plan foreseen from the scenario files' heads (qa.scenario.foreseen), so `matrix-qa run` starts nothing
early for it; and, as surely, no refusal foreseen for a plan that runs (the early start's overlap is kept)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qa import cli, cli_run
from qa.library import builtin_scenarios_dir
from qa.scenario import foreseen, heads
from qa.scenario.foreseen import refusal


@pytest.fixture
def library(tmp_path: Path) -> Path:
    (tmp_path / "a.yaml").write_text("id: alpha\nprofiles: [fast]\nsteps: []\n", encoding="utf-8")
    (tmp_path / "b.yml").write_text("id: beta\nprofiles: [slow]\nsteps: []\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("id: gamma\n", encoding="utf-8")  # not a scenario file of the directory
    return tmp_path


def test_an_unknown_id_or_an_empty_profile_is_foreseen(library: Path) -> None:
    assert refusal([library], ["alpha", "gamma"], "fast") == "unknown scenario id(s): gamma"
    assert refusal([library], ["delta", "gamma", "delta"], "fast") == "unknown scenario id(s): delta, gamma"
    assert refusal([library], [], "fsat") == "no scenario is in profile 'fsat'"
    assert refusal([library / "missing"], [], "fast") == f"{library / 'missing'}: no such file or directory"
    assert refusal([], ["alpha"], "fast") == "unknown scenario id(s): alpha"


def test_a_plan_that_runs_is_not_refused(library: Path) -> None:
    assert refusal([library], [], "fast") is None
    assert refusal([library], [], "slow") is None
    assert refusal([library], [], "all") is None
    assert refusal([library], ["beta", "alpha"], "nosuch") is None, "ids win over the profile, as in select"
    assert refusal([library / "b.yml"], ["beta"], "fast") is None, "a file named is read as named"


def test_a_file_without_a_plain_head_leaves_it_unforeseen(library: Path) -> None:
    (library / "c.yaml").write_text("id: 'quoted'\nsteps: []\n", encoding="utf-8")
    assert refusal([library], ["nosuch"], "fast") is None, "the quoted id might be it: only a parse can tell"
    (library / "c.yaml").write_bytes(b"id: \xff\n")
    assert refusal([library], ["nosuch"], "fast") is None


def test_a_plan_that_runs_is_told_without_reading_every_head(library: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    read = _reads(monkeypatch)
    assert refusal([library], ["alpha"], "fast") is None
    assert refusal([library], [], "fast") is None
    assert len(read) == 2, "each answer came from a.yaml alone"


def test_the_built_in_library_is_foreseen_from_its_heads() -> None:
    """Every built-in file has a plain head, so a mistyped id or profile starts nothing early."""
    found = builtin_scenarios_dir()
    assert found is not None
    assert refusal([found], ["canary", "no-such-scenario"], "fast") == "unknown scenario id(s): no-such-scenario"
    assert refusal([found], [], "fsat") == "no scenario is in profile 'fsat'"
    assert refusal([found], [], "fast") is None and refusal([found], ["canary"], "fast") is None


def test_a_path_the_system_refuses_to_look_at_leaves_it_unforeseen(library: Path) -> None:
    """exists() raises on a name too long (or a directory not searchable): the run's own checks word it, exit 2."""
    assert refusal([library / ("b" * 5000)], [], "fast") is None
    assert refusal([library / ("b" * 5000)], ["alpha"], "fast") is None


def test_a_fifo_named_like_a_scenario_does_not_hang_the_foresight(library: Path) -> None:
    fifo = library / "z.yaml"  # sorted last, so an unknown id reaches it
    os.mkfifo(fifo)
    answers: list[str | None] = []
    looker = threading.Thread(target=lambda: answers.append(refusal([library], ["nosuch"], "fast")), daemon=True)
    looker.start()
    looker.join(10)  # a bound, not a sync: the answer needs no writer at all
    if looker.is_alive():  # release the blocked reader (EOF) so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        looker.join(10)
        pytest.fail("refusal blocked reading a FIFO")
    # The loader lists only files and symlinks (qa.scenario.foreseen.files_in): the run skips the FIFO too.
    assert answers == ["unknown scenario id(s): nosuch"]


def test_the_foresight_lists_a_directory_as_the_loader_does(library: Path) -> None:
    """A subdirectory named like a scenario file is not one (the loader skips it), so it does not leave a refusal
    unforeseen; a dangling link is kept by both, and reading it is the run's to word."""
    (library / "sub.yaml").mkdir()
    assert refusal([library], ["nosuch"], "fast") == "unknown scenario id(s): nosuch"
    (library / "zz.yaml").symlink_to(library / "nowhere.yaml")
    assert refusal([library], ["nosuch"], "fast") is None


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    read: list[str] = []
    real = heads.head
    monkeypatch.setattr(heads, "head", lambda text: read.append(text) or real(text))
    monkeypatch.setattr(foreseen, "head", heads.head, raising=False)  # however foreseen binds it
    return read


def _run_args(*argv: str) -> object:
    return cli.build_parser().parse_args(["run", *argv])


def test_the_default_choice_reads_no_head(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --scenario and a profile the built-in library has: it goes ahead; only a missing own path is refused."""
    read = _reads(monkeypatch)
    assert cli_run.foreseen_refusal(_run_args()) is None
    assert cli_run.foreseen_refusal(_run_args("--profile", "all", "--scenarios-dir", str(library))) is None
    assert read == []
    gone = library / "gone"
    assert cli_run.foreseen_refusal(_run_args("--scenarios-dir", str(gone))) == f"{gone}: no such file or directory"
    assert cli_run.foreseen_refusal(_run_args("--scenarios-dir", str(library / ("b" * 5000)))) is None


def test_the_built_in_library_has_the_profiles_the_default_choice_assumes() -> None:
    found = builtin_scenarios_dir()
    assert found is not None
    for profile in cli_run._LIBRARY_PROFILES:
        assert any(profile == "all" or profile in (h.profiles if h else ()) for h in
                   (heads.head(f.read_text(encoding="utf-8")) for f in found.glob("*.yaml"))), profile


def test_own_ids_are_found_before_the_built_in_heads_are_read(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read = _reads(monkeypatch)
    assert cli_run.foreseen_refusal(_run_args("--scenarios-dir", str(library), "--scenario", "alpha")) is None
    assert len(read) == 1, "alpha came from the user's a.yaml alone"


def test_importing_the_run_command_loads_no_yaml() -> None:
    """`matrix-qa --version` and every other command import qa.cli_run: yaml waits until a head is read."""
    code = "import sys, qa.cli_run; print(sorted(m for m in sys.modules if m == 'yaml' or m.startswith('yaml.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"
