"""An attachment's bytes re-derived from the raw mail that brought it.

Attachment files are a cache of what the raw mail in the database holds. Several daemons each keep
their own ``state_dir``; a daemon that relays an agent's attachment another daemon received, or one
whose file was lost in a crash, parses the mail again and takes the part with the same hash.
"""

from __future__ import annotations

from sqlalchemy import select

from mailgate.pipeline.parse import parse
from mailgate.storage.db import Database
from mailgate.storage.model import AttachmentRow, InboundRaw, Message


def attachment_bytes(db: Database, sha256: str) -> bytes | None:
    """None when no stored raw mail carries it (never received, or its raw mail already purged)."""
    query = (
        select(InboundRaw.raw)
        .join(Message, Message.inbound_id == InboundRaw.inbound_id)
        .join(AttachmentRow, AttachmentRow.message_row_id == Message.id)
        .where(AttachmentRow.sha256 == sha256)
        .limit(3)
    )
    with db.reader() as session:
        raws = list(session.scalars(query))
    for raw in raws:
        for attachment in parse(raw).attachments:
            if attachment.sha256 == sha256:
                return attachment.data
    return None
