"""An agent forwards a customer's mail into the desk: the ticket is the customer's, the agent is told its number.

Only an authenticated agent's new mail is read this way (``authorize.py``: From in agents.yaml *and*
our MX's ``Authentication-Results`` or the agent's signed reply address). Anyone else's forward is
their own mail: a forwarded block is text anyone can write, and a stranger who could name the
requester in it would have the desk acknowledge, and later mail, whomever they like.

Which forwarded mail is the customer's: the outermost (the one the agent received). A forward
between colleagues (its From is one of our agents) is looked through to the mail it forwards. A
customer's own mail may hold a forwarded block too, and it is never read: only what the agent's
client wrote is. A forwarded mail whose From is one of our own addresses or an agent, or has no
address at all, names no customer: the mail is kept in quarantine with the reason and the agent
is told why. Nothing is ever taken from the forwarded block but the requester, date, subject and text.

The same customer mail forwarded twice (by two agents, or as attachment and inline) makes one ticket:
its Message-ID (an attached mail carries it), or else its sender, date and subject (``forwarded.
dedupe_key``, kept as a ``ticket_alias`` of system ``forwarded``) find the first ticket. The second
forward is then a duplicate: recorded, an event on that ticket, and the agent hears its number.

The customer hears nothing unless the agent asks (``#ack`` on a line of its own above the forwarded
mail) or the help topic says so (``ack_forwarded: true``); a rule's ``no_autoreply`` still wins.
The agent always gets the ticket number back (kind ``forwarded``), with a Reply-To that works it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import update

from mailgate.domain import (
    Address,
    Change,
    Classification,
    MessageKind,
    Notification,
    ParsedMail,
    Role,
    RouteDecision,
    Sender,
    ThreadMatch,
)
from mailgate.identity import is_own_address
from mailgate.pipeline import forwarded
from mailgate.pipeline.apply import Writer, event_row, store_message
from mailgate.pipeline.audience import Directory, Planned
from mailgate.pipeline.author import Author
from mailgate.pipeline.forwarded import Original
from mailgate.pipeline.notice import NotifyContext, Trigger, queue
from mailgate.pipeline.notify import send
from mailgate.pipeline.quotes import REPLY_MARKER
from mailgate.rules.schema import RulesFile
from mailgate.storage.model import FORWARD_KEYS, Event, Message, Ticket
from mailgate.storage.store import Store

ALIAS = FORWARD_KEYS  # ticket_alias system of inline forwards' keys (never a subject tag: keys are hex)
RECEIPT, REFUSED = "forwarded", "forward_refused"
_ACK = re.compile(r"^\s*#ack\s*$", re.I | re.M)


@dataclass(frozen=True)
class Forwarding:
    """An authenticated agent's forward: the mail the pipeline goes on with, or why it does not."""

    agent: Sender
    forward_message_id: str | None  # the agent's own mail, which the receipt answers
    comment: str  # the agent's words above the forwarded mail, without #ack
    ack_asked: bool
    original: Original | None = None  # the customer's mail (None: refused before one was found)
    parsed: ParsedMail | None = None  # the customer's mail as the pipeline sees it from here on
    refused: str | None = None
    existing: Ticket | None = None  # the same customer mail is already this ticket
    key: str | None = None  # forwarded.dedupe_key

    @property
    def sender(self) -> Sender:
        assert self.original is not None and self.original.sender is not None
        who = self.original.sender
        return Sender(who.email, Role.REQUESTER, None, who.name)

    @property
    def author(self) -> Author:
        assert self.original is not None and self.original.sender is not None
        return Author(self.original.sender, "forwarded", self.original.sender, ())


def _refusal(original: Original, directory: Directory, own: frozenset[str]) -> str | None:
    who = original.sender
    if who is None:
        written = "no From line" if original.how.startswith("attached") else "a From line without an address"
        return f"the forwarded mail ({original.how}) names no sender: {written}"
    if is_own_address(who.email, own):
        return f"the forwarded mail is from {who.email}, one of our own addresses, not a customer"
    if directory.is_agent(who.email):  # a colleague's forward is not looked through: its From line is
        # text anyone can write ("From: agent" over a victim's address), so the customer it names is unproven
        return (f"the forwarded mail is from {who.email}, one of our agents, not a customer: "
                f"forward the customer's own mail")
    return None


