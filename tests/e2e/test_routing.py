"""Mail for different help topics arrives over SMTP and lands where rules.yaml says.

Topic recognition order (address, plus-address, subject, body line, default) and rules
that override topic defaults, all through the real listener and `tickets show --json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MakeConfig, Service, run_cli, start_service

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry Sys", "email": "jerry@example.com"}],
    "departments": [
        {"name": "Sys Admin", "manager": "jane@example.com", "members": ["jane@example.com", "jerry@example.com"]},
        {"name": "Support", "manager": "jane@example.com", "members": ["jane@example.com"]},
        {"name": "Billing", "manager": "jerry@example.com", "members": ["jerry@example.com"]},
    ],
}
SLA = {
    "sla_plans": {
        "critical": {"first_response": "1h", "resolution": "4h"},
        "standard": {"first_response": "8h", "resolution": "3d"},
        "billing": {"first_response": "1d", "resolution": "5d"},
    }
}
RULES: dict[str, Any] = {
    "help_topics": [
        {
            "name": "Outage",
            "recognise": {"addresses": ["outage@example.com"], "subject": "(?i)\\bis down\\b"},
            "department": "Sys Admin",
            "priority": "emergency",
            "sla": "critical",
        },
        {
            "name": "Billing",
            "recognise": {"plus": "billing"},
            "department": "Billing",
            "priority": "low",
            "sla": "billing",
        },
        {"name": "General", "department": "Support", "priority": "normal", "sla": "standard"},
    ],
    "default_help_topic": "General",
    "rules": [
        {
            "name": "vip-domain",
            "when": {"all": [{"field": "sender_domain", "op": "equals", "value": "bigbank.example"}]},
            "then": {"priority": "high", "assignee": "jane@example.com"},
        },
        {
            "name": "invoice-words",
            "when": {
                "any": [
                    {"field": "subject", "op": "contains", "value": "invoice"},
                    {"field": "body", "op": "matches", "value": "(?i)refund"},
                ]
            },
            "then": {"help_topic": "Billing"},
        },
    ],
}


@pytest.fixture
def routed(make_config: MakeConfig, tmp_path: Path) -> Any:
    path = make_config(rules=RULES, agents=AGENTS, sla=SLA)
    svc = start_service(path, tmp_path / "serve.log")
    yield svc
    svc.stop()


def _send(svc: Service, sender: str, to: str, subject: str, body: str = "Hello") -> None:
    raw = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()
    with svc.smtp() as client:
        client.sendmail(sender, [to], raw)


def _ticket(svc: Service, subject: str) -> dict[str, Any]:
    listing = json.loads(run_cli(svc.config, "tickets", "list", "--json").stdout)
    matches = [t for t in listing if t["subject"] == subject]
    assert len(matches) == 1, listing
    return dict(matches[0])


CASES: list[tuple[str, str, str, str, Callable[[dict[str, Any]], bool]]] = [
    (
        "pat@customer.example",
        "outage@example.com",
        "Everything broken",
        "Outage by address",
        lambda t: t["department"] == "Sys Admin" and t["priority"] == "emergency",
    ),
    (
        "pat@customer.example",
        "support@example.com",
        "The website is down",
        "Outage by subject",
        lambda t: t["help_topic"] == "Outage" and t["sla_plan"] == "critical",
    ),
    (
        "pat@customer.example",
        "support+billing@example.com",
        "Question",
        "Billing by plus address",
        lambda t: t["help_topic"] == "Billing" and t["department"] == "Billing",
    ),
    (
        "cfo@bigbank.example",
        "support@example.com",
        "Access please",
        "VIP rule",
        lambda t: t["priority"] == "high" and t["assignee"] == "jane@example.com" and t["help_topic"] == "General",
    ),
    (
        "pat@customer.example",
        "support@example.com",
        "Your invoice 42",
        "Rule switches topic",
        lambda t: t["help_topic"] == "Billing" and t["priority"] == "low" and t["sla_plan"] == "billing",
    ),
    (
        "pat@customer.example",
        "support@example.com",
        "Hello there",
        "Default topic",
        lambda t: t["help_topic"] == "General" and t["department"] == "Support",
    ),
]


@pytest.mark.parametrize(("sender", "to", "subject", "label", "check"), CASES, ids=[c[3] for c in CASES])
def test_mail_lands_in_the_right_place(
    routed: Service, sender: str, to: str, subject: str, label: str, check: Callable[[dict[str, Any]], bool]
) -> None:
    _send(routed, sender, to, subject)
    ticket = _ticket(routed, subject)
    assert check(ticket), (label, ticket)


def test_ticket_explains_its_routing(routed: Service) -> None:
    _send(routed, "cfo@bigbank.example", "support@example.com", "Need invoice copy")
    number = _ticket(routed, "Need invoice copy")["number"]
    shown = run_cli(routed.config, "tickets", "show", number).stdout
    assert "rule vip-domain set priority=high" in shown
    assert "rule invoice-words set help_topic=Billing" in shown


def test_rules_test_matches_serve(routed: Service, tmp_path: Path) -> None:
    """`rules test` is the same pipeline rolled back: same answer, nothing stored."""
    eml = tmp_path / "vip.eml"
    eml.write_bytes(b"From: cfo@bigbank.example\r\nTo: support@example.com\r\nSubject: Hi\r\n\r\nplease refund\r\n")
    before = json.loads(run_cli(routed.config, "tickets", "list", "--json").stdout)
    report = json.loads(run_cli(routed.config, "rules", "test", str(eml), "--json").stdout)
    assert report["result"]["help_topic"] == "Billing"
    assert report["result"]["assignee"] == "jane@example.com"
    assert report["result"]["action"] == "accept"
    assert [r["name"] for r in report["rules"] if r["matched"]] == ["vip-domain", "invoice-words"]
    assert report["notifications"] == [
        {"kind": "ack_new", "to": ["cfo@bigbank.example"]},
        {"kind": "alert_new", "to": ["jane@example.com"]},  # the assignee the rule chose
    ]
    after = json.loads(run_cli(routed.config, "tickets", "list", "--json").stdout)
    assert before == after
