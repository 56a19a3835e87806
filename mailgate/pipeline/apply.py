"""Stage 9: the only writer of tickets — create, append, reopen, events.

Everything the mail changes happens here, inside the ingest transaction, so
a failure anywhere rolls the whole mail back and the source keeps it. Rows
are linked by relationship rather than by id, so one flush at the end of the
mail writes them all in dependency order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from mailgate.config import SlaFile
from mailgate.domain import (
    Address,
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
    shown,
)
from mailgate.identity import is_own_address
from mailgate.outbound import threadindex
from mailgate.pipeline.commands import AgentMail
from mailgate.pipeline.signature import strip_signature
from mailgate.pipeline.thread import TicketTag
from mailgate.sla import timers as sla_timers
from mailgate.storage.blobs import BlobStore
from mailgate.storage.model import AttachmentRow, Event, Message, ThreadRef, Ticket
from mailgate.storage.store import Store

_REOPEN_FROM = (Status.AWAITING_REPLY.value, Status.RESOLVED.value, Status.CLOSED.value)


@dataclass(frozen=True)
class Writer:
    store: Store
    tag: TicketTag
    blobs: BlobStore
    own_addresses: frozenset[str]
    now: datetime
    sla: SlaFile | None = None  # plans for due times and ladder timers (sla_timers.sync)
    satisfaction: bool = False  # a resolved ticket's requester may answer with a rating 1-5


def event_row(w: Writer, ticket_id: int, kind: str, detail: str, actor: str = "system") -> dict[str, object]:
    return {"ticket_id": ticket_id, "at": w.now, "kind": kind, "actor": actor, "detail": detail}


def _insert_ticket(w: Writer, values: dict[str, object]) -> int | None:
    """Insert the ticket; None when its number was taken concurrently (only possible with several writers)."""
    session = w.store.session
    if session.get_bind().dialect.name == "sqlite":  # one writer at a time: the check before was enough
        return w.store.add(Ticket, values)
    try:
        with session.begin_nested():
            return w.store.add(Ticket, values)
    except IntegrityError:
        return None


def _create_ticket(
    w: Writer, parsed: ParsedMail, decision: RouteDecision, requester: Address | None, reply_address: str | None
) -> Ticket:
    """A new ticket; returned as a detached Ticket holding its values (the row is already written)."""
    return insert_numbered(w, {
        "subject": parsed.subject or "(no subject)",
        "status": (decision.status or Status.OPEN).value,
        "priority": decision.priority.value,
        "help_topic": decision.help_topic,
        "department": decision.department,
        "assignee": decision.assignee,
        "sla_plan": decision.sla_plan,
        "requester_email": requester.email if requester else "",
        "requester_name": requester.name if requester else "",
        "created_at": w.now,
        "updated_at": w.now,
        "first_response_due": None,
        "resolution_due": None,
        "first_response_at": None,
        "resolved_at": None,
        "closed_at": None,
        "overdue": False,
        "conversation_index": _conversation_index(parsed),
        "reply_address": reply_address,
    })


def insert_numbered(w: Writer, values: dict[str, object]) -> Ticket:
    """Insert a ticket under a free random number (drawn again when taken, also concurrently); returned
    as a detached Ticket holding its values. The one place a ticket number is allocated."""
    for _attempt in range(50):
        number = w.tag.new_number()
        if w.store.number_taken(number):
            continue
        row = {**values, "number": number}
        ticket_id = _insert_ticket(w, row)
        if ticket_id is not None:
            return Ticket(id=ticket_id, **row)
    raise RuntimeError("could not allocate a free ticket number; widen tickets.number_format")


def _conversation_index(parsed: ParsedMail) -> str | None:
    """The customer's Outlook conversation, so our replies join it rather than start a new one."""
    value = next((v for k, v in parsed.raw_headers if k.lower() == "thread-index"), None)
    data = threadindex.decode(value)
    return threadindex.encode(data[: threadindex.HEADER_LEN]) if data else None


