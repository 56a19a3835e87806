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
