"""Every mail of a ticket goes out from the address its customer wrote to, over the real listener.

A customer who wrote to billing@ hears from billing@ (named for the help topic) for the whole
ticket: the acknowledgment, the agent's alert, the agent's answer relayed by mail, and whatever
follows, even when a later mail of theirs went to support@.
"""

from __future__ import annotations

import json
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MakeConfig, Service, run_cli, start_service
from tests.e2e.test_agents_by_email import AGENTS, agent_reply, send, ticket, wait_mail

RULES = {
    "help_topics": [
        {"name": "General", "department": "Support"},
        {"name": "Billing", "department": "Support", "from_name": "Example Billing",
         "recognise": {"addresses": ["billing@example.com"]}},
    ],
    "default_help_topic": "General",
}
CUSTOMER = "kim@customer.example"


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    config = make_config(agents=AGENTS, rules=RULES, sla={},
                         intake={"addresses": ["support@example.com", "billing@example.com"]})
    svc = start_service(config, tmp_path / "serve.log")
    yield svc
    svc.stop()


def number_of(subject: str) -> str:
    return subject.split("[#")[1].split("]")[0]


def test_a_ticket_written_to_billing_speaks_from_billing_throughout(desk: Service) -> None:
    send(desk, f"Kim <{CUSTOMER}>", "billing@example.com", "Invoice twice", "I was charged twice.")
    [ack] = wait_mail(desk, CUSTOMER, "Invoice twice")
    assert parseaddr(ack["From"]) == ("Example Billing", "billing@example.com")
    assert ack["Reply-To"].startswith("billing")
    number = number_of(ack["Subject"])
    [alert] = wait_mail(desk, "jane@example.com", "Invoice twice")
    assert parseaddr(alert["From"])[1] == "billing@example.com"
    assert alert["Reply-To"].startswith("billing+a")  # the agent's signed address, at billing@
    assert ticket(desk, number)["reply_address"] == "billing@example.com"

    agent_reply_to_billing(desk, alert, "We refunded the second charge.")
    [answer] = wait_mail(desk, CUSTOMER, "We refunded the second charge.")
    assert parseaddr(answer["From"]) == ("Example Billing", "billing@example.com")

    # The customer answers to support@ this time (tag in the subject): the ticket still speaks as billing@.
    send(desk, f"Kim <{CUSTOMER}>", "support@example.com", f"Re: [#{number}] Invoice twice", "Thanks, received.")
    [*_, relayed] = wait_mail(desk, "jane@example.com", "Thanks, received.")
    assert parseaddr(relayed["From"])[1] == "billing@example.com" and relayed["Reply-To"].startswith("billing+a")
    shown = ticket(desk, number)
    assert [m["kind"] for m in shown["messages"]] == ["customer", "agent", "customer"]


def agent_reply_to_billing(desk: Service, alert: Any, body: str) -> None:
    reply_to = alert["Reply-To"]
    send(desk, "jane@example.com", reply_to, f"Re: {alert['Subject']}", body, In_Reply_To=alert["Message-ID"])


def test_a_ticket_written_to_support_speaks_as_outbound_from(desk: Service) -> None:
    send(desk, f"Kim <{CUSTOMER}>", "support@example.com", "Password reset", "Cannot log in.")
    [ack] = wait_mail(desk, CUSTOMER, "Password reset")
    assert parseaddr(ack["From"]) == ("Example Support", "support@example.com")
    [alert] = wait_mail(desk, "jane@example.com", "Password reset")
    agent_reply(desk, alert, "jane@example.com", "Use the reset link.")
    [answer] = wait_mail(desk, CUSTOMER, "Use the reset link.")
    assert parseaddr(answer["From"]) == ("Example Support", "support@example.com")


def test_only_our_own_addresses_can_become_a_tickets_sender(desk: Service) -> None:
    """A mail that names someone else's address first (To: a victim, Cc: billing+anything@) never makes
    us send as that address: only our own addresses count, without the plus token."""
    lines = ["From: Mallory <mallory@evil.example>", "To: ceo@victim.example",
             "Cc: billing+x@example.com", "Subject: Spoof me", "Message-ID: <spoof@evil.example>"]
    with desk.smtp() as client:
        raw = ("\r\n".join(lines) + "\r\n\r\nhi\r\n").encode()
        client.sendmail("mallory@evil.example", ["billing+x@example.com"], raw)
    [ack] = wait_mail(desk, "mallory@evil.example", "Spoof me")
    assert parseaddr(ack["From"])[1] == "billing@example.com"
    assert ticket(desk, number_of(ack["Subject"]))["reply_address"] == "billing@example.com"


def test_check_config_refuses_a_from_name_with_a_line_break(make_config: MakeConfig) -> None:
    rules = {"help_topics": [{"name": "General", "from_name": "Evil\r\nBcc: all@example.com"}],
             "default_help_topic": "General"}
    config = make_config(rules=rules, sla={})
    result = run_cli(config, "check-config")
    assert result.code == 1 and "rules.yaml:" in result.stderr and "from_name" in result.stderr, result.stderr


def test_rules_test_shows_whom_the_ticket_speaks_as(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(agents=AGENTS, rules=RULES, sla={},
                         intake={"addresses": ["support@example.com", "billing@example.com"]})
    eml = tmp_path / "billing.eml"
    eml.write_bytes(b"From: Kim <kim@customer.example>\r\nTo: billing@example.com\r\nSubject: Invoice\r\n\r\nHi\r\n")
    result = run_cli(config, "rules", "test", str(eml), "--to", "billing@example.com", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert parseaddr(report["speaks_as"]) == ("Example Billing", "billing@example.com")
    assert report["thread"]["via"] == "none"
    text = run_cli(config, "rules", "test", str(eml), "--to", "billing@example.com").stdout
    assert 'notifications: (from "Example Billing" <billing@example.com>)' in text
