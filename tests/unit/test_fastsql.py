"""fastsql runs prebuilt statements on the DBAPI cursor: values must round-trip exactly as through
SQLAlchemy (datetimes with their zone, JSON, booleans), on SQLite and on PostgreSQL alike, and errors
must surface as SQLAlchemy's exceptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from mailgate.pipeline.ingest import Context
from mailgate.storage.fastsql import fetch, run
from mailgate.storage.model import Outbox

WHEN = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
RECENT = select(Outbox.created_at, Outbox.automatic, Outbox.headers).where(
    Outbox.recipient == bindparam("recipient"), Outbox.created_at >= bindparam("since")
)
BY_KEY = select(Outbox.id).where(Outbox.dedupe_key.in_(["k1", "k2"]))  # expanding IN: left to SQLAlchemy


def _row(key: str, **extra: object) -> dict[str, object]:
    return {
        "dedupe_key": key, "ticket_id": None, "kind": "ack_new", "mail_from": "support@example.com",
        "recipients": ["pat@customer.example"], "recipient": "pat@customer.example", "automatic": True,
        "message_id": f"<{key}@example.com>", "subject": "Hello", "headers": {"Thread-Topic": "Grüße"},
        "text": "t", "html": None, "status": "pending", "created_at": WHEN, "next_attempt_at": WHEN, **extra,
    }


def test_rows_written_and_read_back_as_sqlalchemy_does(ctx: Context) -> None:
    with ctx.db.transaction() as session:
        conn = session.connection()
        run(conn, insert(Outbox), [_row("k1"), _row("k2", automatic=False)])  # attempts etc.: column defaults
    with ctx.db.transaction() as session:
        orm = session.scalars(select(Outbox).order_by(Outbox.id)).all()
        fast = fetch(session.connection(), RECENT, {"recipient": "pat@customer.example", "since": WHEN})
        ids = fetch(session.connection(), BY_KEY, {})
    assert [(o.created_at, o.automatic, o.headers, o.attempts, o.attachments) for o in orm] == [
        (WHEN, True, {"Thread-Topic": "Grüße"}, 0, []),
        (WHEN, False, {"Thread-Topic": "Grüße"}, 0, []),
    ]
    assert fast == [(WHEN, True, {"Thread-Topic": "Grüße"}), (WHEN, False, {"Thread-Topic": "Grüße"})]
    assert fast[0][0].tzinfo is not None
    assert sorted(i for (i,) in ids) == [o.id for o in orm]
    with ctx.db.transaction() as session:
        later = fetch(session.connection(), RECENT, {"recipient": "pat@customer.example",
                                                     "since": WHEN + timedelta(microseconds=1)})
    assert later == []


def test_database_errors_are_sqlalchemy_errors(ctx: Context) -> None:
    with pytest.raises(IntegrityError), ctx.db.transaction() as session:
        run(session.connection(), insert(Outbox), [_row("dup"), _row("dup")])
