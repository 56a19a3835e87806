"""Mailbox leases: one daemon at a time reads an IMAP mailbox, and a daemon that lost it is fenced off.

A lease is a row (mailbox, holder, token, expires). Taking a free or expired
lease raises its ``token``; renewing keeps it. Every comparison uses the
database's clock, so daemons whose machine clocks disagree still agree.

Fencing: the pipeline checks ``still_held`` in the very transaction that stores
a mail fetched under a lease (on PostgreSQL with ``FOR SHARE``, so a takeover
waits for that commit), and the IMAP poller moves mail only while its own
deadline (``Lease.valid``) has not passed. A daemon that was paused or cut off
past its lease finds both closed when it wakes up, and leaves the mail to the
new holder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from mailgate.storage.db import Database

SAFETY = 0.25  # the share of a lease a holder gives up early: its deadline falls before the database's


def db_now(session: Session) -> float:
    """Seconds since the epoch on the database server's clock (SQLite: this machine's)."""
    if session.get_bind().dialect.name == "sqlite":
        sql = "SELECT (julianday('now') - 2440587.5) * 86400.0"
    else:
        sql = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    return float(session.execute(text(sql)).scalar_one())


def _locking(session: Session, clause: str) -> str:
    return "" if session.get_bind().dialect.name == "sqlite" else f" {clause}"


@dataclass
class Lease:
    """A lease this daemon holds: the token to fence with, and the local deadline to stop acting by."""

    mailbox: str
    holder: str
    token: int
    ttl: float
    deadline: float = 0.0  # time.monotonic() after which this daemon must not touch the mailbox

    def extend(self, started: float) -> None:
        """Renewed by a statement sent at ``started`` (monotonic): valid for the lease minus a margin from then."""
        self.deadline = started + self.ttl * (1 - SAFETY)

    def valid(self) -> bool:
        return time.monotonic() < self.deadline


def acquire(db: Database, mailbox: str, holder: str, ttl: float) -> Lease | None:
    """Take ``mailbox`` if it is free, expired or already ours; None when another daemon holds it."""
    started = time.monotonic()
    with db.transaction() as session:
        now = db_now(session)
        row = session.execute(
            text(
                "SELECT holder, token, expires FROM mailbox_lease WHERE mailbox = :m" + _locking(session, "FOR UPDATE")
            ),
            {"m": mailbox},
        ).first()
        if row is None:
            token = 1
            done = session.execute(
                text(
                    "INSERT INTO mailbox_lease (mailbox, holder, token, expires, acquired) "
                    "VALUES (:m, :h, 1, :e, :n) ON CONFLICT (mailbox) DO NOTHING"
                ),
                {"m": mailbox, "h": holder, "e": now + ttl, "n": now},
            )
        elif row.holder == holder and row.expires > now:
            token = int(row.token)
            done = session.execute(
                text("UPDATE mailbox_lease SET expires = :e WHERE mailbox = :m AND token = :t"),
                {"m": mailbox, "t": token, "e": now + ttl},
            )
        elif row.expires <= now:
            token = int(row.token) + 1
            done = session.execute(
                text(
                    "UPDATE mailbox_lease SET holder = :h, token = :t, expires = :e, acquired = :n "
                    "WHERE mailbox = :m AND token = :old"
                ),
                {"m": mailbox, "h": holder, "t": token, "e": now + ttl, "n": now, "old": row.token},
            )
        else:
            return None
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return None
    lease = Lease(mailbox, holder, token, ttl)
    lease.extend(started)
    return lease


def renew(db: Database, lease: Lease) -> bool:
    """Extend a lease still held; False once it expired or passed to another daemon (then it is lost)."""
    started = time.monotonic()
    with db.transaction(relaxed=True) as session:
        now = db_now(session)
        done = session.execute(
            text(
                "UPDATE mailbox_lease SET expires = :e "
                "WHERE mailbox = :m AND holder = :h AND token = :t AND expires > :n"
            ),
            {"m": lease.mailbox, "h": lease.holder, "t": lease.token, "e": now + lease.ttl, "n": now},
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            lease.deadline = 0.0
            return False
    lease.extend(started)
    return True


def release(db: Database, lease: Lease) -> None:
    """Give a mailbox up at once (a clean stop, or a fair share to make): another may take it now."""
    lease.deadline = 0.0
    with db.transaction(relaxed=True) as session:
        session.execute(
            text("UPDATE mailbox_lease SET expires = 0 WHERE mailbox = :m AND holder = :h AND token = :t"),
            {"m": lease.mailbox, "h": lease.holder, "t": lease.token},
        )


def still_held(session: Session, mailbox: str, token: int) -> bool:
    """Inside the transaction that stores a mail: is the lease it was fetched under still current?"""
    now = db_now(session)
    row = session.execute(
        text("SELECT expires FROM mailbox_lease WHERE mailbox = :m AND token = :t" + _locking(session, "FOR SHARE")),
        {"m": mailbox, "t": token},
    ).first()
    return row is not None and float(row.expires) > now


@dataclass(frozen=True)
class LeaseRow:
    mailbox: str
    holder: str
    token: int
    expires_in: float  # seconds; negative once expired
    held_for: float


def leases(session: Session) -> list[LeaseRow]:
    now = db_now(session)
    rows = session.execute(
        text("SELECT mailbox, holder, token, expires, acquired FROM mailbox_lease ORDER BY mailbox")
    ).all()
    return [LeaseRow(r.mailbox, r.holder, int(r.token), r.expires - now, now - r.acquired) for r in rows]
