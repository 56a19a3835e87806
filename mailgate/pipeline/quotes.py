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

# Gmail/Thunderbird/Apple "On <date>, <name> wrote:"; German "Am ... schrieb <name>:"; Dutch, Spanish, French
_ATTRIBUTIONS = [
    re.compile(r"^\s*(on|el)\s.{1,300}\s(wrote|escribió)\s*:\s*$", re.I),
    re.compile(r"^\s*(am|op)\s.{1,300}\s(schrieb|schreef)(\s.{0,200})?\s*:\s*$", re.I),  # name after the verb
    re.compile(r"^\s*le\s.{1,300}\sa écrit\s*:\s*$", re.I),
]
_CUTS = [
    re.compile(r"^\s*-+\s*reply above this line\s*-+\s*$", re.I),
    re.compile(r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)\s*-{2,}\s*$", re.I),
    *_ATTRIBUTIONS,
    re.compile(r"^_{20,}\s*$"),
]
_ATTRIBUTION_START = re.compile(r"^\s*(on|am|op|el|le)\s", re.I)
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
    # Gmail wraps a long attribution: "On Mon, ... Example Support <support@example.com>\nwrote:"
    if i + 1 < len(lines) and _ATTRIBUTION_START.match(line) and not line.rstrip().endswith(":"):
        joined = f"{line.rstrip()} {lines[i + 1].strip()}"
        return any(p.match(joined) for p in _ATTRIBUTIONS)
    return False


def split_new_text(text: str) -> str:
    lines = text.splitlines()
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
