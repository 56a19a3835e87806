"""Mail to ``intake.status_address``: the sender gets the list of their open tickets, and no ticket opens.

Anyone can write any From, so the answer must be worth nothing to a forger and harmless to the person
forged. It goes only to the From address, the address a ticket's requester is recorded by, never to a
Reply-To or an address in the text, so the list reaches nobody but its owner. It goes only to an address
that has had a ticket with us (the rest get nothing, so the status address is no source of backscatter
to forged senders), at most ``intake.status_answers`` times per address within its window (the rest are
recorded and dropped with a log line), within the limits every automatic mail keeps, never in answer to
machine mail (bounces, auto-replies, lists), and once per received mail: its outbox row's dedupe key is
the mail's, so a re-delivery or a reprocessed mail is not answered twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.config import StatusAnswers
from mailgate.domain import Classification, Notification, ParsedMail
from mailgate.logformat import log_event
from mailgate.pipeline.author import Author
from mailgate.pipeline.guard import Limit, may_send_automatic
from mailgate.pipeline.notice import NotifyContext, queue
from mailgate.pipeline.quotes import REPLY_MARKER
from mailgate.storage.store import Store

log = logging.getLogger(__name__)
KIND = "status_list"
LISTED = 20  # tickets named in one answer; the rest are counted


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """What a status request got, for the decision record and the outcome."""

    address: str | None  # the address of record the answer would go to
    answered: bool
    reason: str
    listed: tuple[str, ...] = ()  # ticket numbers in the answer
    note: Notification | None = None


def addressed(recipients: Sequence[str], status_address: str, support: Sequence[str] = ()) -> bool:
    """Whether the mail was sent to the status address (or a plus form of it) and to none of the
    ``support`` addresses: a mail that also went to support@ is a request, and must become a ticket."""
    bare = set()
    for rcpt in recipients:
        local, _, domain = rcpt.lower().partition("@")
        bare.add(f"{local.split('+', 1)[0]}@{domain}")
    return status_address in bare and not bare & {a.lower() for a in support}


def _refusal(store: Store, nc: NotifyContext, cls: Classification, who: Author, limit: StatusAnswers,
             now: datetime) -> tuple[str, int] | None:
    """Why this request gets no answer, and how loud to log it; None when it is answered."""
    if cls.automatic:
        return f"machine-sent mail ({cls.kind.value}: {cls.reason}) is never answered", logging.INFO
    if who.via != "From" or who.address is None:
        return f"no From address (only {who.via}): the list goes to the From address alone", logging.INFO
    address = who.address.email
    if not store.has_tickets(address):
        return f"{address} never opened a ticket: not answered, so forged senders get no mail from us", logging.INFO
    recent = store.kind_sent_at(address, KIND, now - limit.within)
    if len(recent) >= limit.count:
        flood = f"rate limit: {limit.count} answer(s) to {address} within {limit.within} already; dropped"
        return flood, logging.WARNING
    rungs = nc.settings.rate_limits
    horizon = now - max((r.within for r in rungs), default=timedelta(0))
    verdict = may_send_automatic(
        address,
        trigger=cls,
        own=nc.own,
        suppressed_until=store.suppressed_until(address),
        to_recipient=store.automatic_sent_at(address, horizon),
        to_recipient_on_ticket=[],
        ladder=[Limit(r.count, r.within) for r in rungs],
        ticket_ladder=[],
        now=now,
    )
    return None if verdict.allowed else (verdict.reason, logging.WARNING)


def answer(store: Store, nc: NotifyContext, parsed: ParsedMail, cls: Classification, who: Author,
           limit: StatusAnswers, support: str, now: datetime, *, quiet: bool = False) -> StatusAnswer:
    """Decide, and queue the answer in this transaction. ``quiet``: decide only (an imported archive)."""
    address = who.address.email if who.address is not None and who.via == "From" else None
    if address is not None and not nc.settings.enabled(KIND):
        return StatusAnswer(address, False, f"notifications.kinds.{KIND} is off")
    refused = ("an imported archive is never answered", logging.INFO) if quiet else _refusal(
        store, nc, cls, who, limit, now
    )
    if refused is not None or address is None:
        why, level = refused or ("no address to answer", logging.INFO)
        log_event(log, "status request not answered", level, to=address, message_id=parsed.message_id, reason=why)
        return StatusAnswer(address, False, why)
    key = f"{KIND}:{parsed.sha256[:32]}:{address}"
    if store.outbox_key_exists(key):
        return StatusAnswer(address, False, f"answered already (outbox key {key})")
    tickets = store.open_tickets_of(address, LISTED + 1)
    shown = tickets[:LISTED]
    context = {
        "recipient": {"name": who.address.name if who.address else "", "email": address},
        "support_address": support,
        "reply_marker": REPLY_MARKER,
        "message": {"subject": parsed.subject, "text": "", "from": address, "from_name": ""},
        "open_tickets": [
            {
                "number": t.number,
                "tag": nc.tag.tag(t.number),
                "subject": t.subject,
                "status": t.status,
                "updated_at": t.updated_at.strftime("%Y-%m-%d %H:%M UTC"),
            }
            for t in shown
        ],
        "more_tickets": len(tickets) > LISTED,
    }
    rendered = nc.templates.render(KIND, context)
    refs = (parsed.message_id,) if parsed.message_id else ()
    note = Notification(
        KIND,
        (address,),
        0,
        key,
        rendered.subject,
        rendered.text,
        rendered.html,
        f"<mg.status.{parsed.sha256[:24]}@{nc.identity.domain}>",
        parsed.message_id,
        refs,
        "auto-replied",
        headers=(("Auto-Submitted", "auto-replied"), ("Reply-To", support)),
    )
    queue(store, None, [note], nc.mail_from, now)  # about no one ticket: neither tag nor ticket thread
    numbers = tuple(t.number for t in shown)
    listed = f"{len(tickets)} open ticket(s)" if len(tickets) <= LISTED else f"{LISTED} of more open tickets"
    said = listed if tickets else "no open tickets"
    return StatusAnswer(address, True, f"answered {address} with {said}", numbers, note)