def _participants(
    w: Writer, ticket_id: int, requester: Address | None, others: tuple[Address, ...]
) -> list[Address]:
    """Requester and collaborators of a new ticket; returns the collaborators."""
    people: dict[str, tuple[str, str, str]] = {}
    if requester is not None and requester.email:
        people[requester.email] = (requester.email, requester.name, Role.REQUESTER.value)
    for addr in others:
        if addr.email not in people and not is_own_address(addr.email, w.own_addresses):
            people[addr.email] = (addr.email, addr.name, Role.COLLABORATOR.value)
    w.store.add_participants(ticket_id, people.values())
    return [Address(e, n) for e, n, role in people.values() if role == Role.COLLABORATOR.value]


def _message_kind(cls: Classification, sender: Sender) -> MessageKind:
    """A stranger reaches a ticket only with machine mail that proved it answers our mail (authorize.admit):
    recorded, but not as the customer's words."""
    if cls.kind in (Kind.BOUNCE, Kind.LOOP) or sender.role is Role.STRANGER:
        return MessageKind.SYSTEM
    return MessageKind.AGENT if sender.role is Role.AGENT else MessageKind.CUSTOMER


def store_message(w: Writer, ticket_id: int, parsed: ParsedMail, inbound_id: int, kind: MessageKind, body: str) -> int:
    message_id = w.store.add(
        Message,
        {
            "ticket_id": ticket_id,
            "inbound_id": inbound_id,
            "kind": kind.value,
            "from_email": parsed.from_addr.email if parsed.from_addr else "",
            "from_name": parsed.from_addr.name if parsed.from_addr else "",
            "subject": parsed.subject,
            "body": body,
            "html": parsed.html,
            "message_id": parsed.message_id,
            "created_at": w.now,
        },
    )
    for att in parsed.attachments:
        w.blobs.put(att.sha256, att.data)
    w.store.add_rows(
        AttachmentRow,
        [
            {
                "message_row_id": message_id,
                "filename": att.filename,
                "content_type": att.content_type,
                "size": att.size,
                "sha256": att.sha256,
            }
            for att in parsed.attachments
        ],
    )
    if parsed.message_id:
        w.store.add_rows(ThreadRef, [{"message_id": parsed.message_id, "ticket_id": ticket_id, "direction": "in"}])
    return message_id


_RATING = re.compile(r"^\s*([1-5])\s*(?:/\s*5)?\s*(?:[-:.!]|$)")


def _rating(text: str) -> int | None:
    """A satisfaction rating on the first line ("4", "5/5", "3 - fine"), else None."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    m = _RATING.match(first)
    return int(m.group(1)) if m else None


def choose_assignee(store: Store, decision: RouteDecision, teams: dict[str, list[str]]) -> RouteDecision:
    """Resolve a rule's ``round_robin:<team>`` / ``least_loaded:<team>`` into an agent, from the database."""
    members = teams.get(decision.assign_team or "", [])
    if decision.assign_strategy is None or not members:
        return decision
    pick = store.least_loaded if decision.assign_strategy == "least_loaded" else store.next_in_turn
    chosen = pick(members)
    how = f"{decision.assign_strategy} in team {decision.assign_team} chose {chosen}"
    return replace(decision, assignee=chosen, changes=(*decision.changes, how))


@dataclass(frozen=True)
class Intent:
    """What authorize/commands decided, for apply to carry out."""

    follow_up_of: str | None = None
    add_collaborator: bool = False
    agent_mail: AgentMail | None = None  # an authenticated agent's mail to a ticket: see apply_agent.py
    to_notes: bool = False
    requester: Address | None = None  # of a new ticket (author.py); None: the mail's From
    also_cc: tuple[Address, ...] = ()  # collaborators of a new ticket besides To and Cc (Reply-To, author.py)
    reply_address: str | None = None  # the support address a new ticket's customer wrote to


def apply(
    w: Writer,
    parsed: ParsedMail,
    inbound_id: int,
    cls: Classification,
    match: ThreadMatch,
    sender: Sender,
    decision: RouteDecision,
    source: str,
    intent: Intent,
) -> tuple[Change, Ticket]:
    if match.ticket_id is None:
        return _create(w, parsed, inbound_id, cls, sender, decision, source, intent)
    existing = w.store.ticket(match.ticket_id)
    assert existing is not None
    if intent.add_collaborator:
        w.store.add_participants(existing.id, [(sender.address, sender.name, Role.COLLABORATOR.value)])
    return _append(w, existing, parsed, inbound_id, cls, sender)


