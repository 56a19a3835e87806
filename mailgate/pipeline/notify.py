"""Stage 10: who hears about this change; render templates; write Outbox rows in the same transaction.

Machine mail (bounces, auto-replies, our own loops) is never answered by
machine, and nothing automatic ever goes to one of our own addresses.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from mailgate.domain import (
    Address,
    Change,
    Classification,
    Envelope,
    Notification,
    ParsedMail,
    Role,
    RouteDecision,
    Sender,
)
from mailgate.identity import is_own_address
from mailgate.pipeline import audience
from mailgate.pipeline.audience import Planned, TicketView
from mailgate.pipeline.guard import Limit, Verdict, may_send_automatic
from mailgate.pipeline.notice import NotifyContext, Trigger, build, queue, thread_references, ticket_sender
from mailgate.pipeline.quotes import REPLY_MARKER
from mailgate.storage.model import Event, Ticket
from mailgate.storage.store import Store


def recipients(parsed: ParsedMail, envelope: Envelope) -> tuple[str, ...]:
    """Everyone the mail was addressed to: envelope first, then To and Cc."""
    return tuple(dict.fromkeys([*(r.lower() for r in envelope.rcpt_tos), *(a.email for a in (*parsed.to, *parsed.cc))]))


def own_address(parsed: ParsedMail, envelope: Envelope, own: frozenset[str]) -> str | None:
    """The address of ours the customer wrote to (without any plus token), if any."""
    found = next((c for c in recipients(parsed, envelope) if is_own_address(c, own)), None)
    if found is None:
        return None
    local, _, domain = found.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def support_address(parsed: ParsedMail, envelope: Envelope, own: frozenset[str], default: str) -> str:
    """The address the customer wrote to, so replies come back to the same place."""
    return own_address(parsed, envelope, own) or default


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
        change,
        ticket_view(ticket, store, change.collaborators),
        cls,
        sender,
        nc.directory,
        acknowledge=not decision.no_autoreply,
        ack_template=decision.canned_reply or decision.ack_template,  # a rule's reply, else the topic's
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
        "kept_as": "note" if change.events else "aside",  # refused commands become a note; see ingest
        "ask_rating": "yes" if nc.ask_rating and change.status_changed == "resolved" else "",
        "linked": nc.tag.tag(change.link.ticket) if change.link else "",  # merged in, or split off from
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


def ticket_view(ticket: Ticket, store: Store, collaborators: tuple[Address, ...] | None = None) -> TicketView:
    if collaborators is None:
        people = store.participants(ticket.id)
        collaborators = tuple(Address(e, name) for e, name, role in people if role == Role.COLLABORATOR.value)
    return TicketView(
        requester=Address(ticket.requester_email, ticket.requester_name),
        collaborators=collaborators,
        assignee=ticket.assignee,
        department=ticket.department,
    )


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


def send(
    store: Store, nc: NotifyContext, planned: list[Planned], ticket: Ticket, trigger: Trigger, now: datetime
) -> list[Notification]:
    """Render, guard and queue each planned notification; what is held back is recorded on the ticket."""
    topic = (nc.topic_overrides or {}).get(ticket.help_topic or "")
    overrides = (nc.directory.department_overrides(ticket.department), topic)
    wanted = [item for item in planned if nc.settings.enabled(item.kind, *overrides)]
    if not wanted:
        return []
    if ticket.reply_address:  # answers come back to where the customer first wrote, whatever this mail said
        trigger = replace(trigger, support=ticket.reply_address)
    if trigger.fresh:  # a ticket opened by this very mail: its thread is that mail alone
        references: tuple[str, ...] = (trigger.message_id,) if trigger.message_id else ()
    else:
        references = thread_references(store, ticket, trigger.message_id)
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
        out.append(build(nc, item, ticket, trigger, references, key, now))
    store.add_rows(Event, held)
    queue(store, ticket.id, out, ticket_sender(nc, ticket), now)
    return out


def send_rejection(
    store: Store, nc: NotifyContext, parsed: ParsedMail, cls: Classification, support: str, reason: str, now: datetime
) -> Notification | None:
    """Tell the sender why a rule refused the mail, where no SMTP answer could (IMAP intake).

    Same guards as any automatic mail: never to machines, our own addresses, bounced addresses, or past
    the rate limit. There is no ticket, so the mail carries neither tag nor ticket threading.
    """
    to = parsed.from_addr  # the author (author.py): a Reply-To is the sender's word, not an address to answer
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
    refs = (parsed.message_id,) if parsed.message_id else ()
    note = Notification(
        "rejected",
        (to.email,),
        0,
        key,
        rendered.subject,
        rendered.text,
        rendered.html,
        message_id,
        parsed.message_id,
        refs,
        "auto-replied",
        headers=tuple(headers.items()),
    )
    queue(store, None, [note], nc.mail_from, now)  # no ticket: neither tag nor ticket thread
    return note
