"""The coverage table of docs/scenarios.md (behaviour | scenario id | profiles) is the scenario library, exactly.

Regenerate it after adding or moving a scenario: `python -m tests.unit.test_readme_coverage` rewrites the table
between its two marker comments from the scenario files (title = behaviour).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qa.scenario.loader import load_scenarios

REPO = Path(__file__).resolve().parents[2]
README = REPO / "docs" / "scenarios.md"  # the tables moved out of the README (issue 25)
BEGIN = "<!-- coverage-table:begin (generated: python -m tests.unit.test_readme_coverage) -->"
END = "<!-- coverage-table:end -->"


def table() -> str:
    scenarios = sorted(load_scenarios([REPO / "scenarios"]), key=lambda s: s.id)
    rows = ["| behaviour | scenario id | profiles |", "|---|---|---|"]
    for s in scenarios:
        profiles = ", ".join(p for p in s.profiles if p != "all") or "all only"
        rows.append(f"| {s.title.replace('|', '/')} | `{s.id}` | {profiles} |")
    return "\n".join(rows)


def current() -> str:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def test_the_readme_coverage_table_lists_every_scenario_with_its_profiles() -> None:
    assert current() == table(), ("docs/scenarios.md coverage table is stale: run "
                                  "python -m tests.unit.test_readme_coverage")


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + table() + "\n" + text[end:], encoding="utf-8")
    sys.exit(0)
