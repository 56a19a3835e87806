"""Every query the pipeline needs, in one place, over one session.

Stages ask questions ("seen this mail?", "which ticket owns this
Message-ID?") instead of composing SQL, so the schema can change behind
this file without touching the pipeline.

The rows a mail creates are written, and its hot lookups read, with prebuilt
statements run on the session's DBAPI cursor (``fastsql.py``) rather than
through the ORM unit of work or ``Connection.execute``: the same typed tables
and SQL, a fraction of the Python work per statement, which is most of what
ingest costs once parsing is cheap. Reads of whole objects and the occasional
update of an existing ticket still go through the ORM.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Insert, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from mailgate.domain import InboundStatus, RawMail
from mailgate.storage.db import DISCARD_AFTER_USE
from mailgate.storage.fastsql import fetch, run
from mailgate.storage.model import (
    AttachmentRow,
    Base,
    Event,
    Inbound,
    InboundRaw,
    Message,
    Outbox,
    Participant,
    SlaTimer,
    Suppression,
    ThreadRef,
    Ticket,
    TicketAlias,
)

STREAM_RAW_FROM = 1 << 20
_DEDUPE_STATUSES = (InboundStatus.ACCEPTED.value, InboundStatus.QUARANTINED.value)
_RETURNING_ID: dict[type[Base], Insert] = {
    model: insert(model).returning(model.id) for model in (Inbound, Ticket, Message)
}
_INSERT: dict[type[Base], Insert] = {
    model: insert(model) for model in (Event, AttachmentRow, ThreadRef, Outbox, SlaTimer, InboundRaw)
}
# A participant already on the ticket stays as they are: the same person may be named twice in one
# mail, Cc'd and then answering through the signed reply address, or added again by #cc or a rule.
@cache
def _add_participant(dialect: str) -> Insert:
    """Built for the dialect in use only: importing PostgreSQL's costs a piped mail on SQLite 30 ms."""
    module = importlib.import_module(f"sqlalchemy.dialects.{dialect}")
    made: Insert = module.insert(Participant).on_conflict_do_nothing(index_elements=["ticket_id", "email"])
    return made


_UPDATE_INBOUND = update(Inbound).where(Inbound.id == bindparam("inbound_id"))
_TOUCH = update(Ticket).where(Ticket.id == bindparam("ticket_id"))
_NUMBER_TAKEN = select(func.count()).where(Ticket.number == bindparam("number"))
_DUPLICATE = (
    select(Inbound.id, Inbound.ticket_id)
    .where(Inbound.sha256 == bindparam("sha256"), Inbound.status.in_(_DEDUPE_STATUSES))
    .order_by(Inbound.id)
    .limit(1)
)
_PARTICIPANTS = (
    select(Participant.email, Participant.name, Participant.role)
    .where(Participant.ticket_id == bindparam("ticket_id"))
    .order_by(Participant.id)
)
_THREAD_IDS = select(ThreadRef.message_id).where(ThreadRef.ticket_id == bindparam("ticket_id")).order_by(ThreadRef.id)
_AUTOMATIC = select(Outbox.created_at).where(
    Outbox.recipient == bindparam("recipient"), Outbox.automatic.is_(True), Outbox.created_at >= bindparam("since")
)
_AUTOMATIC_ON_TICKET = _AUTOMATIC.where(Outbox.ticket_id == bindparam("ticket_id"))
_SUPPRESSED = select(Suppression.until).where(Suppression.address == bindparam("address"))
_OUTBOX_KEY = select(func.count()).where(Outbox.dedupe_key == bindparam("key"))
_DUPLICATE_MID = _DUPLICATE.where(Inbound.message_id == bindparam("message_id"))
# flood control (pipeline/flood.py): the newest mails of a sender or domain that opened a ticket or were held
_NEW_FROM = {
    column.key: select(Inbound.received_at)
    .where(column == bindparam("value"), Inbound.received_at >= bindparam("since"))
    .order_by(Inbound.received_at.desc())
    .limit(bindparam("most"))
    for column in (Inbound.sender, Inbound.sender_domain)
}
_HELD_FROM = {
    column.key: select(Inbound.id)
    .where(column == bindparam("value"), Inbound.received_at >= bindparam("since"), Inbound.hold == bindparam("hold"))
    .limit(1)
    for column in (Inbound.sender, Inbound.sender_domain)
}
_DUPLICATE_NO_MID = _DUPLICATE.where(Inbound.message_id.is_(None))


