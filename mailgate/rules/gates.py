"""Which rules can hold for this mail at all: intake tries only those, in file order.

Most rules an admin writes start from something specific: a sender domain, a
recipient address, a keyword in the subject, a regex. Such a condition is a
*gate*: the rule cannot hold unless it does. Gates of all rules are grouped by
field, so a mail is checked once per distinct domain, keyword or pattern (the
regexes in the one RE2 pass the engine makes anyway) instead of once per rule;
with 200 rules that leaves a handful of candidates to evaluate in full.
Rules without a gate (only ``not``, business hours, ``not_contains``...) are
always candidates. The outcome is the same as trying every rule: the unit
tests compare the two on random rules and mails.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mailgate.rules.conditions import Condition
from mailgate.rules.regex import Pattern, PatternSet
from mailgate.rules.schema import Rule, When

SINGLE = frozenset({"sender", "sender_domain", "subject", "body", "body_full", "help_topic", "dmarc",
                    "channel"})  # one each
_TEXT = SINGLE | {"recipient", "attachment_name"}


def normalise(value: str) -> str:
    return unicodedata.normalize("NFKC", value).casefold()


class View(Protocol):
    """What the gates read of a mail: the engine's per-mail view (normalised, cached fields)."""

    @property
    def norm(self) -> Mapping[str, tuple[str, ...]]: ...

    @property
    def one(self) -> Mapping[str, str]: ...

    @property
    def one8(self) -> Mapping[str, bytes]: ...

    def hits(self, name: str) -> frozenset[int] | None: ...


@dataclass(frozen=True)
class _Atom:
    kind: str  # "value": a value of the field equals key; "contains": key in the field; "regex": the pattern
    # matches; "present": the (many-valued) field has a value at all, e.g. the mail has a named attachment
    field: str
    key: str
    pattern: Pattern | None = None


def _atoms(cond: Condition) -> list[_Atom] | None:
    """Atoms one of which holds whenever ``cond`` holds; None when ``cond`` cannot gate."""
    name, op = cond.field, cond.op
    if not (name in _TEXT or name.startswith("header:")):
        return None
    if op == "matches" and name in SINGLE:
        if cond.regex is not None and isinstance(cond.value, str):
            return [_Atom("regex", name, cond.value, cond.regex)]
        return None
    texts = [normalise(t) for t in cond.texts()]
    if op in ("equals", "in"):
        return [_Atom("value", name, t) for t in texts]
    if op == "contains" and name in SINGLE:
        return [_Atom("contains", name, t) for t in texts]
    if op in ("contains", "starts", "ends", "matches") and name not in SINGLE:
        return [_Atom("present", name, "")]
    if op == "ends" and name == "sender" and texts and all(t.startswith("@") and "@" not in t[1:] for t in texts):
        return [_Atom("value", "sender_domain", t[1:]) for t in texts]
    return None


_PREFERENCE = {"value": 0, "regex": 1, "contains": 2, "present": 3}  # cheapest and most selective first


def gate(when: When) -> list[_Atom] | None:
    """The atoms of one condition that must hold (from ``all``), or of all of ``any`` when every
    alternative gates; None when the rule must always be tried."""
    options: list[list[_Atom]] = []
    for node in when.all:
        found = _atoms(node) if isinstance(node, Condition) else gate(node)
        if found is not None:
            options.append(found)
    if not options and when.any:
        union: list[_Atom] = []
        for node in when.any:
            found = _atoms(node) if isinstance(node, Condition) else gate(node)
            if found is None:
                return None
            union += found
        options.append(union)
    if not options:
        return None
    return min(options, key=lambda atoms: max((_PREFERENCE[a.kind] for a in atoms), default=0))


class Gates:
    def __init__(self, rules: list[Rule], sets: Mapping[str, PatternSet]) -> None:
        self.always: list[int] = []
        self.values: dict[str, dict[str, list[int]]] = {}
        self.contains: dict[str, dict[str, list[int]]] = {}
        self.present: dict[str, list[int]] = {}
        self._regex: dict[str, dict[str, tuple[Pattern, list[int]]]] = {}
        for i, rule in enumerate(rules):
            atoms = gate(rule.when)
            if atoms is None:
                self.always.append(i)
                continue
            for atom in atoms:
                if atom.kind == "present":
                    self.present.setdefault(atom.field, []).append(i)
                elif atom.kind == "regex":
                    assert atom.pattern is not None
                    by_source = self._regex.setdefault(atom.field, {})
                    by_source.setdefault(atom.key, (atom.pattern, []))[1].append(i)
                else:
                    table = self.values if atom.kind == "value" else self.contains
                    table.setdefault(atom.field, {}).setdefault(atom.key, []).append(i)
        # a field's regexes by their index in its RE2 set, for reading the set's answer directly
        self._by_index: dict[str, dict[int, list[int]]] = {}
        for name, by_source in self._regex.items():
            patterns = sets.get(name)
            if patterns is not None and all(source in patterns.index for source in by_source):
                self._by_index[name] = {patterns.index[source]: ids for source, (_, ids) in by_source.items()}

    def candidates(self, view: View) -> list[int]:
        found = set(self.always)
        for name, table in self.values.items():
            for value in view.norm[name]:
                found.update(table.get(value, ()))
        for name, ids in self.present.items():
            if view.norm[name]:
                found.update(ids)
        for name, table in self.contains.items():
            text = view.one[name]
            for needle, ids in table.items():
                if needle in text:
                    found.update(ids)
        for name, by_source in self._regex.items():
            self._regex_hits(view, name, by_source, found)
        return sorted(found)

    def _regex_hits(
        self, view: View, name: str, by_source: dict[str, tuple[Pattern, list[int]]], found: set[int]
    ) -> None:
        hits = view.hits(name) if name in self._by_index else None
        if hits is not None:  # the field's one RE2 set pass, which the rules' own checks reuse
            by_index = self._by_index[name]
            for index in hits:
                found.update(by_index.get(index, ()))
            return
        data = view.one8[name]
        for pattern, ids in by_source.values():
            if pattern.search(data) is not None:
                found.update(ids)
