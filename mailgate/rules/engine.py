"""Evaluate the admin's rules against one mail's facts: pure, ordered, and explained.

Every rule yields a trace line (matched, or the first condition that failed),
which ``rules test`` prints and the ticket's "routed" event records.
Regexes were compiled at load (``schema.py``, RE2: linear time); here each
condition becomes a small closure once, and each mail's text is normalised
(NFKC, casefold) and encoded once, however many rules look at it.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email.header import decode_header, make_header
from typing import Any

from mailgate.domain import RuleTrace
from mailgate.hours import DAYS, Schedule, is_open
from mailgate.rules.conditions import Condition, ListFile
from mailgate.rules.gates import SINGLE as _SINGLE
from mailgate.rules.gates import Gates
from mailgate.rules.gates import normalise as _norm
from mailgate.rules.regex import PatternSet, re2_error
from mailgate.rules.schema import Rule, Then, When, conditions


@dataclass(frozen=True)
class Facts:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    body_full: str
    help_topic: str | None
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    attachments: tuple[str, ...] = ()  # file names of the (non-inline) attachments, "" when unnamed
    received_at: datetime | None = None
    # the verdict of a trusted relay (pipeline/mtaverdict.py): not spam, no score, "unknown" without one
    spam: bool = False
    spam_score: float | None = None
    dmarc: str = "unknown"
    channel: str = "email"  # how it came in: email, api, form, or a staff channel (pipeline/submission.py)

    def values(self, name: str) -> tuple[str, ...]:
        """The text values of a text field (several for recipient, attachment_name, a repeated header)."""
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
            "attachment_name": tuple(a for a in self.attachments if a),
            "dmarc": (self.dmarc,),
            "channel": (self.channel,),
        }
        return simple[name]


def decode_headers(raw: tuple[tuple[str, str], ...], names: frozenset[str] | None = None) -> dict[str, tuple[str, ...]]:
    """RFC 2047-decoded, whitespace-folded values by lower-case name (only ``names`` when given)."""
    out: dict[str, list[str]] = {}
    for name, value in raw:
        if names is not None and name.lower() not in names:
            continue
        try:
            text = str(make_header(decode_header(value)))
        except Exception:
            text = value
        out.setdefault(name.lower(), []).append(" ".join(text.split()))
    return {k: tuple(v) for k, v in out.items()}


class _Lazy(dict[str, Any]):
    """A field's value computed on first use, then a plain dict hit (the closures below run often)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[str], Any]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, name: str) -> Any:
        value = self[name] = self.make(name)
        return value


class _View:
    """One mail's facts, normalised (NFKC + casefold) and encoded lazily, once per field.

    ``norm``/``utf8`` give every value of a field; ``one``/``one8`` the single value of
    a one-valued field (subject, body, sender...).
    """

    __slots__ = ("_hits", "_memo", "_sets", "facts", "norm", "one", "one8", "utf8")

    def __init__(self, facts: Facts, sets: Mapping[str, PatternSet] | None = None) -> None:
        self.facts = facts
        self._sets = sets or {}
        self._hits: dict[str, frozenset[int] | None] = {}
        # the closures capture the dicts, not self: no reference cycle, so a view is freed without the GC
        self.norm = norm = _Lazy(lambda name: tuple(_norm(v) for v in facts.values(name)))
        self.one = _Lazy(lambda name: norm[name][0])
        self.utf8 = utf8 = _Lazy(
            lambda name: tuple(unicodedata.normalize("NFKC", v).encode("utf-8", "replace") for v in facts.values(name))
        )
        self.one8 = _Lazy(lambda name: utf8[name][0])
        self._memo: dict[tuple[str, object], object] = {}

    def hits(self, name: str) -> frozenset[int] | None:
        """The indexes of the field's patterns that match, from one RE2 set pass (None: no set, or the
        pass failed and each pattern must search alone)."""
        if name not in self._hits:
            patterns = self._sets.get(name)
            self._hits[name] = patterns.matches(self.one8[name]) if patterns is not None else None
        return self._hits[name]

    def matches(self, name: str, source: str, pattern: Any) -> bool:
        """Does ``pattern`` match the field: from the field's one pass over all its patterns, if any."""
        patterns = self._sets.get(name)
        if patterns is not None:
            hits, index = self.hits(name), patterns.index.get(source)
            if hits is not None and index is not None:
                return index in hits
        return pattern.search(self.one8[name]) is not None

    def is_open(self, schedule: Schedule, at: datetime) -> bool:
        key = ("open", id(schedule))
        if key not in self._memo:
            self._memo[key] = is_open(schedule, at)
        return bool(self._memo[key])

    def weekday(self, tz: tzinfo, at: datetime) -> str:
        key = ("day", tz)
        if key not in self._memo:
            self._memo[key] = DAYS[at.astimezone(tz).weekday()]
        return str(self._memo[key])


