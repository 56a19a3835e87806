"""Read-only views behind `tickets list/show`, quarantine and outbox listings (JSON contract: DESIGN)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailgate.model import Inbound, Outbox, Ticket
from mailgate.store import Store


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def ticket_json(ticket: Ticket, store: Store, *, messages: bool) -> dict[str, Any]:
    participants = store.participants(ticket.id)
    data: dict[str, Any] = {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "help_topic": ticket.help_topic,
        "department": ticket.department,
        "assignee": ticket.assignee,
        "sla_plan": ticket.sla_plan,
        "requester": ticket.requester_email,
        "collaborators": [email for email, _name, role in participants if role == "collaborator"],
        "created_at": iso(ticket.created_at),
        "first_response_due": iso(ticket.first_response_due),
        "resolution_due": iso(ticket.resolution_due),
        "overdue": ticket.overdue,
    }
    if messages:
        data["messages"] = [
            {
                "kind": m.kind,
                "from": m.from_email,
                "body": m.body,
                "created_at": iso(m.created_at),
                "message_id": m.message_id,
                "attachments": [
                    {
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "size": a.size,
                        "sha256": a.sha256,
                    }
                    for a in m.attachments
                ],
            }
            for m in store.messages(ticket.id)
        ]
    return data


def ticket_text(ticket: Ticket, store: Store) -> str:
    data = ticket_json(ticket, store, messages=True)
    lines = [f"Ticket {ticket.number}: {ticket.subject}"]
    for key in (
        "status",
        "priority",
        "help_topic",
        "department",
        "assignee",
        "sla_plan",
        "requester",
        "created_at",
        "first_response_due",
        "resolution_due",
        "overdue",
    ):
        lines.append(f"  {key:<19} {data[key] if data[key] is not None else '-'}")
    if data["collaborators"]:
        lines.append(f"  {'collaborators':<19} {', '.join(data['collaborators'])}")
    lines.append("Events:")
    lines += [f"  {e.at.isoformat()}  {e.kind:<12} {e.actor}: {e.detail}" for e in store.events(ticket.id)]
    lines.append("Messages:")
    for m in data["messages"]:
        lines.append(f"  --- {m['created_at']}  {m['kind']} from {m['from']}")
        lines += [f"  | {line}" for line in (m["body"] or "").splitlines()]
        lines += [f"  [attachment] {a['filename']} ({a['content_type']}, {a['size']} bytes)" for a in m["attachments"]]
    return "\n".join(lines)


def inbound_json(row: Inbound) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": iso(row.received_at),
        "source": row.source,
        "mailbox": row.mailbox,
        "mail_from": row.mail_from,
        "rcpt_tos": row.rcpt_tos,
        "message_id": row.message_id,
        "size": row.size,
        "status": row.status,
        "reason": row.reason,
        "ticket_id": row.ticket_id,
    }


def outbox_json(row: Outbox) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "to": row.recipients,
        "subject": row.subject,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at),
        "sent_at": iso(row.sent_at),
        "last_error": row.last_error,
        "message_id": row.message_id,
        "dedupe_key": row.dedupe_key,
    }