def _create(
    w: Writer,
    parsed: ParsedMail,
    inbound_id: int,
    cls: Classification,
    sender: Sender,
    decision: RouteDecision,
    source: str,
    intent: Intent,
) -> tuple[Change, Ticket]:
    requester = intent.requester or parsed.from_addr
    ticket = _create_ticket(w, parsed, decision, requester, intent.reply_address)
    sla_timers.sync(w.store, w.sla, ticket, w.now, created=True)
    by_rule = tuple(Address(a, "") for a in decision.collaborators)
    collaborators = _participants(w, ticket.id, requester, (*parsed.to, *parsed.cc, *intent.also_cc, *by_rule))
    topic = f"help topic {shown(decision.help_topic)} (found by {decision.help_topic_via})"
    why = "; ".join(decision.changes) or "no rule matched"
    summary = (
        f"{topic}; department {shown(decision.department)}; priority {decision.priority.value}; "
        f"SLA {shown(decision.sla_plan)}; assignee {shown(decision.assignee)}. {why}"
    )
    events = [
        event_row(w, ticket.id, "created", f"from {sender.address or 'unknown sender'} via {source}"),
        event_row(w, ticket.id, "routed", summary),
    ]
    if intent.follow_up_of:
        events.append(event_row(w, ticket.id, "follow_up", f"follows up ticket {intent.follow_up_of}"))
    if decision.team:
        events.append(event_row(w, ticket.id, "team", f"team {decision.team}"))
    events += [event_row(w, ticket.id, "tag", tag) for tag in decision.tags]
    if sender.reason:
        events.append(event_row(w, ticket.id, "sender", sender.reason, sender.address))
    w.store.add_rows(Event, events)
    kind = _message_kind(cls, sender)
    text = parsed.unsigned or strip_signature(parsed.text)
    store_message(w, ticket.id, parsed, inbound_id, kind, text)
    names = tuple(str(e["kind"]) for e in events)
    change = Change(
        ticket.id, ticket.number, True, False, kind, names, text=text, collaborators=tuple(collaborators)
    )
    return change, ticket


def _append(
    w: Writer, ticket: Ticket, parsed: ParsedMail, inbound_id: int, cls: Classification, sender: Sender
) -> tuple[Change, Ticket]:
    events: list[dict[str, object]] = []
    kind = _message_kind(cls, sender)
    text = parsed.new_text or parsed.text
    store_message(w, ticket.id, parsed, inbound_id, kind, text)
    w.store.touch(ticket, w.now)
    rating = _rating(text) if w.satisfaction and sender.role is Role.REQUESTER else None
    if rating is not None and ticket.status in (Status.RESOLVED.value, Status.CLOSED.value):
        ticket.satisfaction = rating  # an answer to the satisfaction question, not a new problem
        w.store.add_rows(Event, [event_row(w, ticket.id, "rated", f"satisfaction {rating}/5", sender.address)])
        return Change(ticket.id, ticket.number, False, False, kind, ("rated",), text=text), ticket
    reopened = False
    if kind is MessageKind.CUSTOMER and cls.kind is not Kind.AUTO_REPLY and ticket.status in _REOPEN_FROM:
        previous = ticket.status
        ticket.status = Status.OPEN.value
        ticket.closed_at = None
        reopened = previous in (Status.RESOLVED.value, Status.CLOSED.value)
        events.append(
            event_row(
                w,
                ticket.id,
                "reopened" if reopened else "status",
                f"{previous} -> open on customer reply",
                sender.address,
            )
        )
    if cls.kind is Kind.BOUNCE:
        bounced = ", ".join(sorted(cls.bounced)) or "?"
        events.append(event_row(w, ticket.id, "bounce", f"{cls.reason}; bounced: {bounced}"))
    if sender.reason:
        events.append(event_row(w, ticket.id, "sender", sender.reason, sender.address))
    w.store.add_rows(Event, events)
    if events and events[0]["kind"] in ("reopened", "status"):  # the customer's turn is over: the clock runs
        sla_timers.sync(w.store, w.sla, ticket, w.now)
    names = tuple(str(e["kind"]) for e in events)
    status = Status.OPEN.value if reopened else None
    return Change(ticket.id, ticket.number, False, reopened, kind, names, status_changed=status, text=text), ticket
