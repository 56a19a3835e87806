"""Split a reply's new text from the quoted history below it.

Customers' clients quote in many ways; the first line that looks like the
start of a quote ends the new text. Our own marker (put in every
customer-facing mail) is the most reliable cut. A header-like line such as
``From:`` only counts when a quote header block follows it (Outlook's
``From:/Sent:/To:/Subject:``), so a customer's own "From: ..." line survives.
"""

from __future__ import annotations

import re

REPLY_MARKER = "-- Reply above this line --"

# Gmail/Thunderbird/Apple "On <date>, <name> wrote:"; German "Am ... schrieb <name>:"; Dutch, Spanish, French;
# Eudora "At <time>, you wrote:"; and the verb that ends an attribution in other languages, when the line
# also holds a date, a time or an address (so "My colleague wrote:" in a customer's own words survives)
_ATTRIBUTIONS = [
    re.compile(r"^\s*(on|el|at)\s.{1,300}\s(wrote|escribió)\s*:\s*$", re.I),
    re.compile(r"^\s*(am|op)\s.{1,300}\s(schrieb|schreef)(\s.{0,200})?\s*:\s*$", re.I),  # name after the verb
    re.compile(r"^\s*le\s.{1,300}\sa écrit\s*:\s*$", re.I),
    re.compile(
        r"^(?=.{0,300}(\d[.:/]\d|@)).{1,300}\s(wrote|escribió|escreveu|ha scritto|a écrit|schrieb|schreef|skrev|"
        r"kirjoitti|napisał|napisała|написал|написала|написав|написала\(а\)|yazdı|έγραψε|wrote the following)\s*:\s*$",
        re.I,
    ),
]
_CUTS = [
    re.compile(r"^\s*-+\s*reply above this line\s*-+\s*$", re.I),
    re.compile(r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)\s*-{2,}\s*$", re.I),
    *_ATTRIBUTIONS,
    re.compile(r"^_{20,}\s*$"),
]
_FROM = re.compile(r"^\s*\*?(from|von|de|van|da)\s*:\*?\s*\S", re.I)
_HEADER_FIELD = re.compile(
    r"^\s*\*?(sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|à|objet|verzonden|aan|onderwerp)"
    r"\s*:",
    re.I,
)


def _quote_header(lines: list[str], i: int) -> bool:
    """``From: ...`` followed by Sent:/To:/Subject: (in some language) within the next lines."""
    return bool(_FROM.match(lines[i])) and any(_HEADER_FIELD.match(ln) for ln in lines[i + 1 : i + 5])


def _cut_here(lines: list[str], i: int) -> bool:
    line = lines[i]
    if any(p.match(line) for p in _CUTS) or _quote_header(lines, i):
        return True
    # a long attribution wrapped over two lines: "On Mon, ... Example Support <support@example.com>\nwrote:"
    if i + 1 < len(lines) and not line.rstrip().endswith(":") and lines[i + 1].rstrip().endswith(":"):
        joined = f"{line.rstrip()} {lines[i + 1].strip()}"
        return any(p.match(joined) for p in _ATTRIBUTIONS)
    return False


def _attribution(lines: list[str], i: int) -> int:
    """How many lines the attribution at ``i`` takes (1, or 2 when wrapped), 0 when there is none."""
    if any(p.match(lines[i]) for p in _ATTRIBUTIONS):
        return 1
    if i + 1 < len(lines) and not lines[i].rstrip().endswith(":") and lines[i + 1].rstrip().endswith(":"):
        joined = f"{lines[i].rstrip()} {lines[i + 1].strip()}"
        return 2 if any(p.match(joined) for p in _ATTRIBUTIONS) else 0
    return 0


def _below_the_quote(lines: list[str]) -> str | None:
    """A reply written below the quote (or between its lines): the lines that are not quoted, without
    the attribution. None when the mail does not begin with a quote."""
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        return None
    if lines[first].lstrip().startswith(">"):
        start = first
    elif _attribution(lines, first) and any(ln.lstrip().startswith(">") for ln in lines[first:]):
        start = first + _attribution(lines, first)
    else:
        return None
    own = [ln for ln in lines[start:] if not ln.lstrip().startswith(">")]
    return "\n".join(own).strip() or None


def split_new_text(text: str) -> str:
    lines = text.splitlines()
    below = _below_the_quote(lines)
    if below is not None:
        return below
    # from here on only quoted (">") or blank lines remain: a bottom quote, not inline answers
    tail = len(lines)
    while tail > 0 and (not lines[tail - 1].strip() or lines[tail - 1].lstrip().startswith(">")):
        tail -= 1
    for i, line in enumerate(lines):
        if i == 0:
            continue
        if _cut_here(lines, i) or (0 < tail <= i and line.lstrip().startswith(">")):
            return "\n".join(lines[:i]).strip()
    return text.strip()
