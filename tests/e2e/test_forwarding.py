"""An agent forwards a customer's mail into the desk, over the real SMTP listener and the outgoing Maildir.

The agent is authenticated as the README says (our MX's Authentication-Results, authserv-id
mx.example.com, DKIM passing for example.com). Most tests are the attacker's: a forwarded block is
text anyone can write, so a stranger's forward, a forged agent From, a forward of our own or an
agent's mail, and a block naming nobody must never make anyone but the mail's author a requester.
"""

from __future__ import annotations

import json
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    MakeConfig,
    Service,
    run_cli,
    smtp_deliver,
    sql_rows,
    start_service,
)
from tests.support.outgoing import mails_to, record, show, text_of, wait_mail

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry Sys", "email": "jerry@example.com"}],
    "departments": [{"name": "Support", "members": ["jane@example.com"]}],
}
RULES = {
    "help_topics": [
        {"name": "Outage", "recognise": {"addresses": ["outage@example.com"]}, "department": "Support",
         "ack_forwarded": True},
        {"name": "General", "department": "Support"},
    ],
    "default_help_topic": "General",
}
MAIN: dict[str, Any] = {"security": {"agent_authentication": {"authserv_ids": ["mx.example.com"]}}}
PAT = "pat@customer.example"
VOUCHED = "mx.example.com; dkim=pass header.d=example.com"  # our MX: the agent's domain signed it

GMAIL_DE = """\
{above}
---------- Weitergeleitete Nachricht ---------
Von: Pät Cüstomer <pat@customer.example>
Date: Mo., 23. Nov. 2026 um 10:05 Uhr
Subject: Drucker defekt
To: <jane@example.com>

Der Drucker im 3. Stock ist defekt.
"""
OUTLOOK_EN = """\
Another one about the printer.

-----Original Message-----
From: =?UTF-8?Q?P=C3=A4t_C=C3=BCstomer?= [mailto:pat@customer.example]
Sent: Monday, November 23, 2026 10:05 AM
To: Jerry Sys <jerry@example.com>
Subject: Drucker defekt

Der Drucker im 3. Stock ist defekt.
"""


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    svc = start_service(make_config(agents=AGENTS, rules=RULES, sla={}, **MAIN), tmp_path / "serve.log")
    yield svc
    svc.stop()


