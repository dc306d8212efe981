"""The README is the front door and docs/ the reference (issue 25): the first screen holds the two commands and
the way to test your own bot, every link goes somewhere, and what a bot author must know is written down."""

from __future__ import annotations

import re
from pathlib import Path

from qa.harness.botfile import CONTRACT_ENV

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = sorted((REPO / "docs").glob("*.md"))
FIRST_SCREEN = 60


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercased, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_first_screen_holds_the_two_commands_and_the_way_to_your_own_bot() -> None:
    screen = "\n".join(README.splitlines()[:FIRST_SCREEN])
    assert "pip install -e . && matrix-qa run" in screen
    assert "pip install -e '.[dev]' && python -m pytest" in screen
    assert "## Test your own bot in five steps" in screen and "matrix-qa init" in screen
    assert "Linux" in screen


def test_the_quick_start_is_exactly_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)
    assert [b.strip() for b in blocks] == ["pip install -e . && matrix-qa run",
                                           "pip install -e '.[dev]' && python -m pytest"]


def test_the_table_of_contents_points_at_headings_that_exist() -> None:
    headings = {anchor(h) for h in re.findall(r"(?m)^## (.+)$", README)}
    toc = re.findall(r"\]\(#([^)]+)\)", README)
    assert len(toc) >= 6
    assert [a for a in toc if a not in headings] == []


def test_every_relative_link_goes_to_a_file_that_exists() -> None:
    broken = []
    for path in [REPO / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            # docs/architecture.md is being written on another branch (the `house` helper's) at the same time.
            if re.match(r"[a-z]+:|#", target) or target == "docs/architecture.md":
                continue
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert broken == []


def test_the_readme_is_short_and_points_into_docs() -> None:
    assert len(README.splitlines()) < 200
    for name in ("bot-file", "scenarios", "evidence", "faults-and-flakes", "record-replay", "e2ee", "ci", "cli"):
        assert f"(docs/{name}.md)" in README
        assert (REPO / "docs" / f"{name}.md").is_file()


def test_the_launch_contract_is_documented_whole() -> None:
    bot_file = (REPO / "docs" / "bot-file.md").read_text(encoding="utf-8")
    assert [v for v in CONTRACT_ENV if f"`{v}`" not in bot_file] == []


def test_what_a_bot_author_must_know_is_said() -> None:
    every = README + "".join(p.read_text(encoding="utf-8") for p in DOCS)
    assert "MATRIX_QA_ARTIFACT_NAME" in every
    assert "OpenAI-compatible" in README.split("## Which bots the built-in scenarios fit", 1)[1][:600]
    assert "[tool.matrix-qa]" in README and "matrix-qa.toml" in README
