"""Deliver outbox rows: claim due rows, send after the claim commits, then record the result.

A claim is a short transaction that moves rows to ``sending`` with a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
so several daemons never send one row twice; a daemon that dies mid-send
leaves a lease that expires and the row is retried. The relay is never
called inside a database transaction. A row whose lease ran out before its
turn is skipped (another sender may own it now), and a row that cannot be
composed or sent is retried with backoff without holding up the others.

Exactly once is out of reach when the relay and the database are two systems
(a crash can fall between "the relay took it" and "we wrote that down"), so
the bound is made as tight as it can be: one mail on the wire at a time, its
result recorded before the next goes out, and no sending at all while a
result cannot be recorded. After any crash or outage at most one mail per
sender is sent twice, never a batch.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from mailgate.clock import Clock
from mailgate.config import Retry
from mailgate.errors import TempFail
from mailgate.identity import Identity
from mailgate.logformat import log_event
from mailgate.metrics import DELIVERIES
from mailgate.outbound.compose import compose
from mailgate.outbound.transport import PermFailure, Sent, TempFailure, Transport
from mailgate.storage.blobs import BlobStore
from mailgate.storage.db import Database
from mailgate.storage.model import Event, Outbox

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class FlushResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0


def backoff(attempts: int, retry: Retry, jitter: float | None = None) -> timedelta:
    """Exponential backoff with +-20 % jitter, so a relay outage does not end in a thundering herd."""
    base = min(retry.first * (2 ** max(0, attempts - 1)), retry.maximum)
    factor = 1 + (random.uniform(-0.2, 0.2) if jitter is None else jitter)
    return timedelta(seconds=base.total_seconds() * factor)


def claim(db: Database, now: datetime, limit: int, lease: timedelta = LEASE) -> list[Outbox]:
    """The claimed rows, loaded whole and detached: sending them needs no further read."""
    due = or_(
        and_(Outbox.status == "pending", Outbox.next_attempt_at <= now),
        and_(Outbox.status == "sending", Outbox.locked_until < now),
    )
    query = select(Outbox).where(due).order_by(Outbox.next_attempt_at, Outbox.id).limit(limit)
    if not db.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    with db.transaction(relaxed=True) as session:  # lost to a power cut, a claim is only a claim again
        rows = session.scalars(query).all()
        for row in rows:
            row.status = "sending"
            row.locked_until = now + lease
            row.attempts += 1
        return list(rows)


def _release(db: Database, row_ids: list[int]) -> None:
    """Hand back claimed rows we will not send now (stopping), so they need not wait for their lease."""
    if not row_ids:
        return
    try:
        with db.transaction(relaxed=True) as session:
            session.execute(
                update(Outbox)
                .where(Outbox.id.in_(row_ids), Outbox.status == "sending")
                .values(status="pending", locked_until=None)
                .execution_options(synchronize_session=False)
            )
    except TempFail:  # the database is away: the leases run out and the rows are claimed again
        pass


Result = Sent | TempFailure | PermFailure


def _record(db: Database, row_id: int, result: Result, now: datetime, retry: Retry) -> str:
    """Record one row's result in a write transaction of its own ("sent", "retried", "failed" or "lost").

    A delivery is recorded before the next mail goes out, so a crash at any moment leaves at most the
    one mail on the wire unrecorded, to be sent again when its lease runs out. The commit does not wait
    for the disk (``relaxed``): it survives a crash of mailgate, and losing it only resends one mail.
    """
    with db.transaction(relaxed=True) as session:
        if isinstance(result, Sent):
            mark = (
                update(Outbox)
                .where(Outbox.id == row_id, Outbox.status == "sending")
                .values(status="sent", sent_at=now, last_error=None, locked_until=None)
                .returning(Outbox.id)
                .execution_options(synchronize_session=False)
            )
            return "sent" if session.scalars(mark).first() is not None else "lost"
        return _record_failure(session, row_id, result, now, retry)


def _record_failure(
    session: Session, row_id: int, result: TempFailure | PermFailure, now: datetime, retry: Retry
) -> str:
    row = session.get(Outbox, row_id)
    if row is None or row.status != "sending":
        return "lost"
    row.locked_until = None
    row.last_error = result.reason[:2000]
    expired = now - row.created_at >= retry.give_up_after
    if isinstance(result, TempFailure) and not expired:
        row.status = "pending"
        row.next_attempt_at = now + backoff(row.attempts, retry)
        return f"retried:{row.next_attempt_at.isoformat()}"
    row.status = "failed"
    if row.ticket_id is not None:
        why = "gave up after retries" if isinstance(result, TempFailure) else "refused"
        session.add(
            Event(
                ticket_id=row.ticket_id,
                at=now,
                kind="notification_failed",
                detail=f"{row.kind} to {', '.join(row.recipients)} {why}: {result.reason[:500]}",
            )
        )
    return "failed"


Signer = Callable[[bytes], bytes]


def _send_one(
    row: Outbox,
    transport: Transport,
    clock: Clock,
    identity: Identity,
    blobs: BlobStore | None,
    sign: Signer | None = None,
) -> Sent | TempFailure | PermFailure | None:
    """None when the row's lease ran out while earlier rows were sent: another sender may own it now."""
    now = clock.now()
    if row.locked_until is None or row.locked_until <= now:
        return None
    data = compose(row, identity.loop_value, now, blobs)
    data = sign(data) if sign is not None else data
    # VERP: a bounce comes back to support+b<row>-<sig>@..., naming the row (and so ticket and recipient)
    mail_from = identity.plus_address(row.mail_from, "b", row.id)
    return transport.send(mail_from, list(row.recipients), data)


