"""The retention job: raw mail, attachment files and whole closed tickets purged when their age is up.

Ages per help topic (rules/retention.py), the default in mailgate.yaml ``retention:``. Three passes,
each reading its candidates in id order a batch at a time, each batch one transaction that locks its
tickets and looks again before it acts, so a purge of a million rows is a thousand short transactions
and a customer's reply that reopens a ticket meanwhile wins:

1. ``tickets``: a closed ticket is made anonymous (jobs/erasure.py) and marked by an ``anonymised``
   event, which is also what keeps the next run from doing it again.
2. ``raw``: the received mail's bytes of closed tickets (and of mail that opened no ticket: quarantine,
   rejected, duplicates, by the default age, since such mail has no help topic).
3. ``attachments``: the files of closed tickets' attachments; the rows stay, marked purged.

A ticket is touched only when it is ``closed``, was closed longer ago than the age, has no SLA step
waiting and no outbox mail waiting to go; the mail itself must be older than the age, too. Every daemon
runs the job every ``retention.run_every``; on PostgreSQL the passes are taken by one daemon at a time
(an advisory lock; the others skip them), and a pass that finds nothing left costs only its reads. Each
daemon then sweeps its own attachment folder (jobs/blobsweep.py).

A dry run does the same work in transactions that are rolled back and touches no file, so what it
reports is what a run would do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from mailgate.domain import InboundStatus, MessageKind, Status
from mailgate.jobs import blobsweep
from mailgate.jobs.erasure import PURGED, Counts, Scope, erase_in_ticket, event, purge_attachments, purge_raw
from mailgate.jobs.scrub import Needles
from mailgate.logformat import log_event
from mailgate.pipeline.ingest import Context
from mailgate.rules.retention import KINDS, effective, shown
from mailgate.storage.db import Database
from mailgate.storage.model import (
    AttachmentRow,
    Event,
    Inbound,
    InboundRaw,
    Message,
    Outbox,
    Participant,
    SlaTimer,
    Ticket,
)

log = logging.getLogger(__name__)

LOCK = 0x6D67_7274  # PostgreSQL advisory lock key of the retention passes
ANONYMISED = "anonymised"  # the event kind that marks a ticket made anonymous
REDACTED = "[removed by the retention policy]"
LISTED = 1000  # ticket numbers listed per action in the report; counts are always whole


class _DryRun(Exception):
    """Raised at the end of a dry run's batch so its transaction rolls back."""


@dataclass
class Report:
    dry_run: bool
    skipped: str | None = None
    anonymised: list[str] = field(default_factory=list)
    anonymised_ids: set[int] = field(default_factory=set)
    raw: int = 0
    raw_tickets: set[str] = field(default_factory=set)
    raw_unticketed: int = 0  # quarantined, rejected, duplicate ... mail
    attachments: int = 0
    attachment_tickets: set[str] = field(default_factory=set)
    files: int = 0
    counts: Counts = field(default_factory=Counts)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "skipped": self.skipped,
            "tickets_anonymised": {"count": len(self.anonymised), "tickets": sorted(self.anonymised)[:LISTED]},
            "raw_mail": {"count": self.raw, "tickets": sorted(self.raw_tickets)[:LISTED],
                         "without_ticket": self.raw_unticketed},
            "attachments": {"count": self.attachments, "tickets": sorted(self.attachment_tickets)[:LISTED]},
            "files_deleted": self.files,
        }


class Policy:
    """The ages that apply to each help topic's tickets (a ticket of no or an unknown topic: the default)."""

    def __init__(self, ctx: Context) -> None:
        default = ctx.config.main.retention
        self.default = effective(None, default)
        self.topics = {t.name: effective(t.retention, default) for t in ctx.config.rules.help_topics}

    def age(self, topic: str | None, kind: str) -> timedelta | None:
        return self.topics.get(topic or "", self.default)[kind]

    def shortest(self, kind: str) -> timedelta | None:
        ages = [a for a in (self.default[kind], *(t[kind] for t in self.topics.values())) if a is not None]
        return min(ages) if ages else None

    def any(self) -> bool:
        return any(self.shortest(kind) is not None for kind in KINDS)

    def shown(self, topic: str | None) -> dict[str, str | None]:
        return {kind: shown(self.age(topic, kind)) for kind in KINDS}


