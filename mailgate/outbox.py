"""Deliver outbox rows: claim due rows, send after the claim commits, then record the result.

A claim is a short transaction that moves rows to ``sending`` with a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
so several daemons never send one row twice; a daemon that dies mid-send
leaves a lease that expires and the row is retried. The relay is never
called inside a database transaction. A row whose lease ran out before its
turn is skipped (another sender may own it now), and a row that cannot be
composed or sent is retried with backoff without holding up the others.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from mailgate.adapters.smtp_out import PermFailure, Sent, TempFailure, Transport
from mailgate.blobs import BlobStore
from mailgate.clock import Clock
from mailgate.compose import compose
from mailgate.config import Retry
from mailgate.db import Database
from mailgate.identity import Identity
from mailgate.model import Event, Outbox

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


def claim(db: Database, now: datetime, limit: int) -> list[Outbox]:
    """The claimed rows, loaded whole and detached: sending them needs no further read."""
    due = or_(
        and_(Outbox.status == "pending", Outbox.next_attempt_at <= now),
        and_(Outbox.status == "sending", Outbox.locked_until < now),
    )
    query = select(Outbox).where(due).order_by(Outbox.next_attempt_at, Outbox.id).limit(limit)
    if not db.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    with db.transaction() as session:
        rows = session.scalars(query).all()
        for row in rows:
            row.status = "sending"
            row.locked_until = now + LEASE
            row.attempts += 1
        return list(rows)


Result = Sent | TempFailure | PermFailure
# Results are recorded once per claimed batch or per second, whichever comes first: each write
# transaction makes intake wait its turn, and a crash resends at most what was sent in that second.
RECORD_EVERY = 50
RECORD_WITHIN = 1.0


def _record_all(db: Database, results: list[tuple[int, Result]], now: datetime, retry: Retry) -> list[str]:
    """One transaction for several rows' results: each write transaction makes intake wait its turn.
    Deliveries, nearly all of them, are one UPDATE; failures need each row's attempts and age."""
    sent_ids = [row_id for row_id, result in results if isinstance(result, Sent)]
    with db.transaction() as session:
        recorded: set[int] = set()
        if sent_ids:
            mark = (
                update(Outbox)
                .where(Outbox.id.in_(sent_ids), Outbox.status == "sending")
                .values(status="sent", sent_at=now, last_error=None, locked_until=None)
                .returning(Outbox.id)
                .execution_options(synchronize_session=False)
            )
            recorded = set(session.scalars(mark).all())
        return [
            ("sent" if row_id in recorded else "lost")
            if isinstance(result, Sent)
            else _record_failure(session, row_id, result, now, retry)
            for row_id, result in results
        ]


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
        return "retried"
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


def flush(
    db: Database,
    transport: Transport,
    clock: Clock,
    retry: Retry,
    identity: Identity,
    limit: int = 50,
    blobs: BlobStore | None = None,
    sign: Signer | None = None,
) -> FlushResult:
    counts = {"sent": 0, "retried": 0, "failed": 0, "lost": 0}
    done: list[tuple[int, Result]] = []
    since = 0.0

    def record() -> None:
        for (row_id, result), outcome in zip(done, _record_all(db, done, clock.now(), retry), strict=True):
            counts[outcome] += 1
            if outcome != "sent":
                log.warning("outbox #%s %s: %s", row_id, outcome, getattr(result, "reason", ""))
        done.clear()

    for row in claim(db, clock.now(), limit):
        row_id = row.id
        try:
            result = _send_one(row, transport, clock, identity, blobs, sign)
        except Exception as exc:  # a bug or odd data in one row must not stall the rows claimed after it
            log.exception("outbox #%s could not be sent", row_id)
            result = TempFailure(f"internal error: {exc!r}")
        if result is None:
            counts["lost"] += 1  # our lease ran out while earlier rows were sent; another sender may own it
            continue
        if not done:
            since = time.monotonic()
        done.append((row_id, result))
        if len(done) >= RECORD_EVERY or time.monotonic() - since >= RECORD_WITHIN:
            record()
    if done:
        record()
    return FlushResult(counts["sent"], counts["retried"], counts["failed"])