def judge(
    parsed: ParsedMail,
    cls: Classification,
    match: ThreadMatch,
    sender: Sender,
    directory: Directory,
    own: frozenset[str],
    store: Store,
    history: bool,
) -> Forwarding | None:
    """None: not an authenticated agent's new mail forwarding something; it goes on as it is."""
    if history or sender.role is not Role.AGENT or not sender.authenticated or match.ticket_id is not None:
        return None  # an imported archive's forwards are history, not requests
    if cls.automatic:
        return None
    found = forwarded.find(parsed)
    if found is None:
        return None
    asked = bool(_ACK.search(found.comment))
    comment = _ACK.sub("", found.comment).strip()
    base = Forwarding(sender, parsed.message_id, comment, asked)
    original = found.original
    refused = _refusal(original, directory, own)
    if refused is not None:
        return replace(base, original=original, refused=refused)
    key = forwarded.dedupe_key(original)
    ticket_id = store.ticket_id_for_message_ids([original.message_id] if original.message_id else [])
    if ticket_id is None and key is not None:
        ticket_id = store.ticket_by_alias(ALIAS, key)
    existing = store.ticket(ticket_id) if ticket_id is not None else None
    return replace(base, original=original, parsed=_as_mail(parsed, original), existing=existing, key=key)


def _as_mail(parsed: ParsedMail, original: Original) -> ParsedMail:
    """The customer's mail in the place of the agent's: its sender, subject and words. To and Cc stay
    the agent's (the address they forwarded to routes it); the transport headers stay too, as they
    are what our MX said about this delivery."""
    new_text, unsigned = forwarded.words_of(original)
    attachments = original.attachments if original.how.startswith("attached") else parsed.attachments
    return replace(
        parsed,
        message_id=original.message_id,
        subject=original.subject or forwarded.strip_prefixes(parsed.subject),
        from_addr=original.sender,
        sender=None,
        reply_to=(),
        in_reply_to=(),
        references=(),
        date=original.date,
        text=original.text,
        html=original.html,
        new_text=new_text,
        unsigned=unsigned,
        attachments=attachments,
    )


def record(fwd: Forwarding | None, decision: RouteDecision | None = None) -> dict[str, Any] | None:
    """The decision record's ``forwarded`` entry (trail.py): who forwarded whose mail, and what came of it."""
    if fwd is None:
        return None
    original = fwd.original
    entry: dict[str, Any] = {
        "by": fwd.agent.address,
        "authenticated": fwd.agent.reason,
        "how": original.how if original else None,
        "original_sender": original.sender.email if original and original.sender else None,
        "original_date": original.date.isoformat() if original and original.date else None,
        "original_subject": original.subject if original else None,
        "original_message_id": original.message_id if original else None,
        "ack_asked": fwd.ack_asked,
    }
    if original is not None and original.date is None and original.date_text:
        entry["date_not_understood"] = original.date_text
    if fwd.refused:
        entry["refused"] = fwd.refused
    if fwd.existing is not None:
        entry["already_ticket"] = fwd.existing.number
    if decision is not None:
        entry["acknowledged"] = not decision.no_autoreply
    entry["summary"] = summary(fwd)
    return entry


def summary(fwd: Forwarding) -> str:
    who = fwd.original.sender.email if fwd.original and fwd.original.sender else "nobody"
    return f"forwarded by agent {fwd.agent.address}, original sender {who}"


def acknowledged(fwd: Forwarding | None, decision: RouteDecision, rules: RulesFile) -> RouteDecision:
    """Whether the customer hears of the ticket: only when asked for (#ack, or the topic's ack_forwarded)."""
    if fwd is None or fwd.parsed is None:
        return decision
    topic = next((t for t in rules.help_topics if t.name == decision.help_topic), None)
    by_rule = next((r.name for r in rules.rules if r.name in decision.matched and r.then.no_autoreply), None)
    if by_rule is not None:
        ack, why = False, f"not acknowledged: rule {by_rule} suppresses it"
    elif fwd.ack_asked:
        ack, why = True, f"acknowledged: agent {fwd.agent.address} asked with #ack"
    elif topic is not None and topic.ack_forwarded:
        ack, why = True, f"acknowledged: help topic {topic.name} has ack_forwarded"
    else:
        ack, why = False, "not acknowledged: the agent did not ask (#ack)"
    return replace(decision, no_autoreply=not ack, changes=(*decision.changes, f"{summary(fwd)}; {why}"))


