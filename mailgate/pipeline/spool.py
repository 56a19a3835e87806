"""Stage 1: keep the raw bytes, envelope and content hash as an Inbound row before anything else.

Whatever happens later in the pipeline, the mail is in the database once
the transaction commits; quarantine re-uses this to keep what failed.

The row is written first (later rows refer to it) and the bytes last, with the
outcome, in a table of their own: SQLite rewrites a whole row on every UPDATE,
so bytes kept in the row cost their size again in memory at every status
change, and a duplicate or a refused mail, whose bytes are not kept, never
writes them at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailgate.domain import Envelope, InboundStatus, RawMail
from mailgate.mime import content_hash
from mailgate.storage.model import Inbound
from mailgate.storage.store import Store


@dataclass(frozen=True, slots=True)
class Spooled:
    id: int
    raw: RawMail = field(repr=False)  # written with the outcome (``finish``)
    stored: bool = False  # the bytes are in the database already (a kept mail replayed in place)


def spool(store: Store, raw: RawMail, envelope: Envelope, sha256: str | None = None) -> Spooled:
    inbound_id = store.add(
        Inbound,
        {
            "received_at": envelope.received_at,
            "source": envelope.source,
            "mailbox": envelope.mailbox,
            "peer": envelope.peer[:200],
            "mail_from": envelope.mail_from[:500],
            "rcpt_tos": list(envelope.rcpt_tos),
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
    return Spooled(inbound_id, raw)


def finish(
    store: Store,
    spooled: Spooled,
    status: InboundStatus,
    now: datetime,
    *,
    reason: str | None = None,
    ticket_id: int | None = None,
    message_id: str | None = None,
    duplicate_of: int | None = None,
    drop_raw: bool = False,
    decision: dict[str, Any] | None = None,
) -> None:
    values: dict[str, object] = {
        "status": status.value,
        "reason": reason,
        "ticket_id": ticket_id,
        "processed_at": now,
        "decision": decision,
    }
    if message_id is not None:
        values["message_id"] = message_id[:998]
    if duplicate_of is not None:
        values["duplicate_of"] = duplicate_of
    store.update_inbound(spooled.id, values)
    # the first copy keeps the bytes (once); a re-delivery need not, nor a mail refused (its sender has it)
    if not drop_raw and duplicate_of is None and not spooled.stored:
        store.keep_raw(spooled.id, spooled.raw)


def keep_failed(
    store: Store,
    raw: RawMail,
    envelope: Envelope,
    status: InboundStatus,
    reason: str,
    now: datetime,
    replayed: int | None = None,
) -> int:
    """Record a mail whose processing was rolled back; quarantine keeps the bytes for reprocess.
    ``replayed``: the kept mail's own row, replayed in place, which takes the new outcome."""
    spooled = Spooled(replayed, raw, stored=True) if replayed is not None else spool(store, raw, envelope)
    finish(store, spooled, status, now, reason=reason[:4000])
    return spooled.id
