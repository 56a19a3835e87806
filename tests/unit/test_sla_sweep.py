"""SLA due times, ladder timers and the sweep, on a real database with a clock that moves only when told."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mailgate import hours
from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.jobs.sla_sweep import claim, due, fire, sweep, sweep_once
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.db import Database
from mailgate.storage.model import Event, Outbox, SlaTimer, Ticket
from mailgate.storage.store import Store
from tests.conftest import PG_URL, MakeConfig

H = timedelta(hours=1)
SLA: dict[str, Any] = {
    "schedules": {"business": {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}},
    "sla_plans": {
        "critical": {
            "first_response": "1h",
            "resolution": "4h",
            "priorities": {"high": {"resolution": "8h"}},
            "escalations": [
                {"at": "50%", "of": "first_response", "notify": ["assignee"]},
                {"at": "75%", "notify": ["assignee"]},
                {"at": "100%", "notify": ["manager"], "priority": "high"},
                {
                    "at": "150%",
                    "of": "resolution",
                    "notify": ["ops@example.com"],
                    "assign": "jerry@example.com",
                    "tag": "escalated",
                },
            ],
        },
        "standard": {
            "first_response": "8h",
            "resolution": "3d",
            "schedule": "business",
            "pause_on": ["awaiting_reply"],
        },
    },
}


@pytest.fixture
def sctx(make_config: MakeConfig, clock: FixedClock) -> Iterator[Context]:
    context = build_context(load_config(make_config(sla=SLA)), clock)
    context.db.upgrade()
    yield context
    context.db.dispose()


def _mail(sender: str, to: str, subject: str, body: str) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def _new(ctx: Context, to: str = "outage@example.com", subject: str = "Server is down") -> str:
    env = Envelope("pat@customer.example", (to,), "pipe", ctx.clock.now())
    number = ingest(_mail("pat@customer.example", to, subject, "help"), env, ctx).number
    assert number
    return number


def _ticket(ctx: Context, number: str) -> Ticket:
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        return ticket


def _agent(ctx: Context, number: str, body: str, agent: str = "jane@example.com") -> None:
    ticket = _ticket(ctx, number)
    to = ctx.identity.plus_address("support@example.com", "a", ticket.id, agent)
    env = Envelope(agent, (to,), "pipe", ctx.clock.now())
    ingest(_mail(agent, to, f"Re: [#{number}] {ticket.subject}", body), env, ctx)


def _customer(ctx: Context, number: str) -> None:
    env = Envelope("pat@customer.example", ("support@example.com",), "pipe", ctx.clock.now())
    ingest(_mail("pat@customer.example", "support@example.com", f"Re: [#{number}] x", "still broken"), env, ctx)


def _timers(ctx: Context, *, fired: bool | None = None) -> list[tuple[str, int]]:
    with ctx.db.reader() as session:
        query = select(SlaTimer).order_by(SlaTimer.due_at, SlaTimer.id)
        if fired is not None:
            query = query.where(SlaTimer.fired_at.is_not(None) if fired else SlaTimer.fired_at.is_(None))
        return [(t.target, t.step) for t in session.scalars(query)]


def _sla_mail(ctx: Context) -> list[tuple[str, str]]:
    with ctx.db.reader() as session:
        rows = session.scalars(select(Outbox).where(Outbox.kind.like("sla_%")).order_by(Outbox.id))
        return [(r.kind, r.recipient) for r in rows]


def _events(ctx: Context, kind: str) -> list[str]:
    with ctx.db.reader() as session:
        return list(session.scalars(select(Event.detail).where(Event.kind == kind).order_by(Event.id)))


def test_due_times_and_ladder_are_stored_at_creation(sctx: Context, clock: FixedClock) -> None:
    start = clock.now()
    critical = _ticket(sctx, _new(sctx))
    assert (critical.first_response_due, critical.resolution_due) == (start + H, start + 4 * H)
    # Monday 10:00 Berlin: 7 h on Monday, the 8th hour on Tuesday 09:00-10:00 Berlin (08:00-09:00 UTC)
    standard = _ticket(sctx, _new(sctx, "support@example.com", "Question"))
    assert standard.first_response_due == datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
    assert sorted(_timers(sctx)) == sorted(
        [("first_response", s) for s in (50, 75, 100)]
        + [("resolution", s) for s in (75, 100, 150)]
        + [("first_response", 100), ("resolution", 100)]
    )


def test_each_ladder_step_fires_once_on_time(sctx: Context, clock: FixedClock) -> None:
    number = _new(sctx)
    assert sweep(sctx) == 0
    clock.advance(29 * timedelta(minutes=1))
    assert sweep(sctx) == 0
    clock.advance(timedelta(minutes=1))
    assert sweep(sctx) == 1
    assert sweep(sctx) == 0  # a second sweep at the same instant finds nothing
    assert _sla_mail(sctx) == [("sla_warning", "jane@example.com"), ("sla_warning", "jerry@example.com")]
    clock.advance(15 * timedelta(minutes=1))
    assert sweep(sctx) == 1
    clock.advance(15 * timedelta(minutes=1))
    assert sweep(sctx) == 1 and sweep(sctx) == 0
    ticket = _ticket(sctx, number)
    assert ticket.overdue and ticket.first_response_breached and not ticket.resolution_breached
    assert ticket.priority == "high"  # raised by the 100 % step; the dues stay where they were
    assert _sla_mail(sctx)[-1] == ("sla_overdue", "jane@example.com")  # the Sys Admin manager
    assert len(_sla_mail(sctx)) == 5
    assert Counter(f for f, _ in [(t, s) for t, s in _timers(sctx, fired=True)]) == {"first_response": 3}


def test_catch_up_after_downtime_fires_each_missed_step_once_and_mails_the_latest(
    sctx: Context, clock: FixedClock
) -> None:
    number = _new(sctx)
    clock.advance(10 * H)  # the daemon was down for all six steps
    assert sweep(sctx) == 6
    assert sweep(sctx) == 0
    assert len(_events(sctx, "sla_escalation")) == 6 + 4  # one per step; each earlier step notes it was superseded
    assert _sla_mail(sctx) == [("sla_overdue", "jane@example.com"), ("sla_overdue", "ops@example.com")]
    ticket = _ticket(sctx, number)
    assert (ticket.assignee, ticket.first_response_breached, ticket.resolution_breached) == (
        "jerry@example.com",
        True,
        True,
    )
    assert _events(sctx, "tag") == ["escalated"]


def test_first_response_and_resolution_are_met_by_the_agent(sctx: Context, clock: FixedClock) -> None:
    number = _new(sctx)
    clock.advance(20 * timedelta(minutes=1))
    _agent(sctx, number, "Looking into it.")
    assert ("first_response", 50) not in _timers(sctx)  # met: its pending steps are gone
    clock.advance(3 * H)
    assert sweep(sctx) == 1  # resolution 75 %
    _agent(sctx, number, "#status resolved\nFixed.")
    assert _timers(sctx, fired=False) == []
    clock.advance(10 * H)
    assert sweep(sctx) == 0
    ticket = _ticket(sctx, number)
    assert not ticket.first_response_breached and not ticket.resolution_breached and not ticket.overdue


def test_late_resolution_is_a_breach_even_without_a_sweep(sctx: Context, clock: FixedClock) -> None:
    number = _new(sctx)
    clock.advance(5 * H)
    _agent(sctx, number, "#status resolved\nSorry for the wait.")
    ticket = _ticket(sctx, number)
    assert ticket.first_response_breached and ticket.resolution_breached


def test_awaiting_reply_pauses_the_clock_and_a_customer_reply_resumes_it(sctx: Context, clock: FixedClock) -> None:
    number = _new(sctx, "support@example.com", "Question")
    clock.advance(2 * H)  # Monday 11:00 -> 2 business hours used
    _agent(sctx, number, "Which version do you use?")
    ticket = _ticket(sctx, number)
    assert ticket.status == "awaiting_reply" and ticket.resolution_due is None
    assert _timers(sctx, fired=False) == []
    clock.advance(48 * H)  # Wednesday 11:00 UTC; the customer's two days do not count
    _customer(sctx, number)
    ticket = _ticket(sctx, number)
    business = hours.parse_schedule(SLA["schedules"]["business"])
    assert ticket.resolution_due == hours.add_business_time(business, clock.now(), timedelta(days=3) - 2 * H)


def test_plan_and_priority_change_recompute_from_the_time_used(sctx: Context, clock: FixedClock) -> None:
    number = _new(sctx, "support@example.com", "Question")
    clock.advance(H)
    _agent(sctx, number, "#sla critical\n#status in_progress")
    ticket = _ticket(sctx, number)
    assert ticket.sla_plan == "critical"
    assert ticket.resolution_due == clock.now() + 3 * H  # 1 h used of critical's 4 h
    assert ticket.first_response_due is not None  # a #status alone is no reply: first response still runs
    _agent(sctx, number, "#priority high\n#status in_progress")
    assert _ticket(sctx, number).resolution_due == clock.now() + 7 * H  # critical at high priority: 8 h
    assert ("resolution", 150) in _timers(sctx, fired=False)


def test_restart_in_the_middle_of_a_sweep_fires_every_step_once(
    sctx: Context, clock: FixedClock, make_config: MakeConfig
) -> None:
    for i in range(3):
        _new(sctx, subject=f"Server {i} is down")
    clock.advance(2 * H)  # first response 50, 75, 100 % due on three tickets
    assert sweep_once(sctx, limit=4) == 4  # one batch committed, then the daemon dies
    sctx.db.dispose()
    restarted = build_context(load_config(make_config(sla=SLA)), clock)
    try:
        assert sweep(restarted, limit=4) == 3 * 3 - 4
        assert sweep(restarted) == 0
    finally:
        restarted.db.dispose()
    assert Counter(_timers(sctx, fired=True)) == Counter({("first_response", s): 3 for s in (50, 75, 100)})
    assert len([e for e in _events(sctx, "sla_escalation") if "reached" in e]) == 9  # no step twice


def test_sla_due_lists_what_a_sweep_would_fire(sctx: Context, clock: FixedClock) -> None:
    number = _new(sctx)
    steps = due(sctx, clock.now() + H)
    assert [(s.number, s.target, s.step) for s in steps] == [
        (number, "first_response", 50),
        (number, "first_response", 75),
        (number, "first_response", 100),
    ]
    assert steps[-1].actions == ("breach", "overdue", "notify manager", "priority high")
    assert due(sctx, clock.now()) == []


@pytest.mark.skipif(not PG_URL, reason="two sweepers sharing a database need PostgreSQL")
def test_two_sweepers_on_postgresql_never_fire_a_step_twice(
    sctx: Context, clock: FixedClock, make_config: MakeConfig
) -> None:
    for i in range(5):
        _new(sctx, subject=f"Server {i} is down")
    clock.advance(10 * H)
    other = build_context(load_config(make_config(sla=SLA)), clock, db=Database(sctx.config.database_url))
    try:
        with sctx.db.transaction() as session:  # daemon A holds its claim while daemon B sweeps
            mine = claim(session, clock.now(), 10, "A")
            assert sweep(other, limit=7, worker="B") == 30 - 10
            fire(session, sctx, mine, clock.now())
        assert sweep(sctx, worker="A") == 0 and sweep(other, worker="B") == 0
    finally:
        other.db.dispose()
    with sctx.db.reader() as session:
        by = Counter(session.scalars(select(SlaTimer.fired_by)))
    assert by == {"A": 10, "B": 20}
    with sctx.db.reader() as session:  # every mail belongs to a step fired once, by the sweeper that claimed it
        keys = list(session.scalars(select(Outbox.dedupe_key).where(Outbox.kind.like("sla_%"))))
        fired = {i: b for i, b in session.execute(select(SlaTimer.id, SlaTimer.fired_by))}
    assert keys and {int(k.split(":")[2].removeprefix("sla-")) for k in keys} <= set(fired)
    assert len([e for e in _events(sctx, "sla_escalation") if "reached" in e]) == 30
    assert len(_events(sctx, "sla_breach")) == 10
