"""``mailgate forget ADDRESS``: erase one person on request, on open and closed tickets alike.

The address is matched whatever its case and with any ``+tag`` (scrub.py). Found where they are a
requester, a collaborator, the author of a message, or the sender of a received mail (a ticket's, or
one kept without a ticket: quarantine, rejected, duplicates); on those tickets their address and name
are replaced in every row, the words of the messages they wrote are redacted, the raw mail they sent
or that names them (sent to them, Cc'd) is deleted, and so are the files of the attachments they sent.
Unsent outbox mail to them is removed; sent rows keep their dedupe keys with the address replaced;
a bounce suppression of the address is dropped. Each ticket keeps an ``erased`` event that says what
was done, in counts: no address, no hash of it (a hash of an address can be checked against any guess,
so it would still say who asked).

An agent's address is refused unless ``agent=True``: their replies are the desk's record. With it,
their address and name are replaced like anyone's, and the words of their replies and notes stay.
Our own support addresses are always refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select

from mailgate.domain import Status
from mailgate.errors import MailgateError
from mailgate.jobs import blobsweep
from mailgate.jobs.erasure import Counts, Scope, erase_in_ticket, event, purge_raw, scrub_inbound, scrub_outbox
from mailgate.jobs.retention import desk_addresses, unit
from mailgate.jobs.scrub import Needles, base_of
from mailgate.pipeline.ingest import Context
from mailgate.storage.model import Inbound, InboundRaw, Message, Outbox, Participant, Suppression, Ticket

ERASED_EVENT = "erased"
REDACTED = "[erased on request]"
_DONE = (Status.RESOLVED.value, Status.CLOSED.value)


@dataclass
class ForgetReport:
    dry_run: bool
    refused: str | None = None
    tickets: list[tuple[str, str]] = field(default_factory=list)  # (number, status)
    counts: Counts = field(default_factory=Counts)
    unticketed: int = 0  # received mail kept without a ticket (quarantine ...) that named them
    outbox: int = 0  # rows without a ticket (status answers, alerts) that named them
    suppressions: int = 0
    files: int = 0

    @property
    def open_tickets(self) -> list[str]:
        return [number for number, status in self.tickets if status not in _DONE]

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "refused": self.refused,
            "tickets": [{"number": n, "status": s, "open": s not in _DONE} for n, s in self.tickets],
            "addresses_replaced": self.counts.participants,
            "messages_redacted": self.counts.messages,
            "raw_mail_deleted": self.counts.raw,
            "attachments_deleted": self.counts.attachments,
            "outbox_removed": self.counts.outbox_removed,
            "mail_without_ticket": self.unticketed,
            "outbox_without_ticket": self.outbox,
            "suppressions_removed": self.suppressions,
            "files_deleted": self.files,
        }


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _named(column: Any, local: str, domain: str) -> ColumnElement[bool]:
    """The address or any +tag form of it, whatever the case (verified again in Python)."""
    low = func.lower(column)
    return or_(low == f"{local}@{domain}", low.like(f"{_like(local)}+%@{_like(domain)}", escape="\\"))


def forget(ctx: Context, address: str, *, agent: bool = False, dry_run: bool = False) -> ForgetReport:
    report = ForgetReport(dry_run)
    base = base_of(address)
    if base is None or "@" not in address:
        raise MailgateError(f"not an email address: {address!r}")
    local, domain = base
    desk = {base_of(a) for a in desk_addresses(ctx)}
    own = {base_of(a) for a in ctx.own_addresses}
    if base in own:
        report.refused = "one of the desk's own addresses; nothing to erase"
        return report
    if base in desk and not agent:
        report.refused = "an agent's address: their replies are the desk's record (give --agent to erase it anyway)"
        return report
    probe = Needles.build([address])
    with ctx.db.reader() as session:
        ticket_ids, names = _tickets_of(session, local, domain, probe)
    needles = Needles.build([address], names)
    scope = Scope(needles, needles.is_address, REDACTED, whole_ticket=False)
    now, batch = ctx.clock.now(), ctx.config.main.retention.batch_size
    ordered = sorted(ticket_ids)
    for at in range(0, len(ordered), batch):
        with unit(ctx.db, dry_run) as session:
            for ticket_id in ordered[at : at + batch]:
                ticket = session.get(Ticket, ticket_id, with_for_update=not ctx.db.is_sqlite)
                if ticket is None:
                    continue
                counts = erase_in_ticket(session, ticket, scope)
                event(session, ticket.id, now, ERASED_EVENT, f"personal data of one person erased on request: "
                                                             f"{counts.summary()}")
                report.tickets.append((ticket.number, ticket.status))
                report.counts.add(counts)
    _unticketed(ctx, scope, report)
    with unit(ctx.db, dry_run) as session:
        query = select(Outbox).where(Outbox.ticket_id.is_(None))
        rows = [r for r in session.scalars(query) if _mentions(needles, r)]
        report.outbox = len(rows)
        report.counts.outbox_removed += scrub_outbox(session, select(Outbox).where(Outbox.id.in_([r.id for r in rows])),
                                                     scope)
        suppressed = [a for a in session.scalars(select(Suppression.address).where(
            _named(Suppression.address, local, domain))) if needles.is_address(a)]
        if suppressed:
            session.execute(delete(Suppression).where(Suppression.address.in_(suppressed)))
        report.suppressions = len(suppressed)
    if dry_run:
        report.files = blobsweep.would_free(ctx.db, ctx.blobs, report.counts.freed, report.counts.purged_rows)
    else:
        report.files = blobsweep.delete_unneeded(ctx.db, ctx.blobs, report.counts.freed)
    return report


def _tickets_of(session: Any, local: str, domain: str, probe: Needles) -> tuple[set[int], list[str]]:
    """The tickets they appear in, and the names they went by there."""
    ids: set[int] = set()
    names: list[str] = []
    for ticket_id, email, name in session.execute(select(Ticket.id, Ticket.requester_email, Ticket.requester_name)
                                                  .where(_named(Ticket.requester_email, local, domain))):
        if probe.is_address(email):
            ids.add(ticket_id)
            names.append(name)
    for ticket_id, email in session.execute(select(Ticket.id, Ticket.assignee)
                                            .where(_named(Ticket.assignee, local, domain))):
        if probe.is_address(email):
            ids.add(ticket_id)
    for ticket_id, email, name in session.execute(select(Participant.ticket_id, Participant.email, Participant.name)
                                                  .where(_named(Participant.email, local, domain))):
        if probe.is_address(email):
            ids.add(ticket_id)
            names.append(name)
    for ticket_id, email, name in session.execute(select(Message.ticket_id, Message.from_email, Message.from_name)
                                                  .where(_named(Message.from_email, local, domain))):
        if probe.is_address(email):
            ids.add(ticket_id)
            names.append(name)
    for ticket_id, mail_from, sender in session.execute(
        select(Inbound.ticket_id, Inbound.mail_from, Inbound.sender).where(
            Inbound.ticket_id.is_not(None),
            or_(_named(Inbound.mail_from, local, domain), _named(Inbound.sender, local, domain)),
        )
    ):
        if probe.is_address(mail_from) or probe.is_address(sender or ""):
            ids.add(ticket_id)
    return ids, [n for n in names if n]


def _unticketed(ctx: Context, scope: Scope, report: ForgetReport) -> None:
    """Received mail kept without a ticket (quarantine, rejected, duplicates, status requests) that is theirs
    or names them. Read whole, a batch at a time: such mail is a small share of the table."""
    batch, after = ctx.config.main.retention.batch_size, 0
    while True:
        with unit(ctx.db, report.dry_run) as session:
            rows = list(session.scalars(select(Inbound).where(Inbound.ticket_id.is_(None), Inbound.id > after)
                                        .order_by(Inbound.id).limit(batch)))
            if not rows:
                return
            after = rows[-1].id
            raws = {i: raw for i, raw in session.execute(select(InboundRaw.inbound_id, InboundRaw.raw)
                                                         .where(InboundRaw.inbound_id.in_([r.id for r in rows])))}
            theirs = [r for r in rows if _inbound_names(scope, r, raws.get(r.id))]
            for row in theirs:
                scrub_inbound(row, scope)
            report.counts.raw += purge_raw(session, [r.id for r in theirs if r.id in raws])
            report.unticketed += len(theirs)
        if len(rows) < batch:
            return


def _inbound_names(scope: Scope, row: Inbound, raw: bytes | None) -> bool:
    n = scope.needles
    if scope.person(row.mail_from) or scope.person(row.sender or ""):
        return True
    if n.found_in(row.reason) or n.found_in(json.dumps(row.decision or {}, ensure_ascii=False)):
        return True
    return raw is not None and n.bytes_name(raw)


def _mentions(needles: Needles, row: Outbox) -> bool:
    texts = [row.recipient, *row.recipients, row.subject, row.text, row.html or "",
             json.dumps(row.headers or {}, ensure_ascii=False)]
    return any(needles.found_in(t) for t in texts)
