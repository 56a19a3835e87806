"""The rows a merge or a split moves between tickets, and the links read back (pipeline/links.py decides).

Rare, agent-driven writes: plain ORM statements over the session, each finding its rows through an
index on ``ticket_id``, ``message_id`` or ``merged_into``/``split_from``, never a whole table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from mailgate.storage.model import Event, Inbound, Message, Outbox, Participant, SlaTimer, ThreadRef, Ticket

MAX_HOPS = 50  # merged_into links followed at most: a chain is one link per merge an agent made


def survivor(session: Session, ticket: Ticket) -> tuple[Ticket, tuple[Ticket, ...]]:
    """The ticket mail for ``ticket`` goes to: its merged_into link followed to the end (A -> B -> C),
    and the merged tickets passed on the way. A merge into a ticket whose chain leads back is refused,
    so no link comes round; were one written by hand, the walk stops before the ticket it would repeat."""
    passed: list[Ticket] = []
    seen = {ticket.id}
    while ticket.merged_into is not None and len(passed) < MAX_HOPS:
        following = session.get(Ticket, ticket.merged_into)
        if following is None or following.id in seen:
            break
        passed.append(ticket)
        seen.add(following.id)
        ticket = following
    return ticket, tuple(passed)


def move_thread(session: Session, source: int, target: int) -> dict[str, int]:
    """Messages (with their attachments), events and Message-IDs of ``source`` become ``target``'s;
    how many of each moved. The received mails' records follow (``inbound.ticket_id``): retention and
    ``forget`` find a mail's raw bytes through its ticket, which is now the survivor."""
    moved = {}
    for name, model in (("messages", Message), ("events", Event), ("thread ids", ThreadRef), ("mails", Inbound)):
        result = session.execute(
            update(model)
            .where(model.ticket_id == source)
            .values(ticket_id=target)
            .execution_options(synchronize_session=False)
        )
        moved[name] = int(getattr(result, "rowcount", 0) or 0)
    return moved


def drop_participants(session: Session, ticket_id: int) -> None:
    session.execute(delete(Participant).where(Participant.ticket_id == ticket_id))


def drop_pending_timers(session: Session, ticket_id: int) -> None:
    """A merged ticket's ladder rungs not yet fired: gone, so the sweep never fires them (fired ones stay)."""
    session.execute(delete(SlaTimer).where(SlaTimer.ticket_id == ticket_id, SlaTimer.fired_at.is_(None)))


@dataclass(frozen=True)
class OurMail:
    """One of our outgoing mails, found by its Message-ID: which ticket, and what it answered."""

    ticket_id: int | None
    kind: str
    in_reply_to: str | None  # the Message-ID of the mail that caused it
    inbound_sha: str | None  # the start of the received mail's hash its dedupe key names (``in-<sha>``)


def our_mail(session: Session, ticket_id: int, message_id: str) -> OurMail | None:
    """Looked for among the ticket's own outgoing mail (by ``outbox.ticket_id``): an index on the
    Message-ID would cost every outgoing mail its upkeep for the sake of a rare ``#split``."""
    row = session.execute(
        select(Outbox.ticket_id, Outbox.kind, Outbox.headers, Outbox.dedupe_key)
        .where(Outbox.ticket_id == ticket_id, Outbox.message_id == message_id)
        .limit(1)
    ).first()
    if row is None:
        return None
    found, kind, headers, key = row
    sha = next((part[3:] for part in str(key).split(":") if part.startswith("in-")), None)
    return OurMail(found, kind, (headers or {}).get("In-Reply-To"), sha)


@dataclass(frozen=True)
class Entry:
    """A message of a ticket's thread, as a split judges it."""

    id: int
    kind: str
    from_email: str
    from_name: str
    subject: str
    body: str
    message_id: str | None
    inbound_sha: str | None


def entries(session: Session, ticket_id: int) -> list[Entry]:
    """The ticket's messages in order (read through the index on message.ticket_id)."""
    rows = session.execute(
        select(Message.id, Message.kind, Message.from_email, Message.from_name, Message.subject, Message.body,
               Message.message_id, Inbound.sha256)
        .outerjoin(Inbound, Inbound.id == Message.inbound_id)
        .where(Message.ticket_id == ticket_id)
        .order_by(Message.id)
    ).all()
    return [Entry(*row) for row in rows]


def ticket_holding(session: Session, message_id: str) -> Ticket | None:
    """The ticket a received Message-ID belongs to now (its thread reference moved with it)."""
    found = session.scalar(
        select(ThreadRef.ticket_id).where(ThreadRef.message_id == message_id, ThreadRef.direction == "in").limit(1)
    )
    return session.get(Ticket, found) if found is not None else None


def move_messages(session: Session, source: int, target: int, moving: Sequence[Entry]) -> None:
    """Those messages, and the Message-IDs they were received with, from ``source`` to ``target``."""
    ids = [e.id for e in moving]
    session.execute(
        update(Message).where(Message.id.in_(ids)).values(ticket_id=target).execution_options(synchronize_session=False)
    )
    received = select(Message.inbound_id).where(Message.id.in_(ids), Message.inbound_id.is_not(None))
    session.execute(  # the received mails' records follow their messages (retention and forget go by ticket)
        update(Inbound)
        .where(Inbound.ticket_id == source, Inbound.id.in_(received))
        .values(ticket_id=target)
        .execution_options(synchronize_session=False)
    )
    mids = [e.message_id for e in moving if e.message_id]
    if mids:
        session.execute(
            update(ThreadRef)
            .where(ThreadRef.ticket_id == source, ThreadRef.message_id.in_(mids), ThreadRef.direction == "in")
            .values(ticket_id=target)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class Links:
    """What ``tickets show`` says of a ticket's merges and splits (numbers)."""

    merged_into: str | None
    merged_from: tuple[str, ...]
    split_from: str | None
    split_into: tuple[str, ...]


def links(session: Session, ticket: Ticket) -> Links:
    def number(ticket_id: int | None) -> str | None:
        other = session.get(Ticket, ticket_id) if ticket_id is not None else None
        return other.number if other is not None else None

    def numbers(column: InstrumentedAttribute[int | None]) -> tuple[str, ...]:
        return tuple(session.scalars(select(Ticket.number).where(column == ticket.id).order_by(Ticket.id)))

    return Links(
        number(ticket.merged_into), numbers(Ticket.merged_into), number(ticket.split_from), numbers(Ticket.split_from)
    )
