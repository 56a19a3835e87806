"""A ticket as the API and the status page show it: its status and its public thread.

Internal notes and system messages are never in the public thread; an agent-scoped API key sees
notes too. A merged ticket shows as closed with the number it went into, so a customer's old link
still says where the conversation went on. Agents are shown by name, not by their address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailgate.storage.model import Message, Ticket
from mailgate.storage.store import Store

PUBLIC_KINDS = ("customer", "agent")


@dataclass(frozen=True)
class Shown:
    ticket: Ticket
    merged_into: str | None
    messages: tuple[Message, ...]
    fields: dict[str, str]
    channel: str | None


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def shown(store: Store, ticket: Ticket, *, notes: bool = False) -> Shown:
    kinds = (*PUBLIC_KINDS, "note") if notes else PUBLIC_KINDS
    messages = tuple(m for m in store.messages(ticket.id) if m.kind in kinds)
    fields: dict[str, str] = {}
    channel = None
    for event in store.events(ticket.id):
        if event.kind == "field":
            name, _, value = event.detail.partition("=")
            fields[name] = value
        elif event.kind == "channel" and channel is None:
            channel = event.detail.split(" ", 1)[0]
    survivor = store.ticket(ticket.merged_into) if ticket.merged_into is not None else None
    return Shown(ticket, survivor.number if survivor else None, messages, fields, channel)


def author(message: Message) -> str:
    """Who wrote it, as the customer may see it: an agent by name only."""
    if message.kind == "customer":
        return message.from_name or message.from_email
    return message.from_name or "Support"


def as_json(view: Shown) -> dict[str, Any]:
    t = view.ticket
    return {
        "number": t.number,
        "subject": t.subject,
        "status": t.status,
        "merged_into": view.merged_into,
        "priority": t.priority,
        "help_topic": t.help_topic,
        "requester": t.requester_email,
        "channel": view.channel or "email",
        "fields": view.fields,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "messages": [
            {
                "kind": m.kind,
                "author": author(m),
                "body": m.body,
                "created_at": iso(m.created_at),
                "attachments": [{"filename": a.filename, "content_type": a.content_type, "size": a.size}
                                for a in m.attachments],
            }
            for m in view.messages
        ],
    }