Test = Callable[[_View], bool]
Check = Callable[[_View], str | None]


def _hit(name: str, op: str, cond: Condition) -> Test:
    """The positive test (``contains`` for ``not_contains``), specialised for one-valued fields: this
    runs rules x conditions times per mail, so every call and generator saved shows."""
    single = name in _SINGLE
    if op == "matches":
        pattern = cond.regex
        assert pattern is not None  # compiled by the schema
        if single:
            source = str(cond.value)
            return lambda v: v.matches(name, source, pattern)
        return lambda v: any(pattern.search(t) is not None for t in v.utf8[name])
    needles = tuple(dict.fromkeys(_norm(t) for t in cond.texts()))
    if op in ("in", "equals"):
        wanted = frozenset(needles)
        if single:
            return lambda v: v.one[name] in wanted
        return lambda v: not wanted.isdisjoint(v.norm[name])
    if op in ("starts", "ends"):
        method = str.startswith if op == "starts" else str.endswith
        if not needles:
            return lambda v: False
        if single:
            return lambda v: method(v.one[name], needles)
        return lambda v: any(method(t, needles) for t in v.norm[name])
    if single and len(needles) == 1:
        needle = needles[0]
        return lambda v: needle in v.one[name]
    if single:
        return lambda v: any(n in v.one[name] for n in needles)
    return lambda v: any(n in t for t in v.norm[name] for n in needles)  # contains


def _text_test(cond: Condition) -> Test:
    hit = _hit(cond.field, cond.op.removeprefix("not_"), cond)
    if cond.op.startswith("not_"):
        return lambda v: not hit(v)
    return hit


def _received_test(cond: Condition) -> Test:
    schedule = cond.bound_schedule
    if cond.schedule is not None and schedule is None:
        raise ValueError(f"schedule '{cond.schedule}' was not bound (rules must come from load_config)")
    positive = cond.op != "not_equals"
    if cond.field == "received.business_hours":
        assert schedule is not None and cond.flag is not None
        hours, want = schedule, cond.flag

        def open_(v: _View) -> bool:
            at = v.facts.received_at
            return at is not None and (v.is_open(hours, at) == want) == positive

        return open_
    days = frozenset(d.strip().lower() for d in cond.texts())
    tz = schedule.tz if schedule is not None else UTC

    def weekday(v: _View) -> bool:
        at = v.facts.received_at
        return at is not None and (v.weekday(tz, at) in days) == positive

    return weekday


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "above": lambda a, b: a > b,
    "below": lambda a, b: a < b,
    "at_least": lambda a, b: a >= b,
    "at_most": lambda a, b: a <= b,
}


def _score_test(cond: Condition) -> Test:
    """A mail without a trusted score is neither above nor below anything."""
    compare, limit = _COMPARE[cond.op], cond.number
    assert limit is not None  # checked by the schema

    def score(v: _View) -> bool:
        have = v.facts.spam_score
        return have is not None and compare(have, limit)

    return score


def _condition_test(cond: Condition) -> Test:
    if cond.field == "has_attachment":
        want, positive = cond.flag, cond.op == "equals"
        return lambda v: (bool(v.facts.attachments) == want) == positive
    if cond.field == "spam":
        want, positive = cond.flag, cond.op == "equals"
        return lambda v: (v.facts.spam == want) == positive
    if cond.field == "spam_score":
        return _score_test(cond)
    if cond.field.startswith("received."):
        return _received_test(cond)
    return _text_test(cond)


def _shown(cond: Condition) -> str:
    value = cond.value
    if isinstance(value, ListFile):
        shown = f"{{file: {value.file}}}"
    elif isinstance(value, bool):
        shown = str(value).lower()
    else:
        shown = repr(value)
    at = f" (schedule {cond.schedule})" if cond.schedule else ""
    return f"{cond.field} {cond.op} {shown}{at} did not hold"


def _as_test(node: When | Condition) -> Test:
    if isinstance(node, Condition):
        return _condition_test(node)
    check = _compile(node)
    return lambda v: check(v) is None


