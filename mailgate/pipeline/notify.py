"""Stage 10: who hears about this change; render templates; write Outbox rows in the same transaction.

Machine mail (bounces, auto-replies, our own loops) is never answered by
machine, and nothing automatic ever goes to one of our own addresses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailgate import threadindex
from mailgate.config import Notifications
from mailgate.domain import (
    Address,
    Attachment,
    Change,
    Classification,
    Envelope,
    Notification,
    ParsedMail,
    Role,
    RouteDecision,
    Sender,
)
from mailgate.identity import Identity, is_own_address
from mailgate.model import Event, Outbox, ThreadRef, Ticket
from mailgate.pipeline import audience
from mailgate.pipeline.audience import Directory, Planned, TicketView
from mailgate.pipeline.guard import Limit, Verdict, may_send_automatic
from mailgate.pipeline.quotes import REPLY_MARKER
from mailgate.pipeline.thread import TicketTag
from mailgate.store import Store
from mailgate.templates import Templates


def recipients(parsed: ParsedMail, envelope: Envelope) -> tuple[str, ...]:
    """Everyone the mail was addressed to: envelope first, then To and Cc."""
    return tuple(dict.fromkeys([*(r.lower() for r in envelope.rcpt_tos), *(a.email for a in (*parsed.to, *parsed.cc))]))


def support_address(parsed: ParsedMail, envelope: Envelope, own: frozenset[str], default: str) -> str:
    """The address the customer wrote to (without any plus token), so replies come back to the same place."""
    found = next((c for c in recipients(parsed, envelope) if is_own_address(c, own)), default)
    local, _, domain = found.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def notify_mail(
    store: Store,
    nc: NotifyContext,
    change: Change,
    ticket: Ticket,
    parsed: ParsedMail,
    cls: Classification,
    sender: Sender,
    decision: RouteDecision,
    env: Envelope,
    now: datetime,
) -> list[Notification]:
    """Everything a received mail's change should tell anyone."""
    planned = audience.for_inbound(
        change, ticket_view(ticket, store), parsed, cls, sender, nc.directory, acknowledge=not decision.no_autoreply
    )
    support = support_address(parsed, env, nc.own, nc.default_support)
    message = {
        "text": change.text or parsed.new_text,
        "subject": parsed.subject,
        "from": sender.address,
        "from_name": sender.name,
    }
    details = {
        "status": ticket.status,
        "what": _what(change, ticket),
        "by": sender.address,
        "reason": "; ".join(change.command_errors) or sender.reason,
        "ask_rating": "yes" if nc.ask_rating and change.status_changed == "resolved" else "",
    }
    trigger = Trigger(
        parsed.message_id,
        cls,
        support,
        message,
        details,
        key=f"in-{parsed.sha256[:20]}",
        fresh=change.created,
        attachments=parsed.attachments if change.message_kind.value == "agent" else (),
    )
    return send(store, nc, planned, ticket, trigger, now)


def _what(change: Change, ticket: Ticket) -> str:
    if change.transferred_to:
        return f"Transferred to {change.transferred_to}"
    if change.assigned_to:
        return "Assigned to you"
    return f"Status {ticket.status}"


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


def ticket_view(ticket: Ticket, store: Store) -> TicketView:
    people = store.participants(ticket.id)
    return TicketView(
        requester=Address(ticket.requester_email, ticket.requester_name),
        collaborators=tuple(Address(email, name) for email, name, role in people if role == Role.COLLABORATOR.value),
        assignee=ticket.assignee,
        department=ticket.department,
    )


def _references(store: Store, ticket: Ticket, trigger: str | None) -> tuple[str, ...]:
    """The ticket's thread, capped like RT does (first 4 + last 6), ending with the triggering mail."""
    ids = [m for m in store.thread_message_ids(ticket.id) if m != trigger]
    ids = ids if len(ids) <= 9 else ids[:4] + ids[-5:]
    return tuple([*ids, trigger] if trigger else ids)


def _thread_index(ticket: Ticket, identity: Identity, now: datetime) -> str:
    base = threadindex.decode(ticket.conversation_index)
    if base is None:
        guid = hashlib.sha256(f"{identity.domain}:{ticket.id}:{ticket.number}".encode()).digest()[:16]
        base = threadindex.root(ticket.created_at, guid)
    return threadindex.encode(threadindex.child(base[: threadindex.HEADER_LEN], now))


