"""Every file of qa/ stays readable in one sitting: no module over 600 lines, no class over 250 (issue 24)."""

from __future__ import annotations

import ast
from pathlib import Path

QA = Path(__file__).resolve().parents[2] / "qa"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 250


def too_long_modules(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return found


def too_long_classes(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - first + 1
                if lines > MAX_CLASS_LINES:
                    found.append(f"{path.relative_to(root.parent)}: class {node.name}: {lines} lines")
    return found


def test_no_module_of_qa_is_over_600_lines() -> None:
    assert too_long_modules(QA) == []


# Classes over the limit that may stay so for now (each wants an issue of its own): name -> lines. They may
# shrink, never grow; when one fits, its entry goes. Empty since MatrixBot and SessionManager were split
# (qa.agent.sender, qa.agent.routing; qa.agent.turn, qa.agent.session_writes): every class fits.
KNOWN_LONG_CLASSES: dict[str, int] = {}


def test_no_class_of_qa_is_over_250_lines() -> None:
    found = dict(line.rsplit(": ", 1) for line in too_long_classes(QA))
    sizes = {name: int(size.removesuffix(" lines")) for name, size in found.items()}
    assert sorted(sizes) == sorted(KNOWN_LONG_CLASSES), "a class over 250 lines, or a known one that now fits"
    grown = {name: size for name, size in sizes.items() if size > KNOWN_LONG_CLASSES[name]}
    assert not grown, f"a class already over the limit grew: {grown}"


def test_the_limits_catch_what_they_guard_against(tmp_path: Path) -> None:
    root = tmp_path / "qa"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (root / "fits.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    body = "    x = 1\n" * (MAX_CLASS_LINES - 2)
    (root / "classes.py").write_text(f"class Fits:\n{body}\n\n@dataclass\nclass Big:\n{body}    y = 2\n")
    assert too_long_modules(root) == [f"qa/sub/long.py: {MAX_MODULE_LINES + 1} lines"]
    # Fits: its line and 248 more (249); Big: its decorator, its line, 248 and one more (251).
    assert too_long_classes(root) == [f"qa/classes.py: class Big: {MAX_CLASS_LINES + 1} lines"]
