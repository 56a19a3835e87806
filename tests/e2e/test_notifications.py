"""Notifications over real SMTP into a real sink: their headers, threading, suppression and limits.

The daemon relays through `outbound.transport: smtp` to an aiosmtpd sink, so each test sees
exactly the bytes a customer's or agent's mail server would receive.
"""

from __future__ import annotations

import base64
import email
import json
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgate.identity import Identity, load_secret
from tests.conftest import PATIENCE, MakeConfig, Service, SmtpSink, run_cli, start_service

AGENTS = {"agents": [{"name": "Jane Doe", "email": "jane@example.com"}],
          "departments": [{"name": "Support", "manager": "jane@example.com", "members": ["jane@example.com"]}]}
RULES = {"help_topics": [{"name": "General", "department": "Support"}], "default_help_topic": "General"}


@pytest.fixture
def relayed(make_config: MakeConfig, smtp_sink: SmtpSink, tmp_path: Path) -> Any:
    path = make_config(agents=AGENTS, rules=RULES, sla={},
                       outbound={"transport": "smtp", "smtp": {"host": smtp_sink.host, "port": smtp_sink.port}},
                       notifications={"rate_limits": [{"count": 3, "within": "10m"}]})
    svc = start_service(path, tmp_path / "serve.log")
    yield svc, smtp_sink
    svc.stop()


def parsed(sink: SmtpSink) -> list[EmailMessage]:
    return [email.message_from_bytes(m.data, policy=policy.default) for m in sink.messages]  # type: ignore[misc]


def to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [m for m in parsed(sink) if m["To"] == address]


def send(svc: Service, raw: str, sender: str = "pat@customer.example", rcpt: str = "support@example.com") -> None:
    with svc.smtp() as client:
        client.sendmail(sender, [rcpt], raw.replace("\n", "\r\n").encode())


