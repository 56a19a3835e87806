"""Take a sender's signature off the text we store and relay ("-- " blocks, "Sent from my iPhone",
"Best regards, Pat"), as agents see the words, not the footer, on every message of a thread.

The finding is mail-parser-reply's (a maintained parser that knows many clients and languages); the
cutting is ours and careful: only the signature block it names is removed, where it is found as a
whole in the text, and everything after it (a forwarded mail in a new ticket, say) stays. A text
that would be left empty, or a parser that fails, leaves the text as it was: words are never lost.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)
LANGUAGES = ["en", "de", "fr", "es", "it", "nl"]  # each one more costs every mail ~0.08 ms
# A signature ends the text, so the parser reads only its tail: its cost grows with the text, and a
# 30 KB log paste would cost 40 ms for a footer that is in the last few lines anyway.
TAIL_LINES = 25
TAIL_CHARS = 2500


@lru_cache(maxsize=1)
def _parser() -> Any:
    from mailparser_reply import EmailReplyParser  # type: ignore[import-untyped]

    return EmailReplyParser(languages=LANGUAGES)


def _span(lines: list[str], signature: list[str]) -> tuple[int, int] | None:
    """Where the signature's non-blank lines stand, in order, in ``lines`` (blank lines between allowed)."""
    for start, line in enumerate(lines):
        if line.strip().rstrip() != signature[0] and not (signature[0] == "--" and line.rstrip() == "--"):
            continue
        at, matched = start, 0
        while at < len(lines) and matched < len(signature):
            if lines[at].strip():
                if lines[at].strip() != signature[matched]:
                    break
                matched += 1
            at += 1
        if matched == len(signature):
            return start, at
    return None


def strip_signature(text: str) -> str:
    if not text.strip():
        return text
    lines = text.splitlines()
    first = len(lines)
    size = 0
    while first > 0 and len(lines) - first < TAIL_LINES and size + len(lines[first - 1]) < TAIL_CHARS:
        first -= 1
        size += len(lines[first]) + 1
    tail = "\n".join(lines[first:])
    try:
        replies = _parser().read(tail).replies
        signature = [ln.strip() for ln in (replies[0].signatures if replies else "").splitlines() if ln.strip()]
    except Exception as exc:  # a parser's bug must not cost a mail its words
        log.debug("signature parser failed: %r", exc)
        return text
    if not signature:
        return text
    found = _span(lines[first:], signature)
    if found is None:
        return text
    start, end = first + found[0], first + found[1]
    kept = "\n".join([*lines[:start], *lines[end:]]).strip()
    return kept if kept else text
