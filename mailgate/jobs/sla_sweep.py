"""The SLA sweep: fire each due ladder step exactly once, and say what is due (``sla due``).

Cost is proportional to what is due: one indexed range read of ``sla_timer``
(``fired_at IS NULL AND due_at <= now``). Each batch is one transaction that
claims its timers (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's writer
lock from ``BEGIN IMMEDIATE``), applies the actions, queues the mail in the
outbox and marks the timers fired, so a crash rolls the whole batch back and a
second daemon never takes the same timer.

Catch-up after downtime: every missed step still fires once (event, breach,
overdue, priority, assignment, tag, all in due order), but of the steps of one
ticket's target that fire in the same batch only the latest sends mail; the
earlier ones record that their notification was superseded. No flood.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from mailgate import hours
from mailgate.config import Escalation, SlaFile
from mailgate.domain import Address
from mailgate.logformat import log_event
from mailgate.metrics import SLA_RUNGS
from mailgate.pipeline.audience import Planned
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.notice import Trigger
from mailgate.pipeline.notify import send, ticket_view
from mailgate.sla import plans
from mailgate.storage.model import Event, SlaTimer, Ticket
from mailgate.storage.store import Store

log = logging.getLogger(__name__)

WORKER = f"{socket.gethostname()}:{os.getpid()}"
_LABEL = {"first_response": "first response", "resolution": "resolution"}


def _due_query(now: datetime, limit: int | None) -> Select[SlaTimer]:
    query = (
        select(SlaTimer)
        .where(SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now)
        .order_by(SlaTimer.due_at, SlaTimer.id)
    )
    return query.limit(limit) if limit else query


def claim(session: Session, now: datetime, limit: int, worker: str = WORKER) -> list[SlaTimer]:
    """Take up to ``limit`` due timers for this transaction and mark them fired (not visible until commit)."""
    query = _due_query(now, limit)
    if session.get_bind().dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    timers = list(session.scalars(query))
    for timer in timers:
        timer.fired_at, timer.fired_by = now, worker
    return timers


def fire(session: Session, ctx: Context, timers: Sequence[SlaTimer], now: datetime) -> list[dict[str, object]]:
    """Apply the claimed steps, ticket by ticket (locked in id order), in due order; what fired, for the log."""
    store = Store(session)
    last = {(t.ticket_id, t.target): t.id for t in timers}  # timers come in due order: the last one mails
    locking = session.get_bind().dialect.name != "sqlite"
    fired: list[dict[str, object]] = []
    for ticket_id in sorted({t.ticket_id for t in timers}):
        ticket = session.get(Ticket, ticket_id, with_for_update=locking)
        assert ticket is not None
        for timer in (t for t in timers if t.ticket_id == ticket_id):
            if ticket.merged_into is not None:  # merged meanwhile (its pending rungs go with the merge): claimed, inert
                continue
            mail = last[(ticket_id, timer.target)] == timer.id
            _step(store, ctx, ticket, timer, now, mail=mail)
            fired.append({"ticket": ticket.number, "plan": timer.plan, "target": timer.target, "step": timer.step,
                          "due": timer.due_at.isoformat(), "overdue": ticket.overdue, "mailed": mail})
    return fired


def sweep_once(ctx: Context, limit: int = 500, worker: str = WORKER) -> int:
    """One claimed batch in one transaction; returns how many steps fired."""
    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        timers = claim(session, now, limit, worker)
        fired = fire(session, ctx, timers, now)
    for step in fired:  # after the commit: a line never tells of a rung that was rolled back
        SLA_RUNGS.labels(str(step["target"])).inc()
        log_event(log, "sla rung fired", **step)
    return len(fired)


def sweep(ctx: Context, limit: int = 500, worker: str = WORKER, stop: object = None) -> int:
    """Fire everything due now, batch after batch; ``stop`` (a threading.Event) ends it between batches."""
    total = 0
    while True:
        fired = sweep_once(ctx, limit, worker)
        total += fired
        if fired < limit or getattr(stop, "is_set", lambda: False)():
            return total


def _rung(book: SlaFile, plan: str, target: str, step: int) -> Escalation | None:
    found = book.sla_plans.get(plan)
    return plans.ladder(found, target).get(step) if found else None


def _step(store: Store, ctx: Context, ticket: Ticket, timer: SlaTimer, now: datetime, *, mail: bool) -> None:
    rung = _rung(ctx.config.sla, timer.plan, timer.target, timer.step)
    label = f"{timer.step}% of {_LABEL[timer.target]}"
    events = [_event(ticket, now, "sla_escalation", f"{label} reached (due {timer.due_at.isoformat()})")]
    if timer.step >= 100 and not getattr(ticket, f"{timer.target}_breached"):
        setattr(ticket, f"{timer.target}_breached", True)
        ticket.overdue = True
        events.append(_event(ticket, now, "sla_breach", f"{_LABEL[timer.target]} not met by {timer.due_at}"))
    if rung is not None:
        ticket.overdue = ticket.overdue or rung.overdue
        if rung.priority and rung.priority != ticket.priority:
            events.append(
                _event(ticket, now, "priority", f"priority {ticket.priority} -> {rung.priority} ({label})")
            )
            ticket.priority = rung.priority
        if rung.assign and rung.assign != ticket.assignee:
            events.append(_event(ticket, now, "assigned", f"assignee {rung.assign} ({label})"))
            ticket.assignee = rung.assign
        if rung.tag:
            events.append(_event(ticket, now, "tag", rung.tag))
        if rung.notify and not mail:
            events.append(_event(ticket, now, "sla_escalation", f"mail for {label} superseded by a later step"))
    ticket.updated_at = now
    store.add_rows(Event, events)
    if rung is not None and rung.notify and mail:
        _notify(store, ctx, ticket, timer, rung, now)


def _audience(ctx: Context, ticket: Ticket, store: Store, who: str) -> list[Address]:
    dept = ctx.directory.departments.get(ticket.department or "")
    if who == "assignee":
        return ctx.directory.responsible(ticket_view(ticket, store))
    if who == "manager":
        return [ctx.directory.agent(dept.manager)] if dept and dept.manager else []
    if who == "department":
        people = (dept.members or ([dept.email] if dept.email else [])) if dept else []
        return [ctx.directory.agent(a) for a in people]
    return [ctx.directory.agent(who)]


def _notify(store: Store, ctx: Context, ticket: Ticket, timer: SlaTimer, rung: Escalation, now: datetime) -> None:
    kind = "sla_overdue" if timer.step >= 100 else "sla_warning"
    people = {a.email: a for who in rung.notify for a in _audience(ctx, ticket, store, who)}
    planned = [Planned(kind, a, True, "auto-generated") for a in people.values()]
    change = {
        "status": ticket.status,
        "what": f"{timer.step}% of {_LABEL[timer.target]}",
        "by": "system",
        "reason": "",
        "target": _LABEL[timer.target],
        "step": f"{timer.step}%",
        "due": getattr(ticket, f"{timer.target}_due").isoformat() if getattr(ticket, f"{timer.target}_due") else "",
    }
    message = {"text": "", "subject": ticket.subject, "from": "", "from_name": ""}
    trigger = Trigger(None, None, ctx.config.main.intake.addresses[0], message, change, key=f"sla-{timer.id}")
    send(store, ctx.notifier, planned, ticket, trigger, now)


def _event(ticket: Ticket, now: datetime, kind: str, detail: str) -> dict[str, object]:
    return {"ticket_id": ticket.id, "at": now, "kind": kind, "actor": "system", "detail": detail}


@dataclass(frozen=True)
class DueStep:
    number: str
    target: str
    step: int
    due_at: datetime
    plan: str
    actions: tuple[str, ...]
    holidays: tuple[tuple[date, str], ...] = ()  # what pushed due_at later: (day, name or "configured date")


def due(ctx: Context, at: datetime) -> list[DueStep]:
    """What a sweep at ``at`` would fire (read-only): ticket, target, ladder step, due time, actions,
    and the holidays the due time was moved over since the ticket's clock last started."""
    with ctx.db.reader() as session:
        rows = session.execute(
            select(SlaTimer, Ticket.number, Ticket.sla_running_since)
            .join(Ticket, Ticket.id == SlaTimer.ticket_id)
            .where(SlaTimer.fired_at.is_(None), SlaTimer.due_at <= at)
            .order_by(SlaTimer.due_at, SlaTimer.id)
        ).all()
    schedules: dict[str, hours.Schedule] = {}
    out = []
    for timer, number, since in rows:
        plan = ctx.config.sla.sla_plans.get(timer.plan)
        if plan is not None and timer.plan not in schedules:
            schedules[timer.plan] = plans.plan_schedule(plan, ctx.config.sla.schedules)
        moved = hours.holidays_between(schedules[timer.plan], since, timer.due_at) if plan and since else []
        rung = _rung(ctx.config.sla, timer.plan, timer.target, timer.step)
        actions = ["breach", "overdue"] if timer.step >= 100 else []
        if rung is not None:
            actions += [f"notify {', '.join(rung.notify)}"] if rung.notify else []
            actions += ["overdue"] if rung.overdue and "overdue" not in actions else []
            actions += [f"{k} {getattr(rung, k)}" for k in ("priority", "assign", "tag") if getattr(rung, k)]
        out.append(DueStep(number, timer.target, timer.step, timer.due_at, timer.plan, tuple(actions), tuple(moved)))
    return out
