"""A bounce of our own notification is tied to its ticket, marks the address undeliverable, never opens a ticket."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailgate.clock import FixedClock
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Event, Outbox, Ticket

CUSTOMER = "pat@customer.example"


def _env(clock: FixedClock, sender: str = CUSTOMER, rcpt: str = "support@example.com") -> Envelope:
    return Envelope(sender, (rcpt,), "smtp", clock.now())


def _dsn(message_id: str, recipient: str, action: str = "failed", status: str = "5.1.1") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: support@example.com\r\nSubject: Undelivered Mail\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@example.com\r\nTo: {recipient}\r\nMessage-ID: {message_id}\r\n--B--\r\n"
    ).encode()


def _ack(ctx: Context, clock: FixedClock, subject: str) -> Outbox:
    raw = f"From: {CUSTOMER}\r\nTo: support@example.com\r\nSubject: {subject}\r\n\r\nhelp\r\n".encode()
    assert ingest(raw, _env(clock), ctx).status == "accepted"
    with ctx.db.reader() as session:
        return session.scalars(select(Outbox).where(Outbox.kind == "ack_new", Outbox.subject.contains(subject))).one()


def test_permanent_bounce_is_recorded_and_suppresses_automatic_mail(ctx: Context, clock: FixedClock) -> None:
    ack = _ack(ctx, clock, "First")
    outcome = ingest(_dsn(ack.message_id, CUSTOMER), _env(clock, sender=""), ctx)
    assert outcome.status == "accepted"
    with ctx.db.reader() as session:
        assert session.scalar(select(Ticket.id).where(Ticket.number == outcome.number)) == ack.ticket_id
        kinds = list(session.scalars(select(Event.kind).where(Event.ticket_id == ack.ticket_id)))
        assert "bounce" in kinds and "undeliverable" in kinds
        assert session.scalar(select(Ticket).where(Ticket.id == ack.ticket_id).with_only_columns(
            Ticket.status)) == "open"  # a bounce never reopens or changes a ticket's status
    clock.advance(timedelta(days=1))
    raw = f"From: {CUSTOMER}\r\nTo: support@example.com\r\nSubject: Second\r\n\r\nagain\r\n".encode()
    ingest(raw, _env(clock), ctx)
    with ctx.db.reader() as session:
        acks = session.scalars(select(Outbox.subject).where(Outbox.kind == "ack_new")).all()
        held = session.scalars(select(Event.detail).where(Event.kind == "notification_held")).all()
    assert len(acks) == 1 and any("bounced" in h for h in held)
    clock.advance(timedelta(days=61))  # the suppression ends
    raw = f"From: {CUSTOMER}\r\nTo: support@example.com\r\nSubject: Third\r\n\r\nlater\r\n".encode()
    ingest(raw, _env(clock), ctx)
    with ctx.db.reader() as session:
        assert len(session.scalars(select(Outbox.id).where(Outbox.kind == "ack_new")).all()) == 2


def test_delay_warning_does_not_suppress(ctx: Context, clock: FixedClock) -> None:
    ack = _ack(ctx, clock, "Slow")
    ingest(_dsn(ack.message_id, CUSTOMER, action="delayed", status="4.4.1"), _env(clock, sender=""), ctx)
    with ctx.db.reader() as session:
        assert session.scalars(select(Event.kind).where(Event.kind == "undeliverable")).all() == []


def test_bounce_about_nothing_of_ours_is_quarantined_not_a_ticket(ctx: Context, clock: FixedClock) -> None:
    outcome = ingest(_dsn("<someone-else@elsewhere.example>", CUSTOMER), _env(clock, sender=""), ctx)
    assert outcome.status == "quarantined"
    with ctx.db.reader() as session:
        assert session.scalars(select(Ticket.id)).all() == []
