"""SQLAlchemy 2.x typed ORM: the durable state. Enum values are stored as plain strings.

Times are stored in UTC; ``UTCDateTime`` gives timezone-aware values back on
SQLite too, so arithmetic never mixes naive and aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use the clock")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Inbound(Base):
    """One received mail: the spool. Nothing accepted exists only in memory (its bytes: InboundRaw)."""

    __tablename__ = "inbound"
    # flood control counts a sender's and a domain's new tickets in a window (pipeline/flood.py); only mail
    # it counted has a sender here, so the indexes are partial: without flood control they cost a mail nothing
    __table_args__ = (
        Index("ix_inbound_sender_received", "sender", "received_at",
              sqlite_where=text("sender IS NOT NULL"), postgresql_where=text("sender IS NOT NULL")),
        Index("ix_inbound_sender_domain_received", "sender_domain", "received_at",
              sqlite_where=text("sender_domain IS NOT NULL"), postgresql_where=text("sender_domain IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    mailbox: Mapped[str | None] = mapped_column(String(200))
    peer: Mapped[str] = mapped_column(String(200), default="")
    mail_from: Mapped[str] = mapped_column(String(500), default="")
    rcpt_tos: Mapped[list[str]] = mapped_column(JSON, default=list)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("inbound.id"))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what was decided and why: ``explain``
    # set on a mail that opened a ticket or was held for flood: what flood control counts
    sender: Mapped[str | None] = mapped_column(String(320))
    sender_domain: Mapped[str | None] = mapped_column(String(255))
    hold: Mapped[str | None] = mapped_column(String(16))  # spam | flood:sender | flood:domain: held, not failed
    ticket: Mapped[Ticket | None] = relationship(foreign_keys=[ticket_id])


class InboundRaw(Base):
    """A received mail's bytes, in a table of their own: updating an inbound row's status never rewrites
    them (SQLite rewrites whole rows), and a blob that ends its row can be written a slice at a time."""

    __tablename__ = "inbound_raw"
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound.id"), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class Ticket(Base):
    __tablename__ = "ticket"
    __table_args__ = (  # the listing's filters, each in ticket order (a page is read off the index)
        Index("ix_ticket_status_id", "status", "id"),
        Index("ix_ticket_help_topic_id", "help_topic", "id"),
        Index("ix_ticket_assignee_id", "assignee", "id"),
        Index("ix_ticket_requester_id", "requester_email", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # indexed with id (__table_args__)
    priority: Mapped[str] = mapped_column(String(16))
    help_topic: Mapped[str | None] = mapped_column(String(200))
    department: Mapped[str | None] = mapped_column(String(200))
    assignee: Mapped[str | None] = mapped_column(String(320))
    sla_plan: Mapped[str | None] = mapped_column(String(200))
    requester_email: Mapped[str] = mapped_column(String(320))  # indexed with id (__table_args__)
    requester_name: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # reports by period
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_response_due: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution_due: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    overdue: Mapped[bool] = mapped_column(Boolean, default=False)
    conversation_index: Mapped[str | None] = mapped_column(String(200))  # Outlook Thread-Index root
    satisfaction: Mapped[int | None] = mapped_column(Integer)  # 1-5, the requester's rating on resolution
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last reminder while awaiting_reply
    # SLA clock: business seconds used before ``sla_running_since``; None while paused or stopped
    sla_consumed: Mapped[float] = mapped_column(Float, default=0.0)
    sla_running_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_breached: Mapped[bool] = mapped_column(Boolean, default=False)
    resolution_breached: Mapped[bool] = mapped_column(Boolean, default=False)
    # the support address the customer wrote to: every mail of the ticket goes out from it
    reply_address: Mapped[str | None] = mapped_column(String(320))
    # merged by an agent's #merge: the ticket that took its thread over (mail to this one lands there);
    # split off by #split: the ticket it came from (pipeline/links.py)
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    split_from: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)


FORWARD_KEYS = "forwarded"  # TicketAlias.system of the keys that recognise an inline forward seen before


class TicketAlias(Base):
    """A number another help desk gave a ticket before it was imported: its subject tag still threads.
    Also (system ``FORWARD_KEYS``) the key of an agent's inline forward, so a second forward finds it."""

    __tablename__ = "ticket_alias"
    system: Mapped[str] = mapped_column(String(40), primary_key=True)  # the name of the tag pattern
    number: Mapped[str] = mapped_column(String(64), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)


