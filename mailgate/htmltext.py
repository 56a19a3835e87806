"""HTML bodies: sanitised with nh3 for storage, and turned into text when there is no text part.

An HTML-only mail must never lose its words (Roundup bounced such mail for
years), and stored HTML must never become active content (django-helpdesk's
stored XSS), so both directions live here.
"""

from __future__ import annotations

import html as htmllib
import re
from html.parser import HTMLParser

import nh3

_BLOCK = frozenset(
    {
        "p",
        "div",
        "br",
        "tr",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "table",
        "hr",
        "ul",
        "ol",
    }
)
_SKIP = frozenset({"script", "style", "head", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0
        self._quote = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCK:
            self.chunks.append("\n")
            if tag == "blockquote":
                self._quote += 1
            if tag == "li":
                self.chunks.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            if tag == "blockquote":
                self._quote = max(0, self._quote - 1)
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        data = re.sub(r"\s+", " ", data)
        if self._quote and data.strip():
            data = "> " * self._quote + data.lstrip()
        self.chunks.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # HTMLParser is lenient, but never let a body vanish
        return htmllib.unescape(re.sub(r"<[^>]+>", " ", markup)).strip()
    lines = [line.strip() for line in "".join(parser.chunks).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def sanitize_html(markup: str) -> str:
    """Keep formatting, drop scripts, handlers, remote-content tricks and forms."""
    return nh3.clean(markup, link_rel="noopener noreferrer nofollow")
