"""The markdown report as a GitHub Actions job summary.

GitHub refuses a step summary over 1 MiB (and then shows nothing), so a big report is trimmed: whole sections
are kept while they fit, the first one that does not fit is left out with everything after it, and a note
points at the full report among the run's artifacts. Cutting between sections means no table loses its
header, no row is half-written and no code fence is left open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from qa.report.markdown import fence_open_after, fence_states

# GitHub's hard limit is 1 MiB; the default leaves headroom for anything else the step writes.
DEFAULT_LIMIT_BYTES = 1_000_000
DEFAULT_ARTIFACT_HINT = "`matrix-qa-report.md` in the run's artifacts"

_NOTE = (
    "\n\n> ⚠️ Trimmed to fit GitHub's job-summary size limit: {shown} of {total} sections shown. "
    "The full report is {hint}.\n"
)
_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")
_DELIMITER_ROW = re.compile(r"^\s*\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*$")


def _sections(markdown: str) -> list[list[str]]:
    lines = markdown.splitlines(keepends=True)
    sections: list[list[str]] = [[]]
    for line, in_fence in zip(lines, fence_states([ln.rstrip("\n") for ln in lines]), strict=True):
        if not in_fence and _HEADING.match(line) and sections[-1]:
            sections.append([])
        sections[-1].append(line)
    return sections


def _size(lines: list[str]) -> int:
    return sum(len(line.encode()) for line in lines)


def _cut_inside(section: list[str], budget: int) -> list[str]:
    """The longest prefix of one section that fits, ends outside any fence and does not separate a table's
    header from its delimiter row. Only used when even the first section is too big to keep whole."""
    open_after = fence_open_after([line.rstrip("\n") for line in section])
    best: list[str] = []
    used = 0
    for i, line in enumerate(section):
        used += len(line.encode())
        if used > budget:
            break
        next_line = section[i + 1] if i + 1 < len(section) else ""
        if not open_after[i] and not _DELIMITER_ROW.match(next_line):
            best = section[: i + 1]
    return best


# The report folds the timelines of scenarios whose lock held fine between these lines (qa/report/markdown.py).
PASSING_PICTURES_START = "<!-- matrix-qa:passing-lock-timelines -->"
PASSING_PICTURES_END = "<!-- /matrix-qa:passing-lock-timelines -->"


def drop_passing_pictures(markdown: str) -> str:
    """The job summary keeps the pictures of failing lock scenarios only: a passing one is noise there, and its
    SVG links point into artifacts the job page cannot open. Markers inside a code fence (a bot's own text in a
    failure's seen lines) are text, not markers."""
    lines = markdown.splitlines(keepends=True)
    kept: list[str] = []
    dropping = False
    for line, in_fence in zip(lines, fence_states([ln.rstrip("\n") for ln in lines]), strict=True):
        marker = None if in_fence else line.strip()
        if not dropping and marker == PASSING_PICTURES_START:
            dropping = True
        elif dropping and marker == PASSING_PICTURES_END:
            dropping = False
        elif not dropping:
            kept.append(line)
    return markdown if dropping else "".join(kept)  # an unclosed start marker: drop nothing rather than the rest


def render_ci_summary(
    markdown: str, limit_bytes: int = DEFAULT_LIMIT_BYTES, *, artifact_hint: str = DEFAULT_ARTIFACT_HINT
) -> str:
    markdown = drop_passing_pictures(markdown)
    if len(markdown.encode()) <= limit_bytes:
        return markdown
    sections = _sections(markdown)
    total = len(sections)
    # Reserve room for the longest the note can get (shown == total has the most digits).
    reserve = len(_NOTE.format(shown=total, total=total, hint=artifact_hint).encode())
    budget = limit_bytes - reserve
    if budget < 0:
        raise ValueError(f"limit of {limit_bytes} bytes cannot even hold the trimming note ({reserve} bytes)")

    kept: list[str] = []
    shown = 0
    for section in sections:
        if _size(kept) + _size(section) > budget:
            break
        kept.extend(section)
        shown += 1
    if shown == 0:
        kept = _cut_inside(sections[0], budget)
    body = "".join(kept).rstrip("\n")
    return body + _NOTE.format(shown=shown, total=total, hint=artifact_hint)


def write_github_step_summary(
    markdown: str,
    env: Mapping[str, str] | None = None,
    *,
    limit_bytes: int = DEFAULT_LIMIT_BYTES,
    artifact_hint: str = DEFAULT_ARTIFACT_HINT,
) -> Path | None:
    """Append the report to `$GITHUB_STEP_SUMMARY` when running under Actions; returns the file written, if any.

    The limit applies to the whole file of the step, so whatever earlier commands of the same step wrote
    counts against it.
    """
    environ = os.environ if env is None else env
    target = environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    existing = path.stat().st_size if path.exists() else 0
    separator = "\n" if existing else ""
    try:
        text = render_ci_summary(markdown, limit_bytes - existing - len(separator), artifact_hint=artifact_hint)
    except ValueError:
        # Earlier output already used the budget; adding anything would make GitHub drop the whole summary.
        return None
    with path.open("a", encoding="utf-8") as f:
        f.write(separator + text)
    return path
