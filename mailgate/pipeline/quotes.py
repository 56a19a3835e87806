"""Split a reply's new text from the quoted history below it.

Customers' clients quote in many ways; the first line that looks like the
start of a quote ends the new text. Our own marker (put in every
customer-facing mail) is the most reliable cut, so it is checked first.
"""

from __future__ import annotations

import re

REPLY_MARKER = "-- Reply above this line --"

_CUTS = [
    re.compile(r"^\s*-+\s*reply above this line\s*-+\s*$", re.I),
    re.compile(r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)\s*-{2,}\s*$", re.I),
    re.compile(r"^\s*(on|am)\s.{1,200}\s(wrote|schrieb)\s*:\s*$", re.I),
    re.compile(r"^\s*le\s.{1,200}\sa écrit\s*:\s*$", re.I),
    re.compile(r"^\s*(from|von|de)\s*:\s.+$", re.I),
    re.compile(r"^_{20,}\s*$"),
]


def split_new_text(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i > 0 and any(p.match(line) for p in _CUTS):
            return "\n".join(lines[:i]).rstrip()
        if line.startswith(">") and i > 0 and all(not ln.strip() or ln.startswith(">") for ln in lines[i:]):
            return "\n".join(lines[:i]).rstrip()
    return text.strip()
