"""The security matrix: for every rule that keeps someone out, the attacker who knows the code and tries
to get around it, alone and in combination.

A help desk takes mail from anyone, so each boundary is written down here as the attack against it:
strangers on someone else's ticket (guessed or real numbers, with and without robot headers, under both
``security.stranger_reply`` policies), impersonated agents (From alone, forged ``Authentication-Results``,
reused or foreign agent tokens), forged bounces that would silence an agent or a bystander, forged
``X-Mailgate-*`` headers, header injection through every field a template carries into a mail we send,
active HTML, path traversal in attachment names, template sandbox escapes, and recipient floods.

Pipeline rows run the real ``ingest`` on a real database (SQLite, or PostgreSQL when
``MAILGATE_TEST_DATABASE_URL`` is set); what we send is rendered into the ``outbox`` table and, for the
header rows, delivered with the real SMTP transport to a real aiosmtpd sink, so the SMTP recipients are
the ones a relay would see. The rows about SMTP answers and exit codes use ``serve`` on a loopback port
and ``mailgate ingest``/``check-config`` as subprocesses.

About 1.5 minutes on two busy cores (SQLite; PostgreSQL somewhat longer): 89 cases, most of them pipeline
cases on a fresh database each (about a second apiece), three ``serve`` instances and five CLI runs.
"""

from __future__ import annotations

import base64
import email
import re
import secrets
import shutil
import smtplib
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError
from sqlalchemy import func, select, update

from mailgate.clock import FixedClock
from mailgate.config import Retry, load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope, Outcome, Source
from mailgate.errors import Rejected
from mailgate.outbound import outbox
from mailgate.outbound.templates import SAMPLE_CONTEXT, Templates
from mailgate.outbound.transport import SmtpTransport
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import AttachmentRow, Event, Message, Outbox, Participant, Suppression, Ticket
from tests.conftest import REPO, MakeConfig, SmtpSink, run_cli, smtp_deliver, sql_rows, start_service, wait_until

SUPPORT = "support@example.com"
CUSTOMER = "pat@customer.example"
COLLABORATOR = "carol@customer.example"
STRANGER = "mallory@attacker.example"
VICTIM = "victim@elsewhere.example"
AGENT = "jane@example.com"  # in the demo agents.yaml; the General topic's department (Support) is hers alone
OTHER_AGENT = "jerry@example.com"
TRUSTED_MX = "mx.example.com"
DATE = "Mon, 02 Mar 2026 10:00:00 +0100"
COMMANDS = "#status closed\r\n#assign jerry@example.com\r\n\r\nDone, closing this."
REJECT = {"security": {"stranger_reply": "reject"}}
NEW_TICKET = {"security": {"stranger_reply": "new_ticket"}}
POLICIES = {"reject": REJECT, "new_ticket": NEW_TICKET}
WAIT = 120.0  # ceiling for anything a daemon does; never a sleep


# --------------------------------------------------------------------------- mail builders
def _mid(domain: str = "customer.example") -> str:
    return f"<{secrets.token_hex(8)}@{domain}>"