class Participant(Base):
    __tablename__ = "participant"
    __table_args__ = (UniqueConstraint("ticket_id", "email"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))
    email: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str] = mapped_column(String(500), default="")
    role: Mapped[str] = mapped_column(String(20))
    ticket: Mapped[Ticket] = relationship()


class Message(Base):
    """One entry of a ticket's thread (customer mail, agent reply, note, system notice)."""

    __tablename__ = "message"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound.id"))
    kind: Mapped[str] = mapped_column(String(16))
    from_email: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(500), default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text, deferred=True)
    message_id: Mapped[str | None] = mapped_column(String(998))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    ticket: Mapped[Ticket] = relationship()
    inbound: Mapped[Inbound | None] = relationship()
    attachments: Mapped[list[AttachmentRow]] = relationship(order_by="AttachmentRow.id")


class AttachmentRow(Base):
    """Metadata; the bytes live content-addressed under state_dir and can be re-derived from the raw mail."""

    __tablename__ = "attachment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_row_id: Mapped[int] = mapped_column(ForeignKey("message.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # to re-derive a file missing here


class ThreadRef(Base):
    """Every Message-ID we received or sent for a ticket, so In-Reply-To/References find it."""

    __tablename__ = "thread_ref"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998), index=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # in | out
    ticket: Mapped[Ticket] = relationship()


class Event(Base):
    __tablename__ = "event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(320), default="system")
    detail: Mapped[str] = mapped_column(Text, default="")
    ticket: Mapped[Ticket] = relationship()


class Outbox(Base):
    """A notification to send; written in the ingest transaction, sent later, once per dedupe_key."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_recipient_recent", "recipient", "created_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    mail_from: Mapped[str] = mapped_column(String(500))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    recipient: Mapped[str] = mapped_column(String(320), default="")  # one row per recipient: limits, bounces
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)  # machine-initiated (acks, alerts)
    attachments: Mapped[list[list[str]]] = mapped_column(JSON, default=list)  # [sha256, filename, type]
    message_id: Mapped[str] = mapped_column(String(998))  # an agent's #split names its alert (found by ticket_id)
    subject: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    ticket: Mapped[Ticket | None] = relationship()


class SlaTimer(Base):
    """One step of a ticket's SLA ladder; ``fired_at`` set once, under a claim, by one sweeper."""

    __tablename__ = "sla_timer"
    __table_args__ = (
        UniqueConstraint("ticket_id", "target", "step"),
        Index("ix_sla_timer_due", "fired_at", "due_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))
    target: Mapped[str] = mapped_column(String(20))  # first_response | resolution
    step: Mapped[int] = mapped_column(Integer)  # percent of the target
    plan: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fired_by: Mapped[str | None] = mapped_column(String(200))


class Suppression(Base):
    """An address that bounced permanently: no automatic mail to it until ``until``."""

    __tablename__ = "suppression"
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MailboxState(Base):
    """IMAP checkpoint per mailbox: which UIDs under which UIDVALIDITY were already taken."""

    __tablename__ = "mailbox_state"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class DaemonRow(Base):
    """One ``serve`` process's heartbeat (times: seconds since the epoch, on the database's clock)."""

    __tablename__ = "daemon"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    machine: Mapped[str] = mapped_column(String(200), server_default="")  # where ``pid`` means this process
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(50))
    started: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    stopped: Mapped[float | None] = mapped_column(Float)
    holds: Mapped[str] = mapped_column(Text, server_default="[]")
    settings: Mapped[str] = mapped_column(Text, server_default="{}")  # what must match across daemons


class MailboxLease(Base):
    """Which daemon reads an IMAP mailbox until when; ``token`` grows with every change of holder."""

    __tablename__ = "mailbox_lease"
    mailbox: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(BigInteger)
    expires: Mapped[float] = mapped_column(Float)
    acquired: Mapped[float] = mapped_column(Float)
