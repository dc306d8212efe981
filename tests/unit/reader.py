"""Reading a report as a person on GitHub does: rendered by cmarkgfm (GitHub's own markdown engine), folded
<details> showing their summary line only, and the text in the order the page shows it.

`first_screen` is what is above the fold of a pull request's report: everything before the scenarios table
(title, what failed, the run line, the environment's one folded line). Tests that need cmarkgfm skip, with
the reason, where it is not installed (it is in the `dev` extra).
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

BLOCKS = {"h1", "h2", "h3", "p", "li", "tr", "summary", "pre", "table", "ul"}


def render(markdown: str) -> str:
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm (GitHub's markdown engine) is not installed")
    from cmarkgfm.cmark import Options

    # GitHub keeps raw HTML such as <details> and <code title>, which cmark's safe mode would drop.
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


class _Visible(HTMLParser):
    """Text per block, with a folded <details> showing only its <summary>, as GitHub shows it unclicked."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[tuple[str, str]] = []  # (tag of the block, its text)
        self._text: list[str] = []
        self._tag = "p"
        self._details = 0
        self._summary = False

    def _flush(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.blocks.append((self._tag, text))
        self._text = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "details":
            self._details += 1
        elif tag == "summary":
            self._summary = True
        if tag in BLOCKS:
            self._flush()
            self._tag = tag

    def handle_endtag(self, tag: str) -> None:
        if tag in BLOCKS:
            self._flush()
        if tag == "summary":
            self._summary = False
        elif tag == "details":
            self._details -= 1

    def handle_data(self, data: str) -> None:
        if self._details == 0 or self._summary:
            self._text.append(data)


def visible_blocks(markdown: str) -> list[tuple[str, str]]:
    parser = _Visible()
    parser.feed(render(markdown))
    parser.close()
    return parser.blocks


def first_screen(markdown: str) -> list[str]:
    """The visible text blocks before the scenarios table."""
    blocks = visible_blocks(markdown)
    end = next((i for i, (tag, text) in enumerate(blocks) if tag == "h2" and text == "Scenarios"), len(blocks))
    return [text for _, text in blocks[:end]]
