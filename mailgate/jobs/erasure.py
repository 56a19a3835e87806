"""Erasing personal data from one ticket's rows: shared by retention (a whole old ticket made anonymous)
and ``forget`` (one person, wherever they appear).

What stays is the desk's record without the people in it: the ticket, its dates, status and help topic,
the agents' replies and notes (with the people's addresses and names replaced), and the events (likewise).
What goes: the people's addresses and names, the words of their messages, the raw mail, and the files
of the attachments named in a ``Scope``. Attachment rows stay with ``sha256 = PURGED`` so ``tickets show``
can say a file was there and is gone; the files themselves are deleted by ``blobsweep`` once no row
needs them any more (they are shared by content).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailgate.domain import MessageKind
from mailgate.jobs.scrub import ERASED_ADDRESS, Needles
from mailgate.storage.model import (
    FORWARD_KEYS,
    AttachmentRow,
    Event,
    Inbound,
    InboundRaw,
    Message,
    Outbox,
    Participant,
    Ticket,
    TicketAlias,
)

PURGED = ""  # AttachmentRow.sha256 once the file is purged: a real one is 64 hex digits
DESK_WORDS = frozenset({MessageKind.AGENT.value, MessageKind.NOTE.value})  # the desk's own record
UNSENT = ("pending", "failed")  # outbox rows that could still go out (failed: by `outbox retry`)


def placeholder(participant_id: int) -> str:
    """One per participant row: a ticket's participants are unique by address."""
    return f"erased-{participant_id}@erased.invalid"


@dataclass(frozen=True)
class Scope:
    """Whose data goes, in one ticket."""

    needles: Needles  # their addresses and names, replaced wherever they occur in text
    person: Callable[[str], bool]  # an address column holding this is replaced
    redaction: str  # what replaces the words of their messages
    whole_ticket: bool  # all raw mail and all attachment files go (retention), not only theirs


@dataclass
class Counts:
    participants: int = 0
    messages: int = 0  # messages whose words were replaced by the redaction
    raw: int = 0
    attachments: int = 0
    outbox_removed: int = 0
    freed: set[str] = field(default_factory=set)  # file hashes no longer named by these rows
    purged_rows: set[int] = field(default_factory=set)  # attachment rows marked purged (a dry run's sums)

    def add(self, other: Counts) -> None:
        self.participants += other.participants
        self.messages += other.messages
        self.raw += other.raw
        self.attachments += other.attachments
        self.outbox_removed += other.outbox_removed
        self.freed |= other.freed
        self.purged_rows |= other.purged_rows

    def summary(self) -> str:
        """For the ticket's event: counts only, nothing that names anyone."""
        return (f"{self.participants} address(es), {self.messages} message(s) redacted, {self.raw} raw mail(s) "
                f"and {self.attachments} attachment(s) deleted")


def purge_raw(session: Session, inbound_ids: Iterable[int]) -> int:
    ids = list(inbound_ids)
    if not ids:
        return 0
    done = session.execute(delete(InboundRaw).where(InboundRaw.inbound_id.in_(ids)))
    return int(getattr(done, "rowcount", 0) or 0)


def purge_attachments(rows: Iterable[AttachmentRow], needles: Needles | None = None) -> set[str]:
    """Mark rows purged; the hashes they held, for the file sweep."""
    freed: set[str] = set()
    for row in rows:
        if row.sha256 != PURGED:
            freed.add(row.sha256)
            row.sha256 = PURGED
        if needles is not None:
            row.filename = needles.text(row.filename)[:255]
    return freed


