"""Read-only views behind `tickets list/show`, quarantine and outbox listings (JSON contract: DESIGN)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mailgate.jobs.erasure import PURGED
from mailgate.storage import links
from mailgate.storage.model import FORWARD_KEYS, Inbound, Outbox, Ticket
from mailgate.storage.store import Store


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
        "reply_address": ticket.reply_address,
    }
    if messages:  # merged and split tickets (pipeline/links.py), both ways
        linked = links.links(store.session, ticket)
        data.update(merged_into=linked.merged_into, merged_from=list(linked.merged_from),
                    split_from=linked.split_from, split_into=list(linked.split_into))
    else:  # a listing: where a merged ticket's thread went
        survivor = store.ticket(ticket.merged_into) if ticket.merged_into is not None else None
        data["merged_into"] = survivor.number if survivor else None
    if messages:  # one ticket shown: its numbers in other help desks, then its thread
        data["aliases"] = [
            {"system": system, "number": number}
            for system, number in store.aliases(ticket.id)
            if system != FORWARD_KEYS  # not a number: the key that recognises a second forward of the same mail
        ]
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
                        "sha256": a.sha256 or None,
                        "purged": a.sha256 == PURGED,  # its file deleted by retention or forget
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
    if data["reply_address"]:
        lines.append(f"  {'written to':<19} {data['reply_address']}")
    if data["aliases"]:
        lines.append(f"  {'also known as':<19} {', '.join(a['system'] + ' ' + a['number'] for a in data['aliases'])}")
    for key in ("merged_into", "merged_from", "split_from", "split_into"):
        value = data[key]
        if value:
            lines.append(f"  {key.replace('_', ' '):<19} {', '.join(value) if isinstance(value, list) else value}")
    lines += _sla_lines(ticket, store)
    lines.append("Events:")
    lines += [f"  {e.at.isoformat()}  {e.kind:<12} {e.actor}: {e.detail}" for e in store.events(ticket.id)]
    lines.append("Messages:")
    for m in data["messages"]:
        lines.append(f"  --- {m['created_at']}  {m['kind']} from {m['from']}")
        lines += [f"  | {line}" for line in (m["body"] or "").splitlines()]
        lines += [f"  [attachment] {a['filename']} ({a['content_type']}, {a['size']} bytes"
                  + (", purged: the file was deleted)" if a["purged"] else ")") for a in m["attachments"]]
    return "\n".join(lines)


def _sla_lines(ticket: Ticket, store: Store) -> list[str]:
    """Time left or overdue per target, then the escalation history."""
    now = datetime.now(UTC)
    lines = []
    for target, due, met in (
        ("first_response", ticket.first_response_due, ticket.first_response_at),
        ("resolution", ticket.resolution_due, ticket.resolved_at if ticket.status in ("resolved", "closed") else None),
    ):
        if due is None:
            continue
        breached = getattr(ticket, f"{target}_breached")
        if met is not None:
            state = f"met at {met.isoformat()}" + (" (late)" if breached or met > due else "")
        else:
            left = due - now
            state = f"{_span(left)} left" if left.total_seconds() > 0 else f"overdue by {_span(-left)}"
        lines.append(f"  {target + ' SLA':<19} {state}")
    history = [e for e in store.events(ticket.id) if e.kind in ("sla_escalation", "sla_breach")]
    if history:
        lines.append("Escalations:")
        lines += [f"  {e.at.isoformat()}  {e.kind:<14} {e.detail}" for e in history]
    return lines


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    return (f"{days}d " if days else "") + f"{rest // 60}h{rest % 60:02d}m"


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
        "hold": row.hold,  # spam | flood:sender | flood:domain: held until `quarantine reprocess ID`
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
