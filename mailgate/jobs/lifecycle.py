"""Scheduled ticket lifecycle: auto-close of resolved tickets, reminders and auto-resolve while waiting.

- ``lifecycle.auto_close_after`` (7 days): a resolved ticket closes by itself.
- ``lifecycle.reminder_after`` (off): the requester of an ``awaiting_reply`` ticket is reminded once.
- ``lifecycle.auto_resolve_after`` (off): an ``awaiting_reply`` ticket nobody answers is resolved.

Each job claims its tickets in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) and acts only on tickets still in the status it selected, so several
daemons never act twice and a customer reply that came in meanwhile wins. Notices go through the
outbox with dedupe keys, so each is queued once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select

from mailgate.domain import Status
from mailgate.pipeline import audience
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.notice import Trigger
from mailgate.pipeline.notify import send, ticket_view
from mailgate.sla import timers as sla_timers
from mailgate.storage.model import Event, Ticket
from mailgate.storage.store import Store

Act = Callable[[Store, Ticket, datetime], str | None]  # returns the notice key, or None for no notice


def _sweep(
    ctx: Context,
    where: ColumnElement[bool],
    order: Any,
    act: Act,
    kind: str,
    status_after: str,
    limit: int,
) -> int:
    now = ctx.clock.now()
    where = where & Ticket.merged_into.is_(None)  # a merged ticket is closed for good: its survivor is worked
    query = select(Ticket).where(where).order_by(order).limit(limit)
    if not ctx.db.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    with ctx.db.transaction() as session:
        store = Store(session)
        tickets = list(session.scalars(query))
        for ticket in tickets:
            key = act(store, ticket, now)
            view = ticket_view(ticket, store)
            if key is None or not view.requester.email:
                continue
            planned = [audience.Planned(kind, view.requester, True, "auto-generated")]
            message = {"text": "", "subject": ticket.subject, "from": "", "from_name": ""}
            details = {"status": status_after, "what": "", "by": "system", "reason": ""}
            trigger = Trigger(None, None, ctx.config.main.intake.addresses[0], message, details, key=key)
            send(store, ctx.notifier, planned, ticket, trigger, now)
    return len(tickets)


def _event(store: Store, ticket: Ticket, now: datetime, kind: str, detail: str) -> None:
    store.add_rows(Event, [{"ticket_id": ticket.id, "at": now, "kind": kind, "actor": "system", "detail": detail}])


def auto_close(ctx: Context, limit: int = 200) -> int:
    """Close resolved tickets whose grace period is over; tell each requester. Returns how many."""
    after = ctx.config.main.lifecycle.auto_close_after
    if after is None:
        return 0

    def close(store: Store, ticket: Ticket, now: datetime) -> str:
        ticket.status, ticket.closed_at, ticket.updated_at = Status.CLOSED.value, now, now
        sla_timers.sync(store, ctx.config.sla, ticket, now)
        _event(store, ticket, now, "status", f"resolved -> closed after {after} without reply")
        return f"autoclose-{now.date()}"

    where = (Ticket.status == Status.RESOLVED.value) & (Ticket.resolved_at <= ctx.clock.now() - after)
    return _sweep(ctx, where, Ticket.resolved_at, close, "notice_status", Status.CLOSED.value, limit)


def remind(ctx: Context, limit: int = 200) -> int:
    """Remind requesters who have not answered for ``reminder_after``; once per waiting period."""
    after = ctx.config.main.lifecycle.reminder_after
    if after is None:
        return 0

    def reminder(store: Store, ticket: Ticket, now: datetime) -> str:
        _event(store, ticket, now, "reminder", f"requester reminded after {after} without reply")
        ticket.reminded_at = now
        return f"reminder-{ticket.updated_at.isoformat()}"

    now = ctx.clock.now()
    waiting = (Ticket.status == Status.AWAITING_REPLY.value) & (Ticket.updated_at <= now - after)
    not_yet = Ticket.reminded_at.is_(None) | (Ticket.reminded_at < Ticket.updated_at)
    return _sweep(ctx, waiting & not_yet, Ticket.updated_at, reminder, "reminder", Status.AWAITING_REPLY.value, limit)


def auto_resolve(ctx: Context, limit: int = 200) -> int:
    """Resolve ``awaiting_reply`` tickets whose requester stayed silent for ``auto_resolve_after``."""
    after = ctx.config.main.lifecycle.auto_resolve_after
    if after is None:
        return 0

    def resolve(store: Store, ticket: Ticket, now: datetime) -> str:
        ticket.status, ticket.resolved_at, ticket.updated_at = Status.RESOLVED.value, now, now
        sla_timers.sync(store, ctx.config.sla, ticket, now)  # resolution reached: its timers stop
        _event(store, ticket, now, "status", f"awaiting_reply -> resolved after {after} without reply")
        return f"autoresolve-{now.date()}"

    where = (Ticket.status == Status.AWAITING_REPLY.value) & (Ticket.updated_at <= ctx.clock.now() - after)
    return _sweep(ctx, where, Ticket.updated_at, resolve, "notice_status", Status.RESOLVED.value, limit)


def run_all(ctx: Context) -> int:
    return auto_close(ctx) + auto_resolve(ctx) + remind(ctx)
