"""One notification: its context, headers (threading, Outlook, signed Reply-To) and outbox row.

``notify.py`` decides who hears about what and applies the guards; this module turns one decision
into the text and the row that the outbox sender will deliver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from mailgate.config import Notifications
from mailgate.domain import Address, Attachment, Classification, Notification
from mailgate.identity import Identity
from mailgate.outbound import threadindex
from mailgate.outbound.templates import Templates
from mailgate.pipeline.audience import Directory, Planned
from mailgate.pipeline.quotes import REPLY_MARKER
from mailgate.pipeline.thread import TicketTag
from mailgate.storage.model import Outbox, ThreadRef, Ticket
from mailgate.storage.store import Store


@dataclass(frozen=True)
class NotifyContext:
    identity: Identity
    tag: TicketTag
    templates: Templates
    own: frozenset[str]
    settings: Notifications
    directory: Directory
    mail_from: str
    default_support: str
    topic_overrides: dict[str, dict[str, bool]] | None = None  # help topic -> kind -> on/off
    ask_rating: bool = False  # the resolution notice asks for a 1-5 satisfaction rating
    from_names: dict[str, str] | None = None  # help topic -> display name of its tickets' mail
    # (ticket number, requester, now) -> the signed link to the ticket's status page (``web/status_link.py``);
    # None when the desk has no status page (``http.form.enabled`` off)
    status_link: Callable[[str, str, datetime], str] | None = None


@dataclass(frozen=True)
class Trigger:
    """What caused the notifications: the mail (or event) they answer, for threading and templates."""

    message_id: str | None
    classification: Classification | None
    support: str
    message: dict[str, str]
    change: dict[str, str]
    key: str  # unique per cause, so each notification is queued once (dedupe key)
    fresh: bool = False  # the ticket was created by this cause: nothing was sent for it before
    attachments: tuple[Attachment, ...] = ()  # relayed with an agent's reply (never with notes)


def ticket_sender(nc: NotifyContext, ticket: Ticket) -> str:
    """From of every mail about the ticket: the address its customer wrote to (``billing@`` stays
    ``billing@`` for the whole thread), named for its help topic; otherwise ``outbound.from``."""
    name, address = parseaddr(nc.mail_from)
    name = (nc.from_names or {}).get(ticket.help_topic or "", name)
    address = ticket.reply_address or address
    if not name:
        return address
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def thread_references(store: Store, ticket: Ticket, trigger: str | None) -> tuple[str, ...]:
    """The ticket's thread, capped like RT does (first 4 + last 6), ending with the triggering mail."""
    ids = [m for m in store.thread_message_ids(ticket.id) if m != trigger]
    ids = ids if len(ids) <= 9 else ids[:4] + ids[-5:]
    return tuple([*ids, trigger] if trigger else ids)


def thread_index(ticket: Ticket, identity: Identity, now: datetime) -> str:
    base = threadindex.decode(ticket.conversation_index)
    if base is None:
        guid = hashlib.sha256(f"{identity.domain}:{ticket.id}:{ticket.number}".encode()).digest()[:16]
        base = threadindex.root(ticket.created_at, guid)
    return threadindex.encode(threadindex.child(base[: threadindex.HEADER_LEN], now))


def template_context(
    ticket: Ticket, tag: TicketTag, to: Address, support: str, message: dict[str, str], change: dict[str, str]
) -> dict[str, Any]:
    return {
        "ticket": {
            "number": ticket.number,
            "subject": ticket.subject,
            "status": ticket.status,
            "priority": ticket.priority,
            "help_topic": ticket.help_topic,
            "department": ticket.department,
            "assignee": ticket.assignee,
            "tag": tag.tag(ticket.number),
        },
        "requester": {"name": ticket.requester_name, "email": ticket.requester_email},
        "recipient": {"name": to.name, "email": to.email},
        "support_address": support,
        "reply_marker": REPLY_MARKER,
        "message": message,
        "change": change,
    }