def _context(
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


def _verdict(
    store: Store,
    nc: NotifyContext,
    item: Planned,
    ticket: Ticket,
    trigger: Classification | None,
    now: datetime,
    fresh: bool,
) -> Verdict:
    if not item.automatic:
        return Verdict(not is_own_address(item.to.email, nc.own), "our own address")
    limited = not nc.directory.is_agent(item.to.email)  # agents are always alerted; limits protect customers
    rungs = (*nc.settings.rate_limits, *nc.settings.ticket_rate_limits)
    horizon = now - max((r.within for r in rungs), default=timedelta(0))
    history = store.automatic_sent_at(item.to.email, horizon) if limited else []
    on_ticket = store.automatic_sent_at(item.to.email, horizon, ticket.id) if limited and not fresh else []
    return may_send_automatic(
        item.to.email,
        trigger=trigger,
        own=nc.own,
        suppressed_until=store.suppressed_until(item.to.email),
        to_recipient=history,
        to_recipient_on_ticket=on_ticket,
        ladder=[Limit(r.count, r.within) for r in nc.settings.rate_limits],
        ticket_ladder=[Limit(r.count, r.within) for r in nc.settings.ticket_rate_limits],
        now=now,
    )


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


def send(
    store: Store, nc: NotifyContext, planned: list[Planned], ticket: Ticket, trigger: Trigger, now: datetime
) -> list[Notification]:
    """Render, guard and queue each planned notification; what is held back is recorded on the ticket."""
    topic = (nc.topic_overrides or {}).get(ticket.help_topic or "")
    overrides = (nc.directory.department_overrides(ticket.department), topic)
    wanted = [item for item in planned if nc.settings.enabled(item.kind, *overrides)]
    if not wanted:
        return []
    references = _references(store, ticket, trigger.message_id)
    out: list[Notification] = []
    held: list[dict[str, object]] = []
    for item in wanted:
        verdict = _verdict(store, nc, item, ticket, trigger.classification, now, trigger.fresh)
        if not verdict.allowed:
            held.append(
                {
                    "ticket_id": ticket.id,
                    "at": now,
                    "kind": "notification_held",
                    "actor": "system",
                    "detail": f"{item.kind} to {item.to.email} not sent: {verdict.reason}",
                }
            )
            continue
        key = f"{item.kind}:{ticket.id}:{trigger.key}:{item.to.email}"
        if not trigger.fresh and store.outbox_key_exists(key):
            continue  # e.g. a quarantined mail reprocessed: each notification goes out once
        out.append(_build(nc, item, ticket, trigger, references, key, now))
    store.add_rows(Event, held)
    _queue(store, ticket, out, nc.mail_from, now)
    return out


def _build(
    nc: NotifyContext,
    item: Planned,
    ticket: Ticket,
    trigger: Trigger,
    references: tuple[str, ...],
    key: str,
    now: datetime,
) -> Notification:
    context = _context(ticket, nc.tag, item.to, trigger.support, trigger.message, trigger.change)
    rendered = nc.templates.render(item.kind, context)
    headers = {
        "Reply-To": _reply_to(nc, trigger.support, ticket, item.to.email),
        "Thread-Topic": ticket.subject,
        "Thread-Index": _thread_index(ticket, nc.identity, now),
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
        references=references,
        auto_submitted=item.auto_submitted or "",
        automatic=item.automatic,
        headers=tuple(headers.items()),
        attachments=tuple((a.sha256, a.filename, a.content_type) for a in trigger.attachments)
        if item.kind == "agent_reply"
        else (),
    )


def _reply_to(nc: NotifyContext, support: str, ticket: Ticket, recipient: str) -> str:
    """Agents get their own signed address (it authenticates their replies); others the ticket's."""
    if nc.directory.is_agent(recipient) and nc.settings.reply_to_token:
        return nc.identity.plus_address(support, "a", ticket.id, recipient)
    return nc.identity.plus_address(support, "t", ticket.id) if nc.settings.reply_to_token else support


def _queue(store: Store, ticket: Ticket, notes: list[Notification], mail_from: str, now: datetime) -> None:
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
                "ticket_id": ticket.id,
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
        refs.append({"message_id": note.message_id, "ticket_id": ticket.id, "direction": "out"})
    store.add_rows(Outbox, rows)
    store.add_rows(ThreadRef, refs)


def send_rejection(
    store: Store, nc: NotifyContext, parsed: ParsedMail, cls: Classification, support: str, reason: str, now: datetime
) -> Notification | None:
    """Tell the sender why a rule refused the mail, where no SMTP answer could (IMAP intake).

    Same guards as any automatic mail: never to machines, our own addresses, bounced addresses, or past
    the rate limit. There is no ticket, so the mail carries neither tag nor ticket threading.
    """
    to = parsed.reply_to[0] if parsed.reply_to else parsed.from_addr
    if to is None or not nc.settings.enabled("rejected"):
        return None
    horizon = now - max((r.within for r in nc.settings.rate_limits), default=timedelta(0))
    verdict = may_send_automatic(
        to.email,
        trigger=cls,
        own=nc.own,
        suppressed_until=store.suppressed_until(to.email),
        to_recipient=store.automatic_sent_at(to.email, horizon),
        to_recipient_on_ticket=[],
        ladder=[Limit(r.count, r.within) for r in nc.settings.rate_limits],
        ticket_ladder=[],
        now=now,
    )
    key = f"rejected:{parsed.sha256[:32]}:{to.email}"
    if not verdict.allowed or store.outbox_key_exists(key):
        return None
    context = {
        "message": {"subject": parsed.subject, "text": "", "from": to.email, "from_name": to.name},
        "support_address": support,
        "change": {"reason": reason},
        "reply_marker": REPLY_MARKER,
        "recipient": {"name": to.name, "email": to.email},
    }
    rendered = nc.templates.render("rejected", context)
    message_id = f"<mg.rejected.{parsed.sha256[:24]}@{nc.identity.domain}>"
    headers = {"Auto-Submitted": "auto-replied", "Reply-To": support}
    if parsed.message_id:
        headers |= {"In-Reply-To": parsed.message_id, "References": parsed.message_id}
    store.add_rows(
        Outbox,
        [
            {
                "dedupe_key": key,
                "ticket_id": None,
                "kind": "rejected",
                "mail_from": nc.mail_from,
                "recipients": [to.email],
                "recipient": to.email,
                "automatic": True,
                "message_id": message_id,
                "subject": rendered.subject,
                "headers": headers,
                "text": rendered.text,
                "html": rendered.html,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "locked_until": None,
                "sent_at": None,
                "last_error": None,
                "attachments": [],
            }
        ],
    )
    return Notification(
        "rejected",
        (to.email,),
        0,
        key,
        rendered.subject,
        rendered.text,
        rendered.html,
        message_id,
        parsed.message_id,
        (),
        "auto-replied",
    )
