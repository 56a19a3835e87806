"""Customers by mail, over the real SMTP listener and the outgoing Maildir: a requester closes their
ticket with ``#close``, and mail to the status address lists their open tickets.

Most of these tests are the attacker's: a collaborator, a stranger with the ticket number, a forged
From or Reply-To, an out-of-office, a bounce and a flood must neither close a ticket nor make us mail
anyone who did not ask.
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
    wait_until,
)
from tests.support.outgoing import mails_to, record, show, text_of, wait_mail

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}],
    "departments": [{"name": "Support", "members": ["jane@example.com"]}],
}
RULES = {"help_topics": [{"name": "General", "department": "Support", "sla": "standard"}],
         "default_help_topic": "General"}
SLA = {"sla_plans": {"standard": {"first_response": "4h", "resolution": "2d"}}}
PAT = "pat@customer.example"
STATUS = "status@example.com"
MAIN: dict[str, Any] = {
    "intake": {"status_address": STATUS, "status_answers": {"count": 2, "within": "1h"}},
    "tickets": {"customer_close": {"enabled": True, "words": ["#close", "#erledigt"]}},
    "security": {"agent_authentication": {"authserv_ids": ["mx.example.com"]}},
}


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    svc = start_service(make_config(agents=AGENTS, rules=RULES, sla=SLA, **MAIN), tmp_path / "serve.log")
    yield svc
    svc.stop()


# --------------------------------------------------------------------------- helpers
def send(svc: Service, sender: str, to: str, subject: str, body: str, *, mail_from: str | None = None,
         rcpt: str | None = None, **headers: str) -> str:
    """One mail through the listener; returns its Message-ID."""
    mid = headers.pop("Message_ID", f"<{time.monotonic_ns()}@{sender.split('@')[-1].rstrip('>')}>")
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Message-ID: {mid}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()
    envelope_from = mail_from if mail_from is not None else sender.split("<")[-1].rstrip(">")
    code, answer = smtp_deliver(svc.host, svc.port, raw, mail_from=envelope_from, rcpts=(rcpt or to,))
    assert code == 250, answer
    return mid


def events(svc: Service, number: str) -> list[tuple[str, str, str]]:
    return [(k, a, d) for k, a, d in sql_rows(
        svc.config,
        f"SELECT e.kind, e.actor, e.detail FROM event e JOIN ticket t ON t.id = e.ticket_id "
        f"WHERE t.number = '{number}' ORDER BY e.id",
    )]


def open_ticket(svc: Service, subject: str = "Router broken", cc: str | None = None) -> tuple[str, EmailMessage]:
    """Pat opens a ticket; returns its number and the acknowledgment Pat got."""
    extra = {"Cc": cc} if cc else {}
    send(svc, f"Pat <{PAT}>", "support@example.com", subject, "My router blinks red.", **extra)
    [ack] = wait_mail(svc, PAT, subject)
    return ack["Subject"].split("[#")[1].split("]")[0], ack


def reply(svc: Service, answered: EmailMessage, body: str, sender: str = f"Pat <{PAT}>", **headers: str) -> str:
    """Answer one of our mails as a mail client does: to its Reply-To, In-Reply-To its Message-ID."""
    return send(svc, sender, answered["Reply-To"], f"Re: {answered['Subject']}", body,
                In_Reply_To=answered["Message-ID"], References=answered["Message-ID"], **headers)


def status_answers(svc: Service, address: str) -> int:
    rows = sql_rows(svc.config, f"SELECT count(*) FROM outbox WHERE kind = 'status_list' AND recipient = '{address}'")
    return int(rows[0][0])


# --------------------------------------------------------------------------- #close
def test_the_requester_closes_their_ticket_by_replying(desk: Service) -> None:
    number, ack = open_ticket(desk)
    assert show(desk, number)["resolution_due"] is not None  # the SLA clock runs
    mid = reply(desk, ack, "Works again, thanks!\n#close\n\nOn Mon, 2 Mar 2026, Example Support "
                           "<support@example.com> wrote:\n> We received your request")
    [confirm] = wait_mail(desk, PAT, "You closed your request")
    assert f"[#{number}]" in confirm["Subject"] and "is now closed" in text_of(confirm)
    [alert] = wait_mail(desk, "jane@example.com", "Closed by the customer")
    assert "Works again, thanks!" in text_of(alert)
    ticket = show(desk, number)
    assert ticket["status"] == "closed"
    assert ticket["messages"][-1]["kind"] == "customer" and "Works again" in ticket["messages"][-1]["body"]
    [closed] = [e for e in events(desk, number) if e[0] == "status"]
    assert closed[1] == PAT and "open -> closed by the requester's #close by mail" in closed[2]
    assert "signed Message-ID" in closed[2]
    [[running]] = sql_rows(desk.config, f"SELECT sla_running_since FROM ticket WHERE number = '{number}'")
    assert running is None  # the clock stopped, as for any close
    assert sql_rows(desk.config, "SELECT count(*) FROM sla_timer WHERE fired_at IS NULL") == [(0,)]
    trail = record(desk, mid)
    assert trail["customer_close"]["acts"] is True and trail["customer_close"]["command"] == "#close"


def test_a_configured_word_closes_and_the_mx_can_vouch_for_the_requester(desk: Service) -> None:
    """No signed Message-ID (a new mail naming the ticket), but our MX's DKIM result for Pat's domain."""
    number, _ack = open_ticket(desk)
    send(desk, f"Pat <{PAT}>", "support@example.com", f"[#{number}] done", "#ERLEDIGT",
         Authentication_Results="mx.example.com; dkim=pass header.d=customer.example")
    wait_mail(desk, PAT, "You closed your request")
    assert show(desk, number)["status"] == "closed"


def test_close_in_quoted_text_is_not_a_command(desk: Service) -> None:
    number, ack = open_ticket(desk)
    mid = reply(desk, ack, "It still blinks.\n\n-----Original Message-----\nFrom: Pat <pat@customer.example>\n"
                           "Sent: Monday, 2 March 2026 10:00\nTo: support@example.com\nSubject: Router\n\n#close")
    trail = record(desk, mid)
    assert "customer_close" not in trail
    assert show(desk, number)["status"] == "open"


def test_a_collaborator_cannot_close(desk: Service) -> None:
    number, _ack = open_ticket(desk, cc="Boss <boss@customer.example>")
    [alert] = wait_mail(desk, "jane@example.com", "Router broken")
    send(desk, "jane@example.com", alert["Reply-To"], f"Re: {alert['Subject']}", "Please restart it.",
         In_Reply_To=alert["Message-ID"])
    [relayed] = wait_mail(desk, "boss@customer.example", "Please restart it.")
    mid = reply(desk, relayed, "#close", sender="Boss <boss@customer.example>")
    trail = record(desk, mid)
    assert trail["customer_close"]["acts"] is False
    assert "only the requester" in trail["customer_close"]["reason"]
    assert "boss@customer.example is a collaborator" in trail["customer_close"]["reason"]
    ticket = show(desk, number)
    assert ticket["status"] == "open"  # the collaborator's reply reopened it from awaiting_reply, nothing more
    assert ticket["messages"][-1]["from"] == "boss@customer.example"  # recorded as the reply it is
    assert any(e[0] == "close_ignored" and "only the requester" in e[2] for e in events(desk, number))
    # the collaborator writing under the requester's name: their Message-ID is theirs, not the requester's
    forged = reply(desk, relayed, "#close", sender=f"Pat <{PAT}>")
    assert "nothing proves the mail is theirs" in record(desk, forged)["customer_close"]["reason"]
    assert show(desk, number)["status"] == "open"
    assert not mails_to(desk, PAT, "You closed your request")


def test_a_stranger_with_the_ticket_number_cannot_close(desk: Service) -> None:
    number, _ack = open_ticket(desk)
    mid = send(desk, "Eve <eve@stranger.example>", "support@example.com", f"Re: [#{number}] Router broken",
               "#close")
    trail = record(desk, mid)
    assert trail["customer_close"]["acts"] is False
    assert "eve@stranger.example is a stranger" in trail["customer_close"]["reason"]
    assert trail["admission"]["follow_up_of"] == number  # stranger_reply: new_ticket, as without the word
    assert show(desk, number)["status"] == "open"
    assert not [e for e in events(desk, number) if e[0] == "close_ignored"]  # a stranger writes nothing there


def test_a_forged_from_of_the_requester_cannot_close(desk: Service) -> None:
    """From: the requester, the ticket tag in the subject, but no mail of ours answered and no MX vouching."""
    number, _ack = open_ticket(desk)
    mid = send(desk, f"Pat <{PAT}>", "support@example.com", f"Re: [#{number}] Router broken", "#close",
               mail_from="eve@stranger.example",
               Authentication_Results="evil.example; dkim=pass header.d=customer.example")
    trail = record(desk, mid)
    assert trail["customer_close"]["acts"] is False
    assert "nothing proves the mail is theirs" in trail["customer_close"]["reason"]
    ticket = show(desk, number)
    assert ticket["status"] == "open" and ticket["messages"][-1]["body"] == "#close"  # still the reply it was
    assert any(e[0] == "close_ignored" for e in events(desk, number))


def test_a_forged_reply_to_cannot_close(desk: Service) -> None:
    number, ack = open_ticket(desk)
    mid = send(desk, "Eve <eve@stranger.example>", ack["Reply-To"], f"Re: {ack['Subject']}", "#close",
               Reply_To=f"Pat <{PAT}>")
    trail = record(desk, mid)
    assert trail["customer_close"]["acts"] is False and "only the requester" in trail["customer_close"]["reason"]
    assert show(desk, number)["status"] == "open"


def test_an_out_of_office_with_close_never_closes(desk: Service) -> None:
    number, ack = open_ticket(desk)
    mid = reply(desk, ack, "I am away until Monday.\n#close", Auto_Submitted="auto-replied")
    trail = record(desk, mid)
    assert trail["customer_close"]["acts"] is False and "machine-sent" in trail["customer_close"]["reason"]
    assert show(desk, number)["status"] == "open"
    assert not mails_to(desk, PAT, "You closed your request")


def test_close_on_a_closed_ticket_reopens_nothing(desk: Service) -> None:
    number, ack = open_ticket(desk)
    reply(desk, ack, "#close")
    wait_mail(desk, PAT, "You closed your request")
    again = reply(desk, ack, "#close\nJust to be sure.")
    trail = record(desk, again)
    assert trail["customer_close"]["acts"] is True and "closed already" in trail["customer_close"]["reason"]
    ticket = show(desk, number)
    assert ticket["status"] == "closed" and ticket["messages"][-1]["body"] == "#close\nJust to be sure."
    assert any(e[0] == "close_ignored" and "already closed" in e[2] for e in events(desk, number))
    assert len(mails_to(desk, PAT, "You closed your request")) == 1
    assert [t["number"] for t in json.loads(run_cli(desk.config, "tickets", "list", "--json").stdout)] == [number]


# --------------------------------------------------------------------------- status@
def test_the_status_address_lists_open_tickets_and_opens_none(desk: Service) -> None:
    first, first_ack = open_ticket(desk, "Router broken")
    second, ack = open_ticket(desk, "Printer jammed")
    reply(desk, ack, "#close")
    wait_mail(desk, PAT, "You closed your request")
    mid = send(desk, f"Pat <{PAT}>", STATUS, f"Re: [#{first}] what is open?", "Hello?",
               Reply_To="Eve <eve@stranger.example>")
    [answer] = wait_mail(desk, PAT, "Your open requests")
    body = text_of(answer)
    assert f"[#{first}]  Router broken" in body and "status: open, last update:" in body
    assert second not in body  # closed: not listed
    assert [a.addr_spec for a in answer["To"].addresses] == [PAT]  # never the Reply-To
    assert answer["Auto-Submitted"] == "auto-replied"
    trail = record(desk, mid)
    assert trail["status"] == "accepted" and trail["ticket"] is None
    assert trail["status_request"] == {"to": PAT, "answered": True, "reason": f"answered {PAT} with 1 open ticket(s)",
                                       "tickets": [first]}
    assert len(show(desk, first)["messages"]) == 1  # the tag in its subject joined it to nothing
    assert len(json.loads(run_cli(desk.config, "tickets", "list", "--json").stdout)) == 2
    assert status_answers(desk, "eve@stranger.example") == 0
    reply(desk, first_ack, "#close")  # the last one closed: "no open tickets"
    wait_mail(desk, PAT, "You closed your request", count=2)
    send(desk, f"Pat <{PAT}>", STATUS, "status", "")
    answers = wait_mail(desk, PAT, "Your open requests", count=2)
    assert "you have no open requests with us right now" in text_of(answers[-1])


def test_a_request_that_also_went_to_support_is_a_ticket_not_a_status_request(desk: Service) -> None:
    """Cc'ing the status address (or one SMTP transaction to both) must not swallow a customer's question."""
    mid = send(desk, f"Pat <{PAT}>", f"support@example.com, {STATUS}", "My router is broken", "Please help.")
    wait_mail(desk, PAT, "My router is broken")  # the acknowledgment of a new ticket
    assert record(desk, mid)["ticket"] is not None
    raw = (f"From: Pat <{PAT}>\r\nTo: support@example.com\r\nCc: {STATUS}\r\nSubject: Printer too\r\n"
           f"Message-ID: <both@customer.example>\r\n\r\nIt jams.\r\n").encode()
    code, answer = smtp_deliver(desk.host, desk.port, raw, mail_from=PAT, rcpts=("support@example.com", STATUS))
    assert code == 250, answer
    assert record(desk, "<both@customer.example>")["ticket"] is not None
    assert status_answers(desk, PAT) == 0


def test_the_status_address_answers_no_stranger_no_machine_and_no_reply_to(desk: Service) -> None:
    open_ticket(desk)
    never = send(desk, "Eve <eve@stranger.example>", STATUS, "status", "", Reply_To=f"Pat <{PAT}>")
    assert "never opened a ticket" in record(desk, never)["status_request"]["reason"]
    bounce = send(desk, "MAILER-DAEMON@mx.customer.example", STATUS, "Undelivered Mail Returned to Sender",
                  f"To: {PAT}\n#close", mail_from="")
    assert "machine-sent mail (bounce" in record(desk, bounce)["status_request"]["reason"]
    forged_bounce = send(desk, f"Pat <{PAT}>", STATUS, "status", "", mail_from="")  # null sender: a bounce
    assert record(desk, forged_bounce)["status_request"]["answered"] is False
    away = send(desk, f"Pat <{PAT}>", STATUS, "Out of office: status", "", Auto_Submitted="auto-replied")
    assert "machine-sent" in record(desk, away)["status_request"]["reason"]
    listed = send(desk, f"Pat <{PAT}>", STATUS, "status", "", List_Id="<users.lists.example>")
    assert "mailing-list headers" in record(desk, listed)["status_request"]["reason"]
    assert status_answers(desk, PAT) == 0 and status_answers(desk, "eve@stranger.example") == 0
    assert len(json.loads(run_cli(desk.config, "tickets", "list", "--json").stdout)) == 1


def test_a_status_flood_for_a_victim_is_capped(desk: Service) -> None:
    """A stranger forges Pat's From ten times: Pat hears from us twice (count: 2 within 1h)."""
    open_ticket(desk)
    mids = [send(desk, f"Pat <{PAT}>", STATUS, f"status {i}", "", mail_from="eve@stranger.example")
            for i in range(10)]
    records = [record(desk, mid) for mid in mids]
    assert [r["status_request"]["answered"] for r in records] == [True, True] + [False] * 8
    assert all("rate limit: 2 answer(s)" in r["status_request"]["reason"] for r in records[2:])
    assert status_answers(desk, PAT) == 2
    wait_mail(desk, PAT, "Your open requests", count=2)
    assert desk.output().count('msg="status request not answered"') == 8


