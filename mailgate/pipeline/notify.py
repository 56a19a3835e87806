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
from mailgate.domain import Address, Change, Classification, Envelope, Notification, ParsedMail, Role, RouteDecision
from mailgate.identity import Identity, is_own_address
from mailgate.model import Event, Outbox, ThreadRef, Ticket
from mailgate.pipeline.audience import Directory, Planned, TicketView
from mailgate.pipeline.guard import Limit, Verdict, may_send_automatic
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


# --------------------------------------------------------------------------- step 4: every kind, guarded
@dataclass(frozen=True)
class NotifyContext:
    identity: Identity
    tag: TicketTag
    templates: Templates
    own: frozenset[str]
    settings: Notifications
    directory: Directory
    mail_from: str
    topic_overrides: dict[str, bool] | None = None


def ticket_view(ticket: Ticket, store: Store) -> TicketView:
    people = store.participants(ticket.id)
    return TicketView(
        requester=Address(ticket.requester_email, ticket.requester_name),
        collaborators=tuple(Address(p.email, p.name) for p in people if p.role == Role.COLLABORATOR.value),
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
    store: Store, nc: NotifyContext, plan_item: Planned, ticket: Ticket, trigger: Classification | None, now: datetime
) -> Verdict:
    if not plan_item.automatic:
        return Verdict(not is_own_address(plan_item.to.email, nc.own), "our own address")
    agent = nc.directory.is_agent(plan_item.to.email)
    horizon = now - max(
        (r.within for r in (*nc.settings.rate_limits, *nc.settings.ticket_rate_limits)), default=timedelta(0)
    )
    return may_send_automatic(
        plan_item.to.email,
        trigger=trigger,
        own=nc.own,
        suppressed_until=store.suppressed_until(plan_item.to.email),
        to_recipient=[] if agent else store.automatic_sent_at(plan_item.to.email, horizon),
        to_recipient_on_ticket=[] if agent else store.automatic_sent_at(plan_item.to.email, horizon, ticket.id),
        ladder=[Limit(r.count, r.within) for r in nc.settings.rate_limits],
        ticket_ladder=[Limit(r.count, r.within) for r in nc.settings.ticket_rate_limits],
        now=now,
    )


def send(
    store: Store,
    nc: NotifyContext,
    planned: list[Planned],
    ticket: Ticket,
    *,
    trigger_id: str | None,
    trigger: Classification | None,
    support: str,
    message: dict[str, str],
    change: dict[str, str],
    key: str,
    now: datetime,
) -> list[Notification]:
    """Render, guard and queue each planned notification; what is held back is recorded on the ticket."""
    out = []
    overrides = (nc.directory.department_overrides(ticket.department), nc.topic_overrides)
    for item in planned:
        if not nc.settings.enabled(item.kind, *overrides):
            continue
        verdict = _verdict(store, nc, item, ticket, trigger, now)
        if not verdict.allowed:
            store.session.add(
                Event(
                    ticket=ticket,
                    at=now,
                    kind="notification_held",
                    detail=f"{item.kind} to {item.to.email} not sent: {verdict.reason}",
                )
            )
            continue
        rendered = nc.templates.render(item.kind, _context(ticket, nc.tag, item.to, support, message, change))
        headers = {
            "Reply-To": support,
            "Thread-Topic": ticket.subject,
            "Thread-Index": _thread_index(ticket, nc.identity, now),
        }
        if item.auto_submitted:
            headers["Auto-Submitted"] = item.auto_submitted
        note = Notification(
            kind=item.kind,
            to=(item.to.email,),
            ticket_id=ticket.id,
            dedupe_key=f"{item.kind}:{ticket.id}:{key}:{item.to.email}",
            subject=nc.tag.with_tag(rendered.subject, ticket.number),
            text=rendered.text,
            html=rendered.html,
            message_id=nc.identity.message_id(ticket.id, item.to.email),
            in_reply_to=trigger_id,
            references=_references(store, ticket, trigger_id),
            auto_submitted=item.auto_submitted or "",
            automatic=item.automatic,
            headers=tuple(headers.items()),
        )
        if store.outbox_key_exists(note.dedupe_key):
            continue  # e.g. a quarantined mail reprocessed: each notification goes out once
        out.append(note)
        _queue(store, ticket, note, nc.mail_from, now)
    return out


def _queue(store: Store, ticket: Ticket, note: Notification, mail_from: str, now: datetime) -> None:
    headers = dict(note.headers)
    if note.in_reply_to:
        headers["In-Reply-To"] = note.in_reply_to
    if note.references:
        headers["References"] = " ".join(note.references)
    store.session.add(
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
    store.session.add(ThreadRef(message_id=note.message_id, ticket=ticket, direction="out"))
