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

re2_error: type[Exception] = re2.error


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


class PatternSet:
    """Many patterns over one text in a single RE2 pass (``RE2::Set``): a mail checked against the
    regexes of 200 rules reads each field once, not once per regex.

    ``RE2::Set`` answers "no match" when its DFA runs out of memory, which would read as "none of
    these patterns matched". A sentinel pattern that matches every text tells the two apart:
    without it in the answer, ``matches`` returns None and the caller searches pattern by pattern.
    """

    def __init__(self, patterns: list[str], max_mem: int = 64 << 20) -> None:
        options = re2.Options()
        options.log_errors = False
        options.never_capture = True
        options.max_mem = max_mem
        self._set = re2.Set.SearchSet(options)
        self._sentinel = self._set.Add("")
        self.index = {pattern: self._set.Add(pattern) for pattern in dict.fromkeys(patterns)}
        self._set.Compile()

    def matches(self, text: bytes) -> frozenset[int] | None:
        found = self._set.Match(text) or ()
        return frozenset(found) if self._sentinel in found else None