# --------------------------------------------------------------------------- helpers
def send(svc: Service, sender: str, subject: str, body: str, *, to: str = "support@example.com",
         auth: str | None = VOUCHED, **headers: str) -> str:
    """One mail through the listener (``auth``: the Authentication-Results our MX put on top); its Message-ID."""
    mid = headers.pop("Message_ID", f"<{time.monotonic_ns()}@{sender.split('@')[-1].rstrip('>')}>")
    lines = [f"Authentication-Results: {auth}"] if auth else []
    lines += [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Message-ID: {mid}",
              "Date: Tue, 24 Nov 2026 09:00:00 +0100", "MIME-Version: 1.0"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if "Content_Type" not in headers:
        lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()
    envelope_from = sender.split("<")[-1].rstrip(">")
    code, answer = smtp_deliver(svc.host, svc.port, raw, mail_from=envelope_from, rcpts=(to,))
    assert code == 250, answer
    return mid


def numbers(svc: Service) -> list[str]:
    return [t["number"] for t in json.loads(run_cli(svc.config, "tickets", "list", "--json").stdout)]


def events(svc: Service, number: str) -> list[tuple[str, str, str]]:
    return [(k, a, d) for k, a, d in sql_rows(
        svc.config,
        f"SELECT e.kind, e.actor, e.detail FROM event e JOIN ticket t ON t.id = e.ticket_id "
        f"WHERE t.number = '{number}' ORDER BY e.id",
    )]


def tag_of(mail: EmailMessage) -> str:
    return str(mail["Subject"]).split("[#")[1].split("]")[0]


def attached(inner: bytes, comment: str = "Please look at the attached mail.") -> tuple[str, str]:
    """A forward as attachment: (Content-Type header value, body)."""
    body = (f"--fw\nContent-Type: text/plain; charset=utf-8\n\n{comment}\n--fw\nContent-Type: message/rfc822\n"
            f"Content-Disposition: attachment; filename=original.eml\n\n{inner.decode()}\n--fw--\n")
    return "multipart/mixed; boundary=fw", body


INNER = (b"From: =?ISO-8859-1?Q?P=E4t_C=FCstomer?= <pat@customer.example>\nTo: jane@example.com\n"
         b"Subject: Invoice wrong\nDate: Mon, 23 Nov 2026 10:05:00 +0100\nMessage-ID: <inv-1@customer.example>\n"
         b"\nThe invoice 2026-031 is wrong.\n")


# --------------------------------------------------------------------------- the whole story
def test_an_agents_inline_forward_is_the_customers_ticket(desk: Service) -> None:
    mid = send(desk, "Jane Doe <jane@example.com>", "WG: Drucker defekt",
               GMAIL_DE.format(above="#ack\nCustomer called too, it is urgent.\n"))
    [receipt] = wait_mail(desk, "jane@example.com", "the mail you forwarded is ticket")
    number = tag_of(receipt)
    assert "Forwarded mail from pat@customer.example" in receipt["Subject"]
    assert "opened: the customer was acknowledged" in text_of(receipt)
    assert receipt["Reply-To"].startswith("support+a")  # the agent's own signed address: replies work the ticket
    assert receipt["In-Reply-To"] == mid
    [ack] = wait_mail(desk, PAT, "We received your request")  # #ack asked for it
    assert tag_of(ack) == number and "Pät Cüstomer" in text_of(ack)

    ticket = show(desk, number)
    assert ticket["requester"] == PAT and ticket["subject"] == "Drucker defekt"  # WG: taken off
    customer, note = ticket["messages"]
    assert customer["kind"] == "customer" and customer["from"] == PAT
    assert customer["body"] == "Der Drucker im 3. Stock ist defekt."
    assert customer["created_at"].startswith("2026-11-23T09:05:00")  # 10:05 in the forward's zone (+01:00)
    assert note["kind"] == "note" and note["from"] == "jane@example.com"
    assert note["body"] == "Customer called too, it is urgent."  # without #ack
    [forwarded] = [e for e in events(desk, number) if e[0] == "forwarded"]
    assert forwarded[1] == "jane@example.com"
    assert "forwarded by agent jane@example.com, original sender pat@customer.example" in forwarded[2]
    assert "dkim=pass (mx.example.com)" in forwarded[2]
    shown = run_cli(desk.config, "tickets", "show", number).stdout
    assert "forwarded    jane@example.com: forwarded by agent jane@example.com" in shown

    trail = record(desk, mid)
    assert trail["status"] == "accepted" and trail["message_id"] == mid  # the forward's own id stays its record's
    assert trail["sender"]["address"] == PAT and trail["sender"]["role"] == "requester"
    assert trail["forwarded"]["by"] == "jane@example.com" and trail["forwarded"]["acknowledged"] is True
    assert trail["forwarded"]["how"] == "inline (Weitergeleitete Nachricht)"
    text = run_cli(desk.config, "explain", f"id:{trail['id']}").stdout
    assert "forwarded:" in text and "forwarded by agent jane@example.com, original sender pat@customer.example" in text

    # the receipt's Reply-To works the ticket like any alert
    send(desk, "jane@example.com", f"Re: {receipt['Subject']}", "#assign me\nWe are sending a technician.",
         to=receipt["Reply-To"], auth=None, In_Reply_To=receipt["Message-ID"])
    wait_mail(desk, PAT, "We are sending a technician.")
    assert show(desk, number)["assignee"] == "jane@example.com"

    # Jerry forwards the same mail from Outlook, in English: no second ticket, he hears which it is
    again = send(desk, "Jerry Sys <jerry@example.com>", "FW: Drucker defekt", OUTLOOK_EN)
    [told] = wait_mail(desk, "jerry@example.com", "the mail you forwarded is ticket")
    assert tag_of(told) == number and "already this ticket" in text_of(told)
    assert numbers(desk) == [number]
    second = record(desk, again)
    assert second["status"] == "duplicate" and second["ticket"] == number
    assert second["reason"] == f"the forwarded mail is already ticket {number}"
    assert any(e[0] == "forwarded" and e[1] == "jerry@example.com" and "again" in e[2] for e in events(desk, number))
    assert len(mails_to(desk, PAT, "We received your request")) == 1


def test_a_forward_as_attachment_without_ack_tells_only_the_agent(desk: Service) -> None:
    content_type, body = attached(INNER)
    mid = send(desk, "jane@example.com", "Fwd: Invoice wrong", body, Content_Type=content_type)
    [receipt] = wait_mail(desk, "jane@example.com", "the mail you forwarded is ticket")
    number = tag_of(receipt)
    assert "the customer was not told" in text_of(receipt)
    ticket = show(desk, number)
    assert ticket["requester"] == PAT and ticket["subject"] == "Invoice wrong"
    assert ticket["messages"][0]["message_id"] == "<inv-1@customer.example>"
    assert ticket["messages"][0]["body"] == "The invoice 2026-031 is wrong."
    trail = record(desk, mid)
    assert trail["forwarded"]["how"] == "attached (message/rfc822)"
    assert trail["forwarded"]["original_message_id"] == "<inv-1@customer.example>"
    assert trail["forwarded"]["acknowledged"] is False and trail["notifications"][-1]["kind"] == "forwarded"
    assert [n["kind"] for n in trail["notifications"]] == ["alert_new", "forwarded"]  # no ack_new

    # the same mail attached again (another forward, another Message-ID): found by its own Message-ID
    again = send(desk, "jane@example.com", "Fwd: Invoice wrong", body, Content_Type=content_type)
    assert record(desk, again)["status"] == "duplicate"
    wait_mail(desk, "jane@example.com", "already this ticket")
    assert numbers(desk) == [number]
    # the ack would have been queued with the ticket, before the receipts: none was, to the customer at all
    assert sql_rows(desk.config, f"SELECT count(*) FROM outbox WHERE recipient = '{PAT}'") == [(0,)]


def test_the_help_topic_may_acknowledge_forwards(desk: Service) -> None:
    send(desk, "jane@example.com", "Fwd: Drucker defekt", GMAIL_DE.format(above=""), to="outage@example.com")
    [ack] = wait_mail(desk, PAT, "We received your request")
    [receipt] = wait_mail(desk, "jane@example.com", "the mail you forwarded is ticket")
    assert tag_of(ack) == tag_of(receipt) and "acknowledged" in text_of(receipt)
    assert show(desk, tag_of(ack))["help_topic"] == "Outage"


def test_a_forward_of_a_colleagues_forward_is_refused(desk: Service) -> None:
    """Nested: a block "From: Jerry (an agent)" over a block naming a customer. That From line is text
    anyone can write: an attacker who sends Jane a mail with a forged "From: jerry" block over a victim's
    address must not make the victim a requester when Jane forwards it in. Refused, and Jane is told."""
    body = """\
---------- Forwarded message ---------
From: Jerry Sys <jerry@example.com>
Date: Mon, Nov 23, 2026 at 11:00 AM
Subject: Fwd: Drucker defekt

Jane, yours?

---------- Forwarded message ---------
From: Victim <victim@elsewhere.example>
Date: Mon, Nov 23, 2026 at 10:05 AM
Subject: Drucker defekt
Message-ID: <forged@elsewhere.example>

Please mail me.
"""
    mid = send(desk, "jane@example.com", "Fwd: Fwd: Drucker defekt", body)
    trail = record(desk, mid)
    assert trail["status"] == "quarantined" and trail["ticket"] is None
    assert "jerry@example.com, one of our agents" in trail["reason"]
    wait_mail(desk, "jane@example.com", "jerry@example.com")  # forward_refused, with the reason
    assert not mails_to(desk, "victim@elsewhere.example")
    assert not sql_rows(desk.config, "SELECT id FROM ticket")


# --------------------------------------------------------------------------- the attacker's tests
def test_a_strangers_forward_is_the_strangers_own_mail(desk: Service) -> None:
    mid = send(desk, "Mallory <mallory@evil.example>", "Fwd: Drucker defekt", GMAIL_DE.format(above="#ack"),
               auth="mx.example.com; dkim=pass header.d=evil.example")
    trail = record(desk, mid)
    assert "forwarded" not in trail and trail["sender"]["address"] == "mallory@evil.example"
    ticket = show(desk, trail["ticket"])
    assert ticket["requester"] == "mallory@evil.example" and ticket["subject"] == "Fwd: Drucker defekt"
    assert PAT not in ticket["collaborators"]
    wait_mail(desk, "mallory@evil.example", "We received your request")
    assert not mails_to(desk, PAT)


@pytest.mark.parametrize(
    "auth",
    [None, "evil.example; dkim=pass header.d=example.com", "mx.example.com; dkim=pass header.d=evil.example",
     "mx.example.com; dkim=fail header.d=example.com"],
    ids=["no results", "untrusted authserv", "another domain", "dkim failed"],
)
def test_a_forged_agent_from_gets_no_forwarding(desk: Service, auth: str | None) -> None:
    mid = send(desk, "Jane Doe <jane@example.com>", "Fwd: Drucker defekt", GMAIL_DE.format(above=""), auth=auth)
    trail = record(desk, mid)
    assert "forwarded" not in trail
    assert trail["sender"]["address"] == "jane@example.com" and trail["sender"]["authenticated"] is False
    assert show(desk, trail["ticket"])["requester"] == "jane@example.com"  # an ordinary mail of that From
    assert not mails_to(desk, PAT)
    assert not [e for e in events(desk, trail["ticket"]) if e[0] == "forwarded"]


@pytest.mark.parametrize(
    ("from_line", "why"),
    [
        ("Example Support <support@example.com>", "support@example.com, one of our own addresses"),
        ("Example Support <support+outage@example.com>", "one of our own addresses"),
        ("Jerry Sys <jerry@example.com>", "jerry@example.com, one of our agents"),
        ("Pat Customer", "names no sender: a From line without an address"),
    ],
    ids=["support address", "plus address", "agent", "no address"],
)
def test_a_forward_that_names_no_customer_is_kept_aside(desk: Service, from_line: str, why: str) -> None:
    body = (f"#ack\n---------- Forwarded message ---------\nFrom: {from_line}\n"
            "Date: Mon, Nov 23, 2026 at 10:05 AM\nSubject: Printer\n\nbroken\n")
    mid = send(desk, "jane@example.com", "Fwd: Printer", body)
    trail = record(desk, mid)
    assert trail["status"] == "quarantined" and trail["ticket"] is None
    assert trail["reason"].startswith("forward refused: ") and why in trail["reason"]
    assert why in trail["forwarded"]["refused"]
    [told] = wait_mail(desk, "jane@example.com", "was not made a ticket")
    assert why in text_of(told)
    assert numbers(desk) == []
    listed = run_cli(desk.config, "quarantine", "list").stdout
    assert "forward refused" in listed
    assert not mails_to(desk, "support@example.com") and not mails_to(desk, "jerry@example.com")


def test_an_attached_mail_without_from_is_kept_aside(desk: Service) -> None:
    inner = INNER.replace(b"From: =?ISO-8859-1?Q?P=E4t_C=FCstomer?= <pat@customer.example>\n", b"")
    content_type, body = attached(inner)
    mid = send(desk, "jane@example.com", "Fwd: Invoice wrong", body, Content_Type=content_type)
    trail = record(desk, mid)
    assert trail["status"] == "quarantined" and "names no sender: no From line" in trail["reason"]


def test_rules_test_shows_who_forwarded_whose_mail(desk: Service, tmp_path: Path) -> None:
    eml = tmp_path / "forward.eml"
    eml.write_bytes((f"Authentication-Results: {VOUCHED}\nFrom: jane@example.com\nTo: support@example.com\n"
                     "Subject: Fwd: Drucker defekt\nMessage-ID: <dry-1@example.com>\n"
                     "Content-Type: text/plain; charset=utf-8\n\n" + GMAIL_DE.format(above="#ack")).encode())
    result = run_cli(desk.config, "rules", "test", str(eml), "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["forwarded"]["summary"] == "forwarded by agent jane@example.com, original sender pat@customer.example"
    assert report["forwarded"]["acknowledged"] is True
    assert {"kind": "ack_new", "to": [PAT]} in report["notifications"]
    text = run_cli(desk.config, "rules", "test", str(eml)).stdout
    assert "forwarded: forwarded by agent jane@example.com, original sender pat@customer.example" in text
    assert numbers(desk) == []  # a dry run
