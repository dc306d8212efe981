"""The house keeps its shape: the import-linter contracts in pyproject.toml hold, cover every part of qa/, and
break on an import that runs a floor up or reaches the embedded agent (docs/architecture.md names the floors).

`lint-imports` is run in a subprocess, as a developer runs it, without its cache (no files left in the tree).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
QA = REPO / "qa"
CONTRACTS: list[dict[str, Any]] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
    "contracts"]
BY_ID = {contract["id"]: contract for contract in CONTRACTS}
LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the `qa` package under `root`, with the contracts of `root`/pyproject.toml."""
    return subprocess.run([*LINT, "--no-cache", "--no-logo", str(root / "pyproject.toml")], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=120, check=False)


def floors() -> list[set[str]]:
    """The layers contract's floors, top first, each the set of modules standing on it."""
    return [{name.strip() for name in floor.replace(":", "|").split("|")} for floor in BY_ID["floors"]["layers"]]


def parts_of_qa() -> set[str]:
    """Every top-level package and module of qa/, as a dotted name."""
    found = {f"qa.{p.name}" for p in QA.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    found |= {f"qa.{p.stem}" for p in QA.glob("*.py") if p.name != "__init__.py"}
    return found


def test_the_contracts_hold() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in done.stdout


def test_every_part_of_the_tester_stands_on_one_floor() -> None:
    placed = [name for floor in floors() for name in floor]
    assert len(placed) == len(set(placed)), "a module stands on two floors"
    assert set(placed) == parts_of_qa() - {"qa.agent"}, "a part of qa/ that no floor names is unchecked"
    assert floors()[0] == {"qa.cli", "qa.pytest_plugin"} and floors()[-1] == {"qa.kernel"}


def test_the_agent_contracts_name_the_whole_tester() -> None:
    tester = parts_of_qa() - {"qa.agent"}
    outside = BY_ID["agent-outside"]
    assert outside["source_modules"] == ["qa.agent"]
    assert set(outside["forbidden_modules"]) == tester - {"qa.kernel"}
    without = BY_ID["tester-without-agent"]
    assert set(without["source_modules"]) == tester and without["forbidden_modules"] == ["qa.agent"]
    assert all("ignore_imports" not in contract for contract in CONTRACTS), "an exception needs a comment and a reason"


@pytest.mark.parametrize(("module", "bad_import", "broken"), [
    ("qa/kernel/clock.py", "import qa.report.summary", "qa.kernel is not allowed to import qa.report"),
    ("qa/shared/canary.py", "import qa.evidence.events", "qa.shared is not allowed to import qa.evidence"),
    ("qa/report/merge.py", "import qa.harness.plan", "qa.report is not allowed to import qa.harness"),
    ("qa/provider/cassette.py", "import qa.homeserver.base", "qa.provider is not allowed to import qa.homeserver"),
    ("qa/harness/plan.py", "import qa.agent.lock", "qa.harness is not allowed to import qa.agent"),
    ("qa/agent/policy.py", "import qa.waiting", "qa.agent is not allowed to import qa.waiting"),
])
def test_a_bad_import_breaks_a_contract(tmp_path: Path, module: str, bad_import: str, broken: str) -> None:
    shutil.copytree(QA, tmp_path / "qa", ignore=shutil.ignore_patterns("__pycache__", "*.j2", "*.yaml"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{bad_import}\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert broken in done.stdout, done.stdout
