"""The HTML report (issue 31): one self-contained page from the same summary, pictures inline, nothing fetched,
no script; what it says first is what the markdown says first."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from qa.report.html import render_html, svg_pictures
from qa.report.writer import HTML_FILE, write_reports
from tests.unit.test_report_folding import big_run
from tests.unit.test_report_headline import fixture
from tests.unit.test_report_render import failing_run


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(" ".join(data.split()))


def page(html: str) -> _Page:
    parser = _Page()
    parser.feed(html)
    parser.close()
    return parser


def test_the_page_is_self_contained() -> None:
    html = render_html(fixture("legacy-scope"))
    parsed = page(html)
    names = {tag for tag, _ in parsed.tags}
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    # Nothing is fetched (an SVG's xmlns names a namespace; it is never fetched).
    assert not [a for _, a in parsed.tags
                if any(str(v).startswith(("http:", "https:", "//")) for k, v in a.items() if k != "xmlns")]
    assert html.count("<svg ") == 2 and "<?xml" not in html
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html


def test_the_page_leads_with_the_finding() -> None:
    text = " ".join(page(render_html(fixture("legacy-scope"))).text)
    head = text.split("Environment", 1)[0]
    assert "the bot held its session write lock during model I/O for 1.52 s (turn-32013-1); a second writer " \
           "waited 1.44 s for it (limit 25 ms)" in head
    assert "lock evidence failed" in head


def test_run_data_is_escaped() -> None:
    html = render_html(failing_run())
    assert "Mention | gating" in html and "<script" not in html
    assert "lock.acquire" not in html  # (no lock in this run)
    evil = failing_run()
    evil.scenarios[1].title = "<img src=x onerror=alert(1)>"
    assert "&lt;img src=x onerror=alert(1)&gt;" in render_html(evil)


def test_every_lock_picture_is_inline_in_table_order_failing_first() -> None:
    summary = fixture("narrow-scope")
    pictures = svg_pictures(summary)
    assert pictures["failing"] == [] and [p["scenario"] for p in pictures["passing"]] == \
        [r.id for r in summary.scenarios]
    assert all(p["svg"].startswith("<svg ") for p in pictures["passing"])


def test_a_big_run_renders_and_the_writer_writes_the_page(tmp_path: Path) -> None:
    assert "scenario-41" in render_html(big_run())
    written = write_reports(fixture("canary-legacy-scope"), tmp_path)
    assert written["html"] == HTML_FILE
    text = (tmp_path / HTML_FILE).read_text(encoding="utf-8")
    assert "its steps passed, but the bot held its session write lock during model I/O for 7.5 ms" in text
