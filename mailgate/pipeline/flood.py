"""Flood control on new tickets (``intake.flood``): a ladder per sender address and per sender domain.

Counted from the database, not from memory, so restarts and several daemons agree: a mail that
opens a ticket, or is held for flood, records its sender and domain on its inbound row, and the
next one counts those rows in each rung's window (``ix_inbound_sender_received``,
``ix_inbound_sender_domain_received``; never more than the rung's count of rows). On PostgreSQL
the count is taken under a transaction-scoped advisory lock on the domain (or on the address,
where the domain is not counted), held until the mail commits: two daemons cannot both count 14
and both open the 15th.

Above a rung the mail is stored but held (``flood: ...``), never acknowledged, and the admin is
mailed once per incident: an incident is a run of held mails of one sender (or domain) with no gap
longer than the rung's window, and its mail's dedupe key names the first held mail. Only new tickets
count: a reply to an existing ticket, or a participant's follow-up to their closed ticket, is never
held. Public mail domains (``public_domains``) are counted per address only, or one flooder with
a gmail.com address would hold every gmail.com customer's mail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.utils import make_msgid
from typing import Any

from mailgate.config.intake_policy import Flood, Rung
from mailgate.domain import Notification
from mailgate.outbound.templates import Templates
from mailgate.pipeline.notice import queue
from mailgate.storage.store import Store


@dataclass(frozen=True)
class FloodCheck:
    held: str | None = None  # the reason (``flood: ...``) when held
    hold: str | None = None  # flood:sender | flood:domain
    row: dict[str, Any] = field(default_factory=dict)  # sender and domain, recorded on the inbound row
    record: dict[str, Any] = field(default_factory=dict)  # for the decision record
    incident: str | None = None  # the dedupe key of a new incident's alert


def _over(times: list[datetime], ladder: list[Rung], now: datetime) -> Rung | None:
    """The first rung this one more mail would break: ``count`` mails already within its window."""
    for rung in ladder:
        if sum(1 for t in times if t >= now - rung.within) >= rung.count:
            return rung
    return None


def _count(store: Store, column: str, value: str, ladder: list[Rung], now: datetime) -> Rung | None:
    if not ladder:
        return None
    since = now - max(r.within for r in ladder)
    return _over(store.new_tickets_from(column, value, since, max(r.count for r in ladder)), ladder, now)


def check(store: Store, settings: Flood, sender: str, now: datetime, inbound_id: int) -> FloodCheck:
    """Count and decide, for a mail that would open a new ticket (holds the lock until commit)."""
    domain = sender.rpartition("@")[2].lower()
    if domain in settings.exempt_domains:
        return FloodCheck(record={"counted": False, "why": f"{domain} is in intake.flood.exempt_domains"})
    by_domain = settings.per_domain_applies(domain)
    store.flood_lock(f"flood:domain:{domain}" if by_domain else f"flood:sender:{sender}")
    row = {"sender": sender[:320], "sender_domain": domain[:255]}
    scopes = [("sender", sender, settings.per_sender, "per_sender", "flood:sender")]
    if by_domain:
        scopes.append(("sender_domain", domain, settings.per_domain, "per_domain", "flood:domain"))
    for column, value, ladder, key, hold in scopes:
        rung = _count(store, column, value, ladder, now)
        if rung is None:
            continue
        window = rung.text.partition("/")[2]
        why = f"flood: {value} already opened {rung.count} new ticket(s) within {window} ({key} {rung.text})"
        ongoing = store.held_from(column, value, now - rung.within, hold)
        incident = None if ongoing else f"admin_alert:{hold}:{value}:{inbound_id}"
        record = {"counted": True, "held": True, "rung": f"{key} {rung.text}", "incident": incident or "ongoing"}
        return FloodCheck(why, hold, row, record, incident)
    public = "" if by_domain else f" ({domain}: per address only)" if settings.per_domain else ""
    return FloodCheck(row=row, record={"counted": True, "held": False, "why": f"under every rung{public}"})


def alert(
    store: Store, templates: Templates, found: FloodCheck, admin: str | None, mail_from: str, domain: str, now: datetime
) -> bool:
    """One mail to the admin for a new incident, in the mail's own transaction (its dedupe key: once)."""
    if found.incident is None or admin is None or store.outbox_key_exists(found.incident):
        return False
    context = {"flood": {"reason": found.held, "scope": found.hold, "rung": found.record.get("rung"),
                         "since": now.isoformat(timespec="seconds")}}
    rendered = templates.render("flood_alert", context)
    note = Notification(
        kind="admin_alert",
        to=(admin,),
        ticket_id=0,
        dedupe_key=found.incident,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=make_msgid(domain=domain),
        in_reply_to=None,
        references=(),
        auto_submitted="auto-generated",
        headers=(("Auto-Submitted", "auto-generated"),),
    )
    queue(store, None, [note], mail_from, now)
    return True
