"""Retention's rules of restraint, on the real pipeline with a clock the test moves: a closed ticket with an
SLA step still to fire or mail still to send is never purged; topic ages override the default key by key;
addresses are matched whole, whatever their case or +tag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.jobs import retention
from mailgate.jobs.scrub import Needles
from mailgate.pipeline.ingest import Context, ingest
from mailgate.rules.retention import NEVER, parse_age, shown
from mailgate.storage.model import Event, Outbox, SlaTimer, Ticket
from mailgate.storage.store import Store
from tests.conftest import MakeConfig, run_cli

RULES = {
    "help_topics": [
        {"name": "General", "department": "Support"},
        {"name": "Legal", "department": "Support", "retention": {"raw": "never", "attachments": "1y"}},
    ],
    "default_help_topic": "General",
}
AGENTS = {"agents": [{"name": "Jane Doe", "email": "jane@example.com"}],
          "departments": [{"name": "Support", "members": ["jane@example.com"]}]}


@pytest.fixture
def desk(make_config: MakeConfig, clock: FixedClock) -> Iterator[Context]:
    config = make_config(rules=RULES, agents=AGENTS, retention={"raw": "90d", "tickets": "3y"})
    context = build_context(load_config(config), clock)
    context.db.upgrade()
    yield context
    context.db.dispose()


def _mail(sender: str, to: str, subject: str, body: str) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def _closed_ticket(ctx: Context, clock: FixedClock) -> str:
    env = Envelope("pat@customer.example", ("support@example.com",), "pipe", clock.now())
    number = ingest(_mail("Pat <pat@customer.example>", "support@example.com", "Broken", "x"), env, ctx).number
    assert number
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        agent_address = ctx.identity.plus_address("support@example.com", "a", ticket.id, "jane@example.com")
    reply = _mail("jane@example.com", agent_address, f"Re: [#{number}] Broken", "#status closed\nDone.")
    ingest(reply, Envelope("jane@example.com", (agent_address,), "pipe", clock.now()), ctx)
    return number


def test_a_ticket_waiting_for_mail_or_an_sla_step_is_never_purged(desk: Context, clock: FixedClock) -> None:
    number = _closed_ticket(desk, clock)
    clock.advance(timedelta(days=4 * 365))
    assert retention.run(desk).anonymised == []  # its notices are still in the outbox
    with desk.db.transaction() as session:
        session.execute(update(Outbox).values(status="sent"))
        ticket_id = session.scalars(select(Ticket.id).where(Ticket.number == number)).one()
        session.add(SlaTimer(ticket_id=ticket_id, target="resolution", step=100, plan="standard",
                             due_at=clock.now() + timedelta(hours=1)))
    assert retention.run(desk).anonymised == []  # an SLA step still to fire
    with desk.db.transaction() as session:
        session.execute(delete(SlaTimer))
    assert retention.run(desk, dry_run=True).anonymised == [number]
    assert retention.run(desk).anonymised == [number]
    assert retention.run(desk).anonymised == []  # once
    with desk.db.reader() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
        assert ticket.requester_email == "erased@erased.invalid" and ticket.requester_name == ""
        details = list(session.scalars(select(Event.detail).where(Event.ticket_id == ticket.id)))
    assert not [d for d in details if "pat@customer.example" in d.lower()]


def test_not_yet_old_enough(desk: Context, clock: FixedClock) -> None:
    number = _closed_ticket(desk, clock)
    with desk.db.transaction() as session:
        session.execute(update(Outbox).values(status="sent"))
    clock.advance(timedelta(days=3 * 365 - 1))
    report = retention.run(desk)
    assert report.anonymised == [] and report.raw == 2  # the raw mail's 90 days are up, the ticket's 3 years not
    clock.advance(timedelta(days=2))
    assert retention.run(desk).anonymised == [number]


def test_topic_ages_override_the_default_key_by_key(desk: Context) -> None:
    policy = retention.Policy(desk)
    assert policy.shown("General") == {"raw": "90d", "attachments": None, "tickets": "3y"}
    assert policy.shown("Legal") == {"raw": None, "attachments": "1y", "tickets": "3y"}  # never: kept
    assert policy.shown("No such topic") == policy.shown(None) == policy.shown("General")
    assert policy.shortest("raw") == timedelta(days=90)


def test_rules_test_shows_the_retention_of_the_mail_s_topic(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(rules=RULES, agents=AGENTS, retention={"raw": "90d"})
    mail = tmp_path / "m.eml"
    mail.write_bytes(_mail("pat@customer.example", "support@example.com", "Hi", "x"))
    out = run_cli(config, "rules", "test", str(mail), "--json")
    assert out.code == 0, out.stderr
    assert json.loads(out.stdout)["retention"] == {"raw": "90d", "attachments": None, "tickets": None}
    text = run_cli(config, "rules", "test", str(mail))
    assert "retention: raw 90d, attachments kept, tickets kept" in text.stdout


@pytest.mark.parametrize(("text", "age"), [("90d", timedelta(days=90)), ("1y", timedelta(days=365)),
                                           ("12w", timedelta(weeks=12)), ("never", NEVER)])
def test_ages(text: str, age: timedelta) -> None:
    assert parse_age(text) == age
    assert shown(age) == text


def test_addresses_are_matched_whole_whatever_their_case_or_tag() -> None:
    needles = Needles.build(["Pat+Shop@Customer.Example"], ["Pat Example"])
    for same in ("pat@customer.example", "PAT@CUSTOMER.EXAMPLE", "pat+news@customer.example"):
        assert needles.is_address(same)
    for other in ("spat@customer.example", "patrick@customer.example", "pat@customer.example.org",
                  "pat@sub.customer.example", "pat.x@customer.example"):
        assert not needles.is_address(other)
        assert needles.text(f"mail {other} now") == f"mail {other} now"
    assert needles.text("From: Pat Example <PAT+x@customer.example>") == "From: [erased] <erased@erased.invalid>"
