"""Stage 1: keep the raw bytes, envelope and content hash as an Inbound row before anything else.

Whatever happens later in the pipeline, the mail is in the database once
the transaction commits; quarantine re-uses this to keep what failed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailgate.domain import Envelope, InboundStatus
from mailgate.mime import content_hash
from mailgate.model import Inbound, Ticket


def spool(session: Session, raw: bytes, envelope: Envelope) -> Inbound:
    row = Inbound(
        received_at=envelope.received_at,
        source=envelope.source,
        mailbox=envelope.mailbox,
        peer=envelope.peer[:200],
        mail_from=envelope.mail_from[:500],
        rcpt_tos=list(envelope.rcpt_tos),
        raw=raw,
        size=len(raw),
        sha256=content_hash(raw),
        status=InboundStatus.RECEIVED.value,
    )
    session.add(row)
    return row


def finish(
    row: Inbound,
    status: InboundStatus,
    now: datetime,
    *,
    reason: str | None = None,
    ticket: Ticket | None = None,
    message_id: str | None = None,
    duplicate_of: int | None = None,
) -> None:
    row.status = status.value
    row.reason = reason
    row.ticket = ticket
    row.processed_at = now
    if message_id is not None:
        row.message_id = message_id[:998]
    if duplicate_of is not None:
        row.duplicate_of = duplicate_of
        row.raw = None  # the first copy keeps the bytes; a re-delivery need not


def keep_failed(
    session: Session, raw: bytes, envelope: Envelope, status: InboundStatus, reason: str, now: datetime
) -> Inbound:
    """Record a mail whose processing was rolled back; quarantine keeps the bytes for reprocess."""
    row = spool(session, raw, envelope)
    finish(row, status, now, reason=reason[:4000])
    session.flush()
    return row
