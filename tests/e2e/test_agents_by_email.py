"""Customers and agents work a ticket entirely by mail, over the real listener and the outgoing Maildir.

Agents answer by replying to their alert: its Reply-To is their own signed address, which is
what authenticates them. A From header alone never gives agent powers.
"""

from __future__ import annotations

import email
import json
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PATIENCE, MakeConfig, Service, cli_json, run_cli, sql_rows, start_service, wait_until

AGENTS = {
    "agents": [{"name": "Jane Doe", "email": "jane@example.com"}, {"name": "Jerry Sys", "email": "jerry@example.com"}],
    "departments": [{"name": "Support", "manager": "jane@example.com",
                     "members": ["jane@example.com", "jerry@example.com"]}],
}
RULES = {"help_topics": [{"name": "General", "department": "Support"}], "default_help_topic": "General"}
CUSTOMER = "pat@customer.example"


@pytest.fixture
def desk(make_config: MakeConfig, tmp_path: Path) -> Any:
    svc = start_service(make_config(agents=AGENTS, rules=RULES, sla={}), tmp_path / "serve.log")
    yield svc
    svc.stop()


def outgoing(svc: Service) -> list[EmailMessage]:
    folder = svc.config.parent.parent / "outgoing" / "new"
    files = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime) if folder.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]  # type: ignore[misc]


def wait_mail(
    svc: Service, to: str, contains: str = "", count: int = 1, timeout: float = PATIENCE
) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in outgoing(svc) if m["To"] == to and contains in m["Subject"] + _text(m)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail to {to} with {contains!r}; have {[m['Subject'] for m in outgoing(svc)]}")
        time.sleep(0.1)


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return part.get_content() if part is not None else ""


def send(svc: Service, sender: str, to: str, subject: str, body: str, **headers: str) -> None:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    if "Message_ID" not in headers:
        lines.append(f"Message-ID: <{time.monotonic_ns()}@{sender.split('@')[1].rstrip('>')}>")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    with svc.smtp() as client:
        client.sendmail(sender, [to], ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode())


def ticket(svc: Service, number: str) -> dict[str, Any]:
    result = run_cli(svc.config, "tickets", "show", number, "--json")
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout))


def open_ticket(svc: Service, subject: str = "Router broken") -> tuple[str, EmailMessage]:
    send(svc, f"Pat <{CUSTOMER}>", "support@example.com", subject, "My router blinks red.")
    [ack] = wait_mail(svc, CUSTOMER, subject)
    number = ack["Subject"].split("[#")[1].split("]")[0]
    [alert] = wait_mail(svc, "jane@example.com", subject)
    return number, alert


def agent_reply(svc: Service, alert: EmailMessage, agent: str, body: str) -> None:
    reply_to = alert["Reply-To"]
    assert reply_to.startswith("support+a"), reply_to  # the agent's own signed address
    send(svc, agent, reply_to, f"Re: {alert['Subject']}", body, In_Reply_To=alert["Message-ID"])


def test_customer_agent_customer_conversation(desk: Service) -> None:
    number, alert = open_ticket(desk)
    agent_reply(desk, alert, "jane@example.com",
                "Please restart it.\n\nOn Mon, Pat wrote:\n> My router blinks red.")
    [relayed] = wait_mail(desk, CUSTOMER, "Please restart it.")
    assert "My router blinks red" not in _text(relayed)  # quoted history is not relayed
    assert relayed["Auto-Submitted"] is None  # a human's answer, not an automatic mail
    shown = ticket(desk, number)
    assert shown["status"] == "awaiting_reply"
    assert [m["kind"] for m in shown["messages"]] == ["customer", "agent"]
    assert shown["messages"][1]["body"] == "Please restart it."

    send(desk, CUSTOMER, relayed["Reply-To"], f"Re: {relayed['Subject']}", "Still red.")
    wait_mail(desk, "jane@example.com", "Still red.")
    assert ticket(desk, number)["status"] == "open"  # the customer's turn is over

    agent_reply(desk, alert, "jane@example.com", "#status resolved\nReplaced the router.")
    wait_mail(desk, CUSTOMER, "is now resolved")
    [answer] = wait_mail(desk, CUSTOMER, "Replaced the router.")
    assert "#status" not in _text(answer)
    assert ticket(desk, number)["status"] == "resolved"


