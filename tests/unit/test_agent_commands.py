"""Every agent command through the real pipeline: each changes the ticket and leaves an event."""

from __future__ import annotations

from sqlalchemy import select

from mailgate.clock import FixedClock
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Outbox
from mailgate.storage.store import Store


def _mail(sender: str, to: str, subject: str, body: str, cc: str = "") -> bytes:
    extra = f"Cc: {cc}\r\n" if cc else ""
    return f"From: {sender}\r\nTo: {to}\r\n{extra}Subject: {subject}\r\n\r\n{body}\r\n".encode()


def _ticket(ctx: Context, clock: FixedClock) -> tuple[str, str]:
    raw = _mail("pat@customer.example", "support@example.com", "Disk full", "help", cc="sam@customer.example")
    number = ingest(raw, Envelope("pat@customer.example", ("support@example.com",), "pipe", clock.now()), ctx).number
    assert number
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        return number, ctx.identity.plus_address("support@example.com", "a", ticket.id, "jane@example.com")


def _command(ctx: Context, clock: FixedClock, number: str, address: str, body: str) -> None:
    raw = _mail("jane@example.com", address, f"Re: [#{number}] Disk full", body)
    assert ingest(raw, Envelope("jane@example.com", (address,), "pipe", clock.now()), ctx).status == "accepted"


def test_dept_topic_sla_and_uncc(ctx: Context, clock: FixedClock) -> None:
    number, agent = _ticket(ctx, clock)
    _command(
        ctx,
        clock,
        number,
        agent,
        "#dept Sys Admin\n#topic Business Critical Outage\n#sla critical\n#uncc sam@customer.example\n#note\nmoved",
    )
    with ctx.db.reader() as session:
        store = Store(session)
        ticket = store.ticket_by_number(number)
        assert ticket is not None
        assert (ticket.department, ticket.help_topic, ticket.sla_plan) == (
            "Sys Admin",
            "Business Critical Outage",
            "critical",
        )
        assert [e for e, _n, role in store.participants(ticket.id) if role == "collaborator"] == []
        kinds = [e.kind for e in store.events(ticket.id)]
        assert {"transferred", "topic", "sla", "collaborator", "note"} <= set(kinds)
        transfer = session.scalars(select(Outbox.recipient).where(Outbox.kind == "alert_assigned")).all()
    assert set(transfer) == {"jerry@example.com"}  # Sys Admin's other member hears of the transfer


def test_status_with_a_note_is_not_a_first_response(ctx: Context, clock: FixedClock) -> None:
    number, agent = _ticket(ctx, clock)
    _command(ctx, clock, number, agent, "#status in_progress\n#note\nlooking")
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None and ticket.status == "in_progress" and ticket.first_response_at is None
