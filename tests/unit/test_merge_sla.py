"""A merged ticket's SLA ladder stops for good; its fired rungs stay as history; the report counts it once.

The real pipeline on a real database, with a clock that moves only when told (the sweep is run by hand).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mailgate.cli import report
from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.jobs import lifecycle
from mailgate.jobs.sla_sweep import sweep
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Event, SlaTimer, Ticket
from mailgate.storage.store import Store
from tests.conftest import MakeConfig

MINUTE = timedelta(minutes=1)
SLA: dict[str, Any] = {  # the demo rules name the standard plan and the business schedule
    "schedules": {"business": {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}},
    "sla_plans": {
        "standard": {"first_response": "8h", "resolution": "3d", "schedule": "business"},
        "critical": {
            "first_response": "1h",
            "resolution": "4h",
            "escalations": [{"at": "50%", "of": "first_response", "notify": ["assignee"]},
                            {"at": "100%", "notify": ["manager"]}],
        },
    },
}


@pytest.fixture
def sctx(make_config: MakeConfig, clock: FixedClock) -> Iterator[Context]:
    config = make_config(sla=SLA, lifecycle={"reminder_after": "1h", "auto_resolve_after": "2h"})
    context = build_context(load_config(config), clock)
    context.db.upgrade()
    yield context
    context.db.dispose()


def _mail(sender: str, to: str, subject: str, body: str) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def _new(ctx: Context, sender: str, subject: str) -> Ticket:
    env = Envelope(sender, ("outage@example.com",), "pipe", ctx.clock.now())
    number = ingest(_mail(sender, "outage@example.com", subject, "help"), env, ctx).number
    assert number
    return _ticket(ctx, number)


def _ticket(ctx: Context, number: str) -> Ticket:
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        return ticket


def _agent(ctx: Context, ticket: Ticket, body: str) -> str | None:
    to = ctx.identity.plus_address("support@example.com", "a", ticket.id, "jane@example.com")
    env = Envelope("jane@example.com", (to,), "pipe", ctx.clock.now())
    return ingest(_mail("jane@example.com", to, f"Re: [#{ticket.number}] {ticket.subject}", body), env, ctx).number


def _timers(ctx: Context, ticket: Ticket) -> list[tuple[str, int, bool]]:
    with ctx.db.reader() as session:
        rows = session.scalars(select(SlaTimer).where(SlaTimer.ticket_id == ticket.id).order_by(SlaTimer.id))
        return [(t.target, t.step, t.fired_at is not None) for t in rows]


def _events(ctx: Context, ticket: Ticket) -> list[str]:
    with ctx.db.reader() as session:
        return list(session.scalars(select(Event.kind).where(Event.ticket_id == ticket.id).order_by(Event.id)))


def test_a_merged_ticket_never_escalates_or_reminds_again(sctx: Context, clock: FixedClock) -> None:
    a = _new(sctx, "pat@customer.example", "Server is down")
    b = _new(sctx, "lee@other.example", "Server is down again")
    clock.advance(30 * MINUTE)
    assert sweep(sctx) == 2  # each ticket's 50 % rung
    assert _agent(sctx, a, "We are looking.") == a.number  # A waits for the customer: a reminder would be due
    assert _agent(sctx, a, f"#merge {b.number}") == b.number
    assert _timers(sctx, a) == [("first_response", 50, True)]  # fired: kept as history; pending: gone
    assert ("resolution", 100, False) in _timers(sctx, b)  # B keeps its own ladder and due times
    survivor = _ticket(sctx, b.number)
    assert survivor.first_response_due == b.first_response_due and survivor.resolution_due == b.resolution_due
    assert _events(sctx, b).count("sla_escalation") == 2  # A's escalation history moved with its thread
    assert _events(sctx, a) == ["merged"]
    clock.advance(10 * 60 * MINUTE)
    assert sweep(sctx) == 2  # B's rungs only (its 100 % of both targets)
    assert lifecycle.run_all(sctx) == 0
    assert _events(sctx, a) == ["merged"]
    merged = _ticket(sctx, a.number)
    assert (merged.status, merged.merged_into, merged.sla_running_since) == ("closed", b.id, None)
    rows = report.build(sctx.db, None, None, clock.now())
    assert rows[0].tickets == 1  # one request: the merged ticket is counted as its survivor


def test_a_merge_link_that_comes_back_round_never_loops(sctx: Context) -> None:
    """No merge writes a circle (it is refused), but one written by hand must not hang threading."""
    x = _new(sctx, "pat@customer.example", "Server is down")
    y = _new(sctx, "lee@other.example", "Server is down again")
    with sctx.db.transaction() as session:
        session.get(Ticket, x.id).merged_into = y.id  # type: ignore[union-attr]
        session.get(Ticket, y.id).merged_into = x.id  # type: ignore[union-attr]
    env = Envelope("pat@customer.example", ("support@example.com",), "pipe", sctx.clock.now())
    mail = _mail("pat@customer.example", "support@example.com", f"Re: [#{x.number}] Server is down", "hello?")
    outcome = ingest(mail, env, sctx)
    assert outcome.status == "accepted" and outcome.decision is not None
    assert outcome.decision["thread"]["ticket"] == y.number  # X -> Y, and Y -> X would repeat X: it stops at Y
    assert outcome.decision["thread"]["merged_via"] == [x.number]
