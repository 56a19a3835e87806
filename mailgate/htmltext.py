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

_LINE = frozenset({"br", "div", "li", "tr", "dd", "dt", "section", "article", "header", "footer"})
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "hr", "ul", "ol", "dl"})
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})


class _TextExtractor(HTMLParser):
    """Lines of text, each with the blockquote depth it started at (rendered as ``> `` prefixes)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.done: list[tuple[int, str]] = []  # (depth, text); "" is a paragraph break
        self._buf: list[str] = []
        self._depth = 0
        self._skip = 0
        self._quote = 0

    def _break(self, paragraph: bool) -> None:
        line = "".join(self._buf).strip()
        if line:
            self.done.append((self._depth, line))
        self._buf = []
        if paragraph:
            self.done.append((0, ""))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # an unclosed <head> or <title> must not swallow the whole mail
            self._skip = 0
        elif tag in _SKIP:
            self._skip += 1
        elif tag in _LINE or tag in _PARAGRAPH:
            self._break(tag in _PARAGRAPH)
            if tag == "blockquote":
                self._quote += 1
            if tag == "li":
                self._buf.append("- ")
                self._depth = self._quote

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _LINE or tag in _PARAGRAPH:  # <br/>, <hr/>: one break, not an open and a close
            self._break(tag in _PARAGRAPH)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in ("td", "th"):
            self._buf.append(" ")
        elif (tag in _LINE and tag != "br") or tag in _PARAGRAPH:
            self._break(tag in _PARAGRAPH)
            if tag == "blockquote":
                self._quote = max(0, self._quote - 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not "".join(self._buf).strip():
            self._depth = self._quote
        self._buf.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        self._break(False)
        out: list[str] = []
        for depth, line in self.done:
            if line:
                out.append("> " * depth + line)
            elif out and out[-1]:  # at most one blank line in a row
                out.append("")
        return "\n".join(out).strip()


def html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # HTMLParser is lenient, but never let a body vanish
        return htmllib.unescape(re.sub(r"<[^>]+>", " ", markup)).strip()
    return parser.text()


def sanitize_html(markup: str) -> str:
    """Keep formatting, drop scripts, handlers, remote-content tricks and forms."""
    return nh3.clean(
        markup,
        link_rel="noopener noreferrer nofollow",
        clean_content_tags={"script", "style", "title", "template", "noscript"},
    ).strip()