def mail(
    subject: str,
    *,
    sender: str = f"Pat <{CUSTOMER}>",
    to: str = SUPPORT,
    body: str = "Any news?",
    headers: Sequence[tuple[str, str]] = (),
    top: Sequence[tuple[str, str]] = (),
    message_id: str | None = None,
) -> bytes:
    """A plain mail; ``top`` goes above From, where a receiving MX prepends its trace headers."""
    lines = [f"{name}: {value}" for name, value in top]
    lines += [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {DATE}"]
    lines.append(f"Message-ID: {message_id or _mid(sender.rpartition('@')[2].strip('>') or 'x.example')}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def dsn(
    failed: Sequence[str],
    *,
    quoted: str = "",
    subject: str = "Undelivered Mail Returned to Sender",
    to: str = SUPPORT,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A delivery status report (RFC 3464) that names ``failed`` as permanently undeliverable."""
    blocks = "".join(f"\r\nFinal-Recipient: rfc822; {a}\r\nAction: failed\r\nStatus: 5.1.1\r\n" for a in failed)
    head = [
        "From: Mail Delivery System <MAILER-DAEMON@mx.elsewhere.example>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {DATE}",
        f"Message-ID: {_mid('mx.elsewhere.example')}",
        "Auto-Submitted: auto-replied",
        *(f"{name}: {value}" for name, value in headers),
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="RPT"',
    ]
    body = (
        "--RPT\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--RPT\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.elsewhere.example\r\n"
        + blocks
        + "--RPT\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        + quoted
        + "\r\n--RPT--\r\n"
    )
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def returned_headers(message_id: str, to: str, subject: str = "Printer on fire") -> str:
    """The headers of our mail as a DSN quotes them back."""
    return f"From: Example Support <{SUPPORT}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"


def with_attachments(
    subject: str, files: Sequence[tuple[str, bytes]], *, sender: str = f"Pat <{CUSTOMER}>", to: str = SUPPORT,
    text: str = "Files attached.",
) -> bytes:
    """A multipart/mixed mail; each file is (Content-Disposition parameters, content)."""
    head = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {DATE}",
            f"Message-ID: {_mid()}", "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="MIX"']
    parts = [f"--MIX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"]
    for disposition, data in files:
        parts.append(
            "--MIX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; {disposition}\r\n\r\n{base64.b64encode(data).decode()}\r\n"
        )
    return ("\r\n".join(head) + "\r\n\r\n" + "".join(parts) + "--MIX--\r\n").encode()


# --------------------------------------------------------------------------- the desk: ingest and what it left
@dataclass(frozen=True)
class Opened:
    id: int
    number: str
    message_id: str  # the customer's own Message-ID: known to everyone who saw that mail
    ack_id: int
    ack_message_id: str  # ours, signed for the requester


@dataclass(frozen=True)
class TicketState:
    """Everything an attacker could change on a ticket."""

    status: str
    assignee: str | None
    priority: str
    department: str | None
    messages: tuple[tuple[str, str], ...]
    participants: tuple[tuple[str, str], ...]
    events: tuple[tuple[str, str], ...]


@dataclass
class Desk:
    ctx: Context
    clock: FixedClock

    def deliver(
        self, raw: bytes, *, mail_from: str = CUSTOMER, rcpts: Sequence[str] = (SUPPORT,), source: Source = "smtp"
    ) -> Outcome | Rejected:
        mailbox = "support" if source == "imap" else None
        env = Envelope(mail_from, tuple(rcpts), source, self.clock.now(), mailbox=mailbox)
        try:
            return ingest(raw, env, self.ctx)
        except Rejected as exc:
            return exc

    def accepted(self, raw: bytes, **kw: Any) -> Outcome:
        result = self.deliver(raw, **kw)
        assert isinstance(result, Outcome) and result.status == "accepted", result
        return result

    def token(self, kind: str, value: int, holder: str = "") -> str:
        return self.ctx.identity.plus_address(SUPPORT, kind, value, holder)

    def open_ticket(self, subject: str = "Printer on fire", *, cc: str = "") -> Opened:
        mid = _mid()
        extra = [("Cc", cc)] if cc else []
        outcome = self.accepted(mail(subject, body="It burns.", message_id=mid, headers=extra))
        with self.ctx.db.reader() as s:
            ticket = s.scalars(select(Ticket).where(Ticket.number == outcome.number)).one()
            ack = s.scalars(select(Outbox).where(Outbox.ticket_id == ticket.id, Outbox.kind == "ack_new")).one()
            return Opened(ticket.id, ticket.number, mid, ack.id, ack.message_id)

    def agent_reply(self, ticket: Opened, body: str = "We are on it.", raw: bytes | None = None) -> None:
        """Jane answers through her own signed reply address, as her mail client does."""
        address = self.token("a", ticket.id, AGENT)
        subject = f"Re: [#{ticket.number}] Printer on fire"
        raw = raw or mail(subject, sender=f"Jane Doe <{AGENT}>", to=address, body=body)
        self.accepted(raw, mail_from=AGENT, rcpts=(address,))

    def state(self, ticket_id: int) -> TicketState:
        with self.ctx.db.reader() as s:
            t = s.get(Ticket, ticket_id)
            assert t is not None
            messages = s.execute(
                select(Message.kind, Message.from_email).where(Message.ticket_id == ticket_id).order_by(Message.id)
            ).all()
            people = s.execute(
                select(Participant.email, Participant.role).where(Participant.ticket_id == ticket_id)
                .order_by(Participant.email)
            ).all()
            events = s.execute(
                select(Event.kind, Event.detail).where(Event.ticket_id == ticket_id).order_by(Event.id)
            ).all()
            return TicketState(
                t.status, t.assignee, t.priority, t.department,
                tuple(tuple(m) for m in messages), tuple(tuple(p) for p in people), tuple(tuple(e) for e in events),
            )

    def set_status(self, ticket_id: int, status: str) -> None:
        with self.ctx.db.transaction() as s:
            s.execute(update(Ticket).where(Ticket.id == ticket_id).values(status=status))

    def ticket_count(self) -> int:
        with self.ctx.db.reader() as s:
            return int(s.scalar(select(func.count(Ticket.id))) or 0)

    def suppressed(self) -> set[str]:
        with self.ctx.db.reader() as s:
            return set(s.scalars(select(Suppression.address)))

    def outbox(self) -> list[dict[str, Any]]:
        with self.ctx.db.reader() as s:
            rows = s.scalars(select(Outbox).order_by(Outbox.id)).all()
            return [
                {"id": r.id, "kind": r.kind, "to": list(r.recipients), "ticket_id": r.ticket_id, "subject": r.subject,
                 "text": r.text, "html": r.html or "", "message_id": r.message_id}
                for r in rows
            ]

    def events(self, kind: str) -> list[tuple[int, str, str]]:
        with self.ctx.db.reader() as s:
            rows = s.execute(select(Event.ticket_id, Event.actor, Event.detail).where(Event.kind == kind)).all()
            return [(int(t), str(actor), str(detail)) for t, actor, detail in rows]

    def messages(self, ticket_id: int) -> list[tuple[str, str, str | None]]:
        with self.ctx.db.reader() as s:
            rows = s.execute(
                select(Message.kind, Message.from_email, Message.html).where(Message.ticket_id == ticket_id)
                .order_by(Message.id)
            ).all()
            return [(str(kind), str(sender), html) for kind, sender, html in rows]


@pytest.fixture
def open_desk(make_config: MakeConfig, clock: FixedClock) -> Iterator[Callable[..., Desk]]:
    """A desk on a fresh, migrated database; keyword arguments are merged into mailgate.yaml."""
    made: list[Context] = []

    def make(**overrides: Any) -> Desk:
        context = build_context(load_config(make_config(**overrides)), clock)
        context.db.upgrade()
        made.append(context)
        return Desk(context, clock)

    yield make
    for context in made:
        context.db.dispose()


def refused(result: Outcome | Rejected) -> bool:
    return isinstance(result, Rejected)


def on_new_ticket(result: Outcome | Rejected, named: Opened) -> bool:
    return isinstance(result, Outcome) and result.status == "accepted" and result.number not in (None, named.number)


# =========================================================================== strangers on someone else's ticket
ROUTES = ["tag", "in_reply_to", "references"]


def stranger_reply(ticket: Opened, route: str, *, subject_prefix: str = "", headers: Sequence[tuple[str, str]] = (),
                   body: str = "Let me in.") -> bytes:
    """A stranger's mail that names ``ticket`` by its number (guessed or seen) or by the customer's Message-ID."""
    if route == "tag":
        return mail(f"{subject_prefix}Re: [#{ticket.number}] Printer on fire", sender=f"Mallory <{STRANGER}>",
                    headers=headers, body=body)
    thread = [("In-Reply-To" if route == "in_reply_to" else "References", ticket.message_id)]
    return mail(f"{subject_prefix}Re: Printer on fire", sender=f"Mallory <{STRANGER}>",
                headers=[*thread, *headers], body=body)


@pytest.mark.parametrize("route", ROUTES)
def test_stranger_naming_a_ticket_gets_a_ticket_of_their_own(open_desk: Callable[..., Desk], route: str) -> None:
    desk = open_desk(**NEW_TICKET)
    ticket = desk.open_ticket()
    before = desk.state(ticket.id)
    result = desk.deliver(stranger_reply(ticket, route), mail_from=STRANGER)
    assert on_new_ticket(result, ticket), result
    assert desk.state(ticket.id) == before  # not a word, participant or event on the named ticket
    assert any(f"follows up ticket {ticket.number}" in d for _, _, d in desk.events("follow_up"))


@pytest.mark.parametrize("route", ROUTES)
def test_stranger_naming_a_ticket_is_rejected(open_desk: Callable[..., Desk], route: str) -> None:
    desk = open_desk(**REJECT)
    ticket = desk.open_ticket()
    before, tickets = desk.state(ticket.id), desk.ticket_count()
    result = desk.deliver(stranger_reply(ticket, route), mail_from=STRANGER)
    assert refused(result), result
    assert desk.state(ticket.id) == before and desk.ticket_count() == tickets


ROBOTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "auto-submitted": ("", [("Auto-Submitted", "auto-replied")]),
    "x-autoreply": ("", [("X-Autoreply", "yes")]),
    "precedence-bulk": ("", [("Precedence", "bulk")]),
    "ooo-subject": ("Out of Office: ", []),
}


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("route", ["tag", "in_reply_to"])
@pytest.mark.parametrize("robot", list(ROBOTS))
def test_robot_headers_do_not_widen_a_strangers_access(
    open_desk: Callable[..., Desk], robot: str, route: str, policy_name: str
) -> None:
    """Machine mail may stay on a ticket only by quoting our signed ids; a customer's Message-ID is no secret."""
    desk = open_desk(**POLICIES[policy_name])
    ticket = desk.open_ticket()
    before = desk.state(ticket.id)
    prefix, headers = ROBOTS[robot]
    result = desk.deliver(stranger_reply(ticket, route, subject_prefix=prefix, headers=headers), mail_from=STRANGER)
    if policy_name == "reject":
        assert refused(result), result
    else:
        assert on_new_ticket(result, ticket), result
        assert not [r for r in desk.outbox() if STRANGER in r["to"]]  # no acknowledgment for machine mail
    assert desk.state(ticket.id) == before


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_stranger_with_x_failed_recipients_and_a_guessed_tag(open_desk: Callable[..., Desk], policy_name: str) -> None:
    """A bounce-looking mail without proof neither joins the ticket nor opens one, and silences nobody."""
    desk = open_desk(**POLICIES[policy_name])
    ticket = desk.open_ticket()
    before, tickets = desk.state(ticket.id), desk.ticket_count()
    raw = mail(f"Re: [#{ticket.number}] Printer on fire", sender=f"Mallory <{STRANGER}>",
               headers=[("X-Failed-Recipients", f"{AGENT}, {VICTIM}, {CUSTOMER}")])
    result = desk.deliver(raw, mail_from=STRANGER)
    assert refused(result) or (isinstance(result, Outcome) and result.status == "quarantined"), result
    assert desk.state(ticket.id) == before and desk.ticket_count() == tickets
    assert desk.suppressed() == set()


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_collaborators_signed_message_id_reused_by_a_stranger(open_desk: Callable[..., Desk], policy_name: str) -> None:
    """Our Message-ID signed for Carol proves the mail answers us, not that its sender is Carol."""
    desk = open_desk(**POLICIES[policy_name])
    ticket = desk.open_ticket(cc=f"Carol <{COLLABORATOR}>")
    desk.agent_reply(ticket)
    [to_carol] = [r for r in desk.outbox() if r["kind"] == "agent_reply" and r["to"] == [COLLABORATOR]]
    before = desk.state(ticket.id)
    raw = mail("Re: Printer on fire", sender=f"Mallory <{STRANGER}>", headers=[("In-Reply-To", to_carol["message_id"])])
    result = desk.deliver(raw, mail_from=STRANGER)
    assert refused(result) if policy_name == "reject" else on_new_ticket(result, ticket), result
    assert desk.state(ticket.id) == before


def test_machine_mail_quoting_our_signed_id_is_a_silent_system_message(open_desk: Callable[..., Desk]) -> None:
    """The one way machine mail stays on a ticket: it quotes our signed Message-ID. It changes nothing."""
    desk = open_desk(**REJECT)
    ticket = desk.open_ticket(cc=f"Carol <{COLLABORATOR}>")
    desk.agent_reply(ticket)
    [to_carol] = [r for r in desk.outbox() if r["kind"] == "agent_reply" and r["to"] == [COLLABORATOR]]
    before, queued, tickets = desk.state(ticket.id), len(desk.outbox()), desk.ticket_count()
    raw = mail("Automatic reply: Printer on fire", sender="carol.home@customer.example",
               headers=[("In-Reply-To", to_carol["message_id"]), ("Auto-Submitted", "auto-replied")],
               body="I am away until Monday.")
    result = desk.deliver(raw, mail_from="carol.home@customer.example")
    assert isinstance(result, Outcome) and result.status == "accepted" and result.number == ticket.number, result
    after = desk.state(ticket.id)
    assert after.messages[-1] == ("system", "carol.home@customer.example")
    assert (after.status, after.assignee) == (before.status, before.assignee) == ("awaiting_reply", None)
    assert len(desk.outbox()) == queued and desk.ticket_count() == tickets  # alerts nobody, opens nothing


def test_signed_reply_address_of_one_ticket_used_on_another(open_desk: Callable[..., Desk]) -> None:
    """Ticket A's reply address gets you onto A, whatever ticket B's tag in the subject says."""
    desk = open_desk(**REJECT)
    a, b = desk.open_ticket("Printer on fire"), desk.open_ticket("Scanner on fire")
    before_b = desk.state(b.id)
    address = desk.token("t", a.id)
    raw = mail(f"Re: [#{b.number}] Scanner on fire", sender=f"Mallory <{STRANGER}>", to=address)
    result = desk.deliver(raw, mail_from=STRANGER, rcpts=(address,))
    assert isinstance(result, Outcome) and result.number == a.number, result
    assert desk.state(b.id) == before_b


@pytest.mark.parametrize("token", ["forged-signature", "verp-kind-confusion", "unsigned-agent-token"])
def test_forged_reply_address_for_a_ticket(open_desk: Callable[..., Desk], token: str) -> None:
    """Only a token of the right kind, signed with our secret, stands for "answers our mail"."""
    desk = open_desk(**REJECT)
    ticket = desk.open_ticket()
    address = {
        "forged-signature": f"support+t{ticket.id}-aaaaaaaaaa@example.com",
        "verp-kind-confusion": desk.token("b", ticket.id),  # a genuine bounce address whose number is the ticket's
        "unsigned-agent-token": desk.token("a", ticket.id),  # an agent token signed for nobody
    }[token]
    before = desk.state(ticket.id)
    raw = mail(f"Re: [#{ticket.number}] Printer on fire", sender=f"Mallory <{STRANGER}>", to=address)
    result = desk.deliver(raw, mail_from=STRANGER, rcpts=(address,))
    assert refused(result), result
    assert desk.state(ticket.id) == before


@pytest.mark.parametrize("with_tag", [True, False], ids=["guessed-tag", "no-tag"])
def test_forged_signed_message_id_in_in_reply_to(open_desk: Callable[..., Desk], with_tag: bool) -> None:
    """A Message-ID shaped like ours but not signed by us names no ticket, with or without a robot header."""
    desk = open_desk(**REJECT)
    ticket = desk.open_ticket()
    before = desk.state(ticket.id)
    forged = f"<mg.{ticket.id}.aaaaaaaa.aaaaaa.aaaaaaaaaaaaaaaa@example.com>"
    subject = f"Re: [#{ticket.number}] Printer on fire" if with_tag else "Re: Printer on fire"
    raw = mail(subject, sender=f"Mallory <{STRANGER}>",
               headers=[("In-Reply-To", forged), ("References", forged), ("Auto-Submitted", "auto-replied")])
    result = desk.deliver(raw, mail_from=STRANGER)
    assert refused(result) if with_tag else on_new_ticket(result, ticket), result
    assert desk.state(ticket.id) == before


# =========================================================================== impersonating an agent
AGENT_AUTH = {"security": {"agent_authentication": {"authserv_ids": [TRUSTED_MX]}}}


def agent_mail(ticket: Opened, *, sender: str = f"Jane Doe <{AGENT}>", to: str = SUPPORT,
               top: Sequence[tuple[str, str]] = ()) -> bytes:
    return mail(f"Re: [#{ticket.number}] Printer on fire", sender=sender, to=to, top=top, body=COMMANDS)


def assert_commands_not_applied(desk: Desk, ticket: Opened, before: TicketState, claimed: str) -> None:
    after = desk.state(ticket.id)
    assert (after.status, after.assignee) == (before.status, before.assignee) == ("open", None)
    assert not desk.events("status") and not desk.events("assigned")  # on no ticket at all


def assert_kept_aside(desk: Desk, raw: bytes, ticket: Opened, before: TicketState, claimed: str, **kw: Any) -> None:
    """Commands under an agent's name without proof: none applied, no ticket opened with the agent as
    its requester, the mail kept aside with the reason, and the real agent (agents.yaml's address) told."""
    tickets = desk.ticket_count()
    result = desk.deliver(raw, **kw)
    assert isinstance(result, Outcome) and result.status == "quarantined", result
    assert "without authentication" in (result.reason or ""), result.reason
    assert_commands_not_applied(desk, ticket, before, claimed)
    assert desk.ticket_count() == tickets
    with desk.ctx.db.reader() as s:
        told = s.scalars(select(Outbox.recipient).where(Outbox.kind == "command_error")).all()
    assert list(told) == [claimed], told


@pytest.mark.parametrize("how", ["a-token", "trusted-authentication-results"])
def test_authenticated_agent_commands_apply(open_desk: Callable[..., Desk], how: str) -> None:
    """The control for the rows below: the two ways an agent proves who they are do work."""
    desk = open_desk(**AGENT_AUTH)
    ticket = desk.open_ticket()
    if how == "a-token":
        address = desk.token("a", ticket.id, AGENT)
        desk.accepted(agent_mail(ticket, to=address), mail_from=AGENT, rcpts=(address,))
    else:
        top = [("Authentication-Results", f"{TRUSTED_MX}; dkim=pass header.d=example.com header.s=sel")]
        desk.accepted(agent_mail(ticket, top=top), mail_from=AGENT)
    after = desk.state(ticket.id)
    assert (after.status, after.assignee) == ("closed", OTHER_AGENT)


@pytest.mark.parametrize("route", ["tag", "customer-reply-address"])
def test_spoofed_agent_commands_are_kept_aside(open_desk: Callable[..., Desk], route: str) -> None:
    desk = open_desk(**AGENT_AUTH)
    ticket = desk.open_ticket()
    before = desk.state(ticket.id)
    to = desk.token("t", ticket.id) if route == "customer-reply-address" else SUPPORT
    assert_kept_aside(desk, agent_mail(ticket, to=to), ticket, before, AGENT, mail_from=STRANGER, rcpts=(to,))


REAL_FAIL = ("Authentication-Results", f"{TRUSTED_MX}; dkim=fail header.d=example.com; spf=softfail "
             "smtp.mailfrom=jane@example.com")
FORGED_AR: dict[str, list[tuple[str, str]]] = {
    # the sender's own "pass" under the MX's real verdict, with our MX's authserv-id
    "trusted-id-below-the-real-one": [
        REAL_FAIL, ("Authentication-Results", f"{TRUSTED_MX}; dkim=pass header.d=example.com; spf=pass "
                                              "smtp.mailfrom=jane@example.com")],
    # a "pass" from a server nobody trusts, even on top
    "untrusted-authserv-id": [
        ("Authentication-Results", "mx.attacker.example; dkim=pass header.d=example.com; spf=pass "
                                   "smtp.mailfrom=jane@example.com"), REAL_FAIL],
    "untrusted-authserv-id-alone": [
        ("Authentication-Results", f"{TRUSTED_MX}.attacker.example; dkim=pass header.d=example.com")],
    # our MX truthfully vouching for the attacker's own domain
    "pass-for-another-domain": [
        ("Authentication-Results", f"{TRUSTED_MX}; dkim=pass header.d=attacker.example; spf=pass "
                                   "smtp.mailfrom=mallory@attacker.example")],
    # our MX quoting an envelope sender the attacker chose: its local part names the agent's domain
    "quoted-mailfrom-naming-the-agent-domain": [
        ("Authentication-Results", f'{TRUSTED_MX}; dkim=none; spf=pass smtp.mailfrom="x header.d=example.com"'
                                   "@attacker.example")],
    # ... or forges a whole dkim=pass result after a semicolon inside the quoted local part
    "semicolon-in-quoted-mailfrom": [
        ("Authentication-Results", f'{TRUSTED_MX}; spf=fail smtp.mailfrom="x;dkim=pass header.d=example.com"'
                                   "@attacker.example")],
}


@pytest.mark.parametrize("forgery", list(FORGED_AR))
def test_forged_authentication_results(open_desk: Callable[..., Desk], forgery: str) -> None:
    """Only the topmost Authentication-Results of a trusted server counts, and only for the agent's own domain."""
    desk = open_desk(**AGENT_AUTH)
    ticket = desk.open_ticket()
    before = desk.state(ticket.id)
    raw = agent_mail(ticket, top=FORGED_AR[forgery])
    assert_kept_aside(desk, raw, ticket, before, AGENT, mail_from="jane@attacker.example")


@pytest.mark.parametrize(
    "misuse",
    ["janes-token-from-jerry", "token-of-another-ticket", "customer-as-jerry-with-janes-token",
     "customer-as-jane-with-the-ticket-token", "forged-agent-token"],
)
def test_agent_token_misuse(open_desk: Callable[..., Desk], misuse: str) -> None:
    """An agent token is signed for one agent and one ticket; anyone or anything else is not that agent."""
    desk = open_desk(**AGENT_AUTH)
    ticket, other = desk.open_ticket("Printer on fire"), desk.open_ticket("Scanner on fire")
    before, before_other = desk.state(ticket.id), desk.state(other.id)
    janes = desk.token("a", ticket.id, AGENT)
    claimed, to, target = {
        "janes-token-from-jerry": (OTHER_AGENT, janes, ticket),
        "token-of-another-ticket": (AGENT, desk.token("a", other.id, AGENT), ticket),
        "customer-as-jerry-with-janes-token": (OTHER_AGENT, janes, ticket),
        "customer-as-jane-with-the-ticket-token": (AGENT, desk.token("t", ticket.id), ticket),
        "forged-agent-token": (AGENT, f"support+a{ticket.id}-aaaaaaaaaa@example.com", ticket),
    }[misuse]
    envelope = CUSTOMER if misuse.startswith("customer") else claimed
    raw = agent_mail(target, sender=claimed, to=to)
    assert_kept_aside(desk, raw, ticket, before, claimed, mail_from=envelope, rcpts=(to,))
    assert desk.state(other.id) == before_other


# =========================================================================== forged bounces
def test_forged_bounce_with_x_failed_recipients_silences_nobody(open_desk: Callable[..., Desk]) -> None:
    """Reaching a ticket by its subject tag proves nothing: no suppression, no ticket, quarantined with the reason."""
    desk = open_desk()
    ticket = desk.open_ticket()
    before, tickets = desk.state(ticket.id), desk.ticket_count()
    raw = mail(f"Mail delivery failed: Re: [#{ticket.number}] Printer on fire",
               sender="Mail Delivery System <MAILER-DAEMON@mx.attacker.example>",
               headers=[("X-Failed-Recipients", f"{AGENT}, {VICTIM}, {CUSTOMER}"), ("Auto-Submitted", "auto-replied")],
               body="This message was created automatically by mail delivery software.")
    result = desk.deliver(raw, mail_from="")
    assert isinstance(result, Outcome) and result.status == "quarantined", result
    assert "does not prove it answers our mail" in (result.reason or ""), result.reason
    assert desk.suppressed() == set()
    assert desk.state(ticket.id) == before and desk.ticket_count() == tickets


def test_forged_report_quoting_the_customers_message_id(open_desk: Callable[..., Desk]) -> None:
    """A multipart/report whose Final-Recipients are an agent and a bystander, tied to the ticket only by the
    customer's own (public) Message-ID."""
    desk = open_desk()
    ticket = desk.open_ticket()
    before, tickets = desk.state(ticket.id), desk.ticket_count()
    quoted = f"From: {CUSTOMER}\r\nTo: {SUPPORT}\r\nSubject: Printer on fire\r\nMessage-ID: {ticket.message_id}\r\n"
    raw = dsn([AGENT, VICTIM, CUSTOMER], quoted=quoted,
              headers=[("In-Reply-To", ticket.message_id), ("References", ticket.message_id)])
    result = desk.deliver(raw, mail_from="")
    assert isinstance(result, Outcome) and result.status == "quarantined", result
    assert desk.suppressed() == set()
    assert desk.state(ticket.id) == before and desk.ticket_count() == tickets


@pytest.mark.parametrize("named", [[CUSTOMER], [CUSTOMER, VICTIM, AGENT], [VICTIM]], ids=["own", "extras", "other"])
def test_genuine_verp_bounce_suppresses_only_its_own_recipient(
    open_desk: Callable[..., Desk], named: list[str]
) -> None:
    """Our bounce address proves which mail bounced; the report can only silence that mail's recipient."""
    desk = open_desk()
    ticket = desk.open_ticket()
    verp = desk.token("b", ticket.ack_id)
    raw = dsn(named, quoted=returned_headers(ticket.ack_message_id, CUSTOMER), to=verp,
              headers=[("X-Failed-Recipients", ", ".join(named))])
    tickets = desk.ticket_count()
    desk.deliver(raw, mail_from="", rcpts=(verp,))
    assert desk.suppressed() == ({CUSTOMER} & set(named))
    assert desk.ticket_count() == tickets and desk.state(ticket.id).status == "open"


def test_genuine_verp_bounce_of_an_agent_alert_never_suppresses_the_agent(open_desk: Callable[..., Desk]) -> None:
    desk = open_desk()
    ticket = desk.open_ticket()
    [alert] = [r for r in desk.outbox() if r["kind"] == "alert_new" and r["to"] == [AGENT]]
    verp = desk.token("b", alert["id"])
    raw = dsn([AGENT], quoted=returned_headers(alert["message_id"], AGENT), to=verp)
    desk.deliver(raw, mail_from="", rcpts=(verp,))
    assert desk.suppressed() == set()
    assert desk.state(ticket.id).status == "open"


@pytest.mark.parametrize("named", [[CUSTOMER, VICTIM, AGENT], [VICTIM]], ids=["extras", "other"])
def test_bounce_quoting_our_signed_message_id_suppresses_only_that_mails_recipient(
    open_desk: Callable[..., Desk], named: list[str]
) -> None:
    desk = open_desk()
    ticket = desk.open_ticket()
    raw = dsn(named, quoted=returned_headers(ticket.ack_message_id, CUSTOMER),
              headers=[("X-Failed-Recipients", ", ".join(named))])
    desk.deliver(raw, mail_from="")
    assert desk.suppressed() == ({CUSTOMER} & set(named))


def test_bounce_to_a_forged_verp_address(open_desk: Callable[..., Desk]) -> None:
    desk = open_desk()
    ticket = desk.open_ticket()
    verp = f"support+b{ticket.ack_id}-aaaaaaaaaa@example.com"
    result = desk.deliver(dsn([CUSTOMER, VICTIM], to=verp), mail_from="", rcpts=(verp,))
    assert isinstance(result, Outcome) and result.status == "quarantined", result
    assert desk.suppressed() == set()


# =========================================================================== forged X-Mailgate-* headers
def test_forged_dsn_recipients_header_on_a_genuine_bounce(open_desk: Callable[..., Desk]) -> None:
    """X-Mailgate-DSN-Recipients is our own name for what the report says; a sender's copy of it says nothing."""
    desk = open_desk()
    ticket = desk.open_ticket()
    verp = desk.token("b", ticket.ack_id)
    raw = dsn([CUSTOMER], quoted=returned_headers(ticket.ack_message_id, CUSTOMER), to=verp,
              headers=[("X-Mailgate-DSN-Recipients", f"{VICTIM}, {AGENT}"),
                       ("X-MAILGATE-DSN-RECIPIENTS", f"{VICTIM}")])
    desk.deliver(raw, mail_from="", rcpts=(verp,))
    assert desk.suppressed() == {CUSTOMER}


def test_forged_dsn_recipients_header_on_a_plain_mail(open_desk: Callable[..., Desk]) -> None:
    desk = open_desk()
    ticket = desk.open_ticket()
    before = desk.state(ticket.id)
    raw = mail(f"Re: [#{ticket.number}] Printer on fire", sender="MAILER-DAEMON@mx.attacker.example",
               headers=[("X-Mailgate-DSN-Recipients", f"{VICTIM}, {AGENT}, {CUSTOMER}")])
    desk.deliver(raw, mail_from="")
    assert desk.suppressed() == set()
    assert desk.state(ticket.id) == before


def test_mail_claiming_our_own_address_touches_no_ticket(open_desk: Callable[..., Desk]) -> None:
    """From: support@... is how our own mail looks; forged by a stranger it is kept aside, never acted on."""
    desk = open_desk()
    ticket = desk.open_ticket()
    before = desk.state(ticket.id)
    raw = mail(f"Re: [#{ticket.number}] Printer on fire", sender=f"Example Support <{SUPPORT}>", body=COMMANDS)
    result = desk.deliver(raw, mail_from=STRANGER)
    assert isinstance(result, Outcome) and result.status == "quarantined", result
    assert desk.state(ticket.id) == before and desk.ticket_count() == 1


def test_forged_loop_header_does_not_make_a_customer_mail_ours(open_desk: Callable[..., Desk]) -> None:
    """A forged X-Mailgate-Loop is removed before classify reads it: the mail is a customer's, answered as one."""
    desk = open_desk()
    raw = mail("Printer on fire", headers=[("X-Mailgate-Loop", "example.com; aaaaaaaaaaaaaaaa"),
                                           ("X-Mailgate-Ticket", "123456"), ("X-Mailgate-Role", "agent")])
    outcome = desk.accepted(raw)
    acks = [r for r in desk.outbox() if r["kind"] == "ack_new"]
    assert [r["to"] for r in acks] == [[CUSTOMER]] and outcome.number


# =========================================================================== header injection into what we send
INJECTED = "Bcc: victim@elsewhere.example\r\nX-Injected: yes"


def _q(text: str) -> str:
    """An RFC 2047 Q-encoded word carrying ``text`` byte for byte, CR and LF included."""
    return "=?utf-8?q?" + "".join(f"={b:02X}" for b in text.encode()) + "?="


def _b(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


SUBJECT_INJECTIONS = {
    "subject-folded-raw": ("Printer on fire\r\n Bcc: victim@elsewhere.example\r\n X-Injected: yes", None),
    "subject-bare-cr": ("Printer on fire\rBcc: victim@elsewhere.example\rX-Injected: yes", None),
    "subject-bare-lf": ("Printer on fire\nBcc: victim@elsewhere.example\nX-Injected: yes", None),
    "subject-2047-q-crlf": (_q(f"Printer on fire\r\n{INJECTED}"), None),
    "subject-2047-b-crlf": (_b(f"Printer on fire\r\n{INJECTED}\r\n"), None),
    "subject-2047-unicode-breaks": (
        _b("Printer\u2028Bcc: victim@elsewhere.example\u0085X-Injected: yes\x0b\x0c"), None
    ),
    "from-name-2047-crlf": ("Printer on fire", f"{_q('Pat' + chr(13) + chr(10) + INJECTED)} <{CUSTOMER}>"),
    "from-name-quoted-folded": ("Printer on fire", f'"Pat\r\n Bcc: victim@elsewhere.example" <{CUSTOMER}>'),
}
SMUGGLED_BODY = (
    "Hello\r\n.\r\nMAIL FROM:<mallory@attacker.example>\r\nRCPT TO:<victim@elsewhere.example>\r\nDATA\r\n"
    f"{INJECTED}\r\n\r\nsmuggled\r\n.\r\nQUIT\r\nand \n.\n bare \r.\r ends"
)
ATTACHMENT_INJECTIONS = {
    "attachment-2231-crlf": (
        "filename*=utf-8''report%0D%0ABcc%3A%20victim%40elsewhere.example%0D%0AX-Injected%3A%20yes.pdf"
    ),
    "attachment-2047-crlf": f'filename="{_q("report" + chr(13) + chr(10) + INJECTED + ".pdf")}"',
}


def _header_names(part: EmailMessage) -> list[str]:
    return [name.lower() for name, _value in part.items()]


def assert_clean_delivery(sink: SmtpSink, rows: list[dict[str, Any]]) -> None:
    """Each outbox row went out as one mail, to its own recipients only, with no header we did not write."""
    expected = sorted(tuple(r["to"]) for r in rows)
    assert sorted(tuple(m.rcpt_tos) for m in sink.messages) == expected
    for message in sink.messages:
        assert VICTIM not in message.rcpt_tos
        head = message.data.split(b"\r\n\r\n", 1)[0]
        lines = [line for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
        names = [line.split(b":", 1)[0].strip().lower() for line in lines]
        assert b"bcc" not in names and b"x-injected" not in names, head
        assert names.count(b"to") == names.count(b"subject") == names.count(b"from") == 1, head
        parsed = email.message_from_bytes(message.data, policy=policy.default)
        assert {a.addr_spec for a in parsed["To"].addresses} == set(message.rcpt_tos)
        assert "\r" not in str(parsed["Subject"]) and "\n" not in str(parsed["Subject"])
        for part in email.message_from_bytes(message.data, policy=policy.compat32).walk():
            assert "bcc" not in _header_names(part) and "x-injected" not in _header_names(part), part.items()


def _flush_to(desk: Desk, sink: SmtpSink) -> list[dict[str, Any]]:
    rows = desk.outbox()
    result = outbox.flush(desk.ctx.db, SmtpTransport(sink.host, sink.port, timeout=WAIT), desk.clock, Retry(),
                          desk.ctx.identity, limit=500, blobs=desk.ctx.blobs)
    assert result.sent == len(rows) and (result.retried, result.failed) == (0, 0), result
    return rows


@pytest.mark.parametrize("case", list(SUBJECT_INJECTIONS))
def test_header_injection_through_subject_and_display_name(
    open_desk: Callable[..., Desk], smtp_sink: SmtpSink, case: str
) -> None:
    desk = open_desk()
    subject, sender = SUBJECT_INJECTIONS[case]
    desk.accepted(mail(subject, sender=sender or f"Pat <{CUSTOMER}>"))
    rows = _flush_to(desk, smtp_sink)
    assert {r["kind"] for r in rows} == {"ack_new", "alert_new"}
    assert_clean_delivery(smtp_sink, rows)


def test_smtp_smuggling_and_header_lines_in_the_body(open_desk: Callable[..., Desk], smtp_sink: SmtpSink) -> None:
    """The customer's text is relayed to agents; its dot lines and header-like lines stay text."""
    desk = open_desk()
    desk.accepted(mail("Printer on fire", body=SMUGGLED_BODY))
    rows = _flush_to(desk, smtp_sink)
    assert any("RCPT TO:<victim@elsewhere.example>" in r["text"] for r in rows if r["kind"] == "alert_new")
    assert_clean_delivery(smtp_sink, rows)


@pytest.mark.parametrize("case", list(ATTACHMENT_INJECTIONS))
def test_header_injection_through_a_relayed_attachment_name(
    open_desk: Callable[..., Desk], smtp_sink: SmtpSink, case: str
) -> None:
    """An agent's reply relays its attachments to the customer under their (sanitised) names."""
    desk = open_desk()
    ticket = desk.open_ticket()
    address = desk.token("a", ticket.id, AGENT)
    raw = with_attachments(f"Re: [#{ticket.number}] Printer on fire", [(ATTACHMENT_INJECTIONS[case], b"%PDF-1.4\n")],
                           sender=f"Jane Doe <{AGENT}>", to=address, text="The report you asked for.")
    desk.accepted(raw, mail_from=AGENT, rcpts=(address,))
    rows = _flush_to(desk, smtp_sink)
    assert [r["to"] for r in rows if r["kind"] == "agent_reply"] == [[CUSTOMER]]
    assert_clean_delivery(smtp_sink, rows)
    [reply] = [m for m in smtp_sink.messages if m.rcpt_tos == [CUSTOMER] and b"multipart/mixed" in m.data]
    names = [p.get_filename() for p in email.message_from_bytes(reply.data, policy=policy.default).iter_attachments()]
    assert len(names) == 1 and names[0] and not re.search(r"[\r\n]", names[0]), names


# =========================================================================== active content
HOSTILE_HTML = (
    "<p>Hi</p><script>alert(1)</script><img src=x onerror=\"alert(2)\"><a href=\"javascript:alert(3)\">x</a>"
    "<iframe src=\"https://attacker.example/\"></iframe><svg onload=alert(4)></svg>"
    "<style>body{background:url(javascript:alert(5))}</style><form action=\"https://attacker.example/\">"
    "<input name=p></form><object data=\"x.swf\"></object><embed src=\"x.swf\">"
    "<a href=\"jav&#x09;ascript:alert(6)\">y</a><div style=\"background:url(javascript:alert(7))\">z</div>"
)
ACTIVE = ("<script", "onerror", "onload", "javascript:", "<iframe", "<svg", "<style", "<form", "<object", "<embed",
          "jav&#x09;ascript", "jav\tascript")


def test_stored_html_is_sanitised(open_desk: Callable[..., Desk]) -> None:
    desk = open_desk()
    raw = (
        f"From: Pat <{CUSTOMER}>\r\nTo: {SUPPORT}\r\nSubject: Look at this\r\nDate: {DATE}\r\nMessage-ID: {_mid()}\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="ALT"\r\n\r\n'
        "--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi\r\n"
        "--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"<html><body>{HOSTILE_HTML}</body></html>\r\n--ALT--\r\n"
    ).encode()
    outcome = desk.accepted(raw)
    with desk.ctx.db.reader() as s:
        ticket_id = s.scalar(select(Ticket.id).where(Ticket.number == outcome.number))
    [(_kind, _from, html)] = desk.messages(int(ticket_id or 0))
    assert html and "Hi" in html
    assert not [bad for bad in ACTIVE if bad in html.lower()], html


def test_outgoing_html_escapes_customer_text(open_desk: Callable[..., Desk]) -> None:
    """Subject, display name and text reach the HTML part of acknowledgments and alerts only as text."""
    desk = open_desk()
    desk.accepted(mail("<script>alert(1)</script>", sender=f'"<img src=x onerror=alert(2)>" <{CUSTOMER}>',
                       body="<b onmouseover=alert(3)>hi</b> <a href=\"javascript:alert(4)\">x</a>"))
    rows = [r for r in desk.outbox() if r["kind"] in ("ack_new", "alert_new")]
    assert {r["kind"] for r in rows} == {"ack_new", "alert_new"} and all(r["html"] for r in rows)
    for row in rows:
        html = row["html"].lower()
        assert "<script" not in html and "<img" not in html and "<b onmouseover" not in html and "<a href" not in html
        assert "&lt;img src=x onerror=alert(2)&gt;" in html, row["kind"]  # the display name, as text
    html = {r["kind"]: r["html"] for r in rows}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html["ack_new"]  # the subject
    assert "&lt;b onmouseover=alert(3)&gt;hi&lt;/b&gt;" in html["alert_new"]  # the text


def test_attachment_names_with_markup_are_stored_inert(open_desk: Callable[..., Desk]) -> None:
    desk = open_desk()
    outcome = desk.accepted(with_attachments("Files", [('filename="<script>alert(1)</script>.html"', b"x"),
                                                        ('filename="<img src=x onerror=alert(2)>.png"', b"y")]))
    names = _stored_names(desk, outcome)
    assert len(names) == 2 and not [n for n in names if re.search(r"[<>\"']", n)], names


# =========================================================================== path traversal in attachment names
TRAVERSAL = [
    'filename="../../../../escaped-1.txt"',
    'filename="..\\..\\..\\..\\escaped-2.txt"',
    'filename="/tmp/escaped-3.txt"',
    "filename*=utf-8''..%2F..%2F..%2F..%2Fescaped-4.txt",
    f'filename="{_q("../../../../escaped-5.txt")}"',
    'filename=".."',
    'filename="..."',
    "filename*=utf-8''%2E%2E",
    "filename*=utf-8''escaped-6%00%2F..%2F..%2Fx.txt",
    'filename="..\u2215..\u2215escaped-7.txt"',
    'filename="\uff0e\uff0e\uff0fescaped-8.txt"',
    'filename="~/.ssh/authorized_keys"',
    'filename="C:\\Windows\\System32\\escaped-9.dll"',
]


def _stored_names(desk: Desk, outcome: Outcome) -> list[str]:
    with desk.ctx.db.reader() as s:
        return list(s.scalars(
            select(AttachmentRow.filename).join(Message, Message.id == AttachmentRow.message_row_id)
            .join(Ticket, Ticket.id == Message.ticket_id).where(Ticket.number == outcome.number)
            .order_by(AttachmentRow.id)
        ))


def test_path_traversal_in_attachment_names(open_desk: Callable[..., Desk], tmp_path: Path) -> None:
    desk = open_desk()
    state = desk.ctx.config.main.state_dir
    files = [(disposition, f"payload {i}".encode()) for i, disposition in enumerate(TRAVERSAL)]
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    outcome = desk.accepted(with_attachments("Files", files))
    names = _stored_names(desk, outcome)
    assert len(names) == len(TRAVERSAL), names
    for name in names:
        assert name and "/" not in name and "\\" not in name and not name.startswith(".."), name
        assert not re.search(r"[\x00-\x1f\x7f]", name), name
    created = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert created and all(p.resolve().is_relative_to(state.resolve()) for p in created), created
    blobs = [p for p in created if p.resolve().is_relative_to(desk.ctx.blobs.root.resolve())]
    assert len(blobs) == len(TRAVERSAL) and all(re.fullmatch(r"[0-9a-f]{64}", p.name) for p in blobs), blobs
    assert not [p for p in tmp_path.rglob("escaped*")] and not Path("/tmp/escaped-3.txt").exists()


# =========================================================================== template sandbox
def test_customer_text_with_jinja_syntax_is_never_evaluated(open_desk: Callable[..., Desk]) -> None:
    desk = open_desk()
    subject = "{{ 'inj' ~ 'ected1' }} {{ config }}"
    body = "{% for x in 'ab' %}loop-{{ x }}{% endfor %} {{ ''.__class__.__mro__ }}"
    desk.accepted(mail(subject, sender=f"\"{{{{ 'inj' ~ 'ected2' }}}}\" <{CUSTOMER}>", body=body))
    rows = desk.outbox()
    assert {r["kind"] for r in rows} == {"ack_new", "alert_new"}
    everything = " ".join(r["subject"] + r["text"] + r["html"] for r in rows)
    assert "injected1" not in everything and "injected2" not in everything and "loop-a" not in everything
    assert "<class" not in everything and "&lt;class" not in everything
    assert all("{{ 'inj' ~ 'ected1' }}" in r["subject"] for r in rows)
    assert "{% for x in 'ab' %}loop-{{ x }}{% endfor %}" in next(r["text"] for r in rows if r["kind"] == "alert_new")


def _templates_with(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "admin-templates"
    if not folder.exists():
        shutil.copytree(REPO / "templates", folder)
    (folder / name).write_text(text)
    return folder


ESCAPES = {
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}\n",
    "globals-os-popen": "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}\n",
}


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_admin_template_sandbox_escape_is_refused_by_check_config(
    make_config: MakeConfig, tmp_path: Path, escape: str
) -> None:
    marker = tmp_path / "template-escaped"
    folder = _templates_with(tmp_path, "ack_new.txt.j2", "Hello\n" + ESCAPES[escape].replace("{marker}", str(marker)))
    config = make_config(templates=str(folder))
    result = run_cli(config, "check-config")
    assert result.code == 1, (result.stdout, result.stderr)
    assert "ack_new.txt.j2" in result.stderr, result.stderr
    assert "<class" not in result.stdout + result.stderr and not marker.exists()


def test_format_string_escape_is_refused_at_load(tmp_path: Path) -> None:
    """str.format reaches attributes the sandbox's own lookup would refuse; the sandbox must intercept it too."""
    folder = _templates_with(tmp_path, "alert_new.subject.j2", "{{ '{0.__class__.__mro__}'.format(ticket.tag) }}\n")
    problems = Templates(folder).check()
    assert [p for p in problems if "alert_new.subject.j2" in p], problems
    with pytest.raises(SecurityError):
        Templates(folder).render("alert_new", SAMPLE_CONTEXT)


def test_admin_template_escape_reached_only_at_render_never_executes(
    open_desk: Callable[..., Desk], tmp_path: Path
) -> None:
    """A payload hidden behind a condition the sample context never meets: the render refuses it, the mail is kept."""
    marker = tmp_path / "template-escaped"
    payload = (
        "{% if ticket.subject == 'open sesame' %}"
        f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
        "{{ ''.__class__.__mro__[1].__subclasses__() }}{% endif %}New ticket {{ ticket.tag }}\n"
    )
    desk = open_desk(templates=str(_templates_with(tmp_path, "alert_new.txt.j2", payload)))
    result = desk.deliver(mail("open sesame"))
    assert not marker.exists()
    assert isinstance(result, Outcome) and result.status in ("accepted", "quarantined"), result
    assert not [r for r in desk.outbox() if "<class" in r["text"] or "subprocess" in r["text"]]


# =========================================================================== floods
def test_reply_to_naming_a_third_party_does_not_get_the_ack(open_desk: Callable[..., Desk]) -> None:
    """Default ``security.reply_to: collaborator``: whoever a Reply-To names is not sent our acknowledgment."""
    desk = open_desk()
    desk.accepted(mail("Printer on fire", headers=[("Reply-To", f"Victim <{VICTIM}>")]))
    rows = desk.outbox()
    assert [r["to"] for r in rows if r["kind"] == "ack_new"] == [[CUSTOMER]]
    assert not [r for r in rows if VICTIM in r["to"]]


def test_rejection_notice_does_not_go_to_a_reply_to_third_party(open_desk: Callable[..., Desk]) -> None:
    """Mail from a mailbox (no SMTP answer possible) is refused by mail; a Reply-To must not aim that at a bystander."""
    desk = open_desk(**REJECT)
    ticket = desk.open_ticket()
    raw = mail(f"Re: [#{ticket.number}] Printer on fire", sender=f"Mallory <{STRANGER}>",
               headers=[("Reply-To", VICTIM)])
    assert refused(desk.deliver(raw, mail_from=STRANGER, source="imap"))
    assert not [r for r in desk.outbox() if VICTIM in r["to"]]


def test_rate_limit_ladder_stops_acknowledgments(open_desk: Callable[..., Desk]) -> None:
    """One address triggering many tickets gets ten acknowledgments (10 in 10 min), then none; all are stored."""
    desk = open_desk()
    for i in range(13):
        desk.accepted(mail(f"Question number {i}"))
    acks = [r for r in desk.outbox() if r["kind"] == "ack_new"]
    held = [d for _, _, d in desk.events("notification_held") if d.startswith(f"ack_new to {CUSTOMER}")]
    assert len(acks) == 10 and len(held) == 3 and all("rate limit" in d for d in held), held
    assert desk.ticket_count() == 13


def test_cc_flood_is_quarantined_not_made_collaborators(open_desk: Callable[..., Desk]) -> None:
    """A mail naming more than intake.limits.max_addresses (1000) people would make them all collaborators."""
    desk = open_desk()
    cc = ", ".join(f"p{i}@flood.example" for i in range(1001))
    result = desk.deliver(mail("Printer on fire", headers=[("Cc", cc)]))
    assert isinstance(result, Outcome) and result.status == "quarantined", result
    assert "intake.limits.max_addresses" in (result.reason or "")
    assert desk.ticket_count() == 0 and desk.outbox() == []


# =========================================================================== SMTP answers and exit codes
def _number(answer: tuple[int, str]) -> str:
    m = re.search(r"ticket (\S+)", answer[1])
    assert answer[0] == 250 and m, answer
    return m.group(1)


def _stranger_variants(number: str, customer_mid: str) -> dict[str, bytes]:
    tag = f"Re: [#{number}] Printer on fire"
    who = f"Mallory <{STRANGER}>"
    return {
        "plain": mail(tag, sender=who),
        "auto-submitted": mail(tag, sender=who, headers=[("Auto-Submitted", "auto-replied")]),
        "x-autoreply": mail(tag, sender=who, headers=[("X-Autoreply", "yes")]),
        "ooo-subject": mail(f"Out of Office: {tag}", sender=who),
        "irt-customer-mid-auto": mail("Re: Printer on fire", sender=who,
                                      headers=[("In-Reply-To", customer_mid), ("Auto-Submitted", "auto-replied")]),
        "references-customer-mid-precedence": mail("Re: Printer on fire", sender=who,
                                                   headers=[("References", customer_mid), ("Precedence", "bulk")]),
    }


def _messages_on(config: Path, number: str) -> int:
    query = f"SELECT count(*) FROM message m JOIN ticket t ON t.id = m.ticket_id WHERE t.number = '{number}'"
    rows = sql_rows(config, query)
    return int(rows[0][0])


def test_rejected_stranger_hears_550_over_smtp(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(**REJECT)
    service = start_service(config, tmp_path / "serve.log")
    try:
        mid = _mid()
        number = _number(smtp_deliver(service.host, service.port, mail("Printer on fire", message_id=mid)))
        answers = {
            name: smtp_deliver(service.host, service.port, raw, mail_from=STRANGER)[0]
            for name, raw in _stranger_variants(number, mid).items()
        }
        assert answers == dict.fromkeys(answers, 550)
        own = smtp_deliver(service.host, service.port, mail(f"Re: [#{number}] Printer on fire"))
        assert own[0] == 250, own  # the requester's own reply: the control
        assert _messages_on(config, number) == 2
    finally:
        service.stop()


def test_rejected_stranger_exits_65_from_the_pipe(make_config: MakeConfig) -> None:
    config = make_config(**REJECT)
    context = build_context(load_config(config))  # the customer's ticket, stored as serve would store it
    try:
        context.db.upgrade()
        mid = _mid()
        first = ingest(mail("Printer on fire", message_id=mid), Envelope(CUSTOMER, (SUPPORT,), "pipe",
                                                                      context.clock.now()), context)
    finally:
        context.db.dispose()
    assert first.status == "accepted" and first.number, first
    variants = _stranger_variants(first.number, mid)
    codes = {}
    for name in ("plain", "auto-submitted", "irt-customer-mid-auto"):
        result = run_cli(config, "ingest", stdin=variants[name], env={"SENDER": STRANGER})
        codes[name] = (result.code, "rejected" in result.stderr)
    assert codes == dict.fromkeys(codes, (65, True))
    assert _messages_on(config, first.number) == 1


# ONE_PROCESS: connection and recipient caps are the listener's, and the listener is serve's own process in
# both modes; ``processes: false`` starts and stops in a fraction of the time, keeping this file short.


def _greeting(host: str, port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((host, port), timeout=WAIT)
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(1024)
        if not chunk:
            break
        buf += chunk
    return sock, buf


def test_connections_beyond_max_connections_get_421(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(intake={"smtp": {"max_connections": 3}}, processes=False)  # see ONE_PROCESS
    service = start_service(config, tmp_path / "serve.log")
    held: list[socket.socket] = []

    def admitted() -> socket.socket | None:
        sock, line = _greeting(service.host, service.port)
        if line.startswith(b"220"):
            return sock
        sock.close()  # the start-up probe's slot may not be free yet
        return None

    try:
        for _ in range(3):
            held.append(wait_until(admitted, timeout=WAIT, what="a 220 greeting", log=service.output))
        extra, line = _greeting(service.host, service.port)
        with extra:
            assert line.startswith(b"421 4.7.0"), line
            try:
                closed = extra.recv(1024) == b""
            except ConnectionResetError:
                closed = True
            assert closed
        held.pop().close()
        held.append(wait_until(admitted, timeout=WAIT, what="a free slot after one client left", log=service.output))
    finally:
        for sock in held:
            sock.close()
        service.stop()


def test_recipients_beyond_max_recipients_get_452(make_config: MakeConfig, tmp_path: Path) -> None:
    """Default intake.smtp.max_recipients is 100: the 101st RCPT of one transaction is refused temporarily."""
    config = make_config(processes=False)  # see ONE_PROCESS
    service = start_service(config, tmp_path / "serve.log")
    try:
        with smtplib.SMTP(service.host, service.port, timeout=WAIT) as client:
            client.ehlo("client.example")
            assert client.mail(CUSTOMER)[0] == 250
            answers = [client.rcpt(f"support+r{i}@example.com") for i in range(101)]
            assert [code for code, _ in answers[:100]] == [250] * 100
            assert answers[100][0] == 452 and answers[100][1].startswith(b"4.5.3"), answers[100]
            assert client.data(mail("Printer on fire"))[0] == 250
        rows = sql_rows(config, "SELECT rcpt_tos FROM inbound")
        assert len(rows) == 1 and "support+r99@example.com" in str(rows[0][0])
        assert "support+r100@example.com" not in str(rows[0][0])
    finally:
        service.stop()