def _record_until_done(
    db: Database, row_id: int, result: Result, clock: Clock, retry: Retry, stopping: threading.Event | None
) -> str | None:
    """Record the result, however long the database is away: sending stops meanwhile, since every mail
    sent without its record would be sent again. None when told to stop before the record could be made."""
    delay = 0.5
    while True:
        try:
            return _record(db, row_id, result, clock.now(), retry)
        except TempFail as exc:
            log.error("outbox #%s: its result cannot be recorded (%s); sending waits until it can", row_id, exc)
        if stopping is not None and stopping.wait(delay):
            log.error("outbox #%s: stopping before its result was recorded; it may be sent once more", row_id)
            return None
        if stopping is None:
            time.sleep(delay)  # a caller that cannot be stopped: wait all the same, since sending must not go on
        delay = min(delay * 2, 10.0)


def _log_delivery(row: Outbox, outcome: str, result: Result, next_attempt: str) -> None:
    """One line per delivery attempt: sent at INFO, a retry or a failure at WARNING (someone is not told)."""
    DELIVERIES.labels(outcome).inc()
    answer = result.detail if isinstance(result, Sent) else result.reason
    level = logging.INFO if outcome == "sent" else logging.WARNING
    log_event(log, "mail sent" if outcome == "sent" else f"mail {outcome}", level, outbox=row.id,
              ticket_id=row.ticket_id, kind=row.kind, to=row.recipient, attempt=row.attempts,
              next_attempt=next_attempt or None, answer=answer[:300])


def flush(
    db: Database,
    transport: Transport,
    clock: Clock,
    retry: Retry,
    identity: Identity,
    limit: int = 50,
    blobs: BlobStore | None = None,
    sign: Signer | None = None,
    *,
    lease: timedelta = LEASE,
    stopping: threading.Event | None = None,
) -> FlushResult:
    """Send the due rows one at a time, each result recorded before the next mail goes out."""
    counts = {"sent": 0, "retried": 0, "failed": 0, "lost": 0}
    rows = claim(db, clock.now(), limit, lease)
    for index, row in enumerate(rows):
        if stopping is not None and stopping.is_set():
            _release(db, [r.id for r in rows[index:]])
            break
        row_id = row.id
        try:
            result = _send_one(row, transport, clock, identity, blobs, sign)
        except Exception as exc:  # a bug or odd data in one row must not stall the rows claimed after it
            log.exception("outbox #%s could not be sent", row_id)
            result = TempFailure(f"internal error: {exc!r}")
        if result is None:
            counts["lost"] += 1  # our lease ran out while earlier rows were sent; another sender may own it
            continue
        recorded = _record_until_done(db, row_id, result, clock, retry, stopping)
        if recorded is None:
            break
        outcome, _, next_attempt = recorded.partition(":")
        counts[outcome] += 1
        _log_delivery(row, outcome, result, next_attempt)
    return FlushResult(counts["sent"], counts["retried"], counts["failed"])
