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
from mailgate.storage.model import Inbound
from mailgate.storage.store import Store

if TYPE_CHECKING:  # listing and showing need no pipeline (nor its templates); replaying imports it
    from mailgate.pipeline.ingest import Context


def listing(db: Database, held: str | None = None) -> list[dict[str, Any]]:
    """``held``: only mail held for ``spam`` or ``flood`` (either rung)."""
    with db.reader() as session:
        rows = Store(session).inbound_by_status(InboundStatus.QUARANTINED.value, 1000)
        return [inbound_json(r) for r in rows if held is None or (r.hold or "").partition(":")[0] == held]


def raw(db: Database, inbound_id: int) -> bytes:
    with db.reader() as session:
        store = Store(session)
        data = store.raw(inbound_id)
        if data is None and store.inbound(inbound_id) is not None:  # retention or `forget` (jobs/retention.py)
            raise MailgateError(f"mail #{inbound_id}: its bytes are not kept (purged, or never stored); "
                                f"`explain id:{inbound_id}` shows what was decided")
        if data is None:
            raise MailgateError(f"no stored message #{inbound_id}")
        return data


def reprocess(ctx: Context, ids: list[int]) -> list[tuple[int, Outcome | str]]:
    """Replay kept mails in place (all quarantined ones when ``ids`` is empty), each in its own transaction.

    The mail keeps its row: the new outcome replaces the old one, which goes to the record's history
    (``explain`` shows it), so a mail replayed three times is still one mail. An id that is not there,
    or not quarantined, is reported and left alone.

    Mail held by a trusted relay's spam verdict or by flood control is replayed only when named by its
    id: that releases it (``pipeline/holds.py``), which replaying "everything" after fixing a bug must
    not do. The row is locked first, so two replays of one id at once make one ticket and one
    acknowledgment: the second waits, then finds it no longer quarantined.
    """
    from mailgate.pipeline.ingest import process_one

    with ctx.db.reader() as session:
        targets = ids or [r.id for r in Store(session).inbound_by_status(InboundStatus.QUARANTINED.value, 10000)]
    results: list[tuple[int, Outcome | str]] = []
    for inbound_id in targets if ids else sorted(targets):
        with ctx.db.transaction() as session:
            store = Store(session)
            row = session.get(Inbound, inbound_id, with_for_update=True)
            data = store.raw(inbound_id) if row is not None else None
            if row is None:
                results.append((inbound_id, "no such id"))
                continue
            if row.status != InboundStatus.QUARANTINED.value:
                results.append((inbound_id, f"not quarantined ({row.status})"))
                continue
            if row.hold is not None and not ids:
                results.append((inbound_id, f"held ({row.hold}); left alone: name its id to release it"))
                continue
            unfetched = (row.decision or {}).get("unfetched")
            if unfetched:
                results.append((inbound_id, f"never fetched ({unfetched['reason']}); it waits on the IMAP server in "
                                            f"{unfetched['left_in']}: fix the cause (e.g. raise the mailbox's "
                                            f"max_message_size) and move it back to the watched folder"))
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