def erase_in_ticket(session: Session, ticket: Ticket, scope: Scope) -> Counts:
    """Apply ``scope`` to every row of one ticket (locked by the caller)."""
    counts = Counts()
    n = scope.needles
    if scope.person(ticket.requester_email):
        ticket.requester_email, ticket.requester_name = ERASED_ADDRESS, ""
        counts.participants += 1
    ticket.requester_name = n.text(ticket.requester_name)
    ticket.subject = n.text(ticket.subject)
    if ticket.assignee and scope.person(ticket.assignee):
        ticket.assignee = None
    for p in session.scalars(select(Participant).where(Participant.ticket_id == ticket.id)):
        if scope.person(p.email):
            p.email, p.name = placeholder(p.id), ""
            counts.participants += 1
        p.name = n.text(p.name)
    messages = list(session.scalars(select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)))
    for m in messages:
        theirs = scope.person(m.from_email)
        if theirs:
            m.from_email, m.from_name = ERASED_ADDRESS, ""
        if theirs and m.kind not in DESK_WORDS:
            m.body, m.html = scope.redaction, None
            counts.messages += 1
        else:
            m.body = n.text(m.body)
            m.html = n.text(m.html) if m.html else m.html
        m.from_name, m.subject = n.text(m.from_name), n.text(m.subject)
        if scope.whole_ticket or theirs:
            fresh = [a for a in m.attachments if a.sha256 != PURGED]
            counts.freed |= purge_attachments(m.attachments, n)
            counts.attachments += len(fresh)
            counts.purged_rows |= {a.id for a in fresh}
        else:
            for a in m.attachments:
                a.filename = n.text(a.filename)[:255]
    counts.raw += _inbound(session, ticket.id, scope)
    for e in session.scalars(select(Event).where(Event.ticket_id == ticket.id)):
        e.actor = ERASED_ADDRESS if scope.person(e.actor) else n.text(e.actor)
        e.detail = n.text(e.detail)
    counts.outbox_removed += scrub_outbox(session, select(Outbox).where(Outbox.ticket_id == ticket.id), scope)
    # an inline forward's key is a hash of its sender's address (with the minute and subject the ticket
    # keeps): anyone with the database could test a guessed address against it, so it goes too
    session.execute(delete(TicketAlias).where(TicketAlias.ticket_id == ticket.id, TicketAlias.system == FORWARD_KEYS))
    return counts


def _inbound(session: Session, ticket_id: int, scope: Scope) -> int:
    rows = list(session.scalars(select(Inbound).where(Inbound.ticket_id == ticket_id)))
    raw_ids = set(session.scalars(select(InboundRaw.inbound_id).where(InboundRaw.inbound_id.in_([r.id for r in rows]))))
    gone = []
    for row in rows:
        if row.id in raw_ids and (scope.whole_ticket or names_person(session, row, scope)):
            gone.append(row.id)
        scrub_inbound(row, scope)
    return purge_raw(session, gone)


def names_person(session: Session, row: Inbound, scope: Scope) -> bool:
    """Mail from the person, or that names them anywhere (sent to them, Cc, quoted): raw mail cannot be
    edited, so all of it goes."""
    if scope.person(row.mail_from) or scope.person(row.sender or ""):
        return True
    raw = session.scalar(select(InboundRaw.raw).where(InboundRaw.inbound_id == row.id))
    return raw is not None and scope.needles.bytes_name(raw)


def scrub_inbound(row: Inbound, scope: Scope) -> None:
    n = scope.needles
    if scope.person(row.mail_from):
        row.mail_from = ERASED_ADDRESS
    if row.sender and (scope.person(row.sender) or scope.whole_ticket):
        row.sender = None  # counted by flood control for a while after arrival only
    row.mail_from = n.text(row.mail_from)
    row.reason = n.text(row.reason) if row.reason else row.reason
    row.rcpt_tos = n.json(list(row.rcpt_tos or []))
    if row.decision:
        row.decision = n.json(dict(row.decision))


def scrub_outbox(session: Session, query: object, scope: Scope) -> int:
    """Unsent mail to the person is removed (nobody is to mail them now); every other row keeps its
    dedupe key, so nothing is sent twice, with their address and name replaced."""
    n = scope.needles
    removed = 0
    for row in session.scalars(query):  # type: ignore[call-overload]
        if row.status in UNSENT and (scope.person(row.recipient) or any(scope.person(r) for r in row.recipients)):
            session.delete(row)
            removed += 1
            continue
        if n.found_in(row.dedupe_key):  # still unique (two forms of one address), and never made again
            row.dedupe_key = f"{n.text(row.dedupe_key)}#{row.id}"[-300:]
        row.recipient = ERASED_ADDRESS if scope.person(row.recipient) else n.text(row.recipient)
        row.recipients = [ERASED_ADDRESS if scope.person(r) else n.text(r) for r in row.recipients or []]
        row.subject, row.text = n.text(row.subject), n.text(row.text)
        row.html = n.text(row.html) if row.html else row.html
        row.headers = n.json(dict(row.headers or {}))
        row.attachments = [[sha, n.text(name), kind] for sha, name, kind in row.attachments or []]
    return removed


def event(session: Session, ticket_id: int, now: datetime, kind: str, detail: str) -> None:
    session.add(Event(ticket_id=ticket_id, at=now, kind=kind, actor="system", detail=detail))
