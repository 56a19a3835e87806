"""Every query the pipeline needs, in one place, over one session.

Stages ask questions ("seen this mail?", "which ticket owns this
Message-ID?") instead of composing SQL, so the schema can change behind
this file without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailgate.domain import InboundStatus
from mailgate.model import Event, Inbound, Message, Outbox, Participant, Suppression, ThreadRef, Ticket

_DEDUPE_STATUSES = (InboundStatus.ACCEPTED.value, InboundStatus.QUARANTINED.value)


class Store:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- inbound -------------------------------------------------------
    def find_duplicate(self, message_id: str | None, sha256: str, exclude_id: int | None = None) -> Inbound | None:
        """An earlier stored copy of the same mail (same Message-ID and same content).

        On PostgreSQL several writers run at once, so the same mail arriving twice
        concurrently is serialised by a transaction-scoped advisory lock on its hash:
        the second copy waits for the first to commit and then finds it.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(select(func.pg_advisory_xact_lock(int(sha256[:15], 16))))
        query = select(Inbound).where(Inbound.sha256 == sha256, Inbound.status.in_(_DEDUPE_STATUSES))
        query = query.where(Inbound.message_id == message_id if message_id else Inbound.message_id.is_(None))
        if exclude_id is not None:
            query = query.where(Inbound.id != exclude_id)
        return self.session.scalars(query.order_by(Inbound.id).limit(1)).first()

    def inbound(self, inbound_id: int) -> Inbound | None:
        return self.session.get(Inbound, inbound_id)

    def inbound_by_status(self, status: str, limit: int = 100) -> Sequence[Inbound]:
        query = select(Inbound).where(Inbound.status == status).order_by(Inbound.id.desc()).limit(limit)
        return self.session.scalars(query).all()

    # --- tickets -------------------------------------------------------
    def ticket(self, ticket_id: int) -> Ticket | None:
        return self.session.get(Ticket, ticket_id)

    def ticket_by_number(self, number: str) -> Ticket | None:
        return self.session.scalars(select(Ticket).where(Ticket.number == number)).first()

    def number_taken(self, number: str) -> bool:
        return self.session.scalar(select(func.count()).where(Ticket.number == number)) != 0

    def ticket_id_for_message_ids(self, message_ids: Iterable[str]) -> int | None:
        ids = [m for m in message_ids if m]
        if not ids:
            return None
        rows = self.session.execute(
            select(ThreadRef.message_id, ThreadRef.ticket_id).where(ThreadRef.message_id.in_(ids))
        ).all()
        found = {mid: tid for mid, tid in rows}
        return next((found[m] for m in ids if m in found), None)

    def tickets(self, status: str | None = None, limit: int | None = None) -> Sequence[Ticket]:
        query = select(Ticket).order_by(Ticket.id)
        if status:
            query = query.where(Ticket.status == status)
        if limit:
            query = query.limit(limit)
        return self.session.scalars(query).all()

    def participants(self, ticket_id: int) -> Sequence[Participant]:
        return self.session.scalars(
            select(Participant).where(Participant.ticket_id == ticket_id).order_by(Participant.id)
        ).all()

    def messages(self, ticket_id: int) -> Sequence[Message]:
        return self.session.scalars(select(Message).where(Message.ticket_id == ticket_id).order_by(Message.id)).all()

    def events(self, ticket_id: int) -> Sequence[Event]:
        return self.session.scalars(select(Event).where(Event.ticket_id == ticket_id).order_by(Event.id)).all()

    def thread_message_ids(self, ticket_id: int) -> list[str]:
        """The ticket's Message-IDs in order, for an outgoing References header."""
        rows = self.session.scalars(
            select(ThreadRef.message_id).where(ThreadRef.ticket_id == ticket_id).order_by(ThreadRef.id)
        ).all()
        return list(rows)

    # --- outbox --------------------------------------------------------
    def automatic_sent_at(self, recipient: str, since: datetime, ticket_id: int | None = None) -> list[datetime]:
        """When automatic mail was queued for this recipient (on this ticket), for rate limits."""
        query = select(Outbox.created_at).where(
            Outbox.recipient == recipient, Outbox.automatic.is_(True), Outbox.created_at >= since
        )
        if ticket_id is not None:
            query = query.where(Outbox.ticket_id == ticket_id)
        return list(self.session.scalars(query))

    def suppressed_until(self, address: str) -> datetime | None:
        row = self.session.get(Suppression, address.lower())
        return row.until if row else None

    def outbox_key_exists(self, key: str) -> bool:
        return self.session.scalar(select(func.count()).where(Outbox.dedupe_key == key)) != 0

    def outbox_rows(self, status: str | None = None, limit: int = 200) -> Sequence[Outbox]:
        query = select(Outbox).order_by(Outbox.id.desc()).limit(limit)
        if status:
            query = query.where(Outbox.status == status)
        return self.session.scalars(query).all()

    def requeue_outbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        query = update(Outbox).where(Outbox.status.in_(("failed", "pending")))
        if ids:
            query = query.where(Outbox.id.in_(ids))
        result = self.session.execute(
            query.values(status="pending", next_attempt_at=now, locked_until=None, last_error=None)
        )
        return int(getattr(result, "rowcount", 0) or 0)
