"""The step registry: every step kind is one class in one family module, and the rest of the tester reads it
from there. Measured here: each kind's name is written in one file of the tester (its family module), the
docs/scenarios.md's step table is the registry's, every kind is used by a built-in scenario, loading scenarios does not
import the Matrix client, and qa/scenario has no import circle.

Regenerate docs/scenarios.md's step table after adding or changing a step kind:
`python -m tests.unit.test_step_registry`.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

from qa.scenario.loader import load_scenarios
from qa.scenario.steps import registry
from qa.scenario.steps.base import StepBase
from qa.scenario.steps.registry import FAMILIES, STEP_TYPES, step_table

REPO = Path(__file__).resolve().parents[2]
README = REPO / "docs" / "scenarios.md"  # the tables moved out of the README (issue 25)
BEGIN = "<!-- step-table:begin (generated from each step class's `does`: python -m tests.unit.test_step_registry) -->"
END = "<!-- step-table:end -->"


def _tester_files() -> list[Path]:
    """The tester: qa/ without the embedded agent, which is the bot under test."""
    return sorted(p for p in (REPO / "qa").rglob("*.py") if "agent" not in p.relative_to(REPO / "qa").parts)


def files_naming(kind: str, files: list[Path]) -> list[str]:
    quoted = re.compile(rf"""["']{re.escape(kind)}["']""")
    return [str(p.relative_to(REPO)) for p in files if quoted.search(p.read_text(encoding="utf-8"))]


def test_each_kind_is_named_in_one_file_of_the_tester_its_family_module() -> None:
    files = _tester_files()
    named = {kind: files_naming(kind, files) for kind in STEP_TYPES}
    once = {kind for kind, where in named.items() if len(where) == 1}
    share = len(once) / len(STEP_TYPES)
    elsewhere = {kind: where for kind, where in named.items() if kind not in once}
    # The ones left share their name with a Matrix membership (join, invite) or a fault proxy default.
    assert share >= 0.9, f"{share:.1%} of step kinds are named in one file only; the others: {elsewhere}"
    for kind in once:
        assert named[kind] == [str(Path(inspect.getfile(STEP_TYPES[kind])).relative_to(REPO))], kind


def test_every_step_class_of_a_family_is_registered_once() -> None:
    classes = [obj for family in FAMILIES for obj in vars(family).values()
               if isinstance(obj, type) and issubclass(obj, StepBase) and obj.__module__ == family.__name__]
    assert len(classes) == len(STEP_TYPES) == len({c.kind for c in classes})
    for cls in classes:
        assert "kind" in vars(cls) and cls.does and "|" not in cls.does.replace("\\|", ""), cls.__name__


def test_the_readme_step_table_is_the_registry() -> None:
    text = README.read_text(encoding="utf-8")
    current = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert current == step_table(), "docs/scenarios.md step table is stale: run python -m tests.unit.test_step_registry"


def test_every_kind_is_used_by_a_built_in_scenario() -> None:
    used = {step.kind for scenario in load_scenarios([REPO / "scenarios"]) for step in scenario.steps}
    assert set(STEP_TYPES) - used == set()


def test_loading_and_checking_scenarios_does_not_import_the_matrix_client() -> None:
    # The run loads scenarios before the homeserver boots and imports the runner (nio: ~0.4 s) during the
    # boot; `validate` never needs the client. Step modules import nio and qa.actors inside run().
    code = ("import sys; from qa.scenario.loader import load_scenarios; load_scenarios(['scenarios']); "
            "from qa.harness.capabilities import needs; "
            "print(sorted(m for m in sys.modules if m == 'nio' or m.startswith(('nio.', 'qa.actors'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    """The qa modules a module imports, at any depth of its code but outside `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qa."):
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("qa.")}
    return found


def test_qa_scenario_has_no_import_circle() -> None:
    root = REPO / "qa" / "scenario"
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path and (found := cycle_from(start, [*path, nxt])):
                return found
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m, [m]))]
    assert cycles == []
    assert "qa.scenario.steps.registry" in graph["qa.scenario.schema"]  # the walk does see the imports


def test_the_registry_names_no_kind() -> None:
    source = Path(registry.__file__).read_text(encoding="utf-8")
    assert [kind for kind in STEP_TYPES if f'"{kind}"' in source or f"'{kind}'" in source] == []


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + step_table() + "\n" + text[end:], encoding="utf-8")
    sys.exit(0)
