"""Intake's trace-free evaluation (rules looked up by sender, domain or help topic) must decide exactly
as the explained evaluation that ``rules test`` shows, stop rules included."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from mailgate.domain import Envelope
from mailgate.pipeline.parse import parse
from mailgate.pipeline.route import route
from mailgate.rules.engine import CompiledRules
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
        {"field": "sender_domain", "op": "not_equals", "value": rng.choice(DOMAINS)},
    ])


def _rules(rng: random.Random, n: int) -> RulesFile:
    rules = []
    for i in range(n):
        conds = [_first(rng) for _ in range(rng.randint(1, 3))]
        when: dict[str, Any] = {"all": conds} if rng.random() < 0.7 else {"any": conds}
        rules.append({"name": f"r{i}", "when": when, "then": {"tags": [f"t{i}"]}, "stop": rng.random() < 0.05})
    return RulesFile.model_validate({"help_topics": TOPICS, "default_help_topic": "General", "rules": rules})


def _mail(rng: random.Random) -> bytes:
    msg = EmailMessage()
    msg["From"] = rng.choice(SENDERS)
    msg["To"] = "support@example.com"
    msg["Subject"] = " ".join(rng.sample(WORDS, 2))
    msg.set_content("Hello.")
    return msg.as_bytes()


def test_lookup_decides_as_the_explained_evaluation() -> None:
    rng = random.Random(7)
    envelope = Envelope("a@b.example", ("support@example.com",), "smtp", datetime(2026, 3, 2, 10, tzinfo=UTC))
    compared = stopped = 0
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
            stopped += any("stopped evaluation" in t.reason for t in explained.trace)
    assert compared == 500
    assert stopped > 0, "the generated rules never exercised a stop"


def test_lookup_is_used_for_equality_on_sender_fields_only() -> None:
    rules = RulesFile.model_validate({"help_topics": TOPICS, "default_help_topic": "General", "rules": [
        {"name": "a", "when": {"all": [{"field": "sender_domain", "op": "in", "value": ["X.example", "y.example"]}]},
         "then": {"tags": ["a"]}},
        {"name": "b", "when": {"all": [{"field": "sender", "op": "ends", "value": "@z.example"}]},
         "then": {"tags": ["b"]}},
        {"name": "c", "when": {"all": [{"field": "subject", "op": "equals", "value": "hi"}]}, "then": {"tags": ["c"]}},
        {"name": "d", "when": {"any": [{"field": "sender", "op": "equals", "value": "p@q.example"}]},
         "then": {"tags": ["d"]}},
    ]})
    compiled = CompiledRules(rules.rules)
    assert compiled._tables == {"sender_domain": {"x.example": [0], "y.example": [0], "z.example": [1]}}
    assert compiled._always == [2, 3]


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
