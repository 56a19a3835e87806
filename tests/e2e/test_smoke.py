"""The demo's first user story over real sockets: a mail in, a ticket and an acknowledgment out."""

from __future__ import annotations

import email
import json
import time
from email import policy
from pathlib import Path

from tests.conftest import Service, run_cli


def test_mail_over_smtp_opens_ticket_and_acknowledges(service: Service, tmp_path: Path) -> None:
    raw = (b"From: Pat <pat@customer.example>\r\nTo: support@example.com\r\nSubject: Printer on fire\r\n"
           b"Message-ID: <smoke-1@customer.example>\r\n\r\nHelp, it burns.\r\n")
    with service.smtp() as client:
        client.sendmail("pat@customer.example", ["support@example.com"], raw)
    listing = json.loads(run_cli(service.config, "tickets", "list", "--json").stdout)
    assert [t["subject"] for t in listing] == ["Printer on fire"]
    number = listing[0]["number"]
    outgoing = tmp_path / "outgoing" / "new"
    deadline = time.monotonic() + 20
    ack = None
    while ack is None:
        assert time.monotonic() < deadline, service.output()
        time.sleep(0.1)
        mails = [email.message_from_bytes(p.read_bytes(), policy=policy.default)
                 for p in (outgoing.iterdir() if outgoing.exists() else [])]
        ack = next((m for m in mails if m["To"] == "pat@customer.example"), None)
    assert f"[#{number}]" in ack["Subject"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == "<smoke-1@customer.example>"