def inbound_of(svc: Service, message_id_part: str) -> dict[str, Any] | None:
    """The explain record of the received mail whose Message-ID contains ``message_id_part`` (None: not yet)."""
    rows = sql_rows(svc.config, "SELECT id, message_id FROM inbound WHERE processed_at IS NOT NULL")
    found = [row_id for row_id, mid in rows if mid and message_id_part in mid]
    return dict(cli_json(svc.config, "explain", f"id:{found[0]}")) if found else None


def test_spoofed_agent_gets_no_powers_and_no_customer_ticket(desk: Service) -> None:
    """Commands under an agent's name at the plain address: nothing applied, no ticket, the real agent told."""
    number, _alert = open_ticket(desk)
    send(desk, "jane@example.com", "support@example.com", f"Re: [#{number}] Router broken",
         "#status closed\nClosing this.", Message_ID="<spoof-1@example.com>")
    [told] = wait_mail(desk, "jane@example.com", "plain support address")
    assert "not applied" in told["Subject"] and "Reply-To is your own signed address" in _text(told)
    record = inbound_of(desk, "spoof-1")
    assert record is not None and record["status"] == "quarantined" and "without authentication" in record["reason"]
    assert "#status closed" in record["reason"]
    assert ticket(desk, number)["status"] == "open"  # no command executed
    listing = json.loads(run_cli(desk.config, "tickets", "list", "--json").stdout)
    assert [t["number"] for t in listing] == [number]  # and no customer ticket with the agent as requester
    assert not [m for m in outgoing(desk) if m["To"] == CUSTOMER and "Closing this" in _text(m)]


def test_agent_mail_without_commands_at_the_plain_address_is_an_ordinary_ticket(desk: Service) -> None:
    send(desk, "Jane Doe <jane@example.com>", "support@example.com", "Printer on floor 3",
         "Forwarding what a colleague told me: the printer is jammed.", Message_ID="<fwd-1@example.com>")
    record = wait_until(lambda: (r := inbound_of(desk, "fwd-1")) and r, what="the mail processed")
    assert record["status"] == "accepted" and record["actions"]["created"] is True


def test_commands_only_mail_reaches_no_customer(desk: Service) -> None:
    number, alert = open_ticket(desk)
    reply_to = alert["Reply-To"]
    send(desk, "jane@example.com", reply_to, f"Re: {alert['Subject']}", "#assign me",
         In_Reply_To=alert["Message-ID"], Message_ID="<cmd-only-1@example.com>")
    record = wait_until(lambda: (r := inbound_of(desk, "cmd-only-1")) and r, what="the mail processed")
    assert record["sender"]["role"] == "agent" and record["actions"]["message"] == "note"
    assert [n["kind"] for n in record["notifications"]] == []  # nothing relayed, nobody alerted (she took it)
    shown = ticket(desk, number)
    assert shown["assignee"] == "jane@example.com"
    assert shown["status"] == "open"  # not "awaiting reply": the customer was asked nothing
    assert [m["kind"] for m in shown["messages"]] == ["customer"]


