"""The run summary as one self-contained HTML page (`matrix-qa-report.html`), for reading a local run.

The same view as the markdown report (qa.report.markdown's build_view), so the two never disagree; laid out by
report.html.j2 with autoescaping on, inline CSS, and each scenario's lock timeline as an inline SVG
(qa.report.svg) instead of a Mermaid block: the page needs no network and no JavaScript to be read.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from qa.report.lock_timeline import MAX_TURNS_SVG
from qa.report.lock_view import ordered_timelines
from qa.report.markdown import build_view, href
from qa.report.summary import Summary
from qa.report.svg import render_svg
from qa.report.template_cache import use_cache
from qa.report.text import human_ms, short_id, short_path

TEMPLATE = "report.html.j2"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("qa.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(ms=human_ms, href=href, short_id=short_id, short_path=short_path)
    return use_cache(env, TEMPLATE)  # compiled once per machine, not per run (qa.report.template_cache)


def inline_svg(svg: str) -> str:
    """An SVG document as an element of the page: the XML declaration-free `<svg …>` and what follows."""
    return svg[svg.index("<svg"):]


def svg_pictures(summary: Summary) -> dict[str, list[dict[str, Any]]]:
    """Every scenario's lock timeline as inline SVG, in the scenarios table's order, failing ones first."""
    items = [{"scenario": tl.scenario, "overlap": human_ms(tl.overlap_ms), "failed": tl.failed,
              "svg": inline_svg(render_svg(tl))} for tl in ordered_timelines(summary, MAX_TURNS_SVG)]
    return {"failing": [i for i in items if i["failed"]], "passing": [i for i in items if not i["failed"]]}


def render_html(summary: Summary) -> str:
    return _environment().get_template(TEMPLATE).render(**build_view(summary), svgs=svg_pictures(summary))