def build(
    nc: NotifyContext,
    item: Planned,
    ticket: Ticket,
    trigger: Trigger,
    references: tuple[str, ...],
    key: str,
    now: datetime,
) -> Notification:
    variables = template_context(ticket, nc.tag, item.to, trigger.support, trigger.message, trigger.change)
    variables["status_url"] = status_url(nc, ticket, item.to.email, now)
    rendered = nc.templates.render(item.template or item.kind, variables, subject_of=item.kind)
    headers = {
        "Reply-To": reply_to(nc, trigger.support, ticket, item.to.email),
        "Thread-Topic": ticket.subject,
        "Thread-Index": thread_index(ticket, nc.identity, now),
    }
    if item.auto_submitted:
        headers["Auto-Submitted"] = item.auto_submitted
    return Notification(
        kind=item.kind,
        to=(item.to.email,),
        ticket_id=ticket.id,
        dedupe_key=key,
        subject=nc.tag.with_tag(rendered.subject, ticket.number),
        text=rendered.text,
        html=rendered.html,
        message_id=nc.identity.message_id(ticket.id, item.to.email),
        in_reply_to=trigger.message_id,
        references=tuple(r for r in references if _shown_to(nc.identity, r, item.to.email)),
        auto_submitted=item.auto_submitted or "",
        automatic=item.automatic,
        headers=tuple(headers.items()),
        attachments=tuple((a.sha256, a.filename, a.content_type) for a in trigger.attachments)
        if item.kind == "agent_reply"
        else (),
    )


def _shown_to(identity: Identity, message_id: str, recipient: str) -> bool:
    """Our own Message-IDs go only to the recipient they were made for.

    Each names its recipient (a keyed hash), and a bounce quoting one may suppress that recipient's
    automatic mail; were a collaborator shown the id of the ack to the requester, they could forge
    such a bounce. Other ids (the customers' own mails) thread everyone's copy alike.
    """
    if not message_id.startswith("<mg."):
        return True
    signed = identity.verify_message_id(message_id)
    return signed is None or signed.recipient_hash == identity.recipient_hash(recipient)


def status_url(nc: NotifyContext, ticket: Ticket, recipient: str, now: datetime) -> str | None:
    """The status page's link, for the requester alone: it is signed for them and shows their thread."""
    if nc.status_link is None or not ticket.requester_email or recipient.lower() != ticket.requester_email.lower():
        return None
    return nc.status_link(ticket.number, ticket.requester_email, now)


def reply_to(nc: NotifyContext, support: str, ticket: Ticket, recipient: str) -> str:
    """Agents get their own signed address (it authenticates their replies); others the ticket's."""
    if nc.directory.is_agent(recipient) and nc.settings.reply_to_token:
        return nc.identity.plus_address(support, "a", ticket.id, recipient)
    return nc.identity.plus_address(support, "t", ticket.id) if nc.settings.reply_to_token else support


def queue(store: Store, ticket_id: int | None, notes: list[Notification], mail_from: str, now: datetime) -> None:
    """Outbox rows for ``notes`` (and their Message-IDs as thread references, when there is a ticket)."""
    rows, refs = [], []
    for note in notes:
        headers = dict(note.headers)
        if note.in_reply_to:
            headers["In-Reply-To"] = note.in_reply_to
        if note.references:
            headers["References"] = " ".join(note.references)
        rows.append(
            {
                "dedupe_key": note.dedupe_key,
                "ticket_id": ticket_id,
                "kind": note.kind,
                "mail_from": mail_from,
                "recipients": list(note.to),
                "recipient": note.to[0],
                "automatic": note.automatic,
                "message_id": note.message_id,
                "subject": note.subject,
                "headers": headers,
                "text": note.text,
                "html": note.html,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "locked_until": None,
                "sent_at": None,
                "last_error": None,
                "attachments": [list(a) for a in note.attachments],
            }
        )
        if ticket_id is not None:
            refs.append({"message_id": note.message_id, "ticket_id": ticket_id, "direction": "out"})
    store.add_rows(Outbox, rows)
    store.add_rows(ThreadRef, refs)
