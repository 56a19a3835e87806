"""Keep a ticket's SLA clock, due times and pending ladder timers in step with the ticket.

Called by the writer (apply/apply_agent) whenever something the SLA depends on
changes: creation, status (met, paused, resumed, reopened), plan, priority. The
clock is ``sla_consumed`` business seconds plus, while running, the business time
since ``sla_running_since``; pending timers are replaced, fired ones are kept, so
a step already fired for (ticket, target, step) never fires again (unique key).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, inspect, select, update

from mailgate import hours
from mailgate.config import SlaFile, SlaPlan
from mailgate.domain import Status
from mailgate.sla import plans
from mailgate.storage.fastsql import fetch, run
from mailgate.storage.model import Event, SlaTimer, Ticket
from mailgate.storage.store import Store

_COLUMNS = (
    "first_response_due",
    "resolution_due",
    "sla_consumed",
    "sla_running_since",
    "first_response_breached",
    "resolution_breached",
)
_UPDATE_SLA = update(Ticket).where(Ticket.id == bindparam("tid"))
_DONE = (Status.RESOLVED.value, Status.CLOSED.value)
_DELETE_PENDING = delete(SlaTimer).where(SlaTimer.ticket_id == bindparam("tid"), SlaTimer.fired_at.is_(None))
_FIRED = select(SlaTimer.target, SlaTimer.step).where(
    SlaTimer.ticket_id == bindparam("tid"), SlaTimer.fired_at.is_not(None)
)


def _met(ticket: Ticket, target: str) -> bool:
    if ticket.status in _DONE:
        return True
    return target == "first_response" and ticket.first_response_at is not None


def _event(ticket: Ticket, now: datetime, kind: str, detail: str) -> dict[str, object]:
    return {"ticket_id": ticket.id, "at": now, "kind": kind, "actor": "system", "detail": detail}


def sync(
    store: Store, book: SlaFile | None, ticket: Ticket, now: datetime, before: str | None = None, created: bool = False
) -> None:
    """Recompute after a change; ``before`` is the plan the clock ran under when ``#sla`` changed it.

    ``created``: the ticket was inserted just now, so it has no timers yet, pending or fired.
    """
    plan = book.sla_plans.get(ticket.sla_plan) if book and ticket.sla_plan else None
    old = book.sla_plans.get(before) if book and before else plan
    events: list[dict[str, object]] = []
    fresh = not inspect(ticket).persistent  # just inserted by the fast path: unset columns are None here
    if fresh:
        ticket.sla_consumed = ticket.sla_consumed or 0.0
        ticket.first_response_breached = bool(ticket.first_response_breached)
        ticket.resolution_breached = bool(ticket.resolution_breached)
    if ticket.sla_running_since is not None:  # stop the clock at now, under the schedule it ran on
        ran = hours.business_time_between(_schedule(book, old), ticket.sla_running_since, now)
        ticket.sla_consumed = (ticket.sla_consumed or 0.0) + ran.total_seconds()
        ticket.sla_running_since = None
    events += _late(ticket, now)
    store.session.flush()
    conn = store.session.connection()
    if not created:
        run(conn, _DELETE_PENDING, [{"tid": ticket.id}])
    targets = plans.plan_targets(plan, ticket.priority) if plan else {}
    active = {t: d for t, d in targets.items() if not _met(ticket, t)}
    paused = plan is not None and ticket.status in plan.pause_on
    for target in plans.TARGETS:
        if target not in targets:
            setattr(ticket, f"{target}_due", None)
        elif target in active and paused:
            setattr(ticket, f"{target}_due", None)  # no deadline while it is the customer's turn
    if plan is not None and active and not paused:
        ticket.sla_running_since = now
        consumed = timedelta(seconds=ticket.sla_consumed or 0.0)
        fired = set() if created else {(t, s) for t, s in fetch(conn, _FIRED, {"tid": ticket.id})}
        rows = []
        for due in plans.dues(_schedule(book, plan), now, consumed, active, plan):
            if due.step == 100:
                setattr(ticket, f"{due.target}_due", due.due_at)
            if (due.target, due.step) not in fired:
                rows.append(
                    {
                        "ticket_id": ticket.id,
                        "target": due.target,
                        "step": due.step,
                        "plan": ticket.sla_plan,
                        "due_at": due.due_at,
                        "fired_at": None,
                        "fired_by": None,
                    }
                )
        store.add_rows(SlaTimer, rows)
    store.add_rows(Event, events)
    if fresh:  # write its SLA columns
        run(conn, _UPDATE_SLA, [{"tid": ticket.id, **{c: getattr(ticket, c) for c in _COLUMNS}}])


def _late(ticket: Ticket, now: datetime) -> list[dict[str, object]]:
    """A target met after its due time is a breach even if no sweep saw it (e.g. the daemon was down)."""
    events = []
    for target in plans.TARGETS:
        due = getattr(ticket, f"{target}_due")
        met_at = (ticket.first_response_at or now) if target == "first_response" else now
        if _met(ticket, target) and due is not None and met_at > due and not getattr(ticket, f"{target}_breached"):
            setattr(ticket, f"{target}_breached", True)
            events.append(_event(ticket, now, "sla_breach", f"{target} met {met_at - due} late"))
    return events


def _schedule(book: SlaFile | None, plan: SlaPlan | None) -> hours.Schedule:
    return plans.plan_schedule(plan, book.schedules) if plan and book else hours.ALWAYS
