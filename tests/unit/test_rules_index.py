"""Intake's trace-free evaluation (only the rules whose gate holds are tried) must decide exactly
as the explained evaluation that ``rules test`` shows, stop rules included."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from mailgate.domain import Envelope
from mailgate.pipeline.parse import parse
from mailgate.pipeline.route import _facts, route
from mailgate.rules.engine import CompiledRules, _View
from mailgate.rules.schema import RulesFile

DOMAINS = ["bigbank.example", "acme.example", "Customer.example", "example.org"]
SENDERS = ["pat@customer.example", "boss@bigbank.example", "x@sub.acme.example", "ceo@ACME.example"]
WORDS = ["invoice", "refund", "outage", "login"]
TOPICS = [{"name": "Outage", "recognise": {"subject": "(?i)outage"}}, {"name": "General"}]


def _first(rng: random.Random) -> dict[str, Any]:
    return rng.choice([
        {"field": "sender_domain", "op": "equals", "value": rng.choice(DOMAINS)},
        {"field": "sender_domain", "op": "in", "value": rng.sample(DOMAINS, 2)},
        {"field": "sender", "op": "equals", "value": rng.choice(SENDERS).upper()},
        {"field": "sender", "op": "ends", "value": "@" + rng.choice(DOMAINS)},
        {"field": "sender", "op": "ends", "value": "acme.example"},  # not a whole domain: never looked up
        {"field": "help_topic", "op": "equals", "value": rng.choice(["Outage", "General"])},
        {"field": "subject", "op": "contains", "value": rng.choice(WORDS)},
        {"field": "subject", "op": "contains", "value": rng.sample(WORDS, 2)},
        {"field": "subject", "op": "matches", "value": f"(?i)^{rng.choice(WORDS)}"},
        {"field": "body", "op": "matches", "value": rng.choice(["(?i)hello", "bye", "(?i)h.l+o"])},
        {"field": "body", "op": "contains", "value": rng.choice(["hello", "bye"])},
        {"field": "recipient", "op": "equals", "value": rng.choice(["support@example.com", "sales@example.com"])},
        {"field": "header:X-Tier", "op": "in", "value": ["gold", "silver"]},
        {"field": "subject", "op": "not_contains", "value": rng.choice(WORDS)},
        {"field": "has_attachment", "op": "equals", "value": False},
        {"field": "attachment_name", "op": "ends", "value": [".log", ".csv"]},
        {"field": "header:X-Tier", "op": "contains", "value": "old"},
        {"field": "sender_domain", "op": "not_equals", "value": rng.choice(DOMAINS)},
    ])


def _rules(rng: random.Random, n: int) -> RulesFile:
    rules = []
    for i in range(n):
        conds = [_first(rng) for _ in range(rng.randint(1, 3))]
        shape = rng.random()
        when: dict[str, Any] = {"all": conds} if shape < 0.5 else {"any": conds}
        if shape > 0.85:  # nested groups and a 'not'
            when = {"all": [{"any": conds[:2]}], "not": _first(rng)}
        rules.append({"name": f"r{i}", "when": when, "then": {"tags": [f"t{i}"]}, "stop": rng.random() < 0.05})
    return RulesFile.model_validate({"help_topics": TOPICS, "default_help_topic": "General", "rules": rules})


def _mail(rng: random.Random) -> bytes:
    msg = EmailMessage()
    msg["From"] = rng.choice(SENDERS)
    msg["To"] = "support@example.com"
    msg["Subject"] = " ".join(rng.sample(WORDS, 2))
    if rng.random() < 0.5:
        msg["X-Tier"] = rng.choice(["Gold", "bronze"])
    msg.set_content(rng.choice(["Hello.", "Bye now.", "Hi."]))
    if rng.random() < 0.3:
        msg.add_attachment(b"x", maintype="text", subtype="plain", filename=rng.choice(["a.log", "b.pdf"]))
    return msg.as_bytes()


def test_lookup_decides_as_the_explained_evaluation() -> None:
    rng = random.Random(7)
    envelope = Envelope("a@b.example", ("support@example.com",), "smtp", datetime(2026, 3, 2, 10, tzinfo=UTC))
    compared = stopped = tried = 0
    for _ in range(20):
        rules = _rules(rng, 40)
        compiled = CompiledRules(rules.rules)
        for _ in range(25):
            parsed = parse(_mail(rng))
            explained = route(parsed, envelope, rules, None, compiled, explain=True)
            fast = route(parsed, envelope, rules, None, compiled, explain=False)
            assert fast.trace == ()
            assert len(explained.trace) == 40
            assert (fast.tags, fast.changes) == (explained.tags, explained.changes)
            compared += 1
            tried += len(compiled.gates.candidates(_View(_facts(parsed, envelope, "General", compiled))))
            stopped += any("stopped evaluation" in t.reason for t in explained.trace)
    assert compared == 500
    assert tried < 0.6 * 500 * 40, "the gates let nearly every rule through: the comparison proves little"
    assert stopped > 0, "the generated rules never exercised a stop"


def test_gates_group_rules_by_what_must_hold() -> None:
    rules = RulesFile.model_validate({"help_topics": TOPICS, "default_help_topic": "General", "rules": [
        {"name": "a", "when": {"all": [{"field": "sender_domain", "op": "in", "value": ["X.example", "y.example"]}]},
         "then": {"tags": ["a"]}},
        {"name": "b", "when": {"all": [{"field": "has_attachment", "op": "equals", "value": True},
                                       {"field": "sender", "op": "ends", "value": "@z.example"}]},
         "then": {"tags": ["b"]}},
        {"name": "c", "when": {"any": [{"field": "subject", "op": "contains", "value": "Invoice"},
                                       {"field": "recipient", "op": "equals", "value": "Billing@example.com"}]},
         "then": {"tags": ["c"]}},
        {"name": "d", "when": {"any": [{"field": "subject", "op": "contains", "value": "x"},
                                       {"field": "subject", "op": "not_contains", "value": "y"}]},
         "then": {"tags": ["d"]}},
        {"name": "e", "when": {"all": [{"field": "sender", "op": "ends", "value": "example.org"}]},
         "then": {"tags": ["e"]}},
        {"name": "g", "when": {"all": [{"field": "attachment_name", "op": "ends", "value": ".log"}]},
         "then": {"tags": ["g"]}},
        {"name": "f", "when": {"all": [{"field": "subject", "op": "matches", "value": "(?i)^re:"}]},
         "then": {"tags": ["f"]}},
    ]})
    gates = CompiledRules(rules.rules).gates
    assert gates.values == {
        "sender_domain": {"x.example": [0], "y.example": [0], "z.example": [1]},
        "recipient": {"billing@example.com": [2]},
    }
    assert gates.contains == {"subject": {"invoice": [2]}}
    assert gates.present == {"attachment_name": [5]}
    assert gates.always == [3, 4]  # an 'any' with an alternative that cannot gate; a suffix, not a domain


def test_pattern_set_agrees_with_each_pattern_alone() -> None:
    from mailgate.rules.regex import PatternSet, compile_pattern

    patterns = ["(?i)\\binvoice\\b", "refund.{0,10}\\d{3,}", "^re:", "(?i)straße", "login|password", "x{3}$"]
    texts = ["RE: Invoice 12", "re: refund of 1234 EUR", "Straße gesperrt", "forgot PASSWORD", "xxx", "", "nothing"]
    each = [compile_pattern(p) for p in patterns]
    group = PatternSet(patterns)
    for text in texts:
        data = text.encode()
        hits = group.matches(data)
        assert hits is not None
        alone = {p for p, c in zip(patterns, each, strict=True) if c.search(data)}
        assert {p for p in patterns if group.index[p] in hits} == alone


def test_a_failed_set_pass_falls_back_to_each_pattern() -> None:
    """RE2::Set says "no match" when its DFA runs out of memory; the missing sentinel sends each
    condition back to its own search instead of reading that as "nothing matched"."""
    from mailgate.rules import engine
    from mailgate.rules.regex import PatternSet

    class OutOfMemory(PatternSet):
        def matches(self, text: bytes) -> frozenset[int] | None:
            return None

    rules = RulesFile.model_validate({"help_topics": TOPICS, "default_help_topic": "General", "rules": [
        {"name": "a", "when": {"all": [{"field": "subject", "op": "matches", "value": "(?i)invoice"}]},
         "then": {"tags": ["a"]}},
        {"name": "b", "when": {"all": [{"field": "subject", "op": "matches", "value": "refund"}]},
         "then": {"tags": ["b"]}},
    ]})
    compiled = CompiledRules(rules.rules)
    assert set(compiled._sets) == {"subject"}
    compiled._sets["subject"] = OutOfMemory(["(?i)invoice", "refund"])
    envelope = Envelope("a@b.example", ("support@example.com",), "smtp", datetime(2026, 3, 2, 10, tzinfo=UTC))
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "pat@customer.example", "support@example.com", "INVOICE and refund"
    msg.set_content("x")
    decision = route(parse(msg.as_bytes()), envelope, rules, None, compiled, explain=False)
    assert decision.tags == ("a", "b")
    assert engine.PatternSet is PatternSet
