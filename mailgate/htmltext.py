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
        self._words = False  # the current line has more than white space (kept, not searched for each time)

    def _break(self, paragraph: bool) -> None:
        line = "".join(self._buf).strip()
        if line:
            self.done.append((self._depth, line))
        self._buf = []
        self._words = False
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
        if not self._words:
            self._depth = self._quote
            self._words = bool(data.strip())
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
    """Give it sanitised HTML (``sanitize_html``): Python's parser slows down with the square of the
    input on broken markup such as ``<a <a <a``, which the sanitiser has already turned into text."""
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # HTMLParser is lenient, but never let a body vanish
        return plain_text(markup)
    return parser.text()


_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]{0,20})")
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr", "p", "li", "td", "tr", "th", "option"})  # (and those whose end tag may be left out)
MAX_TAGS, MAX_NESTING = 100_000, 500


def too_complex(markup: str) -> str | None:
    """Why this HTML would cost the sanitiser seconds (it slows with the square of the nesting), else None.

    Real mail nests a few dozen elements deep; a crafted one nests tens of thousands. A linear count
    of tags, opening minus closing, tells them apart before any tree is built."""
    depth = deepest = count = 0
    for m in _TAG.finditer(markup):
        count += 1
        if m.group(2).lower() in _VOID:
            continue
        depth = max(0, depth - 1) if m.group(1) else depth + 1
        deepest = max(deepest, depth)
    if count > MAX_TAGS:
        return f"{count} HTML tags"
    return f"HTML nested {deepest} deep" if deepest > MAX_NESTING else None


def plain_text(markup: str) -> str:
    """Tags dropped and entities decoded, in one linear pass: the words of HTML too complex to sanitise."""
    return htmllib.unescape(re.sub(r"<[^<>]*>", " ", markup)).strip()  # (not [^>]*: quadratic without ">")


def sanitize_html(markup: str) -> str:
    """Keep formatting, drop scripts, handlers, remote-content tricks and forms."""
    return nh3.clean(
        markup,
        link_rel="noopener noreferrer nofollow",
        clean_content_tags={"script", "style", "title", "template", "noscript"},
    ).strip()
