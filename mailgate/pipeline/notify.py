"""Stage 10: who hears about this change; render templates; write Outbox rows in the same transaction.

Machine mail (bounces, auto-replies, our own loops) is never answered by
machine, and nothing automatic ever goes to one of our own addresses.
"""

from __future__ import annotations

from datetime import datetime

from mailgate.domain import Change, Classification, Envelope, Notification, ParsedMail, RouteDecision
from mailgate.identity import Identity, is_own_address
from mailgate.model import Outbox, ThreadRef, Ticket
from mailgate.pipeline.quotes import REPLY_MARKER
from mailgate.pipeline.thread import TicketTag
from mailgate.store import Store
from mailgate.templates import Templates


def support_address(parsed: ParsedMail, envelope: Envelope, own: frozenset[str], default: str) -> str:
    """The address the customer wrote to, so replies come back to the same place."""
    candidates = [*envelope.rcpt_tos, *(a.email for a in (*parsed.to, *parsed.cc))]
    return next((c.lower() for c in candidates if is_own_address(c, own)), default)


def plan(
    change: Change,
    ticket: Ticket,
    parsed: ParsedMail,
    cls: Classification,
    decision: RouteDecision,
    *,
    identity: Identity,
    tag: TicketTag,
    templates: Templates,
    own: frozenset[str],
    support: str,
) -> list[Notification]:
    if not change.created or cls.automatic or decision.no_autoreply:
        return []
    target = parsed.reply_to[0] if parsed.reply_to else parsed.from_addr
    if target is None or is_own_address(target.email, own):
        return []
    context = {
        "ticket": {
            "number": ticket.number,
            "subject": ticket.subject,
            "status": ticket.status,
            "priority": ticket.priority,
            "help_topic": ticket.help_topic,
            "department": ticket.department,
            "tag": tag.tag(ticket.number),
        },
        "requester": {"name": target.name, "email": target.email},
        "support_address": support,
        "reply_marker": REPLY_MARKER,
        "message": {"text": parsed.new_text, "subject": parsed.subject},
    }
    rendered = templates.render("ack_new", context)
    references = tuple(dict.fromkeys([*parsed.references, *([parsed.message_id] if parsed.message_id else [])]))
    return [
        Notification(
            kind="ack_new",
            to=(target.email,),
            ticket_id=ticket.id,
            dedupe_key=f"ack_new:{ticket.id}",
            subject=tag.with_tag(rendered.subject, ticket.number),
            text=rendered.text,
            html=rendered.html,
            message_id=identity.message_id(ticket.id, target.email),
            in_reply_to=parsed.message_id,
            references=references[-10:],
            auto_submitted="auto-replied",
        )
    ]


def write_outbox(
    store: Store, ticket: Ticket, notes: list[Notification], mail_from: str, support: str, now: datetime
) -> None:
    session = store.session
    for note in notes:
        if store.outbox_key_exists(note.dedupe_key):
            continue  # e.g. a quarantined mail reprocessed: each notification goes out once
        headers = {"Auto-Submitted": note.auto_submitted, "Reply-To": support}
        if note.in_reply_to:
            headers["In-Reply-To"] = note.in_reply_to
        if note.references:
            headers["References"] = " ".join(note.references)
        session.add(
            Outbox(
                dedupe_key=note.dedupe_key,
                ticket=ticket,
                kind=note.kind,
                mail_from=mail_from,
                recipients=list(note.to),
                recipient=note.to[0],
                automatic=note.automatic,
                message_id=note.message_id,
                subject=note.subject,
                headers=headers,
                text=note.text,
                html=note.html,
                status="pending",
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
        )
        session.add(ThreadRef(message_id=note.message_id, ticket=ticket, direction="out"))
