"""Stage 9: the only writer of tickets — create, append, reopen, events.

Everything the mail changes happens here, inside the ingest transaction, so
a failure anywhere rolls the whole mail back and the source keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from mailgate.blobs import BlobStore
from mailgate.domain import (
    Change,
    Classification,
    Kind,
    MessageKind,
    ParsedMail,
    Role,
    RouteDecision,
    Sender,
    Status,
    ThreadMatch,
)
from mailgate.identity import is_own_address
from mailgate.model import AttachmentRow, Event, Message, Participant, ThreadRef, Ticket
from mailgate.pipeline.thread import TicketTag
from mailgate.store import Store

_REOPEN_FROM = (Status.AWAITING_REPLY.value, Status.RESOLVED.value, Status.CLOSED.value)


@dataclass(frozen=True)
class Writer:
    store: Store
    tag: TicketTag
    blobs: BlobStore
    own_addresses: frozenset[str]
    now: datetime


def _event(w: Writer, ticket_id: int, kind: str, detail: str, actor: str = "system") -> str:
    w.store.session.add(Event(ticket_id=ticket_id, at=w.now, kind=kind, actor=actor, detail=detail))
    return kind


def _create_ticket(w: Writer, parsed: ParsedMail, decision: RouteDecision) -> Ticket:
    requester = parsed.from_addr
    for _attempt in range(50):
        number = w.tag.new_number()
        if w.store.number_taken(number):
            continue
        ticket = Ticket(
            number=number,
            subject=parsed.subject or "(no subject)",
            status=Status.OPEN.value,
            priority=decision.priority.value,
            help_topic=decision.help_topic,
            department=decision.department,
            assignee=decision.assignee,
            sla_plan=decision.sla_plan,
            requester_email=requester.email if requester else "",
            requester_name=requester.name if requester else "",
            created_at=w.now,
            updated_at=w.now,
            overdue=False,
        )
        try:
            with w.store.session.begin_nested():
                w.store.session.add(ticket)
        except IntegrityError:  # another writer took the number between our check and insert
            continue
        return ticket
    raise RuntimeError("could not allocate a free ticket number; widen tickets.number_format")


def _participants(w: Writer, ticket: Ticket, parsed: ParsedMail) -> None:
    seen = set()
    if parsed.from_addr:
        w.store.session.add(
            Participant(
                ticket_id=ticket.id,
                email=parsed.from_addr.email,
                name=parsed.from_addr.name,
                role=Role.REQUESTER.value,
            )
        )
        seen.add(parsed.from_addr.email)
    for addr in (*parsed.to, *parsed.cc):
        if addr.email in seen or is_own_address(addr.email, w.own_addresses):
            continue
        seen.add(addr.email)
        w.store.session.add(
            Participant(ticket_id=ticket.id, email=addr.email, name=addr.name, role=Role.COLLABORATOR.value)
        )


def _message_kind(cls: Classification, sender: Sender) -> MessageKind:
    if cls.kind in (Kind.BOUNCE, Kind.LOOP):
        return MessageKind.SYSTEM
    return MessageKind.AGENT if sender.role is Role.AGENT else MessageKind.CUSTOMER


def _store_message(
    w: Writer, ticket: Ticket, parsed: ParsedMail, inbound_id: int, kind: MessageKind, body: str
) -> Message:
    message = Message(
        ticket_id=ticket.id,
        inbound_id=inbound_id,
        kind=kind.value,
        from_email=parsed.from_addr.email if parsed.from_addr else "",
        from_name=parsed.from_addr.name if parsed.from_addr else "",
        subject=parsed.subject,
        body=body,
        html=parsed.html,
        message_id=parsed.message_id,
        created_at=w.now,
    )
    w.store.session.add(message)
    w.store.session.flush()
    for att in parsed.attachments:
        w.blobs.put(att.sha256, att.data)
        w.store.session.add(
            AttachmentRow(
                message_row_id=message.id,
                filename=att.filename,
                content_type=att.content_type,
                size=att.size,
                sha256=att.sha256,
            )
        )
    if parsed.message_id:
        w.store.session.add(ThreadRef(message_id=parsed.message_id, ticket_id=ticket.id, direction="in"))
    return message


def apply(
    w: Writer,
    parsed: ParsedMail,
    inbound_id: int,
    cls: Classification,
    match: ThreadMatch,
    sender: Sender,
    decision: RouteDecision,
    source: str,
) -> Change:
    events: list[str] = []
    if match.ticket_id is None:
        ticket = _create_ticket(w, parsed, decision)
        _participants(w, ticket, parsed)
        events.append(_event(w, ticket.id, "created", f"from {sender.address or 'unknown sender'} via {source}"))
        topic = f"help topic {decision.help_topic!r} (found by {decision.help_topic_via})"
        why = "; ".join(decision.changes) or "no rule matched"
        summary = (
            f"{topic}; department {decision.department!r}; priority {decision.priority.value}; "
            f"SLA {decision.sla_plan!r}; assignee {decision.assignee!r}. {why}"
        )
        events.append(_event(w, ticket.id, "routed", summary))
        kind = _message_kind(cls, sender)
        message = _store_message(w, ticket, parsed, inbound_id, kind, parsed.text)
        return Change(ticket.id, ticket.number, True, False, kind, message.id, tuple(events))
    existing = w.store.ticket(match.ticket_id)
    assert existing is not None
    return _append(w, existing, parsed, inbound_id, cls, sender)


def _append(
    w: Writer, ticket: Ticket, parsed: ParsedMail, inbound_id: int, cls: Classification, sender: Sender
) -> Change:
    events: list[str] = []
    kind = _message_kind(cls, sender)
    message = _store_message(w, ticket, parsed, inbound_id, kind, parsed.new_text or parsed.text)
    ticket.updated_at = w.now
    reopened = False
    if kind is MessageKind.CUSTOMER and cls.kind not in (Kind.AUTO_REPLY,) and ticket.status in _REOPEN_FROM:
        previous = ticket.status
        ticket.status = Status.OPEN.value
        ticket.closed_at = None
        reopened = previous in (Status.RESOLVED.value, Status.CLOSED.value)
        events.append(
            _event(
                w,
                ticket.id,
                "reopened" if reopened else "status",
                f"{previous} -> open on customer reply",
                sender.address,
            )
        )
    if cls.kind is Kind.BOUNCE:
        events.append(_event(w, ticket.id, "bounce", f"{cls.reason}; bounced: {', '.join(sorted(cls.bounced)) or '?'}"))
    return Change(ticket.id, ticket.number, False, reopened, kind, message.id, tuple(events))
