"""Stage 1: keep the raw bytes, envelope and content hash as an Inbound row before anything else.

Whatever happens later in the pipeline, the mail is in the database once
the transaction commits; quarantine re-uses this to keep what failed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailgate.domain import Envelope, InboundStatus
from mailgate.mime import content_hash
from mailgate.model import Inbound

InboundId = int


def spool(session: Session, raw: bytes, envelope: Envelope) -> InboundId:
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
    session.flush()
    return row.id


def finish(
    session: Session,
    inbound_id: InboundId,
    status: InboundStatus,
    now: datetime,
    *,
    reason: str | None = None,
    ticket_id: int | None = None,
    message_id: str | None = None,
    duplicate_of: int | None = None,
) -> None:
    row = session.get(Inbound, inbound_id)
    assert row is not None
    row.status = status.value
    row.reason = reason
    row.ticket_id = ticket_id
    row.processed_at = now
    if message_id is not None:
        row.message_id = message_id[:998]
    if duplicate_of is not None:
        row.duplicate_of = duplicate_of
        row.raw = None  # the first copy keeps the bytes; a re-delivery need not


def keep_failed(
    session: Session, raw: bytes | None, envelope: Envelope, status: InboundStatus, reason: str, now: datetime
) -> InboundId:
    """Record a mail whose processing was rolled back (quarantine keeps the bytes for reprocess)."""
    inbound_id = spool(session, raw or b"", envelope)
    finish(session, inbound_id, status, now, reason=reason[:4000])
    if raw is None:
        row = session.get(Inbound, inbound_id)
        assert row is not None
        row.raw = None
    return inbound_id
