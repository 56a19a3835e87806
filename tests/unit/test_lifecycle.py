"""Resolved tickets close by themselves after the grace period, once, with a notice; a reply in between wins."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.jobs.lifecycle import auto_close, auto_resolve, remind
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Outbox
from mailgate.storage.store import Store
from tests.conftest import MakeConfig


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


def test_satisfaction_rating_is_stored_not_a_reopen(make_config: MakeConfig, clock: FixedClock) -> None:
    ctx = build_context(load_config(make_config(lifecycle={"satisfaction_question": True})), clock)
    ctx.db.upgrade()
    number = _resolved_ticket(ctx, clock)
    with ctx.db.reader() as session:
        notice = session.scalars(select(Outbox).where(Outbox.kind == "notice_status")).one()
    assert "Reply with a number from 1 (poor) to 5" in notice.text
    env = Envelope("pat@customer.example", ("support@example.com",), "pipe", clock.now())
    ingest(_mail("pat@customer.example", "support@example.com", f"Re: [#{number}] Broken", "5\n\nThanks!"), env, ctx)
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None and (ticket.status, ticket.satisfaction) == ("resolved", 5)
    ctx.db.dispose()


def test_reply_to_closed_ticket_reopens_within_the_window_else_opens_a_follow_up(
    ctx: Context, clock: FixedClock
) -> None:
    number = _resolved_ticket(ctx, clock)
    clock.advance(timedelta(days=8))
    assert auto_close(ctx) == 1
    env = lambda: Envelope("pat@customer.example", ("support@example.com",), "pipe", clock.now())  # noqa: E731
    clock.advance(timedelta(days=2))  # within the 14-day window
    ingest(_mail("pat@customer.example", "support@example.com", f"Re: [#{number}] Broken", "Again"), env(), ctx)
    assert _status(ctx, number) == "open"
    agent = _agent_address(ctx, number)
    ingest(_mail("jane@example.com", agent, f"Re: [#{number}] Broken", "#status closed\nDone."),
           Envelope("jane@example.com", (agent,), "pipe", clock.now()), ctx)
    assert _status(ctx, number) == "closed"
    clock.advance(timedelta(days=20))  # past the window
    later = ingest(_mail("pat@customer.example", "support@example.com", f"Re: [#{number}] Broken", "Once more"),
                   env(), ctx)
    assert later.number != number and _status(ctx, number) == "closed"
    with ctx.db.reader() as session:
        follow_up = Store(session).ticket_by_number(later.number or "")
        assert follow_up is not None
        assert any(f"follows up ticket {number}" in e.detail for e in Store(session).events(follow_up.id))


def _agent_address(ctx: Context, number: str) -> str:
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        return ctx.identity.plus_address("support@example.com", "a", ticket.id, "jane@example.com")


def test_reminder_once_per_wait_then_auto_resolve(make_config: MakeConfig, clock: FixedClock) -> None:
    path = make_config(lifecycle={"reminder_after": "2d", "auto_resolve_after": "5d"})
    ctx = build_context(load_config(path), clock)
    ctx.db.upgrade()
    env = Envelope("pat@customer.example", ("support@example.com",), "pipe", clock.now())
    number = ingest(_mail("pat@customer.example", "support@example.com", "Question", "How?"), env, ctx).number
    assert number
    agent = _agent_address(ctx, number)
    ingest(_mail("jane@example.com", agent, f"Re: [#{number}] Question", "Which version do you run?"),
           Envelope("jane@example.com", (agent,), "pipe", clock.now()), ctx)
    assert _status(ctx, number) == "awaiting_reply"
    clock.advance(timedelta(days=1))
    assert remind(ctx) == 0
    clock.advance(timedelta(days=2))
    assert remind(ctx) == 1
    assert remind(ctx) == 0  # once per waiting period
    clock.advance(timedelta(days=3))
    assert auto_resolve(ctx) == 1
    assert _status(ctx, number) == "resolved"
    with ctx.db.reader() as session:
        kinds = sorted(session.scalars(select(Outbox.kind).where(Outbox.recipient == "pat@customer.example")))
    assert kinds == ["ack_new", "agent_reply", "notice_status", "reminder"]
    ctx.db.dispose()


def test_reminders_are_off_by_default(ctx: Context, clock: FixedClock) -> None:
    number = _resolved_ticket(ctx, clock)
    clock.advance(timedelta(days=365))
    assert remind(ctx) == 0 and auto_resolve(ctx) == 0
    assert _status(ctx, number) in ("resolved", "closed")
