"""Resolved tickets close by themselves after the grace period, once, with a notice; a reply in between wins."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailgate.clock import FixedClock
from mailgate.domain import Envelope
from mailgate.lifecycle import auto_close
from mailgate.model import Outbox
from mailgate.pipeline.ingest import Context, ingest
from mailgate.store import Store


def _mail(sender: str, to: str, subject: str, body: str) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def _resolved_ticket(ctx: Context, clock: FixedClock) -> str:
    env = Envelope("pat@customer.example", ("support@example.com",), "pipe", clock.now())
    number = ingest(_mail("pat@customer.example", "support@example.com", "Broken", "x"), env, ctx).number
    assert number
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        agent_address = ctx.identity.plus_address("support@example.com", "a", ticket.id, "jane@example.com")
    reply = _mail("jane@example.com", agent_address, f"Re: [#{number}] Broken", "#status resolved\nFixed it.")
    ingest(reply, Envelope("jane@example.com", (agent_address,), "pipe", clock.now()), ctx)
    return number


def _status(ctx: Context, number: str) -> str:
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        return ticket.status


def test_resolved_ticket_closes_after_grace_period_once(ctx: Context, clock: FixedClock) -> None:
    number = _resolved_ticket(ctx, clock)
    assert _status(ctx, number) == "resolved"
    clock.advance(timedelta(days=6))
    assert auto_close(ctx) == 0
    clock.advance(timedelta(days=2))
    assert auto_close(ctx) == 1
    assert _status(ctx, number) == "closed"
    assert auto_close(ctx) == 0  # a second sweep finds nothing
    with ctx.db.reader() as session:
        notices = session.scalars(select(Outbox).where(Outbox.kind == "notice_status")).all()
    assert [(n.recipient, "closed" in n.subject) for n in notices] == [("pat@customer.example", False),
                                                                       ("pat@customer.example", True)]


def test_customer_reply_reopens_before_the_sweep(ctx: Context, clock: FixedClock) -> None:
    number = _resolved_ticket(ctx, clock)
    clock.advance(timedelta(days=3))
    env = Envelope("pat@customer.example", ("support@example.com",), "pipe", clock.now())
    ingest(_mail("pat@customer.example", "support@example.com", f"Re: [#{number}] Broken", "Not fixed"), env, ctx)
    assert _status(ctx, number) == "open"
    clock.advance(timedelta(days=30))
    assert auto_close(ctx) == 0
