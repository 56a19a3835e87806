"""Scheduled ticket lifecycle: resolved tickets close by themselves after ``lifecycle.auto_close_after``.

Claimed in one short transaction per batch (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), and the close is conditional on the
ticket still being resolved, so several daemons never close one ticket twice
and a customer reply that reopened it in the meantime wins.
"""

from __future__ import annotations

from sqlalchemy import select

from mailgate.domain import Change, MessageKind, Status
from mailgate.model import Event, Ticket
from mailgate.pipeline import audience
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.notify import Trigger, send, ticket_view
from mailgate.store import Store


def auto_close(ctx: Context, limit: int = 200) -> int:
    """Close resolved tickets whose grace period is over; tell each requester. Returns how many."""
    after = ctx.config.main.lifecycle.auto_close_after
    if after is None:
        return 0
    now = ctx.clock.now()
    query = (
        select(Ticket)
        .where(Ticket.status == Status.RESOLVED.value, Ticket.resolved_at <= now - after)
        .order_by(Ticket.resolved_at)
        .limit(limit)
    )
    if not ctx.db.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    with ctx.db.transaction() as session:
        store = Store(session)
        tickets = list(session.scalars(query))
        for ticket in tickets:
            ticket.status, ticket.closed_at, ticket.updated_at = Status.CLOSED.value, now, now
            store.add_rows(
                Event,
                [
                    {
                        "ticket_id": ticket.id,
                        "at": now,
                        "kind": "status",
                        "actor": "system",
                        "detail": f"resolved -> closed after {after} without reply",
                    }
                ],
            )
            change = Change(
                ticket.id,
                ticket.number,
                False,
                False,
                MessageKind.SYSTEM,
                ("status",),
                status_changed=Status.CLOSED.value,
            )
            view = ticket_view(ticket, store)
            planned = [audience.Planned("notice_status", view.requester, True, "auto-generated")]
            trigger = Trigger(
                None,
                None,
                ctx.config.main.intake.addresses[0],
                {"text": "", "subject": ticket.subject, "from": "", "from_name": ""},
                {"status": Status.CLOSED.value, "what": "", "by": "system", "reason": ""},
                key=f"autoclose-{now.date()}",
            )
            if change.status_changed and view.requester.email:
                send(store, ctx.notifier, planned, ticket, trigger, now)
    return len(tickets)
