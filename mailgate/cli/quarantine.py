"""Quarantine: mail that was kept but not processed, listed with its reason and replayed after a fix.

Replay marks the old row ``reprocessed`` and runs the same ``ingest`` in the
same transaction, so a replay can never leave two copies or none.
"""

from __future__ import annotations

from typing import Any

from mailgate.cli.views import inbound_json
from mailgate.domain import Envelope, InboundStatus, Outcome, Source
from mailgate.errors import MailgateError
from mailgate.pipeline.ingest import Context, process_one
from mailgate.storage.db import Database
from mailgate.storage.store import Store


def listing(db: Database) -> list[dict[str, Any]]:
    with db.reader() as session:
        return [inbound_json(r) for r in Store(session).inbound_by_status(InboundStatus.QUARANTINED.value, 1000)]


def raw(db: Database, inbound_id: int) -> bytes:
    with db.reader() as session:
        data = Store(session).raw(inbound_id)
        if data is None:
            raise MailgateError(f"no stored message #{inbound_id}")
        return data


def reprocess(ctx: Context, ids: list[int]) -> list[tuple[int, Outcome]]:
    """Replay the given quarantined mails (all of them when ``ids`` is empty)."""
    with ctx.db.reader() as session:
        targets = ids or [r.id for r in Store(session).inbound_by_status(InboundStatus.QUARANTINED.value, 10000)]
    results = []
    for inbound_id in sorted(targets):
        with ctx.db.transaction() as session:
            store = Store(session)
            row = store.inbound(inbound_id)
            data = store.raw(inbound_id) if row is not None else None
            if row is None or row.status != InboundStatus.QUARANTINED.value or data is None:
                continue
            row.status = InboundStatus.REPROCESSED.value
            source: Source = "reprocess"
            env = Envelope(row.mail_from, tuple(row.rcpt_tos), source, ctx.clock.now(), row.peer, row.mailbox)
            outcome = process_one(session, data, env, ctx, ctx.blobs)
            row.reason = f"{row.reason}; reprocessed as inbound #{outcome.inbound_id} ({outcome.status})"
        results.append((inbound_id, outcome))
    return results
