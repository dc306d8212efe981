"""Pure outbound formatting: the model's markdown as a Matrix message, and a long reply as ordered parts.

Models answer in markdown. A Matrix client shows `formatted_body` (org.matrix.custom.html) when it is there and
`body` otherwise, so a reply carries both: the markdown source as the plain `body`, and its HTML rendering,
restricted to the tags the Matrix spec lets clients display, as `formatted_body`.

Two layers keep model-written HTML out: markdown-it renders with raw HTML off (a `<script>` in the model's text
becomes the visible text `&lt;script&gt;`), and nh3 (Ammonia) then keeps only the allowed tags, attributes and
link schemes, so nothing the renderer lets through by mistake reaches a client either.
"""

from __future__ import annotations

from typing import Any

import nh3
from markdown_it import MarkdownIt

HTML_FORMAT = "org.matrix.custom.html"

# The spec's suggested set (client-server API, "m.room.message msgtypes"), minus img: an <img> makes every
# reader's client fetch a URL the model chose.
ALLOWED_TAGS = frozenset({
    "a", "b", "blockquote", "br", "caption", "code", "del", "details", "div", "em", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "summary", "sup", "table", "tbody",
    "td", "th", "thead", "tr", "u", "ul",
})
ALLOWED_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}, "code": {"class"}}
LINK_SCHEMES = frozenset({"https", "http", "mailto", "matrix"})

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])
_RAW_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["strikethrough", "table"])


def sanitize_html(html: str) -> str:
    return nh3.clean(html, tags=set(ALLOWED_TAGS), attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
                     url_schemes=set(LINK_SCHEMES), link_rel=None)


def render_markdown(text: str, *, raw_html: bool = False) -> str:
    """The HTML for a markdown text. raw_html is the test-only mutation `rawHtml`: model HTML passes as is."""
    if raw_html:
        return _RAW_MARKDOWN.render(text).strip()
    return sanitize_html(_MARKDOWN.render(text)).strip()


def message_body(text: str, *, raw_html: bool = False) -> dict[str, Any]:
    """`m.text` content for one reply part: plain markdown body, plus HTML when the markdown formats anything."""
    content: dict[str, Any] = {"msgtype": "m.text", "body": text}
    html = render_markdown(text, raw_html=raw_html)
    # Plain prose renders as just <p>…</p> around the escaped text: no formatting worth a formatted_body.
    if html != f"<p>{_escape(text)}</p>":
        content["format"] = HTML_FORMAT
        content["formatted_body"] = html
    return content


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def split_text(text: str, limit: int) -> list[str]:
    """A text as ordered parts of at most `limit` characters each, cut where a reader would: at a paragraph
    break, else a line break, else a space, else (one unbroken run) anywhere. Whitespace at a cut is dropped;
    nothing else is, so the parts joined by whitespace read as the text."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]  # a separator right after the limit is still a clean cut
        cut = -1
        for separator in ("\n\n", "\n", " "):
            cut = window.rfind(separator)
            if cut > 0:
                break
        if cut <= 0:
            cut = limit
        part = rest[:cut].rstrip()
        parts.append(part)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def reply_contents(text: str, relates_to: dict[str, Any] | None, *, limit: int, markdown: bool = True,
                   raw_html: bool = False, truncate: bool = False) -> list[dict[str, Any]]:
    """The message contents of one reply, in sending order: one per part, each complete on its own (body,
    formatting, the reply's relation, no mentions). truncate is the test-only mutation `truncateLongReplies`."""
    parts = split_text(text, limit) or [text]
    if truncate:
        parts = parts[:1]
    contents = []
    for part in parts:
        content = message_body(part, raw_html=raw_html) if markdown else {"msgtype": "m.text", "body": part}
        # Empty intentional mentions: quoting a user id in an answer must not ping anyone (or trigger a bot).
        content["m.mentions"] = {}
        if relates_to:
            content["m.relates_to"] = dict(relates_to)
        contents.append(content)
    return contents