def run(ctx: Context, *, dry_run: bool = False, stop: threading.Event | None = None) -> Report:
    report = Report(dry_run)
    policy = Policy(ctx)
    now = ctx.clock.now()
    with _exclusive(ctx.db) as mine:
        if not mine:
            report.skipped = "another daemon is running the retention passes"
        elif policy.any():
            _anonymise(ctx, policy, now, report, stop)
            _raw(ctx, policy, now, report, stop)
            _attachments(ctx, policy, now, report, stop)
    if dry_run:
        report.files = blobsweep.would_free(ctx.db, ctx.blobs, report.counts.freed, report.counts.purged_rows)
    elif policy.any() or _any_purged(ctx.db):
        report.files = blobsweep.delete_unneeded(ctx.db, ctx.blobs, report.counts.freed)
        report.files += blobsweep.sweep(ctx.db, ctx.blobs)
    if not dry_run:
        log_event(log, "retention run", logging.INFO, anonymised=len(report.anonymised), raw=report.raw,
                  attachments=report.attachments, files=report.files, skipped=report.skipped or "")
    return report


def _any_purged(db: Database) -> bool:
    """Whether another daemon or ``forget`` purged files this daemon may still hold (sweep only then)."""
    with db.reader() as session:
        return session.scalar(select(AttachmentRow.id).where(AttachmentRow.sha256 == PURGED).limit(1)) is not None


@contextmanager
def _exclusive(db: Database) -> Iterator[bool]:
    """On PostgreSQL a session lock on a connection of its own, released if this process dies; SQLite has
    one daemon, and its batches are serialised by the write lock anyway."""
    if db.is_sqlite:
        yield True
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        got = bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({LOCK})").scalar())
        try:
            yield got
        finally:
            if got:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({LOCK})")


@contextmanager
def unit(db: Database, dry_run: bool) -> Iterator[Session]:
    """One batch's transaction; a dry run's is rolled back."""
    try:
        with db.transaction() as session:
            yield session
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass


def _locked(session: Session, query: Select[Any]) -> Select[Any]:
    return query if session.get_bind().dialect.name == "sqlite" else query.with_for_update(skip_locked=True)


def _busy(session: Session, ticket_ids: list[int]) -> set[int]:
    """Tickets with an SLA step still to fire or mail still to send: never purged while so."""
    if not ticket_ids:
        return set()
    timers = select(SlaTimer.ticket_id).where(SlaTimer.ticket_id.in_(ticket_ids), SlaTimer.fired_at.is_(None))
    mail = select(Outbox.ticket_id).where(Outbox.ticket_id.in_(ticket_ids), Outbox.status.in_(("pending", "sending")))
    return {t for t in session.scalars(timers)} | {t for t in session.scalars(mail) if t is not None}


def _due(ticket: Ticket, age: timedelta | None, now: datetime) -> bool:
    return (age is not None and ticket.status == Status.CLOSED.value and ticket.closed_at is not None
            and ticket.closed_at <= now - age)


def _tickets(session: Session, ids: set[int]) -> dict[int, Ticket]:
    if not ids:
        return {}
    query = _locked(session, select(Ticket).where(Ticket.id.in_(sorted(ids))).order_by(Ticket.id))
    return {t.id: t for t in session.scalars(query)}


