"""Stage 1: keep the raw bytes, envelope and content hash as an Inbound row before anything else.

Whatever happens later in the pipeline, the mail is in the database once
the transaction commits; quarantine re-uses this to keep what failed.
"""

from __future__ import annotations

from datetime import datetime

from mailgate.domain import Envelope, InboundStatus
from mailgate.mime import content_hash
from mailgate.model import Inbound
from mailgate.store import Store

InboundId = int


def spool(store: Store, raw: bytes, envelope: Envelope, sha256: str | None = None) -> InboundId:
    return store.add(
        Inbound,
        {
            "received_at": envelope.received_at,
            "source": envelope.source,
            "mailbox": envelope.mailbox,
            "peer": envelope.peer[:200],
            "mail_from": envelope.mail_from[:500],
            "rcpt_tos": list(envelope.rcpt_tos),
            "raw": raw,
            "size": len(raw),
            "sha256": sha256 or content_hash(raw),
            "status": InboundStatus.RECEIVED.value,
            "message_id": None,
            "reason": None,
            "ticket_id": None,
            "duplicate_of": None,
            "processed_at": None,
        },
    )


def finish(
    store: Store,
    inbound_id: InboundId,
    status: InboundStatus,
    now: datetime,
    *,
    reason: str | None = None,
    ticket_id: int | None = None,
    message_id: str | None = None,
    duplicate_of: int | None = None,
    drop_raw: bool = False,
) -> None:
    values: dict[str, object] = {"status": status.value, "reason": reason, "ticket_id": ticket_id, "processed_at": now}
    if message_id is not None:
        values["message_id"] = message_id[:998]
    if duplicate_of is not None:
        values["duplicate_of"] = duplicate_of
    if drop_raw or duplicate_of is not None:  # the first copy keeps the bytes; a re-delivery need not
        values["raw"] = None
    store.update_inbound(inbound_id, values)


def keep_failed(
    store: Store, raw: bytes, envelope: Envelope, status: InboundStatus, reason: str, now: datetime
) -> InboundId:
    """Record a mail whose processing was rolled back; quarantine keeps the bytes for reprocess."""
    inbound_id = spool(store, raw, envelope)
    finish(store, inbound_id, status, now, reason=reason[:4000])
    return inbound_id
