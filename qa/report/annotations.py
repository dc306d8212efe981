"""A run's failures as GitHub Actions annotations: `::error file=…,line=…::` on the scenario file and the line of
the step that failed, so a pull request shows them where the author wrote them. Used by the Action (action.yml):
`python -m qa.report.annotations SUMMARY.json --root "$GITHUB_WORKSPACE"`.

`annotation_lines` is pure (the summary as data and each scenario file's step lines in, lines out); reading the
summary and finding the steps' lines in the files is apart, below it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_DATA_ESCAPES = (("%", "%25"), ("\r", "%0D"), ("\n", "%0A"))
_PROPERTY_ESCAPES = (*_DATA_ESCAPES, (":", "%3A"), (",", "%2C"))
_SEEN_SHOWN = 3  # lines of what was seen, enough to tell the failure at a glance; the report has the rest


def escape(text: str, escapes: Sequence[tuple[str, str]] = _DATA_ESCAPES) -> str:
    """GitHub's workflow-command escaping: the message may not break the line, a property not the list."""
    for raw, escaped in escapes:
        text = text.replace(raw, escaped)
    return text


def command(level: str, message: str, **properties: object) -> str:
    props = ",".join(f"{k}={escape(str(v), _PROPERTY_ESCAPES)}" for k, v in properties.items() if v is not None)
    return f"::{level}{' ' + props if props else ''}::{escape(message)}"


def relative(source: str, root: Path | None) -> str:
    """The scenario file as GitHub wants it: relative to the workspace, when it is under it."""
    if root is None:
        return source
    try:
        return str(Path(source).resolve().relative_to(root.resolve()))
    except ValueError:
        return source


def annotation_lines(summary: Mapping[str, Any], step_lines: Mapping[str, Sequence[int]],
                     root: Path | None = None) -> list[str]:
    """One `::error` per failed scenario (on its file and the failed step's line), one `::warning` per interrupted
    one, one `::error` per error of the run itself."""
    lines = []
    for scenario in summary.get("scenarios", []):
        status = scenario.get("status")
        if status not in ("fail", "interrupted"):
            continue
        failure = scenario.get("failure") or {}
        step = failure.get("step")
        source = scenario.get("source") or None
        known = step_lines.get(source, []) if source else []
        line = known[step - 1] if isinstance(step, int) and 0 < step <= len(known) else None
        where = f" at step {step} ({failure.get('stepKind')})" if step else ""
        message = failure.get("expected") or scenario.get("details") or status
        seen = [str(s) for s in failure.get("seen", [])[:_SEEN_SHOWN]]
        text = f"{message}" + (f"\nseen: {'; '.join(seen)}" if seen else "")
        lines.append(command("error" if status == "fail" else "warning", text,
                             file=relative(source, root) if source else None, line=line,
                             title=f"matrix-qa: {scenario.get('id')} {'failed' if status == 'fail' else status}"
                             f"{where}"))
    for error in summary.get("errors", []):
        lines.append(command("error", f"{error.get('component')}: {error.get('message')}", title="matrix-qa run"))
    return lines


# --- reading ---------------------------------------------------------------------------------------------------


def step_lines_of(path: Path) -> list[int]:
    """The 1-based line of each step of a scenario file, in order; [] when the file cannot be read as one."""
    from yaml.nodes import MappingNode, SequenceNode

    from qa import safe_yaml

    try:
        root, _ = safe_yaml.compose(path.read_text(encoding="utf-8"))
    except Exception:
        return []
    if not isinstance(root, MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "steps" and isinstance(value, SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa.report.annotations",
                                     description="print a run's failures as GitHub Actions annotations")
    parser.add_argument("summary", type=Path, help="matrix-qa-summary.json")
    parser.add_argument("--root", type=Path, default=None, help="make file paths relative to this (the workspace)")
    args = parser.parse_args(argv)
    try:
        summary = json.loads(args.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(command("error", f"no matrix-qa summary to annotate from: {args.summary}: {exc}",
                      title="matrix-qa run"))
        return 0
    sources = {s["source"] for s in summary.get("scenarios", []) if s.get("source")}
    steps = {source: step_lines_of(Path(source)) for source in sources}
    for line in annotation_lines(summary, steps, args.root):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