def recorded(w: Writer, change: Change, fwd: Forwarding | None, inbound_id: int) -> Change:
    """On the new ticket: who forwarded it (an event), the mail at its own date, the agent's words as
    an internal note, and the key a second forward of the same mail finds it by."""
    if fwd is None or fwd.original is None or not change.created:
        return change
    original = fwd.original
    sent = original.date.isoformat() if original.date else f"unknown ({original.date_text or 'no date'})"
    detail = f"{summary(fwd)} ({original.how}; sent {sent}); authenticated by {fwd.agent.reason}"
    w.store.add_rows(Event, [event_row(w, change.ticket_id, "forwarded", detail, fwd.agent.address)])
    if original.date is not None:  # the customer's words are theirs of that day, not of the forward's
        w.store.session.execute(
            update(Message).where(Message.ticket_id == change.ticket_id).values(created_at=original.date)
        )
    if fwd.comment:
        assert fwd.parsed is not None
        note = replace(fwd.parsed, message_id=None, attachments=(), html=None,
                       from_addr=Address(fwd.agent.address, fwd.agent.name))
        store_message(w, change.ticket_id, note, inbound_id, MessageKind.NOTE, fwd.comment)
    if fwd.key is not None:
        w.store.add_alias(ALIAS, fwd.key, change.ticket_id)
    return replace(change, events=(*change.events, "forwarded"))


def taken(fwd: Forwarding | None, parsed: ParsedMail, sender: Sender, who: Author) -> tuple[ParsedMail, Sender, Author]:
    """The mail, sender and author the pipeline goes on with: the customer's, for a forward."""
    if fwd is None or fwd.parsed is None:
        return parsed, sender, who
    return fwd.parsed, fwd.sender, fwd.author


def again(store: Store, ticket: Ticket, fwd: Forwarding, now: datetime) -> None:
    """The same customer mail forwarded again: said on the ticket it already is."""
    detail = f"{summary(fwd)} again; already this ticket, no new one"
    store.add_rows(Event, [{"ticket_id": ticket.id, "at": now, "kind": "forwarded", "actor": fwd.agent.address,
                            "detail": detail}])


def receipt(
    store: Store, nc: NotifyContext, fwd: Forwarding | None, ticket: Ticket, change: Change | None,
    decision: RouteDecision | None, support: str, sha256: str, now: datetime,
) -> list[Notification]:
    """The ticket number, to the agent, once per forward (its outbox key names the forward).
    ``change`` None: the mail is already ``ticket`` (a second forward)."""
    if fwd is None or fwd.original is None or fwd.original.sender is None:
        return []
    created = change is not None and change.created
    acked = decision is not None and not decision.no_autoreply
    if created:
        what = "opened: the customer was acknowledged" if acked else "opened: the customer was not told"
    else:
        what = "not opened again: this mail is already this ticket"
    original = fwd.original
    assert original is not None and original.sender is not None
    message = {"text": original.text, "subject": original.subject, "from": original.sender.email,
               "from_name": original.sender.name}
    trigger = Trigger(fwd.forward_message_id, None, support, message, {"what": what, "reason": summary(fwd)},
                      key=f"fwd-{sha256[:20]}", fresh=created)
    agent = Address(fwd.agent.address, fwd.agent.name)
    return send(store, nc, [Planned(RECEIPT, agent, True, "auto-replied")], ticket, trigger, now)


def tell_refused(
    store: Store, nc: NotifyContext, fwd: Forwarding, parsed: ParsedMail, support: str, now: datetime
) -> Notification | None:
    """A refused forward: the agent hears why (there is no ticket, so neither tag nor ticket thread)."""
    key = f"{REFUSED}:{parsed.sha256[:32]}:{fwd.agent.address}"
    if not nc.settings.enabled(REFUSED) or store.outbox_key_exists(key):
        return None
    context = {
        "message": {"subject": parsed.subject, "text": "", "from": fwd.agent.address, "from_name": fwd.agent.name},
        "support_address": support,
        "change": {"reason": fwd.refused or ""},
        "reply_marker": REPLY_MARKER,
        "recipient": {"name": fwd.agent.name, "email": fwd.agent.address},
    }
    rendered = nc.templates.render(REFUSED, context)
    refs = (parsed.message_id,) if parsed.message_id else ()
    note = Notification(
        REFUSED,
        (fwd.agent.address,),
        0,
        key,
        rendered.subject,
        rendered.text,
        rendered.html,
        f"<mg.fwd.{parsed.sha256[:24]}@{nc.identity.domain}>",
        parsed.message_id,
        refs,
        "auto-replied",
        headers=(("Auto-Submitted", "auto-replied"), ("Reply-To", support)),
    )
    queue(store, None, [note], nc.mail_from, now)
    return note