def wait_until(check: Any, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def tickets(svc: Service) -> list[dict[str, Any]]:
    return list(json.loads(run_cli(svc.config, "tickets", "list", "--json").stdout))


def test_ack_and_alert_headers_thread_and_identify(relayed: Any) -> None:
    svc, sink = relayed
    send(svc, "From: Pat <pat@customer.example>\nTo: support@example.com\nSubject: Printer\n"
              "Message-ID: <first@customer.example>\nThread-Index: AdQc2DN7rLoS3hgnE/O76rpFzxN/Ew==\n\nIt burns.\n")
    wait_until(lambda: len(sink.messages) >= 2)
    [ack] = to(sink, "pat@customer.example")
    [alert] = to(sink, "jane@example.com")
    number = tickets(svc)[0]["number"]
    assert ack["Subject"].startswith(f"[#{number}]") and ack["Auto-Submitted"] == "auto-replied"
    assert alert["Auto-Submitted"] == "auto-generated"
    assert ack["In-Reply-To"] == "<first@customer.example>" and "<first@customer.example>" in ack["References"]
    assert ack["Thread-Topic"] == "Printer"
    mine = base64.b64decode(ack["Thread-Index"])
    theirs = base64.b64decode("AdQc2DN7rLoS3hgnE/O76rpFzxN/Ew==")
    assert mine[:22] == theirs and len(mine) == 27  # one child block under the customer's conversation
    assert ack["X-Mailgate-Loop"] and ack["X-Auto-Response-Suppress"] == "All"
    identity = Identity(load_secret(svc.config.parent.parent / "state" / "secret"), "example.com")
    signed = identity.verify_message_id(ack["Message-ID"])
    assert signed is not None and signed.recipient_hash == identity.recipient_hash("pat@customer.example")
    assert identity.read_token(ack["Reply-To"], "t") == signed.ticket_id
    assert identity.read_token(alert["Reply-To"], "a", "jane@example.com") == signed.ticket_id
    # a reply to the acknowledgment with the subject changed still threads, by the signed Reply-To
    send(svc, f"From: pat@customer.example\nTo: {ack['Reply-To']}\nSubject: other words\n\nMore info.\n",
         rcpt=ack["Reply-To"])
    wait_until(lambda: len(to(sink, "jane@example.com")) >= 2)
    assert len(tickets(svc)) == 1


@pytest.mark.parametrize(
    ("headers", "sender"),
    [
        ("Auto-Submitted: auto-replied\n", "pat@customer.example"),
        ("X-Autoreply: yes\n", "pat@customer.example"),
        ("Precedence: bulk\n", "pat@customer.example"),
        ("List-Id: <news.customer.example>\n", "pat@customer.example"),
        ("", "support@example.com"),
    ],
    ids=["auto-submitted", "x-autoreply", "precedence-bulk", "list-id", "own-address"],
)
def test_machine_mail_gets_no_acknowledgment(relayed: Any, headers: str, sender: str) -> None:
    svc, sink = relayed
    send(svc, f"From: {sender}\nTo: support@example.com\nSubject: Hello\n{headers}\nbody\n", sender=sender)
    wait_until(lambda: len(tickets(svc)) == 1 or bool(run_cli(svc.config, "quarantine", "list").stdout.strip()))
    time.sleep(1.5)  # a few outbox ticks
    assert to(sink, sender) == []


def test_rate_limit_holds_automatic_mail_but_keeps_everything(relayed: Any) -> None:
    svc, sink = relayed
    for i in range(5):
        send(svc, f"From: pat@customer.example\nTo: support@example.com\nSubject: Flood {i}\n\nx {i}\n")
    wait_until(lambda: len(tickets(svc)) == 5)
    wait_until(lambda: len(to(sink, "jane@example.com")) == 5)  # agents are still alerted
    time.sleep(1.5)
    assert len(to(sink, "pat@customer.example")) == 3  # the ladder's first rung: 3 in 10 min
    held = [t for t in tickets(svc) if "not sent: rate limit" in run_cli(svc.config, "tickets", "show",
                                                                          t["number"]).stdout]
    assert len(held) == 2


def test_header_injection_and_html_escaping(relayed: Any) -> None:
    svc, sink = relayed
    subject = "=?utf-8?q?Hi=0D=0ABcc=3A_victim=40evil=2Eexample_<script>alert(1)</script>?="
    send(svc, f'From: "Eve\\r\\nBcc: x@evil.example" <eve@customer.example>\nTo: support@example.com\n'
              f"Subject: {subject}\n\nhello\n", sender="eve@customer.example")
    wait_until(lambda: len(to(sink, "eve@customer.example")) == 1)
    [ack] = to(sink, "eve@customer.example")
    assert ack["Bcc"] is None and all(m.rcpt_tos != ["victim@evil.example"] for m in sink.messages)
    assert "\n" not in ack["Subject"] and "\r" not in ack["Subject"]
    html = ack.get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert "<script>" not in content and "&lt;script&gt;" in content


def test_bounce_of_our_ack_returns_to_its_verp_address_and_suppresses(relayed: Any) -> None:
    svc, sink = relayed
    send(svc, "From: pat@customer.example\nTo: support@example.com\nSubject: Gone soon\n\nhi\n")
    wait_until(lambda: len(to(sink, "pat@customer.example")) == 1)
    [delivery] = [m for m in sink.messages if m.rcpt_tos == ["pat@customer.example"]]
    verp = delivery.mail_from
    dsn = ("From: MAILER-DAEMON@mx.customer.example\nTo: " + verp + "\nSubject: Undelivered Mail\n"
           'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
           "--B\nContent-Type: text/plain\n\nUser unknown.\n--B\nContent-Type: message/delivery-status\n\n"
           "Reporting-MTA: dns; mx.customer.example\n\nFinal-Recipient: rfc822; pat@customer.example\n"
           "Action: failed\nStatus: 5.1.1\n--B--\n")
    send(svc, dsn, sender="", rcpt=verp)
    number = tickets(svc)[0]["number"]
    wait_until(lambda: "undeliverable" in run_cli(svc.config, "tickets", "show", number).stdout)
    assert len(tickets(svc)) == 1  # a bounce never opens a ticket
    send(svc, "From: pat@customer.example\nTo: support@example.com\nSubject: Another one\n\nhi\n")
    wait_until(lambda: len(tickets(svc)) == 2)
    time.sleep(1.5)
    assert len(to(sink, "pat@customer.example")) == 1  # no automatic mail to a bounced address
