"""SMTP intake, end to end: a real ``mailgate serve`` on loopback, driven by smtplib.

The promises checked here are the ones a customer and an admin see:
a new mail opens one ticket and gets one acknowledgment (tagged, RFC 3834,
threaded); replies find their ticket by tag, In-Reply-To or References;
the listener is never an open relay and refuses oversize mail, but never
bounces a mail for an over-long line; the same mail delivered twice (or to
two support addresses) is one ticket; machine mail and our own mail get no
acknowledgment; forged ``X-Mailgate-*`` headers change nothing; the JSON
views keep the DESIGN contract; and a locked database answers 451 (the
sender keeps the mail) with nothing half-written.
"""

from __future__ import annotations

import hashlib
import smtplib
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    PATIENCE,
    DatabaseLocked,
    MakeConfig,
    Service,
    cli_json,
    make_mail,
    outgoing_to,
    smtp_deliver,
    sql_rows,
    start_service,
    wait_for_outgoing,
)

TICKET_KEYS = {
    "number", "subject", "status", "priority", "help_topic", "department", "assignee", "sla_plan",
    "requester", "collaborators", "created_at", "first_response_due", "resolution_due", "overdue",
    "reply_address",  # the support address the customer wrote to (README "Replies from the address ...")
    "merged_into",  # the survivor's number, for a ticket merged into another (README "Merge and split by mail")
}
# only on `tickets show`: the thread, other desks' numbers, the merge and split links both ways
SHOWN_KEYS = {"messages", "aliases", "merged_from", "split_from", "split_into"}
MESSAGE_KEYS = {"kind", "from", "body", "created_at", "message_id", "attachments"}
ATTACHMENT_KEYS = {"filename", "content_type", "size", "sha256", "purged"}  # purged: retention, forget


def send(service: Service, raw: bytes, **kw: Any) -> tuple[int, str]:
    return smtp_deliver(service.host, service.port, raw, **kw)


def tickets(service: Service) -> list[dict[str, Any]]:
    return list(cli_json(service.config, "tickets", "list"))


def outbox(service: Service) -> list[dict[str, Any]]:
    return list(cli_json(service.config, "outbox", "list"))


def acks(service: Service) -> list[dict[str, Any]]:
    """Automatic answers to the customer (agents' alerts about new tickets are not counted)."""
    return [row for row in outbox(service) if row["kind"].startswith("ack")]


def open_ticket(service: Service, mid: str = "<first@customer.example>") -> tuple[str, Any]:
    """Send a new mail, return (ticket number, the acknowledgment as delivered)."""
    code, text = send(service, make_mail(message_id=mid))
    assert code == 250, text
    [ticket] = tickets(service)
    [ack] = wait_for_outgoing(service.config, 1, service)
    return str(ticket["number"]), ack