def _stopped(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


# --------------------------------------------------------------------------- 1. whole tickets
def _anonymise(ctx: Context, policy: Policy, now: datetime, report: Report, stop: threading.Event | None) -> None:
    shortest = policy.shortest("tickets")
    if shortest is None:
        return
    batch, after = ctx.config.main.retention.batch_size, 0
    marked = exists().where(Event.ticket_id == Ticket.id, Event.kind == ANONYMISED)
    while not _stopped(stop):
        with unit(ctx.db, report.dry_run) as session:
            query = (select(Ticket).where(Ticket.id > after, Ticket.status == Status.CLOSED.value,
                                          Ticket.closed_at <= now - shortest, ~marked)
                     .order_by(Ticket.id).limit(batch))
            tickets = list(session.scalars(_locked(session, query)))
            if not tickets:
                break
            after = tickets[-1].id
            busy = _busy(session, [t.id for t in tickets])
            for ticket in tickets:
                age = policy.age(ticket.help_topic, "tickets")
                if ticket.id in busy or not _due(ticket, age, now):
                    continue
                counts = erase_in_ticket(session, ticket, ticket_scope(ctx, session, ticket))
                event(session, ticket.id, now, ANONYMISED,
                      f"retention: anonymised {shown(age)} after closing; {counts.summary()}")
                report.anonymised.append(ticket.number)
                report.anonymised_ids.add(ticket.id)
                report.raw += counts.raw
                report.attachments += counts.attachments
                report.counts.add(counts)
        if len(tickets) < batch:
            break


def desk_addresses(ctx: Context) -> set[str]:
    """Agents and our own addresses: never a customer's data to erase."""
    agents = {a.email for a in ctx.config.agents.agents}
    for dept in ctx.config.agents.departments:
        agents |= set(dept.members) | ({dept.manager} if dept.manager else set())
    return agents | set(ctx.own_addresses)


def ticket_scope(ctx: Context, session: Session, ticket: Ticket) -> Scope:
    """Everyone in the ticket but the desk: requester, collaborators, whoever wrote in it."""
    desk = desk_addresses(ctx)
    people = {ticket.requester_email: ticket.requester_name}
    for email, name in session.execute(select(Participant.email, Participant.name)
                                       .where(Participant.ticket_id == ticket.id)):
        people.setdefault(email, name)
    for email, name, kind in session.execute(select(Message.from_email, Message.from_name, Message.kind)
                                             .where(Message.ticket_id == ticket.id)):
        if kind not in (MessageKind.AGENT.value, MessageKind.NOTE.value):
            people.setdefault(email, name)
    for mail_from, sender in session.execute(select(Inbound.mail_from, Inbound.sender)
                                             .where(Inbound.ticket_id == ticket.id)):
        people.setdefault(mail_from, "")
        people.setdefault(sender or "", "")
    customers = {e.lower(): n for e, n in people.items() if e and e.lower() not in desk}
    names = [n for e, n in people.items() if e.lower() in customers and n]
    needles = Needles.build(customers, names)
    return Scope(needles, lambda address: bool(address) and address.lower() not in desk and needles.is_address(address),
                 REDACTED, whole_ticket=True)


# --------------------------------------------------------------------------- 2. raw mail
def _raw(ctx: Context, policy: Policy, now: datetime, report: Report, stop: threading.Event | None) -> None:
    shortest = policy.shortest("raw")
    if shortest is None:
        return
    batch, after = ctx.config.main.retention.batch_size, 0
    default = policy.age(None, "raw")
    while not _stopped(stop):
        with unit(ctx.db, report.dry_run) as session:
            query = (select(Inbound.id, Inbound.ticket_id, Inbound.received_at, Inbound.status)
                     .join(InboundRaw, InboundRaw.inbound_id == Inbound.id)
                     .where(Inbound.id > after, Inbound.received_at <= now - shortest)
                     .order_by(Inbound.id).limit(batch))
            rows = list(session.execute(query))
            if not rows:
                break
            after = rows[-1][0]
            wanted = {r.ticket_id for r in rows if r.ticket_id is not None and r.ticket_id not in report.anonymised_ids}
            tickets = _tickets(session, wanted)
            busy = _busy(session, list(tickets))
            gone, unticketed = [], 0
            for inbound_id, ticket_id, received_at, status in rows:
                if status == InboundStatus.RECEIVED.value:  # not processed yet (a crash): its bytes are the mail
                    continue
                if ticket_id is None:
                    if default is not None and received_at <= now - default:
                        gone.append(inbound_id)
                        unticketed += 1
                    continue
                ticket = tickets.get(ticket_id)
                age = policy.age(ticket.help_topic, "raw") if ticket is not None else None
                if ticket is None or ticket_id in busy or not _due(ticket, age, now):
                    continue
                assert age is not None
                if received_at <= now - age:
                    gone.append(inbound_id)
                    report.raw_tickets.add(ticket.number)
            report.raw += purge_raw(session, gone)
            report.raw_unticketed += unticketed
        if len(rows) < batch:
            break


# --------------------------------------------------------------------------- 3. attachment files
def _attachments(ctx: Context, policy: Policy, now: datetime, report: Report, stop: threading.Event | None) -> None:
    shortest = policy.shortest("attachments")
    if shortest is None:
        return
    batch, after = ctx.config.main.retention.batch_size, 0
    while not _stopped(stop):
        with unit(ctx.db, report.dry_run) as session:
            query = (select(AttachmentRow, Message.ticket_id, Message.created_at)
                     .join(Message, Message.id == AttachmentRow.message_row_id)
                     .where(AttachmentRow.id > after, AttachmentRow.sha256 != PURGED,
                            Message.created_at <= now - shortest)
                     .order_by(AttachmentRow.id).limit(batch))
            rows = list(session.execute(query))
            if not rows:
                break
            after = rows[-1][0].id
            tickets = _tickets(session, {r[1] for r in rows if r[1] not in report.anonymised_ids})
            busy = _busy(session, list(tickets))
            for row, ticket_id, created_at in rows:
                ticket = tickets.get(ticket_id)
                age = policy.age(ticket.help_topic, "attachments") if ticket is not None else None
                if ticket is None or ticket_id in busy or not _due(ticket, age, now):
                    continue
                assert age is not None
                if created_at <= now - age:
                    report.counts.freed |= purge_attachments([row])
                    report.counts.purged_rows.add(row.id)
                    report.attachments += 1
                    report.attachment_tickets.add(ticket.number)
        if len(rows) < batch:
            break
