"""A report as a person sees it on GitHub, as PNG screenshots: its first screen and the whole page.

    python bench/render_report.py artifacts/qa-e2e/<run-id> --out /tmp/shots
    python bench/render_report.py matrix-qa-report.md --out /tmp/shots --dark --open-details

The markdown (given, or rendered from a summary JSON / run directory) goes through cmarkgfm, GitHub's markdown
engine, with raw HTML kept as GitHub keeps it; its ```mermaid blocks are drawn by mermaid-cli (as GitHub draws
them) and the page gets a GitHub-like stylesheet; headless Chromium takes the screenshots. Folded <details>
stay folded unless --open-details. For looking at, not for CI: the unit tests check the same things in text.

Needs: cmarkgfm (pip), Chromium (apt-get install chromium), mermaid-cli (PUPPETEER_SKIP_DOWNLOAD=1 npm install
@mermaid-js/mermaid-cli, outside the repo; found by --mmdc, $MATRIX_QA_MMDC or PATH). Without mermaid-cli
the charts stay code blocks, and the script says so. Exit 0 with the PNGs written, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# GitHub's pull-request column is about this wide on a desktop screen; a laptop shows about this much of it.
WIDTH = 1012
FIRST_SCREEN_H = 900
FULL_H = 6000
TIMEOUT_S = 180

STYLE = """
body { margin: 0; background: %(bg)s; }
.markdown-body { box-sizing: border-box; max-width: %(width)dpx; padding: 24px 32px; color: %(fg)s;
  font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif,
  "Apple Color Emoji", "Segoe UI Emoji", "Noto Color Emoji"; word-wrap: break-word; }
.markdown-body h1, .markdown-body h2 { border-bottom: 1px solid %(border)s; padding-bottom: .3em; }
.markdown-body h1 { font-size: 2em; margin: .67em 0 16px; } .markdown-body h2 { font-size: 1.5em; margin: 24px 0 16px; }
.markdown-body h3 { font-size: 1.25em; margin: 24px 0 16px; }
.markdown-body p, .markdown-body ul, .markdown-body table, .markdown-body pre, .markdown-body details
  { margin: 0 0 16px; }
.markdown-body ul { padding-left: 2em; }
.markdown-body table { border-collapse: collapse; display: block; width: max-content; max-width: 100%%;
  overflow: auto; }
.markdown-body th, .markdown-body td { border: 1px solid %(border)s; padding: 6px 13px; }
.markdown-body th { font-weight: 600; } .markdown-body tr:nth-child(2n) { background: %(stripe)s; }
.markdown-body code { font: 85%% ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono",
  monospace; background: %(code)s; padding: .2em .4em; border-radius: 6px; }
.markdown-body pre { background: %(code)s; padding: 16px; border-radius: 6px; overflow: auto; }
.markdown-body pre code { background: none; padding: 0; font-size: 85%%; white-space: pre; }
.markdown-body img { max-width: 100%%; background: %(bg)s; }
.markdown-body a { color: %(link)s; text-decoration: none; }
"""
THEMES = {
    "light": {"bg": "#ffffff", "fg": "#1f2328", "border": "#d1d9e0", "stripe": "#f6f8fa", "code": "#eff1f3",
              "link": "#0969da"},
    "dark": {"bg": "#0d1117", "fg": "#f0f6fc", "border": "#3d444d", "stripe": "#151b23", "code": "#262c36",
             "link": "#4493f8"},
}


def markdown_of(given: Path) -> str:
    if given.suffix == ".md":
        return given.read_text(encoding="utf-8")
    from qa.report.markdown import render_markdown
    from qa.report.writer import SUMMARY_FILE, load_summary

    return render_markdown(load_summary(given / SUMMARY_FILE if given.is_dir() else given))


def draw_mermaid(markdown: str, work: Path, mmdc: str | None, chromium: str, theme: str) -> str:
    """The markdown with each ```mermaid block replaced by an image of it drawn by mermaid-cli."""
    if "```mermaid" not in markdown:
        return markdown
    if not mmdc:
        print("note: mermaid-cli not found (--mmdc, $MATRIX_QA_MMDC, PATH): charts stay code blocks")
        return markdown
    config = work / "puppeteer.json"
    config.write_text(json.dumps({"executablePath": chromium, "args": ["--no-sandbox"]}))
    (work / "in.md").write_text(markdown, encoding="utf-8")
    subprocess.run([mmdc, "-p", str(config), "-i", "in.md", "-o", "drawn.md", "-q", "-t",
                    "dark" if theme == "dark" else "default", "-b", "transparent"], cwd=work, check=True,
                   timeout=TIMEOUT_S)
    return (work / "drawn.md").read_text(encoding="utf-8")


def page(markdown: str, theme: str, open_details: bool) -> str:
    import cmarkgfm
    from cmarkgfm.cmark import Options

    body = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    if open_details:
        body = body.replace("<details>", "<details open>")
    style = STYLE % {**THEMES[theme], "width": WIDTH}
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{style}</style></head>'
            f'<body><article class="markdown-body">{body}</article></body></html>')


def screenshot(chromium: str, html: Path, png: Path, height: int) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={WIDTH},{height}", f"--screenshot={png}", html.as_uri()],
                   check=True, timeout=TIMEOUT_S, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="matrix-qa-report.md, a summary JSON, or a run directory")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNGs (and the page)")
    parser.add_argument("--dark", action="store_true", help="GitHub's dark theme")
    parser.add_argument("--open-details", action="store_true", help="expand every folded <details>")
    parser.add_argument("--full-height", type=int, default=FULL_H, help="height of the whole-page screenshot")
    parser.add_argument("--mmdc", default=os.environ.get("MATRIX_QA_MMDC") or shutil.which("mmdc"))
    parser.add_argument("--chromium", default=os.environ.get("MATRIX_QA_CHROMIUM") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not args.report.exists():
        print(f"render_report: {args.report}: no such file or directory", file=sys.stderr)
        return 2
    if not Path(args.chromium).exists():
        print(f"render_report: no Chromium at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    theme = "dark" if args.dark else "light"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="render-report-") as tmp:
        drawn = draw_mermaid(markdown_of(args.report), Path(tmp), args.mmdc, args.chromium, theme)
        for svg in Path(tmp).glob("*.svg"):
            shutil.copy(svg, args.out / svg.name)
    html = args.out / f"report-{theme}.html"
    html.write_text(page(drawn, theme, args.open_details), encoding="utf-8")
    for name, height in (("first-screen", FIRST_SCREEN_H), ("full", args.full_height)):
        png = args.out / f"{name}-{theme}.png"
        screenshot(args.chromium, html, png, height)
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
