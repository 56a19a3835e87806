"""``outbox.flush`` on a real database and a real Maildir: each result is recorded before the next mail
goes out (and nothing goes out while a result cannot be recorded), and a row whose lease ran out, or
that someone else took over meanwhile, is neither sent nor marked as ours."""

from __future__ import annotations

import logging
import mailbox
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from mailgate.clock import FixedClock
from mailgate.config import Retry
from mailgate.domain import Envelope
from mailgate.outbound import outbox
from mailgate.outbound.transport import MaildirTransport, SendResult
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Outbox
from tests.conftest import DatabaseLocked, make_mail


def _tickets(ctx: Context, n: int) -> list[int]:
    for i in range(n):
        raw = make_mail(f"Question {i}", message_id=f"<q{i}@customer.example>")
        ingest(raw, Envelope("pat@customer.example", ("support@example.com",), "smtp", ctx.clock.now()), ctx)
    with ctx.db.reader() as session:
        return list(session.scalars(select(Outbox.id).where(Outbox.kind == "ack_new").order_by(Outbox.id)))


def _status(ctx: Context) -> dict[int, str]:
    with ctx.db.reader() as session:
        rows = session.execute(select(Outbox.id, Outbox.status).where(Outbox.kind == "ack_new")).all()
    return {row_id: status for row_id, status in rows}


class Slow(MaildirTransport):
    """A relay so slow that, after the first mail, the claimed rows' leases have run out."""

    def __init__(self, path: Path, clock: FixedClock) -> None:
        super().__init__(path)
        self.clock = clock

    def send(self, mail_from: str, recipients: list[str], data: bytes) -> SendResult:
        result = super().send(mail_from, recipients, data)
        self.clock.advance(outbox.LEASE + timedelta(seconds=1))
        return result


def _acks(path: Path) -> list[str]:
    """The acknowledgments in the Maildir (agents' new-ticket alerts land there too), by the mail they answer."""
    return sorted(str(m["In-Reply-To"]) for m in mailbox.Maildir(path) if "customer.example" in str(m["To"]))


def test_a_batch_is_sent_and_recorded_once(ctx: Context, clock: FixedClock, tmp_path: Path) -> None:
    ids = _tickets(ctx, 5)
    box = tmp_path / "out"
    result = outbox.flush(ctx.db, MaildirTransport(box), clock, Retry(), ctx.identity, limit=100)
    assert result.sent >= 5
    assert set(_status(ctx).values()) == {"sent"} and len(ids) == 5
    assert _acks(box) == sorted(f"<q{i}@customer.example>" for i in range(5))
    again = outbox.flush(ctx.db, MaildirTransport(box), clock, Retry(), ctx.identity, limit=100)
    assert again == outbox.FlushResult() and len(_acks(box)) == 5


def test_rows_whose_lease_ran_out_are_left_for_the_next_claim(ctx: Context, clock: FixedClock, tmp_path: Path) -> None:
    ids = _tickets(ctx, 3)
    with ctx.db.transaction() as session:  # only the acknowledgments are due
        session.execute(update(Outbox).where(Outbox.id.not_in(ids)).values(status="sent"))
    box = tmp_path / "out"
    first = outbox.flush(ctx.db, Slow(box, clock), clock, Retry(), ctx.identity, limit=10)
    assert first.sent == 1
    assert sorted(_status(ctx).values()) == ["sending", "sending", "sent"]
    assert len(_acks(box)) == 1
    second = outbox.flush(ctx.db, MaildirTransport(box), clock, Retry(), ctx.identity, limit=10)
    assert second.sent == 2  # the expired leases were claimed again, each row sent once in all
    assert set(_status(ctx).values()) == {"sent"}
    assert _acks(box) == sorted(f"<q{i}@customer.example>" for i in range(3))


class Retried(MaildirTransport):
    """While the first mail is out, an admin runs ``outbox retry`` on another row: it is no longer ours."""

    def __init__(self, path: Path, ctx: Context, row_id: int) -> None:
        super().__init__(path)
        self.ctx, self.row_id, self.done = ctx, row_id, False

    def send(self, mail_from: str, recipients: list[str], data: bytes) -> SendResult:
        if not self.done:
            self.done = True
            with self.ctx.db.transaction() as session:
                session.execute(update(Outbox).where(Outbox.id == self.row_id).values(status="pending"))
        return super().send(mail_from, recipients, data)


def test_a_row_taken_over_meanwhile_is_not_marked_sent(ctx: Context, clock: FixedClock, tmp_path: Path) -> None:
    ids = _tickets(ctx, 2)
    with ctx.db.transaction() as session:
        session.execute(update(Outbox).where(Outbox.id.not_in(ids)).values(status="sent"))
    result = outbox.flush(ctx.db, Retried(tmp_path / "out", ctx, ids[0]), clock, Retry(), ctx.identity, limit=10)
    assert result.sent == 1  # the other row; this one was sent too but its outcome is not recorded as ours
    assert _status(ctx) == {ids[0]: "pending", ids[1]: "sent"}


class Watched(MaildirTransport):
    """Locks the database after the first delivery; at every delivery, checks that all earlier ones
    were recorded as sent, which is the promise that bounds resends after a crash to the mail on the wire."""

    def __init__(self, path: Path, ctx: Context, config: Path) -> None:
        super().__init__(path)
        self.ctx, self.config = ctx, config
        self.sent: list[str] = []
        self.unrecorded_at_send: list[list[str]] = []
        self.lock: DatabaseLocked | None = None

    def send(self, mail_from: str, recipients: list[str], data: bytes) -> SendResult:
        with self.ctx.db.reader() as session:
            recorded = set(session.scalars(select(Outbox.message_id).where(Outbox.status == "sent")))
        self.unrecorded_at_send.append([m for m in self.sent if m not in recorded])
        result = super().send(mail_from, recipients, data)
        self.sent.append(next(line for line in data.decode().splitlines() if line.startswith("Message-ID:"))[12:])
        if self.lock is None:  # the database goes away right after the first mail is out
            self.lock = DatabaseLocked(self.config, table="outbox").__enter__()
        return result


class ReleaseOnError(logging.Handler):
    """Gives the database back once the sender has said it cannot record (an event, not a sleep)."""

    def __init__(self, transport: Watched) -> None:
        super().__init__(logging.ERROR)
        self.transport = transport
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "cannot be recorded" in record.getMessage() and self.transport.lock is not None:
            self.seen += 1
            self.transport.lock.__exit__(None, None, None)


def test_nothing_is_sent_while_a_result_cannot_be_recorded(ctx: Context, clock: FixedClock, tmp_path: Path,
                                                            config_path: Path) -> None:
    ids = _tickets(ctx, 3)
    with ctx.db.transaction() as session:
        session.execute(update(Outbox).where(Outbox.id.not_in(ids)).values(status="sent"))
    transport = Watched(tmp_path / "out", ctx, config_path)
    handler = ReleaseOnError(transport)
    logging.getLogger("mailgate.outbound.outbox").addHandler(handler)
    try:
        result = outbox.flush(ctx.db, transport, clock, Retry(), ctx.identity, limit=10)
    finally:
        logging.getLogger("mailgate.outbound.outbox").removeHandler(handler)
        if transport.lock is not None:
            transport.lock.__exit__(None, None, None)
    assert handler.seen >= 1, "the database lock never made a record fail"
    assert result.sent == 3 and set(_status(ctx).values()) == {"sent"}
    assert transport.unrecorded_at_send == [[], [], []]
    assert len(_acks(tmp_path / "out")) == 3
