"""Evaluate the admin's rules against one mail's facts: pure, ordered, and explained.

Every rule yields a trace line (matched, or the first condition that failed),
which ``rules test`` prints and the ticket's "routed" event records.
Regexes were compiled at load (``schema.py``); here they are only used.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.header import decode_header, make_header

from mailgate.domain import RuleTrace
from mailgate.rules.schema import Condition, Rule, Then, When


def _norm(value: str) -> str:
    return unicodedata.normalize("NFKC", value).casefold()


_POSITIVE: dict[str, Callable[[str, str], bool]] = {
    "equals": str.__eq__,
    "contains": str.__contains__,
    "starts": str.startswith,
    "ends": str.endswith,
}


@dataclass(frozen=True)
class Facts:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    body_full: str
    help_topic: str | None
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def values(self, name: str) -> tuple[str, ...]:
        if name.startswith("header:"):
            return self.headers.get(name[len("header:") :].lower(), ())
        simple = {
            "sender": (self.sender,),
            "sender_domain": (self.sender.rpartition("@")[2],),
            "recipient": self.recipients,
            "subject": (self.subject,),
            "body": (self.body,),
            "body_full": (self.body_full,),
            "help_topic": (self.help_topic or "",),
        }
        return simple[name]


def decode_headers(raw: tuple[tuple[str, str], ...]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for name, value in raw:
        try:
            text = str(make_header(decode_header(value)))
        except Exception:
            text = value
        out.setdefault(name.lower(), []).append(" ".join(text.split()))
    return {k: tuple(v) for k, v in out.items()}


class CompiledRules:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = tuple(rules)
        self._patterns: dict[str, re.Pattern[str]] = {}
        self.needs_headers = False
        for rule in rules:
            self._prepare(rule.when)

    def _prepare(self, when: When | Condition) -> None:
        if isinstance(when, Condition):
            self.needs_headers |= when.field.startswith("header:")
            if when.op in ("matches", "not_matches") and isinstance(when.value, str):
                self._patterns[when.value] = re.compile(when.value)
            return
        for sub in (*when.all, *when.any, *([when.not_] if when.not_ else [])):
            self._prepare(sub)

    def _test(self, cond: Condition, facts: Facts) -> bool:
        """Text comparisons are caseless and NFKC-normalised; a list value means "any of these"."""
        raw = facts.values(cond.field)
        op = cond.op
        if op in ("matches", "not_matches"):
            assert isinstance(cond.value, str)
            pattern = self._patterns[cond.value]
            hit = any(pattern.search(unicodedata.normalize("NFKC", v)) for v in raw)
            return hit if op == "matches" else not hit
        values = [_norm(v) for v in raw]
        needles = [_norm(v) for v in ([cond.value] if isinstance(cond.value, str) else cond.value)]
        if op == "in":
            return any(v in needles for v in values)
        base = op.removeprefix("not_")
        test = _POSITIVE[base]
        hit = any(test(v, n) for v in values for n in needles)
        return not hit if op.startswith("not_") else hit

    def _eval(self, when: When | Condition, facts: Facts) -> str | None:
        """None when it holds, else a description of the first failing condition."""
        if isinstance(when, Condition):
            return None if self._test(when, facts) else f"{when.field} {when.op} {when.value!r} did not hold"
        for sub in when.all:
            failed = self._eval(sub, facts)
            if failed:
                return failed
        if when.any and all(self._eval(sub, facts) for sub in when.any):
            return f"none of {len(when.any)} 'any' conditions held"
        if when.not_ is not None and self._eval(when.not_, facts) is None:
            return "'not' condition held"
        return None

    def evaluate(self, facts: Facts) -> tuple[list[tuple[str, Then]], tuple[RuleTrace, ...]]:
        matched: list[tuple[str, Then]] = []
        trace: list[RuleTrace] = []
        stopped_by: str | None = None
        for rule in self.rules:
            if stopped_by:
                trace.append(RuleTrace(rule.name, False, f"not evaluated: '{stopped_by}' stopped evaluation"))
                continue
            failed = self._eval(rule.when, facts)
            trace.append(RuleTrace(rule.name, failed is None, failed or "all conditions held"))
            if failed is None:
                matched.append((rule.name, rule.then))
                if rule.stop:
                    stopped_by = rule.name
        return matched, tuple(trace)
