"""The seam between the tester and the bot under test holds (issue 24): nothing in qa/ outside qa/agent/ reaches
the embedded agent, by an import or by a module name in a string (importlib, an argv); and the agent imports
nothing of qa but the shared kernel (qa.kernel), which imports nothing of qa but itself.

The harness knows the agent only through qa/agent/bot.yaml (a file path, not a module) and the trace format.
Docstrings may name agent modules (they document, they do not reach); code strings may not.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

QA = Path(__file__).resolve().parents[2] / "qa"
_AGENT_NAME = re.compile(r"\bqa\.agent\b")
_QA_NAME = re.compile(r"\bqa\.([A-Za-z_]\w*)")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings of the module, a class or a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _imported(node: ast.AST, package: str) -> Iterator[str]:
    """The absolute module names an import statement reaches (`from qa import agent` reaches qa.agent)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        yield module
        yield from (f"{module}.{alias.name}" for alias in node.names)


def references(path: Path, root: Path) -> Iterator[tuple[int, str, str]]:
    """(line, kind, text) of every module import and every non-docstring string constant naming a qa module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = path.relative_to(root.parent).with_suffix("").parts
    package = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported(node, package):
                yield node.lineno, "import", name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                and _QA_NAME.search(node.value):
            yield node.lineno, "string", node.value


def _files(root: Path, inside: tuple[str, ...] = (), outside: tuple[str, ...] = ()) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        top = path.relative_to(root).parts[0]
        if (not inside or top in inside) and top not in outside:
            yield path


def qa_reaches_agent(root: Path) -> list[str]:
    found = []
    for path in _files(root, outside=("agent",)):
        for line, kind, text in references(path, root):
            hit = (text == "qa.agent" or text.startswith("qa.agent.")) if kind == "import" \
                else bool(_AGENT_NAME.search(text))
            if hit:
                found.append(f"{path.relative_to(root.parent)}:{line}: {kind} {text!r}")
    return found


def agent_or_kernel_reaches_qa(root: Path) -> list[str]:
    found = []
    for path in _files(root, inside=("agent", "kernel")):
        allowed = ("kernel",) if path.relative_to(root).parts[0] == "kernel" else ("kernel", "agent")
        for line, kind, text in references(path, root):
            names = [text] if kind == "import" else [m.group(0) for m in _QA_NAME.finditer(text)]
            # Only names of qa's own modules count: `@bot:qa.invalid` is a test domain, not a module.
            bad = [n for n in names if n.startswith("qa.") and n.split(".")[1] not in allowed
                   and ((root / n.split(".")[1]).is_dir() or (root / f"{n.split('.')[1]}.py").is_file())]
            found.extend(f"{path.relative_to(root.parent)}:{line}: {kind} {n!r}" for n in bad)
    return found


def test_nothing_in_the_tester_imports_or_names_the_agent() -> None:
    assert qa_reaches_agent(QA) == []


def test_the_agent_and_the_kernel_import_only_the_kernel() -> None:
    assert agent_or_kernel_reaches_qa(QA) == []


# --- the guards catch what they guard against ---------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "qa"
    for name, text in {"__init__.py": "", "agent/__init__.py": "", "kernel/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_tester_guard_finds_imports_importlib_strings_and_argv(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "run.py": '"""Reads qa.agent.trace records (a docstring may say so)."""\n'
                  "from qa.agent.trace import read_trace\n",
        "cli.py": "from qa import agent\nimport qa.agent.doctor as d\n",
        "harness/fork.py": 'import importlib\nM = importlib.import_module("qa.agent.zygote")\n'
                           'ARGV = ["python", "-m", "qa.agent"]\n',
        "harness/probe.py": "from ..agent import lock\n",
        "harness/fine.py": 'from qa.kernel.trace import read_trace\nBOT = "qa/agent/bot.yaml"\nX = "qa.agents"\n',
    })
    found = qa_reaches_agent(root)
    assert found == [
        "qa/cli.py:1: import 'qa.agent'",
        "qa/cli.py:2: import 'qa.agent.doctor'",
        "qa/harness/fork.py:2: string 'qa.agent.zygote'",
        "qa/harness/fork.py:3: string 'qa.agent'",
        "qa/harness/probe.py:1: import 'qa.agent'",
        "qa/harness/probe.py:1: import 'qa.agent.lock'",
        "qa/run.py:2: import 'qa.agent.trace'",
        "qa/run.py:2: import 'qa.agent.trace.read_trace'",
    ]


def test_the_agent_guard_finds_imports_of_the_tester(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "agent/doctor.py": "from qa.report.lock_evidence import holds_open_at_end\nfrom qa.kernel.trace import Trace\n"
                           "from qa.agent.lock import LockHold\n",
        "agent/zygote.py": 'import importlib\nimportlib.import_module("qa.harness.probe")\n',
        "agent/old.py": "from qa.clock import mono_ms\nfrom .. import errors\nUSER = '@bot:qa.invalid'\n",
        "clock.py": "", "errors.py": "", "harness/__init__.py": "", "report/__init__.py": "",
        "kernel/trace.py": "from qa.agent.lock import LockHold\nfrom qa.kernel.clock import mono_ms\n",
    })
    assert agent_or_kernel_reaches_qa(root) == [
        "qa/agent/doctor.py:1: import 'qa.report.lock_evidence'",
        "qa/agent/doctor.py:1: import 'qa.report.lock_evidence.holds_open_at_end'",
        "qa/agent/old.py:1: import 'qa.clock'",
        "qa/agent/old.py:1: import 'qa.clock.mono_ms'",
        "qa/agent/old.py:2: import 'qa.errors'",
        "qa/agent/zygote.py:2: string 'qa.harness'",
        "qa/kernel/trace.py:1: import 'qa.agent.lock'",
        "qa/kernel/trace.py:1: import 'qa.agent.lock.LockHold'",
    ]