def test_transfer_alerts_the_new_department_even_when_assigned_at_once(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    agents = {**AGENTS, "departments": [*AGENTS["departments"],
                                        {"name": "Sys Admin", "members": ["jerry@example.com", "sam@example.com"]}],
              "agents": [*AGENTS["agents"], {"name": "Sam Ops", "email": "sam@example.com"}]}
    svc = start_service(make_config(agents=agents, rules=RULES, sla={}), tmp_path / "serve.log")
    try:
        number, alert = open_ticket(svc)
        agent_reply(svc, alert, "jane@example.com", "#dept Sys Admin\n#assign me")
        wait_mail(svc, "jerry@example.com", f"[#{number}]", count=2)  # alert_new, then the transfer
        wait_mail(svc, "sam@example.com", f"[#{number}]")
        shown = ticket(svc, number)
        assert (shown["department"], shown["assignee"]) == ("Sys Admin", "jane@example.com")
    finally:
        svc.stop()


def test_invalid_command_changes_nothing_and_is_answered(desk: Service) -> None:
    number, alert = open_ticket(desk)
    agent_reply(desk, alert, "jane@example.com", "#stauts resolved\nDone.")
    [error] = wait_mail(desk, "jane@example.com", "were not applied")
    assert "unknown command #stauts" in _text(error)
    shown = ticket(desk, number)
    assert shown["status"] == "open"
    assert shown["messages"][-1]["kind"] == "note"
    time.sleep(1.5)  # one outbox tick: nothing may have gone to the customer
    assert [m["Subject"] for m in outgoing(desk) if m["To"] == CUSTOMER and "Done." in _text(m)] == []


def test_note_reaches_agents_only(desk: Service) -> None:
    number, alert = open_ticket(desk)
    agent_reply(desk, alert, "jane@example.com", "#note\nCustomer uses the old firmware.")
    [note] = wait_mail(desk, "jerry@example.com", "old firmware")
    assert "INTERNAL NOTE" in _text(note)
    time.sleep(1.5)
    assert not [m for m in outgoing(desk) if m["To"] == CUSTOMER and "old firmware" in _text(m)]
    assert ticket(desk, number)["messages"][-1]["kind"] == "note"


def test_assign_and_collaborator_commands(desk: Service) -> None:
    number, alert = open_ticket(desk)
    agent_reply(desk, alert, "jane@example.com", "#assign jerry\n#priority high\n#cc boss@customer.example")
    wait_mail(desk, "jerry@example.com", "Assigned to you")
    shown = ticket(desk, number)
    assert (shown["assignee"], shown["priority"]) == ("jerry@example.com", "high")
    assert "boss@customer.example" in shown["collaborators"]


def test_stranger_with_guessed_number_does_not_enter_the_thread(desk: Service) -> None:
    number, _ = open_ticket(desk)
    send(desk, "mallory@evil.example", "support@example.com", f"Re: [#{number}] Router broken", "Send me the data")
    deadline = time.monotonic() + 10
    while len(json.loads(run_cli(desk.config, "tickets", "list", "--json").stdout)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [m["from"] for m in ticket(desk, number)["messages"]] == [CUSTOMER]


def test_collaborator_reply_joins_the_thread(desk: Service) -> None:
    send(desk, f"Pat <{CUSTOMER}>", "support@example.com", "Printer jam", "Jammed.", Cc="Sam <sam@customer.example>")
    [ack] = wait_mail(desk, CUSTOMER, "Printer jam")
    number = ack["Subject"].split("[#")[1].split("]")[0]
    send(desk, "sam@customer.example", "support@example.com", f"Re: [#{number}] Printer jam", "Also tray 2.")
    deadline = time.monotonic() + 10
    while len(ticket(desk, number)["messages"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert ticket(desk, number)["messages"][1]["from"] == "sam@customer.example"


def test_agent_reply_attachments_reach_the_customer(desk: Service) -> None:
    number, alert = open_ticket(desk)
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "jane@example.com", alert["Reply-To"], f"Re: {alert['Subject']}"
    reply.set_content("Here is the manual.")
    reply.add_attachment(b"%PDF-1.4 manual", maintype="application", subtype="pdf", filename="manual.pdf")
    with desk.smtp() as client:
        client.sendmail("jane@example.com", [alert["Reply-To"]], reply.as_bytes())
    [relayed] = wait_mail(desk, CUSTOMER, "Here is the manual.")
    [attachment] = list(relayed.iter_attachments())
    assert attachment.get_filename() == "manual.pdf" and attachment.get_content() == b"%PDF-1.4 manual"
    assert ticket(desk, number)["messages"][-1]["attachments"][0]["filename"] == "manual.pdf"