class Store:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- fast writes (see the module docstring) ------------------------
    def _conn(self) -> Connection:
        """The session's connection, after writing out pending ORM changes (as an autoflush would)."""
        if self.session.new or self.session.dirty or self.session.deleted:
            self.session.flush()
        return self.session.connection()

    def add(self, model: type[Base], values: dict[str, Any]) -> int:
        """Insert one row of Inbound, Ticket or Message; return its id."""
        return int(fetch(self._conn(), _RETURNING_ID[model], values)[0][0])

    def add_rows(self, model: type[Base], rows: list[dict[str, Any]]) -> None:
        if rows:
            run(self._conn(), _INSERT[model], rows)

    def add_participants(self, ticket_id: int, people: Iterable[tuple[str, str, str]]) -> None:
        """Add (email, name, role) to the ticket; whoever is already a participant keeps their role."""
        rows, seen = [], set()
        for email, name, role in people:
            if email and email not in seen:
                seen.add(email)
                rows.append({"ticket_id": ticket_id, "email": email, "name": name, "role": role})
        if rows:
            conn = self._conn()
            run(conn, _add_participant(conn.dialect.name), rows)

    def update_inbound(self, inbound_id: int, values: dict[str, Any]) -> None:
        run(self._conn(), _UPDATE_INBOUND, [{"inbound_id": inbound_id, **values}])

    def keep_raw(self, inbound_id: int, raw: RawMail) -> None:
        """Store the mail's bytes. On SQLite a big mail goes into a blob of its size a slice at a time:
        binding it whole costs SQLite two more copies of it in memory."""
        conn = self._conn()
        if len(raw) < STREAM_RAW_FROM or conn.dialect.name != "sqlite":
            run(conn, _INSERT[InboundRaw], [{"inbound_id": inbound_id, "raw": raw}])
            if len(raw) >= STREAM_RAW_FROM:  # libpq keeps its send buffer at the biggest size it ever sent
                conn.connection.info[DISCARD_AFTER_USE] = True
            return
        conn.execute(insert(InboundRaw).values(inbound_id=inbound_id, raw=func.zeroblob(len(raw))))
        view = memoryview(raw)
        with conn.connection.dbapi_connection.blobopen("inbound_raw", "raw", inbound_id) as blob:  # type: ignore[union-attr]
            for at in range(0, len(raw), STREAM_RAW_FROM):
                blob.write(view[at : at + STREAM_RAW_FROM])

    def raw(self, inbound_id: int) -> bytes | None:
        return self._conn().execute(select(InboundRaw.raw).where(InboundRaw.inbound_id == inbound_id)).scalar()

    # --- inbound -------------------------------------------------------
    def duplicate_of(self, message_id: str | None, sha256: str) -> tuple[int, int | None] | None:
        """(inbound id, ticket id) of an earlier stored copy of the same mail, if any.

        On PostgreSQL several writers run at once, so the same mail arriving twice
        concurrently is serialised by a transaction-scoped advisory lock on its hash:
        the second copy waits for the first to commit and then finds it.
        """
        conn = self._conn()
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(int(sha256[:15], 16))))
        if message_id:
            rows = fetch(conn, _DUPLICATE_MID, {"sha256": sha256, "message_id": message_id})
        else:
            rows = fetch(conn, _DUPLICATE_NO_MID, {"sha256": sha256})
        return (rows[0][0], rows[0][1]) if rows else None

    def message_id_taken(self, message_id: str, inbound_id: int) -> bool:
        """Whether another stored mail has this Message-ID (an API client's Idempotency-Key reused)."""
        query = select(Inbound.id).where(Inbound.message_id == message_id, Inbound.id != inbound_id).limit(1)
        return self.session.scalar(query) is not None

    def inbound(self, inbound_id: int) -> Inbound | None:
        return self.session.get(Inbound, inbound_id)

    def flood_lock(self, key: str) -> None:
        """Serialise flood counts of one sender or domain across daemons until this transaction ends
        (PostgreSQL; SQLite has one writer): two daemons must not both count 14 and both open a 15th."""
        conn = self._conn()
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(int(hashlib.sha256(key.encode()).hexdigest()[:15], 16))))

    def new_tickets_from(self, column: str, value: str, since: datetime, most: int) -> list[datetime]:
        """When the newest ``most`` mails of this sender (``column`` sender) or domain (sender_domain)
        since ``since`` opened a ticket or were held for flood, newest first."""
        rows = fetch(self._conn(), _NEW_FROM[column], {"value": value, "since": since, "most": most})
        return [r[0] for r in rows]

    def held_from(self, column: str, value: str, since: datetime, hold: str) -> bool:
        """Whether a mail of this sender or domain was held for ``hold`` since ``since`` (an open incident)."""
        return bool(fetch(self._conn(), _HELD_FROM[column], {"value": value, "since": since, "hold": hold}))

    def inbound_by_status(self, status: str, limit: int = 100) -> Sequence[Inbound]:
        query = select(Inbound).where(Inbound.status == status).order_by(Inbound.id.desc()).limit(limit)
        return self.session.scalars(query).all()

    # --- tickets -------------------------------------------------------
    def ticket(self, ticket_id: int) -> Ticket | None:
        return self.session.get(Ticket, ticket_id)

    def touch(self, ticket: Ticket, now: datetime) -> None:
        """Set ``updated_at`` with one UPDATE instead of an ORM flush of the whole ticket (every reply)."""
        run(self._conn(), _TOUCH, [{"ticket_id": ticket.id, "updated_at": now}])
        set_committed_value(ticket, "updated_at", now)

    def ticket_by_alias(self, system: str, number: str) -> int | None:
        """The ticket imported with this number of another help desk (``ticket_alias``, by its key)."""
        return self.session.scalar(
            select(TicketAlias.ticket_id).where(TicketAlias.system == system, TicketAlias.number == number)
        )

    def add_alias(self, system: str, number: str, ticket_id: int) -> None:
        self.session.add(TicketAlias(system=system, number=number, ticket_id=ticket_id))

    def aliases(self, ticket_id: int) -> list[tuple[str, str]]:
        rows = self.session.execute(
            select(TicketAlias.system, TicketAlias.number).where(TicketAlias.ticket_id == ticket_id)
        )
        return [(system, number) for system, number in rows]

    def ticket_by_number(self, number: str) -> Ticket | None:
        return self.session.scalars(select(Ticket).where(Ticket.number == number)).first()

    def number_taken(self, number: str) -> bool:
        return bool(fetch(self._conn(), _NUMBER_TAKEN, {"number": number})[0][0])

    def ticket_id_for_message_ids(self, message_ids: Iterable[str]) -> int | None:
        ids = [m for m in message_ids if m]
        if not ids:
            return None
        rows = self.session.execute(
            select(ThreadRef.message_id, ThreadRef.ticket_id).where(ThreadRef.message_id.in_(ids))
        ).all()
        found = {mid: tid for mid, tid in rows}
        return next((found[m] for m in ids if m in found), None)

    def tickets(
        self, status: str | None = None, limit: int | None = None, *, where: dict[str, str] | None = None,
        offset: int = 0,
    ) -> Sequence[Ticket]:
        """Oldest first; ``where`` maps ticket columns to the values wanted (tickets list's filters)."""
        query = select(Ticket).order_by(Ticket.id)
        if status:
            query = query.where(Ticket.status == status)
        for column, value in (where or {}).items():
            query = query.where(getattr(Ticket, column) == value)
        if limit:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        return self.session.scalars(query).all()

    def participants(self, ticket_id: int) -> list[tuple[str, str, str]]:
        """(email, name, role) of everyone on the ticket, in the order they joined."""
        return [(r[0], r[1], r[2]) for r in fetch(self._conn(), _PARTICIPANTS, {"ticket_id": ticket_id})]

    def remove_collaborator(self, ticket_id: int, email: str) -> None:
        self._conn().execute(
            delete(Participant).where(
                Participant.ticket_id == ticket_id, Participant.email == email, Participant.role == "collaborator"
            )
        )

    def messages(self, ticket_id: int) -> Sequence[Message]:
        return self.session.scalars(select(Message).where(Message.ticket_id == ticket_id).order_by(Message.id)).all()

    def events(self, ticket_id: int) -> Sequence[Event]:
        return self.session.scalars(select(Event).where(Event.ticket_id == ticket_id).order_by(Event.id)).all()

    def thread_message_ids(self, ticket_id: int) -> list[str]:
        """The ticket's Message-IDs in order, for an outgoing References header."""
        return [r[0] for r in fetch(self._conn(), _THREAD_IDS, {"ticket_id": ticket_id})]

    # --- outbox --------------------------------------------------------
    def automatic_sent_at(self, recipient: str, since: datetime, ticket_id: int | None = None) -> list[datetime]:
        """When automatic mail was queued for this recipient (on this ticket), for rate limits."""
        if ticket_id is None:
            rows = fetch(self._conn(), _AUTOMATIC, {"recipient": recipient, "since": since})
        else:
            values = {"recipient": recipient, "since": since, "ticket_id": ticket_id}
            rows = fetch(self._conn(), _AUTOMATIC_ON_TICKET, values)
        return [r[0] for r in rows]

    def least_loaded(self, agents: list[str]) -> str:
        """The agent with the fewest tickets not yet resolved or closed (ties: the order given)."""
        rows = self._conn().execute(
            select(Ticket.assignee, func.count())
            .where(Ticket.assignee.in_(agents), Ticket.status.not_in(("resolved", "closed")))
            .group_by(Ticket.assignee)
        )
        load = {assignee: count for assignee, count in rows}
        return min(agents, key=lambda a: (load.get(a, 0), agents.index(a)))

    def next_in_turn(self, agents: list[str]) -> str:
        """Round robin: the member after the one who got the team's latest ticket."""
        last = (
            self._conn()
            .execute(select(Ticket.assignee).where(Ticket.assignee.in_(agents)).order_by(Ticket.id.desc()).limit(1))
            .scalar()
        )
        return agents[(agents.index(last) + 1) % len(agents)] if last in agents else agents[0]

    def outbox_target(self, row_id: int) -> tuple[int | None, list[str]] | None:
        """(ticket id, recipients) of an outbox row (a returned bounce names the row in its VERP address)."""
        row = self._conn().execute(select(Outbox.ticket_id, Outbox.recipients).where(Outbox.id == row_id)).first()
        return (row[0], list(row[1] or ())) if row is not None else None

    def suppress(self, address: str, until: datetime, reason: str, now: datetime) -> None:
        """No automatic mail to ``address`` until ``until`` (a permanent bounce); extends an earlier entry."""
        row = self.session.get(Suppression, address.lower())
        if row is None:
            self.session.add(Suppression(address=address.lower(), until=until, reason=reason[:1000], created_at=now))
        else:
            row.until, row.reason = max(row.until, until), reason[:1000]

    def suppressed_until(self, address: str) -> datetime | None:
        rows = fetch(self._conn(), _SUPPRESSED, {"address": address.lower()})
        until: datetime | None = rows[0][0] if rows else None
        return until

    def outbox_key_exists(self, key: str) -> bool:
        return bool(fetch(self._conn(), _OUTBOX_KEY, {"key": key})[0][0])

    # --- customers by mail (pipeline/status_request.py) -----------------
    def kind_sent_at(self, recipient: str, kind: str, since: datetime) -> list[datetime]:
        """When mail of ``kind`` was queued for ``recipient`` since ``since`` (a per-kind rate limit)."""
        query = select(Outbox.created_at).where(
            Outbox.recipient == recipient, Outbox.created_at >= since, Outbox.kind == kind
        )
        return list(self.session.scalars(query))

    def has_tickets(self, requester: str) -> bool:
        """Whether any ticket, in any status, was ever opened by ``requester``."""
        query = select(Ticket.id).where(Ticket.requester_email == requester).limit(1)
        return self.session.scalar(query) is not None

    def open_tickets_of(self, requester: str, limit: int) -> Sequence[Ticket]:
        """The requester's tickets not yet resolved or closed, the most recently updated first."""
        query = (
            select(Ticket)
            .where(Ticket.requester_email == requester, Ticket.status.not_in(("resolved", "closed")))
            .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
            .limit(limit)
        )
        return self.session.scalars(query).all()

    def outbox_rows(self, status: str | None = None, limit: int | None = 200) -> Sequence[Outbox]:
        """Newest first; ``limit=None``: all of them."""
        query = select(Outbox).order_by(Outbox.id.desc())
        if status:
            query = query.where(Outbox.status == status)
        return self.session.scalars(query.limit(limit) if limit else query).all()

    def close_imported(self, numbers: Sequence[str]) -> None:
        """Tickets of an imported archive: closed (and resolved) at their last mail's date."""
        for start in range(0, len(numbers), 500):
            self.session.execute(
                update(Ticket)
                .where(Ticket.number.in_(numbers[start : start + 500]), Ticket.status != "closed")
                .values(
                    status="closed",
                    closed_at=Ticket.updated_at,
                    resolved_at=func.coalesce(Ticket.resolved_at, Ticket.updated_at),
                )
                .execution_options(synchronize_session=False)
            )

    def outbox_by_status(self) -> dict[str, int]:
        rows = self.session.execute(select(Outbox.status, func.count()).group_by(Outbox.status))
        return {status: int(count) for status, count in rows}

    def oldest_pending_at(self) -> datetime | None:
        return self.session.scalar(select(func.min(Outbox.created_at)).where(Outbox.status == "pending"))

    def rungs_due(self, now: datetime) -> tuple[int, datetime | None]:
        """SLA rungs due by ``now`` and not fired: how many, and the oldest due time (the sweep's lag)."""
        due = (SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now)
        count, oldest = self.session.execute(select(func.count(), func.min(SlaTimer.due_at)).where(*due)).one()
        return int(count), oldest

    def overdue_count(self) -> int:
        late = (Ticket.overdue.is_(True), Ticket.status.not_in(("resolved", "closed")))
        return int(self.session.scalar(select(func.count()).select_from(Ticket).where(*late)) or 0)

    def outbox_count(self, status: str | None = None) -> int:
        query = select(func.count()).select_from(Outbox)
        return int(self.session.scalar(query.where(Outbox.status == status) if status else query) or 0)

    def requeue_outbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        query = update(Outbox).where(Outbox.status.in_(("failed", "pending")))
        if ids:
            query = query.where(Outbox.id.in_(ids))
        result = self.session.execute(
            query.values(status="pending", next_attempt_at=now, locked_until=None, last_error=None)
        )
        return int(getattr(result, "rowcount", 0) or 0)