def test_the_same_status_mail_is_answered_once(desk: Service, tmp_path: Path) -> None:
    open_ticket(desk)
    raw = f"From: Pat <{PAT}>\r\nTo: {STATUS}\r\nSubject: status\r\nMessage-ID: <same-1@customer.example>\r\n\r\n?\r\n"
    for _ in range(2):  # a re-delivery (the first 250 lost on the way, say)
        assert smtp_deliver(desk.host, desk.port, raw.encode(), rcpts=(STATUS,))[0] == 250
    wait_until(lambda: sql_rows(desk.config, "SELECT count(*) FROM inbound WHERE processed_at IS NOT NULL "
                                             "AND message_id = '<same-1@customer.example>'") == [(2,)])
    assert status_answers(desk, PAT) == 1
    # the mail processed again as if new (a dry run does that): its answer's outbox key is taken
    again = tmp_path / "again.eml"
    again.write_bytes(raw.encode())
    report = json.loads(run_cli(desk.config, "rules", "test", str(again), "--json").stdout)
    assert report["status_request"]["answered"] is False
    assert report["status_request"]["reason"].startswith("answered already (outbox key status_list:")


# --------------------------------------------------------------------------- rules test
def test_rules_test_shows_the_close_and_status_decisions(desk: Service, tmp_path: Path) -> None:
    number, ack = open_ticket(desk)
    close = tmp_path / "close.eml"
    close.write_bytes(
        f"From: Pat <{PAT}>\r\nTo: support@example.com\r\nSubject: Re: {ack['Subject']}\r\n"
        f"In-Reply-To: {ack['Message-ID']}\r\nMessage-ID: <dry-1@customer.example>\r\n\r\n#close\r\n".encode()
    )
    result = run_cli(desk.config, "rules", "test", str(close), "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["customer_close"] == {"command": "#close", "ticket": number, "acts": True,
                                        "reason": "it answers our mail to the requester (signed Message-ID)"}
    assert [n["kind"] for n in report["notifications"]] == ["notice_closed", "alert_closed"]
    text = run_cli(desk.config, "rules", "test", str(close)).stdout
    assert f"customer close: #close on {number} carried out" in text
    assert show(desk, number)["status"] == "open"  # a dry run

    status = tmp_path / "status.eml"
    status.write_bytes(f"From: Pat <{PAT}>\r\nTo: {STATUS}\r\nSubject: status\r\n\r\n?\r\n".encode())
    report = json.loads(run_cli(desk.config, "rules", "test", str(status), "--json").stdout)
    assert report["status_request"]["answered"] is True and report["status_request"]["tickets"] == [number]
    assert report["notifications"] == [{"kind": "status_list", "to": [PAT]}]
    stranger = tmp_path / "stranger.eml"
    stranger.write_bytes(b"From: eve@stranger.example\r\nTo: support@example.com\r\nSubject: status\r\n\r\n?\r\n")
    report = json.loads(run_cli(desk.config, "rules", "test", str(stranger), "--to", STATUS, "--json").stdout)
    assert report["status_request"]["answered"] is False and report["outcome"]["ticket"] is None