# --------------------------------------------------------------------------- new mail and replies
def test_new_mail_opens_a_ticket_and_sends_one_threaded_acknowledgment(service: Service) -> None:
    number, ack = open_ticket(service)
    assert len(number) == 6 and number.isdigit()
    assert f"[#{number}]" in ack["Subject"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["To"].addresses[0].addr_spec == "pat@customer.example"
    assert ack["In-Reply-To"] == "<first@customer.example>"
    assert "<first@customer.example>" in ack["References"].split()
    own_id = ack["Message-ID"]
    assert own_id.startswith("<") and own_id.endswith("@example.com>")
    assert own_id != "<first@customer.example>"
    [row] = acks(service)
    assert row["message_id"] == own_id and row["status"] == "sent" and row["kind"] == "ack_new"


def _reply(style: str, number: str, ack: EmailMessage) -> bytes:
    """A customer's answer to the acknowledgment, keeping only one of the threading clues."""
    if style == "tag":
        return make_mail(f"Re: [#{number}] Printer on fire", message_id="<reply@customer.example>",
                         body="Still burning.")
    if style == "in_reply_to":
        return make_mail("Re: Printer on fire", message_id="<reply@customer.example>", body="Still burning.",
                         headers={"In-Reply-To": ack["Message-ID"]})
    return make_mail("Printer (new subject, no tag)", message_id="<reply@customer.example>", body="Still burning.",
                     headers={"References": f"<unrelated@elsewhere.example> {ack['Message-ID']}"})


@pytest.mark.parametrize("style", ["tag", "in_reply_to", "references"])
def test_reply_joins_the_same_ticket_without_a_second_acknowledgment(service: Service, style: str) -> None:
    number, ack = open_ticket(service)
    code, text = send(service, _reply(style, number, ack))
    assert code == 250, text
    assert number in text  # the 250 names the ticket it joined
    [ticket] = tickets(service)
    assert ticket["number"] == number
    shown = cli_json(service.config, "tickets", "show", number)
    assert [m["message_id"] for m in shown["messages"]] == ["<first@customer.example>", "<reply@customer.example>"]
    assert "Still burning." in shown["messages"][1]["body"]
    assert [r["kind"] for r in acks(service)] == ["ack_new"]  # written in the ingest transaction: final now


# --------------------------------------------------------------------------- what the listener refuses
def test_unknown_recipient_is_refused_at_rcpt_and_never_relayed(service: Service) -> None:
    with service.smtp() as client:
        client.ehlo("client.example")
        assert client.mail("spammer@elsewhere.example")[0] == 250
        for rcpt in ("victim@gmail.example", "sales@example.com", "support@example.com.evil.example",
                     "victim%gmail.example@example.com", '"support@example.com"@evil.example'):
            code, text = client.rcpt(rcpt)
            assert (code, text[:5]) == (550, b"5.1.1"), (rcpt, code, text)
        # a mixed envelope: the good recipient is taken, the stranger is not
        assert client.rcpt("support@example.com")[0] == 250
        assert client.rcpt("victim@gmail.example")[0] == 550
        code, _ = client.data(make_mail(message_id="<mixed@customer.example>"))
        assert code == 250
    [row] = sql_rows(service.config, "SELECT rcpt_tos FROM inbound")
    assert "victim@gmail.example" not in str(row[0])
    with pytest.raises(smtplib.SMTPRecipientsRefused), service.smtp() as client:
        client.sendmail("spammer@elsewhere.example", ["victim@gmail.example"], make_mail())
    assert len(tickets(service)) == 1


def test_support_addresses_match_without_case_and_with_plus_tags(service: Service) -> None:
    for n, rcpt in enumerate(("Support@Example.COM", "support+billing@example.com")):
        code, text = send(service, make_mail(f"Case {n}", message_id=f"<case-{n}@customer.example>"), rcpts=(rcpt,))
        assert code == 250, (rcpt, text)
    assert sorted(t["subject"] for t in tickets(service)) == ["Case 0", "Case 1"]


def test_message_over_max_message_size_is_refused_with_552(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(intake={"smtp": {"max_message_size": "4KiB"}})
    svc = start_service(config, tmp_path / "serve.log")
    try:
        big = make_mail(message_id="<big@customer.example>", body="x" * 70 + ("\r\n" + "y" * 70) * 100)
        # without SIZE in MAIL FROM, the limit is enforced on the data itself
        code, _ = send(svc, big)
        assert code == 552
        # smtplib's sendmail announces SIZE=, so a polite client is refused before sending
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused, svc.smtp() as client:
            client.sendmail("pat@customer.example", ["support@example.com"], big)
        assert refused.value.smtp_code == 552
        assert send(svc, make_mail(message_id="<small@customer.example>"))[0] == 250
        assert [t["subject"] for t in tickets(svc)] == ["Printer on fire"]
    finally:
        assert svc.stop() == 0


def test_mail_with_lines_longer_than_998_characters_is_stored_not_bounced(service: Service) -> None:
    html_mailer = make_mail(message_id="<long-line@customer.example>", body="<p>" + "word " * 1000 + "</p>")
    code, text = send(service, html_mailer)
    assert code == 250, (code, text)  # a 5xx would make the sender's MTA bounce a customer's mail
    [ticket] = tickets(service)
    shown = cli_json(service.config, "tickets", "show", ticket["number"])
    assert shown["messages"][0]["body"].count("word") == 1000


# --------------------------------------------------------------------------- one mail, one ticket
def test_same_mail_delivered_twice_makes_one_ticket_and_one_ack(service: Service) -> None:
    raw = make_mail(message_id="<twice@customer.example>")
    assert send(service, raw)[0] == 250
    code, text = send(service, raw)
    assert code == 250 and "duplicate" in text
    assert len(tickets(service)) == 1
    assert len(acks(service)) == 1


def test_same_mail_to_two_support_addresses_makes_one_ticket(service: Service) -> None:
    body = make_mail(to="support@example.com, outage@example.com", message_id="<both@customer.example>")
    for rcpt in ("support@example.com", "outage@example.com"):
        transit = (f"Received: from mx.customer.example by mx.example.com; for <{rcpt}>\r\n"
                   f"Delivered-To: {rcpt}\r\nX-Original-To: {rcpt}\r\n").encode()
        assert send(service, transit + body, rcpts=(rcpt,))[0] == 250
    assert len(tickets(service)) == 1
    assert len(acks(service)) == 1


# --------------------------------------------------------------------------- no answers to machines or ourselves
PAT = "Pat <pat@customer.example>"
MACHINE_MAIL: dict[str, tuple[dict[str, str], str, str]] = {  # extra headers, From, envelope sender
    "auto-submitted": ({"Auto-Submitted": "auto-replied"}, PAT, "pat@customer.example"),
    "x-autoreply": ({"X-Autoreply": "yes"}, PAT, "pat@customer.example"),
    "precedence-bulk": ({"Precedence": "bulk"}, PAT, "pat@customer.example"),
    "list-id": ({"List-Id": "<users.lists.customer.example>"}, PAT, "pat@customer.example"),
    "auto-response-suppress": ({"X-Auto-Response-Suppress": "All"}, PAT, "pat@customer.example"),
    "null-sender-bounce": ({}, "Mail Delivery System <MAILER-DAEMON@mx.customer.example>", ""),
}


@pytest.mark.parametrize("case", sorted(MACHINE_MAIL))
def test_machine_mail_is_kept_but_never_acknowledged(service: Service, case: str) -> None:
    headers, sender, envelope_from = MACHINE_MAIL[case]
    raw = make_mail("Re: your mail", sender=sender, message_id=f"<{case}@customer.example>", headers=headers)
    assert send(service, raw, mail_from=envelope_from)[0] == 250
    kept = sql_rows(service.config, f"SELECT status FROM inbound WHERE message_id = '<{case}@customer.example>'")
    assert kept and kept[0][0] in ("accepted", "quarantined")  # stored either way, never dropped
    assert acks(service) == []


def test_mail_from_our_own_support_address_gets_no_ack(service: Service) -> None:
    raw = make_mail(sender="Example Support <support@example.com>", message_id="<self@example.com>")
    assert send(service, raw, mail_from="support@example.com")[0] == 250
    assert sql_rows(service.config, "SELECT count(*) FROM inbound")[0][0] == 1
    assert acks(service) == []


def test_forged_mailgate_headers_are_ignored_and_the_mail_is_acknowledged(service: Service) -> None:
    raw = make_mail(message_id="<forged@customer.example>",
                    headers={"X-Mailgate-Loop": "example.com; aaaaaaaaaaaaaaaa", "X-Mailgate-Ticket": "123456"})
    code, text = send(service, raw)
    assert code == 250, text
    [ticket] = tickets(service)
    [ack] = wait_for_outgoing(service.config, 1, service)
    assert f"[#{ticket['number']}]" in ack["Subject"]


# --------------------------------------------------------------------------- the JSON contract
def _iso_with_offset(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value!r} has no UTC offset"
    return parsed


def test_ticket_json_views_keep_the_design_contract(service: Service) -> None:
    data = b"%PDF-1.4 not really a pdf\n" * 10
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Pat <pat@customer.example>", "support@example.com", "Invoice wrong"
    msg["Message-ID"] = "<json@customer.example>"
    msg.set_content("See the attached invoice.")
    msg.add_attachment(data, maintype="application", subtype="pdf", filename="invoice.pdf")
    assert send(service, msg.as_bytes())[0] == 250

    [listed] = tickets(service)
    assert set(listed) == TICKET_KEYS
    shown = cli_json(service.config, "tickets", "show", listed["number"])
    assert set(shown) == TICKET_KEYS | SHOWN_KEYS
    assert {k: v for k, v in shown.items() if k not in SHOWN_KEYS} == listed
    assert shown["subject"] == "Invoice wrong" and shown["requester"] == "pat@customer.example"
    assert shown["status"] in {"open", "in_progress", "awaiting_reply", "resolved", "closed"}
    assert shown["priority"] in {"low", "normal", "high", "emergency"}
    assert isinstance(shown["collaborators"], list) and isinstance(shown["overdue"], bool)
    _iso_with_offset(shown["created_at"])
    for key in ("first_response_due", "resolution_due"):
        assert shown[key] is None or _iso_with_offset(shown[key]) > _iso_with_offset(shown["created_at"])
    [message] = shown["messages"]
    assert set(message) == MESSAGE_KEYS
    assert message["kind"] == "customer" and message["from"] == "pat@customer.example"
    assert message["message_id"] == "<json@customer.example>"
    assert "See the attached invoice." in message["body"]
    _iso_with_offset(message["created_at"])
    [attachment] = message["attachments"]
    assert set(attachment) == ATTACHMENT_KEYS
    assert attachment == {"filename": "invoice.pdf", "content_type": "application/pdf", "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest(), "purged": False}


# --------------------------------------------------------------------------- database trouble
def test_locked_database_answers_451_then_250_once_released(service: Service) -> None:
    raw = make_mail(message_id="<locked@customer.example>")
    with DatabaseLocked(service.config):
        code, text = send(service, raw, timeout=PATIENCE)  # 451 comes after the 5 s busy timeout
    assert code == 451, text
    assert text.startswith("4.")
    assert sql_rows(service.config, "SELECT count(*) FROM inbound")[0][0] == 0  # nothing half-written
    assert tickets(service) == [] and outbox(service) == []
    code, text = send(service, raw)  # the sender's MTA retries later
    assert code == 250, text
    assert len(tickets(service)) == 1
    assert sql_rows(service.config, "SELECT count(*) FROM inbound")[0][0] == 1
    [ack] = wait_for_outgoing(service.config, 1, service)
    assert ack["In-Reply-To"] == "<locked@customer.example>"
    assert len(outgoing_to(service.config)) == 1