def _compile(node: When | Condition) -> Check:
    """None when it holds, else a description of the first failing condition."""
    if isinstance(node, Condition):
        test, failed = _condition_test(node), _shown(node)
        return lambda v: None if test(v) else failed
    if node.not_ is None and all(isinstance(n, Condition) for n in (*node.all, *node.any)):
        return _flat(node)
    steps = [
        (_condition_test(n), _shown(n), None) if isinstance(n, Condition) else (None, "", _compile(n)) for n in node.all
    ]
    anys = [_as_test(n) for n in node.any]
    not_ = _as_test(node.not_) if node.not_ is not None else None
    none_of = f"none of {len(anys)} 'any' conditions held"

    def check(v: _View) -> str | None:
        for test, failed, sub in steps:
            if test is not None:
                if not test(v):
                    return failed
            elif sub is not None and (reason := sub(v)) is not None:
                return reason
        if anys:
            for test in anys:
                if test(v):
                    break
            else:
                return none_of
        if not_ is not None and not_(v):
            return "'not' condition held"
        return None

    return check


def _flat(node: When) -> Check:
    """The common shapes, ``all`` and/or ``any`` of plain conditions, without the general loop's branches."""
    alls = [(_condition_test(n), _shown(n)) for n in node.all if isinstance(n, Condition)]
    anys = [_condition_test(n) for n in node.any if isinstance(n, Condition)]
    none_of = f"none of {len(anys)} 'any' conditions held"
    if not anys:

        def all_of(v: _View) -> str | None:
            for test, failed in alls:
                if not test(v):
                    return failed
            return None

        return all_of

    def flat(v: _View) -> str | None:
        for test, failed in alls:
            if not test(v):
                return failed
        for test in anys:
            if test(v):
                return None
        return none_of

    return flat


def _header_names(node: When | Condition) -> set[str]:
    if isinstance(node, Condition):
        return {node.field[len("header:") :].lower()} if node.field.startswith("header:") else set()
    return set().union(*(_header_names(n) for n in (*node.all, *node.any, *([node.not_] if node.not_ else []))))


class CompiledRules:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = tuple(rules)
        self._checks = tuple(_compile(rule.when) for rule in rules)
        by_field: dict[str, list[str]] = {}
        for rule in rules:
            for _, cond in conditions(rule.when, ()):
                if cond.regex is not None and cond.field in _SINGLE and isinstance(cond.value, str):
                    by_field.setdefault(cond.field, []).append(cond.value)
        self._sets: dict[str, PatternSet] = {}
        for name, patterns in by_field.items():
            if len(patterns) > 1:
                with contextlib.suppress(ValueError, re2_error):  # too big for one set: each pattern alone
                    self._sets[name] = PatternSet(patterns)
        # intake needs the outcome, not the explanation: it tries only the rules whose gate holds
        self.gates = Gates(rules, self._sets)
        self.header_names = frozenset(set().union(*(_header_names(rule.when) for rule in rules)))
        self.needs_headers = bool(self.header_names)
        # (rule, check, its "matched" trace line, its "failed" trace lines by reason: a condition's reason is fixed)
        self._entries = tuple(
            (rule, check, RuleTrace(rule.name, True, "all conditions held"), dict[str, RuleTrace]())
            for rule, check in zip(self.rules, self._checks, strict=True)
        )

    def evaluate(
        self, facts: Facts, explain: bool = True
    ) -> tuple[list[tuple[str, Then]], tuple[RuleTrace, ...]]:
        """The matched rules' actions in file order, and (``explain``) a trace line for every rule."""
        view = _View(facts, self._sets)
        if not explain:
            return self._matches(view), ()
        matched: list[tuple[str, Then]] = []
        trace: list[RuleTrace] = []
        stopped_by: str | None = None
        for rule, check, held, failures in self._entries:
            if stopped_by:
                trace.append(RuleTrace(rule.name, False, f"not evaluated: '{stopped_by}' stopped evaluation"))
                continue
            failed = check(view)
            if failed is not None:
                line = failures.get(failed)
                if line is None:
                    line = failures[failed] = RuleTrace(rule.name, False, failed)
                trace.append(line)
                continue
            trace.append(held)
            matched.append((rule.name, rule.then))
            if rule.stop:
                stopped_by = rule.name
        return matched, tuple(trace)

    def _matches(self, view: _View) -> list[tuple[str, Then]]:
        matched: list[tuple[str, Then]] = []
        for i in self.gates.candidates(view):
            if self._checks[i](view) is None:
                rule = self.rules[i]
                matched.append((rule.name, rule.then))
                if rule.stop:
                    break
        return matched
