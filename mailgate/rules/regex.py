"""Regexes for rules and help topics, compiled with RE2: linear time, so no pattern and no mail can hang intake.

Python's ``re`` backtracks: ``(a+)+$`` against forty ``a`` and a ``b`` takes
longer than the age of the universe, and admins write patterns, while strangers
write mail. RE2 (google-re2) matches in time linear in the text, at the price
of backreferences and lookaround, which it refuses at compile time; that
refusal is a load-time ``file:line`` error, like any other bad pattern.

Matching is done on UTF-8 bytes encoded once per mail, so ``.`` is one
character and ``(?i)`` folds Unicode case; ``\\b``, ``\\d`` and ``\\w`` are
ASCII-only in RE2 (``\\pL``, ``\\p{Nd}`` are the Unicode classes).
"""

from __future__ import annotations

import re
from typing import Protocol, cast

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information


class Pattern(Protocol):
    def search(self, text: bytes) -> object | None: ...


_UNSUPPORTED = re.compile(r"invalid perl operator: \(\?<?[=!]|invalid escape sequence: \\\d")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would otherwise write every refused pattern to stderr via absl
_OPTIONS.never_capture = True  # we only ask "does it match": capture groups cost time and say nothing


def compile_pattern(pattern: str) -> Pattern:
    """Compile or raise ValueError with RE2's reason (``missing ): (outage``)."""
    try:
        return cast(Pattern, re2.compile(pattern, _OPTIONS))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        if _UNSUPPORTED.search(text):
            text += " (lookaround and backreferences are not supported: patterns must match in linear time)"
        raise ValueError(f"bad regular expression '{pattern}': {text}") from None


def search(pattern: Pattern, text: str) -> bool:
    return pattern.search(text.encode("utf-8", "replace")) is not None
