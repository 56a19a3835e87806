"""Quarantine: mail that was kept but not processed, listed with its reason and replayed after a fix.

Replay runs the same pipeline on the same row, in one transaction: the outcome is updated in place and
the old one kept in the record's history, so a replay can never leave two copies or none.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailgate.cli.views import inbound_json
from mailgate.domain import Envelope, InboundStatus, Outcome, Source
from mailgate.errors import MailgateError
from mailgate.storage.db import Database
from mailgate.storage.store import Store

if TYPE_CHECKING:  # listing and showing need no pipeline (nor its templates); replaying imports it
    from mailgate.pipeline.ingest import Context


def listing(db: Database) -> list[dict[str, Any]]:
    with db.reader() as session:
        return [inbound_json(r) for r in Store(session).inbound_by_status(InboundStatus.QUARANTINED.value, 1000)]


def raw(db: Database, inbound_id: int) -> bytes:
    with db.reader() as session:
        data = Store(session).raw(inbound_id)
        if data is None:
            raise MailgateError(f"no stored message #{inbound_id}")
        return data


def reprocess(ctx: Context, ids: list[int]) -> list[tuple[int, Outcome | str]]:
    """Replay kept mails in place (all quarantined ones when ``ids`` is empty), each in its own transaction.

    The mail keeps its row: the new outcome replaces the old one, which goes to the record's history
    (``explain`` shows it), so a mail replayed three times is still one mail. An id that is not there,
    or not quarantined, is reported and left alone.
    """
    from mailgate.pipeline.ingest import process_one

    with ctx.db.reader() as session:
        targets = ids or [r.id for r in Store(session).inbound_by_status(InboundStatus.QUARANTINED.value, 10000)]
    results: list[tuple[int, Outcome | str]] = []
    for inbound_id in targets if ids else sorted(targets):
        with ctx.db.transaction() as session:
            store = Store(session)
            row = store.inbound(inbound_id)
            data = store.raw(inbound_id) if row is not None else None
            if row is None:
                results.append((inbound_id, "no such id"))
                continue
            if row.status != InboundStatus.QUARANTINED.value:
                results.append((inbound_id, f"not quarantined ({row.status})"))
                continue
            if data is None:
                results.append((inbound_id, "its bytes were not kept; nothing to replay"))
                continue
            history = [*(row.decision or {}).get("history", []), _was(row.status, row.reason, row.processed_at)]
            row.status = InboundStatus.RECEIVED.value  # so that dedupe does not take it for a copy of itself
            session.flush()
            source: Source = "reprocess"
            env = Envelope(row.mail_from, tuple(row.rcpt_tos), source, ctx.clock.now(), row.peer, row.mailbox)
            outcome = process_one(session, data, env, ctx, ctx.blobs, replayed=inbound_id)
            session.refresh(row)
            row.decision = {**(row.decision or {}), "history": history}
        results.append((inbound_id, outcome))
    return results


def _was(status: str, reason: str | None, at: datetime | None) -> dict[str, Any]:
    return {"status": status, "reason": reason, "at": at.isoformat() if at else None}
